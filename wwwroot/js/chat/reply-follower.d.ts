// Types of reply-follower.js, for the Angular client (which imports that same file).

/** A `ResumeReply` stream item: a numbered chunk, or the end. */
export interface ReplyItem {
  sequence: number;
  text?: string;
  end?: 'completed' | 'stopped' | 'error';
  replyId?: string;
  error?: string;
  /** The reply stopped at a length limit (it is stored so): Continue asks for the rest. */
  cut?: 'length';
  /** A late content filter signal took the reply back: nothing of it is stored or replayed. */
  withdrawn?: boolean;
  /** On the end item, where the provider reported it. */
  usage?: ReplyUsage;
}

export interface ReplyUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** How a followed reply ended: "none" when the stream completed with no end item (no reply running). */
export type ReplyEndKind = 'completed' | 'stopped' | 'error' | 'cut' | 'withdrawn' | 'none';

export interface ReplyEnd {
  kind: ReplyEndKind;
  /** The end item's `end`; null for "none". */
  outcome: 'completed' | 'stopped' | 'error' | null;
  /** The text for the user, on an error (the server's, or the follower's own). */
  error: string | null;
  cut: 'length' | null;
  withdrawn: boolean;
  usage: ReplyUsage | null;
  replyId: string | null;
  /** The last chunk reported: 0 when none was, or when the reply was withdrawn. */
  sequence: number;
  /** Whether any of the reply's text stands (sequence > 0). */
  produced: boolean;
}

export interface ReplyObserver {
  next(item: ReplyItem): void;
  complete(): void;
  error(err: unknown): void;
}

export interface FollowOptions {
  /** Opens ResumeReply(conversationId, after) and passes its items on. */
  subscribe(after: number, observer: ReplyObserver): { dispose(): void };
  after?: number;
  onText(text: string, sequence: number): void;
  onEnd(end: ReplyEnd): void;
  /** Asked when the stream fails: false (connection lost) ends nothing. */
  connected?: () => boolean;
  followError?: string;
  maxRestarts?: number;
}

export interface ReplyFollower {
  readonly sequence: number;
  readonly ended: boolean;
  dispose(): void;
}

export const MAX_RESTARTS: number;
export const FOLLOW_FAILED: string;
export function followReply(options: FollowOptions): ReplyFollower;

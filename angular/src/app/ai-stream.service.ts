import { DestroyRef, Injectable, InjectionToken, inject, signal } from '@angular/core';
import { HttpTransportType, HubConnection, HubConnectionBuilder, HubConnectionState, LogLevel, Subject as HubSubject } from '@microsoft/signalr';
import { Observable, Subject } from 'rxjs';
import { type AttachmentLimits, sendChunks } from '../../../wwwroot/js/chat/attachments.js';
import type { ReplyItem } from '../../../wwwroot/js/chat/reply-follower.js';

/** Where the hub is mapped. Provide another value to point the app at another server. */
export const AI_HUB_URL = new InjectionToken<string>('AI_HUB_URL', { factory: () => '/chat' });

/** The same delays (ms) for automatic reconnects and for retrying the first start. */
const RETRY_DELAYS = [0, 2000, 5000, 10000, 30000];

export type ConnectionStatus = 'Connecting' | 'Connected' | 'Reconnecting' | 'Disconnected';

export interface TypingEvent {
  id: string;
  typing: boolean;
}

/** `GetChatInfo()`: the composer's length limit and the model that answers. */
export interface ChatInfo {
  maxMessageLength: number;
  /** The longest custom instructions of a conversation (0: custom instructions are off). */
  maxInstructionsLength: number;
  provider: string;
  /** The default model. */
  model: string;
  /** Every model a conversation may pick (`SetModel`), the default first. */
  models: string[];
  /** The built-in local model: small, offline, often wrong. */
  offlineDemo: boolean;
  /** The limits on attachments (UploadAttachment). */
  attachments?: AttachmentLimits;
  /** The models that read images; an image for any other is refused before it is uploaded. */
  visionModels?: string[];
}

/** GetChatInfo's `attachments` (typed next to the shared attachments.js, which both clients use). */
export type { AttachmentLimits };

/** An attachment's metadata: UploadAttachment's answer, and a stored message's `attachments`. */
export interface AttachmentInfo {
  id: string;
  name: string;
  type: string;
  size: number;
}

/** A reply running in a conversation (`StartReply`, `GetConversation().reply`). */
export interface ReplyInfo {
  replyId: string;
  conversationId: string;
  userMessage: string | null;
  /** The files of the message being answered. */
  userAttachments?: AttachmentInfo[];
  continues: boolean;
  running: boolean;
  sequence: number;
}

export interface ConversationEntry {
  id: string;
  title: string;
  /** The user's custom instructions for it ("" for none). */
  instructions?: string;
  /** The model its replies use. */
  model?: string;
}

export interface Conversation {
  id: string;
  title: string;
  instructions: string;
  model: string;
  /** `interrupted`: the last user message, whose reply the server never finished; `ContinueReply` answers it.
   * `cut`: a reply cut short at a length limit; `ContinueReply` asks for the rest.
   * `model`: the model that wrote a reply. */
  messages: {
    role: 'user' | 'assistant';
    content: string;
    interrupted?: boolean;
    cut?: 'length';
    model?: string;
    attachments?: AttachmentInfo[];
  }[];
  reply: ReplyInfo | null;
}

/** A `SearchConversations` result: the conversation, and a snippet with its match at `match`. */
export interface SearchResult {
  id: string;
  title: string;
  updated: number;
  in: 'title' | 'user' | 'assistant';
  snippet: string;
  match: [number, number];
}

export interface SearchPage {
  page: number;
  pageSize: number;
  results: SearchResult[];
  more: boolean;
}

/** `ExportConversation`: a file to download. */
export interface ExportedFile {
  fileName: string;
  mediaType: string;
  text: string;
}

/** A `ResumeReply` stream item: a numbered chunk, or the end (typed next to the page's reply follower, which both clients use). */
export type { ReplyItem };

export interface TextEvent {
  id: string;
  text: string;
}

/**
 * The chat hub's seed 2 contract over @microsoft/signalr:
 * `AskAi(prompt)` returns a message id; the reply arrives as `typing(id, true)`,
 * `partial(id, text)` per token, `typing(id, false)`, `completed(id)`, or as
 * `error(id, text)` then `completed(id)`. The events can arrive before `ask()`
 * resolves, so key the UI by the id in the events.
 */
@Injectable({ providedIn: 'root' })
export class AiStreamService {
  private readonly connection: HubConnection;
  private readonly statusSignal = signal<ConnectionStatus>('Disconnected');
  /** When the next connection attempt is due (ms since the epoch), while one is waited for. */
  private readonly nextRetrySignal = signal<number | null>(null);
  private wakeRetry?: () => void;
  private retryingNow = false;
  private readonly typingSubject = new Subject<TypingEvent>();
  private readonly partialSubject = new Subject<TextEvent>();
  private readonly completedSubject = new Subject<string>();
  private readonly errorSubject = new Subject<TextEvent>();
  private readonly statusUpdateSubject = new Subject<string>();
  private readonly connectionLostSubject = new Subject<void>();
  private readonly reconnectedSubject = new Subject<void>();
  private destroyed = false;
  private everConnected = false;
  private connecting?: Promise<void>;

  readonly status = this.statusSignal.asReadonly();
  readonly nextRetryAt = this.nextRetrySignal.asReadonly();
  readonly typing$: Observable<TypingEvent> = this.typingSubject.asObservable();
  readonly partial$: Observable<TextEvent> = this.partialSubject.asObservable();
  readonly completed$: Observable<string> = this.completedSubject.asObservable();
  readonly error$: Observable<TextEvent> = this.errorSubject.asObservable();
  /** `ReceiveStatusUpdate`: "history_cleared" after `clear()`. */
  readonly statusUpdate$: Observable<string> = this.statusUpdateSubject.asObservable();
  /** The connection dropped: replies in flight are over, no more events come for them. */
  readonly connectionLost$: Observable<void> = this.connectionLostSubject.asObservable();
  /** Connected again after a loss: the server sees a new connection (a new anonymous conversation). */
  readonly reconnected$: Observable<void> = this.reconnectedSubject.asObservable();

  constructor() {
    // ?transport=WebSockets|ServerSentEvents|LongPolling forces one, as on the page
    const transport = new URLSearchParams(location.search).get('transport');
    const forced = transport ? HttpTransportType[transport as keyof typeof HttpTransportType] : undefined;
    this.connection = new HubConnectionBuilder()
      .withUrl(inject(AI_HUB_URL), forced === undefined ? {} : { transport: forced })
      .withAutomaticReconnect({
        nextRetryDelayInMilliseconds: ({ previousRetryCount }) => {
          const delay = RETRY_DELAYS[previousRetryCount];
          this.nextRetrySignal.set(delay === undefined ? null : Date.now() + delay);
          return delay ?? null;
        },
      })
      .configureLogging(LogLevel.Warning)
      .build();

    this.connection.on('typing', (id: string, typing: boolean) => this.typingSubject.next({ id, typing }));
    this.connection.on('partial', (id: string, text: string) => this.partialSubject.next({ id, text }));
    this.connection.on('completed', (id: string) => this.completedSubject.next(id));
    this.connection.on('error', (id: string, text: string) => this.errorSubject.next({ id, text }));
    this.connection.on('ReceiveStatusUpdate', (status: string) => this.statusUpdateSubject.next(status));

    this.connection.onreconnecting(() => {
      this.statusSignal.set('Reconnecting');
      this.connectionLostSubject.next();
    });
    this.connection.onreconnected(() => {
      this.nextRetrySignal.set(null);
      this.statusSignal.set('Connected');
      this.reconnectedSubject.next();
    });
    // The automatic reconnects gave up (or the server closed the connection): start over.
    this.connection.onclose(() => {
      this.nextRetrySignal.set(null);
      this.statusSignal.set(this.retryingNow ? 'Reconnecting' : 'Disconnected');
      this.retryingNow = false;
      this.connectionLostSubject.next();
      if (!this.destroyed) void this.start();
    });

    inject(DestroyRef).onDestroy(() => {
      this.destroyed = true;
      void this.connection.stop();
    });
  }

  /** Connects, retrying until it succeeds; safe to call more than once. */
  start(): Promise<void> {
    this.connecting ??= this.connect().finally(() => (this.connecting = undefined));
    return this.connecting;
  }

  /** Tries to connect now instead of waiting for the next attempt. */
  async retryNow(): Promise<void> {
    this.nextRetrySignal.set(null);
    if (this.connection.state === HubConnectionState.Reconnecting) {
      this.retryingNow = true; // stop() ends the automatic reconnect; onclose starts again at once
      await this.connection.stop();
    } else {
      this.wakeRetry?.();
    }
  }

  /** Makes this connection the guest `guestId` (a new guest if the server does not know it). */
  useGuest(guestId: string | null): Promise<string | null> {
    return this.connection.invoke<string | null>('UseGuestSession', guestId);
  }

  listConversations(): Promise<ConversationEntry[]> {
    return this.connection.invoke<ConversationEntry[]>('ListConversations');
  }

  createConversation(): Promise<ConversationEntry> {
    return this.connection.invoke<ConversationEntry>('CreateConversation', null);
  }

  renameConversation(id: string, title: string): Promise<ConversationEntry> {
    return this.connection.invoke<ConversationEntry>('RenameConversation', id, title);
  }

  deleteConversation(id: string): Promise<void> {
    return this.connection.invoke('DeleteConversation', id);
  }

  restoreConversation(id: string): Promise<boolean> {
    return this.connection.invoke<boolean>('RestoreConversation', id);
  }

  /** The conversation's custom instructions ("" clears them); the entry as stored. */
  setInstructions(id: string, instructions: string): Promise<ConversationEntry> {
    return this.connection.invoke<ConversationEntry>('SetInstructions', id, instructions);
  }

  /** The model (one of `ChatInfo.models`) that writes the conversation's next replies. */
  setModel(id: string, model: string): Promise<ConversationEntry> {
    return this.connection.invoke<ConversationEntry>('SetModel', id, model);
  }

  getConversation(id: string): Promise<Conversation> {
    return this.connection.invoke<Conversation>('GetConversation', id);
  }

  /** Starts a reply in the conversation; follow it with `resumeReply(id, 0)`. */
  startReply(conversationId: string, message: string): Promise<ReplyInfo> {
    return this.connection.invoke<ReplyInfo>('StartReply', conversationId, message);
  }

  /**
   * Uploads a file for the conversation's next message through the hub: a Subject of base64
   * chunks (a hub message holds about 48 KB), read from the file one at a time. Stops sending at
   * once when the server refuses it (too large, wrong type…): the promise rejects with its text.
   */
  async uploadAttachment(conversationId: string, file: File): Promise<AttachmentInfo> {
    const subject = new HubSubject<string>();
    const result = this.connection.invoke<AttachmentInfo>('UploadAttachment', conversationId, { name: file.name, type: file.type }, subject);
    let refused = false;
    result.catch(() => {
      refused = true;
    });
    await sendChunks(file, subject, { refused: () => refused }); // a file that cannot be read ends the stream and throws
    return result;
  }

  /** StartReply with uploaded files (UploadAttachment's ids); the message may be empty. */
  startReplyWithAttachments(conversationId: string, message: string, attachmentIds: string[]): Promise<ReplyInfo> {
    return this.connection.invoke<ReplyInfo>('StartReplyWithAttachments', conversationId, message, attachmentIds);
  }

  /** A stored attachment with its content as a data URL (an image shown again after a reload). */
  getAttachment(conversationId: string, attachmentId: string): Promise<AttachmentInfo & { url: string }> {
    return this.connection.invoke<AttachmentInfo & { url: string }>('GetAttachment', conversationId, attachmentId);
  }

  /** The conversation's reply after chunk `after`, then live; completes after the end item. */
  resumeReply(conversationId: string, after: number): Observable<ReplyItem> {
    return new Observable<ReplyItem>((subscriber) => {
      const subscription = this.connection.stream<ReplyItem>('ResumeReply', conversationId, after).subscribe({
        next: (item) => subscriber.next(item),
        complete: () => subscriber.complete(),
        error: (err: unknown) => subscriber.error(err),
      });
      return () => subscription.dispose();
    });
  }

  regenerateReply(conversationId: string): Promise<ReplyInfo> {
    return this.connection.invoke<ReplyInfo>('RegenerateReply', conversationId);
  }

  /** User message `index` becomes `message`; what followed it is replaced by the new reply. */
  editMessage(conversationId: string, index: number, message: string): Promise<ReplyInfo> {
    return this.connection.invoke<ReplyInfo>('EditMessage', conversationId, index, message);
  }

  continueReply(conversationId: string): Promise<ReplyInfo> {
    return this.connection.invoke<ReplyInfo>('ContinueReply', conversationId);
  }

  stopReply(conversationId: string): Promise<boolean> {
    return this.connection.invoke<boolean>('StopReply', conversationId);
  }

  clearConversation(conversationId: string): Promise<void> {
    return this.connection.invoke('ClearConversation', conversationId);
  }

  /** The caller's conversations whose title or messages hold `query`: page `page` (from 1). */
  searchConversations(query: string, page: number, pageSize: number): Promise<SearchPage> {
    return this.connection.invoke<SearchPage>('SearchConversations', query, page, pageSize);
  }

  exportConversation(conversationId: string, format: 'markdown' | 'json'): Promise<ExportedFile> {
    return this.connection.invoke<ExportedFile>('ExportConversation', conversationId, format);
  }

  /** Every conversation of this user or guest deleted (a guest's id too: `useGuest(null)` makes a new one). */
  deleteAllMyData(): Promise<void> {
    return this.connection.invoke('DeleteAllMyData');
  }

  /** The length limit and the model. */
  info(): Promise<ChatInfo> {
    return this.connection.invoke<ChatInfo>('GetChatInfo');
  }

  /** Sends a prompt; resolves with its message id once the reply has completed. */
  ask(prompt: string): Promise<string> {
    return this.connection.invoke<string>('AskAi', prompt);
  }

  /** Stops this connection's replies; each still ends with `completed`. */
  stop(): Promise<void> {
    return this.connection.invoke('StopGeneration');
  }

  /** Stops the replies and clears the conversation; then `statusUpdate$` emits "history_cleared". */
  clear(): Promise<void> {
    return this.connection.invoke('ClearHistory');
  }

  private async connect(): Promise<void> {
    for (let attempt = 0; !this.destroyed; attempt++) {
      this.statusSignal.set('Connecting');
      try {
        await this.connection.start();
        this.statusSignal.set('Connected');
        this.nextRetrySignal.set(null);
        if (this.everConnected) this.reconnectedSubject.next();
        this.everConnected = true;
        return;
      } catch (err) {
        if (this.destroyed) return;
        this.statusSignal.set('Disconnected');
        console.warn('Cannot connect to the chat hub, retrying', err);
        const delay = RETRY_DELAYS[Math.min(attempt + 1, RETRY_DELAYS.length - 1)];
        this.nextRetrySignal.set(Date.now() + delay);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delay);
          this.wakeRetry = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.wakeRetry = undefined;
        this.nextRetrySignal.set(null);
      }
    }
  }
}

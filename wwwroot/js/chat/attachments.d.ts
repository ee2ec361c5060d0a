// Types of attachments.js, for the Angular client (which imports that same file).

/** GetChatInfo's `attachments`: the server's limits on attachments. */
export interface AttachmentLimits {
  maxBytes: number;
  /** Files per message; 0: attachments are off. */
  maxFiles: number;
  types: string[];
  /** File name endings attached as text whatever type the browser declares. */
  extensions: string[];
}

/** What the checks read of a file (a `File` has them). */
export interface FileLike {
  readonly name: string;
  readonly type: string;
  readonly size: number;
}

export interface CheckContext {
  limits: AttachmentLimits;
  /** How many files are already chosen for the message. */
  chosen: number;
  /** The open conversation's model (named in the refusal of an image). */
  model: string;
  /** Whether that model reads images. */
  readsImages: boolean;
}

/** Where the chunks go: the stock client's `signalR.Subject`, or anything with these three. */
export interface ChunkSink {
  next(item: string): void;
  complete(): void;
  error(err: unknown): void;
}

export const IMAGE_TYPES: readonly string[];
export const UPLOAD_CHUNK: number;
export function isImage(file: { readonly type: string }): boolean;
export function takesImages(info: { visionModels?: readonly string[]; model?: string } | null | undefined, model: string): boolean;
export function sizeText(count: number): string;
export function tooMany(limit: number): string;
export function refusal(file: FileLike, context: CheckContext): string | null;
export function noImages(model: string): string;
export function check<T extends FileLike>(files: Iterable<T>, context: CheckContext): { accepted: T[]; refused: string | null };
export function pickerAccept(limits: AttachmentLimits, readsImages: boolean): string | null;
export function pickerHint(readsImages: boolean): { text: string; reason: string };
export function toBase64(bytes: Uint8Array): string;
export function sendChunks(
  blob: Blob,
  subject: ChunkSink,
  options?: { refused?: () => boolean; chunk?: number },
): Promise<void>;

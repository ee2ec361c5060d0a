import { Component, ElementRef, afterRenderEffect, computed, inject, signal, viewChild } from '@angular/core';
import { takeUntilDestroyed } from '@angular/core/rxjs-interop';
import { AiStreamService, ChatInfo } from './ai-stream.service';
import { MarkdownView, copy } from './markdown';

interface ChatMessage {
  readonly key: number;
  readonly kind: 'user' | 'assistant' | 'error' | 'notice';
  readonly text: string;
  /** The hub's message id (assistant replies and their errors). */
  readonly id?: string;
  /** `completed` arrived. */
  readonly done?: boolean;
  /** The connection dropped before `completed`. */
  readonly interrupted?: boolean;
  /** Stop was asked for while this reply streamed. */
  readonly stopped?: boolean;
  /** A user message the server did not take (rejected, or an error before any reply). */
  readonly notSent?: boolean;
}

/** The counter shows from this share of the length limit on. */
const COUNTER_FROM = 0.8;

@Component({
  selector: 'app-root',
  templateUrl: './app.html',
  styleUrl: './app.css',
  imports: [MarkdownView],
})
export class App {
  private readonly ai = inject(AiStreamService);
  private readonly list = viewChild.required<ElementRef<HTMLElement>>('list');

  protected readonly status = this.ai.status;
  protected readonly connected = computed(() => this.status() === 'Connected');
  protected readonly messages = signal<readonly ChatMessage[]>([]);
  protected readonly prompt = signal('');
  protected readonly info = signal<ChatInfo | null>(null);
  /** Code points, as the server counts. */
  protected readonly length = computed(() => [...this.prompt()].length);
  protected readonly limit = computed(() => this.info()?.maxMessageLength ?? Infinity);
  protected readonly overLimit = computed(() => this.length() > this.limit());
  protected readonly showCounter = computed(() => this.length() >= this.limit() * COUNTER_FROM);
  protected readonly canAsk = computed(() => this.connected() && this.prompt().trim() !== '' && !this.overLimit());
  /** Replies whose last `typing` event said true. */
  private readonly typingIds = signal<ReadonlySet<string>>(new Set());
  protected readonly typing = computed(() => this.typingIds().size > 0);
  /** `AskAi` invocations not yet returned: a reply is streaming or waiting for its turn. */
  private readonly pending = signal(0);
  protected readonly streaming = computed(() => this.pending() > 0);
  /** New content arrived below while the reader was scrolled up. */
  protected readonly unseen = signal(false);
  /** Seconds until the next connection attempt, while one is waited for. */
  protected readonly retryIn = signal<number | null>(null);

  /** Ids from before a clear: their last events (`typing` false, `completed`) are ignored. */
  private readonly retired = new Set<string>();
  /** Ids whose reply ended with an error before any text. */
  private readonly failedBeforeText = new Set<string>();
  private nextKey = 0;
  /** The log's height at the last render: the reader was at the bottom if within 40 px of it. */
  private lastHeight = 0;
  /** The reader sent a message or jumped: follow whatever happened to the scroll position. */
  private follow = true;

  constructor() {
    this.ai.typing$.pipe(takeUntilDestroyed()).subscribe(({ id, typing }) => {
      if (this.retired.has(id)) return;
      if (typing) this.reply(id);
      this.setTyping(id, typing);
    });
    this.ai.partial$.pipe(takeUntilDestroyed()).subscribe(({ id, text }) => {
      if (this.retired.has(id)) return;
      this.reply(id);
      this.updateReply(id, (m) => ({ ...m, text: m.text + text }));
    });
    this.ai.error$.pipe(takeUntilDestroyed()).subscribe(({ id, text }) => {
      if (this.retired.has(id)) return;
      this.setTyping(id, false);
      const empty = !this.messages().some((m) => m.kind === 'assistant' && m.id === id && m.text !== '');
      if (empty) this.failedBeforeText.add(id);
      // an error before any text replaces the empty reply bubble
      this.messages.update((list) => list.filter((m) => !(m.kind === 'assistant' && m.id === id && m.text === '')));
      this.add('error', text, id);
    });
    this.ai.completed$.pipe(takeUntilDestroyed()).subscribe((id) => {
      this.setTyping(id, false);
      this.updateReply(id, (m) => ({ ...m, done: true }));
    });
    this.ai.statusUpdate$.pipe(takeUntilDestroyed()).subscribe((update) => {
      if (update !== 'history_cleared') return;
      for (const m of this.messages()) if (m.id) this.retired.add(m.id);
      for (const id of this.typingIds()) this.retired.add(id);
      this.messages.set([]);
      this.typingIds.set(new Set());
      this.unseen.set(false);
    });

    // The server ends a lost connection's replies: nothing more will arrive for them.
    this.ai.connectionLost$.pipe(takeUntilDestroyed()).subscribe(() => {
      this.typingIds.set(new Set());
      this.messages.update((list) =>
        list.map((m) => (m.kind === 'assistant' && !m.done ? { ...m, interrupted: true } : m)),
      );
    });
    // A new connection is a new anonymous conversation: the assistant forgot the old one.
    this.ai.reconnected$.pipe(takeUntilDestroyed()).subscribe(() => {
      if (this.messages().length > 0) this.add('notice', 'Reconnected. The conversation was reset.');
      void this.loadInfo();
    });

    // Whether the reader was at the bottom is measured against the height before this
    // render, here and now: a scroll event may not have been delivered yet.
    afterRenderEffect(() => {
      this.messages();
      const list = this.list().nativeElement;
      const wasAtBottom = this.lastHeight - list.scrollTop - list.clientHeight < 40;
      if (this.follow || wasAtBottom) list.scrollTop = list.scrollHeight;
      else if (list.scrollHeight - list.scrollTop - list.clientHeight >= 40) this.unseen.set(true);
      this.follow = false;
      this.lastHeight = list.scrollHeight;
    });

    // the reconnect countdown, once a second while an attempt is waited for
    let countdown: ReturnType<typeof setInterval> | undefined;
    afterRenderEffect(() => {
      const at = this.ai.nextRetryAt();
      clearInterval(countdown);
      const tick = () => this.retryIn.set(at === null ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000)));
      tick();
      if (at !== null) countdown = setInterval(tick, 250);
    });

    void this.ai.start().then(() => this.loadInfo());
  }

  protected async send(): Promise<void> {
    if (!this.canAsk()) return;
    const prompt = this.prompt();
    this.prompt.set('');
    this.follow = true;
    this.unseen.set(false);
    const key = this.add('user', prompt);
    this.pending.update((n) => n + 1);
    try {
      const id = await this.ai.ask(prompt);
      if (this.failedBeforeText.delete(id)) this.notSent(key, prompt);
    } catch (err) {
      const replied = this.messages().some((m) => m.key > key && m.kind === 'assistant');
      if (!replied) this.notSent(key, prompt);
      this.add(
        'error',
        this.connected() ? failure('The message could not be sent', err) : 'The connection was lost before the reply completed.',
      );
    } finally {
      this.pending.update((n) => n - 1);
    }
  }

  protected async stop(): Promise<void> {
    this.messages.update((list) => list.map((m) => (m.kind === 'assistant' && !m.done ? { ...m, stopped: true } : m)));
    try {
      await this.ai.stop();
    } catch (err) {
      this.add('error', failure('Could not stop the reply', err));
    }
  }

  protected async clear(): Promise<void> {
    try {
      await this.ai.clear();
    } catch (err) {
      this.add('error', failure('Could not clear the conversation', err));
    }
  }

  protected retryNow(): void {
    void this.ai.retryNow();
  }

  protected copyReply(event: Event, text: string): void {
    void copy(event.currentTarget as HTMLElement, text);
  }

  protected jumpToLatest(): void {
    this.unseen.set(false);
    const list = this.list().nativeElement;
    list.scrollTop = list.scrollHeight;
    this.lastHeight = list.scrollHeight;
  }

  /** Enter sends; Shift+Enter (and Enter while composing with an IME) inserts a newline. */
  protected onEnter(event: Event): void {
    const key = event as KeyboardEvent;
    if (key.shiftKey || key.isComposing) return;
    key.preventDefault();
    void this.send();
  }

  protected onScroll(): void {
    const list = this.list().nativeElement;
    if (list.scrollHeight - list.scrollTop - list.clientHeight < 40) this.unseen.set(false);
  }

  private async loadInfo(): Promise<void> {
    try {
      this.info.set(await this.ai.info());
    } catch {
      // the composer works without the counter
    }
  }

  /** The server did not take the message: mark it, and give its text back unless a new one is being written. */
  private notSent(key: number, prompt: string): void {
    this.messages.update((list) => list.map((m) => (m.key === key ? { ...m, notSent: true } : m)));
    if (this.prompt().trim() === '') this.prompt.set(prompt);
  }

  private add(kind: ChatMessage['kind'], text: string, id?: string): number {
    const key = this.nextKey++;
    this.messages.update((list) => [...list, { key, kind, text, id }]);
    return key;
  }

  /** The reply bubble for an id, created by its first event. */
  private reply(id: string): void {
    if (!this.messages().some((m) => m.kind === 'assistant' && m.id === id)) this.add('assistant', '', id);
  }

  private updateReply(id: string, change: (m: ChatMessage) => ChatMessage): void {
    this.messages.update((list) => list.map((m) => (m.kind === 'assistant' && m.id === id ? change(m) : m)));
  }

  private setTyping(id: string, typing: boolean): void {
    if (this.typingIds().has(id) === typing) return;
    this.typingIds.update((ids) => {
      const next = new Set(ids);
      if (typing) next.add(id);
      else next.delete(id);
      return next;
    });
  }
}

function failure(what: string, err: unknown): string {
  return `${what}: ${err instanceof Error ? err.message : String(err)}`;
}

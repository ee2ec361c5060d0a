import { Component, ElementRef, afterRenderEffect, computed, inject, signal, viewChild } from '@angular/core';
import { takeUntilDestroyed } from '@angular/core/rxjs-interop';
import { AiStreamService } from './ai-stream.service';

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
}

@Component({
  selector: 'app-root',
  templateUrl: './app.html',
  styleUrl: './app.css',
})
export class App {
  private readonly ai = inject(AiStreamService);
  private readonly list = viewChild.required<ElementRef<HTMLElement>>('list');

  protected readonly status = this.ai.status;
  protected readonly connected = computed(() => this.status() === 'Connected');
  protected readonly messages = signal<readonly ChatMessage[]>([]);
  protected readonly prompt = signal('');
  protected readonly canAsk = computed(() => this.connected() && this.prompt().trim() !== '');
  /** Replies whose last `typing` event said true. */
  private readonly typingIds = signal<ReadonlySet<string>>(new Set());
  protected readonly typing = computed(() => this.typingIds().size > 0);
  /** `AskAi` invocations not yet returned: a reply is streaming or waiting for its turn. */
  private readonly pending = signal(0);
  protected readonly streaming = computed(() => this.pending() > 0);

  /** Ids from before a clear: their last events (`typing` false, `completed`) are ignored. */
  private readonly retired = new Set<string>();
  private nextKey = 0;
  /** Follow the reply unless the user scrolled up to read. */
  private stickToBottom = true;

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
    });

    afterRenderEffect(() => {
      this.messages();
      const list = this.list().nativeElement;
      if (this.stickToBottom) list.scrollTop = list.scrollHeight;
    });

    void this.ai.start();
  }

  protected async send(): Promise<void> {
    if (!this.canAsk()) return;
    const prompt = this.prompt();
    this.prompt.set('');
    this.stickToBottom = true;
    this.add('user', prompt);
    this.pending.update((n) => n + 1);
    try {
      await this.ai.ask(prompt);
    } catch (err) {
      this.add(
        'error',
        this.connected() ? failure('The message could not be sent', err) : 'The connection was lost before the reply completed.',
      );
    } finally {
      this.pending.update((n) => n - 1);
    }
  }

  protected async stop(): Promise<void> {
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

  /** Enter sends; Shift+Enter (and Enter while composing with an IME) inserts a newline. */
  protected onEnter(event: Event): void {
    const key = event as KeyboardEvent;
    if (key.shiftKey || key.isComposing) return;
    key.preventDefault();
    void this.send();
  }

  protected onScroll(): void {
    const list = this.list().nativeElement;
    this.stickToBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  }

  private add(kind: ChatMessage['kind'], text: string, id?: string): void {
    this.messages.update((list) => [...list, { key: this.nextKey++, kind, text, id }]);
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

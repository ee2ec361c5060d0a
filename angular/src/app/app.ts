import { Component, ElementRef, Injector, afterNextRender, afterRenderEffect, computed, inject, signal, viewChild } from '@angular/core';
import { takeUntilDestroyed } from '@angular/core/rxjs-interop';
import { check, isImage, pickerAccept, pickerHint, sizeText, takesImages } from '../../../wwwroot/js/chat/attachments.js';
import { downloadFile } from '../../../wwwroot/js/chat/download.js';
import { type ReplyEnd, type ReplyFollower, followReply } from '../../../wwwroot/js/chat/reply-follower.js';
import { AiStreamService, AttachmentInfo, ChatInfo, ConversationEntry, ReplyInfo, SearchResult } from './ai-stream.service';
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
  /** The reply ended because Stop was asked for. */
  readonly stopped?: boolean;
  /** The reply stopped at a length limit: "Cut short", and Continue. */
  readonly cut?: boolean;
  /** A user message's place in the stored conversation (for Edit). */
  readonly index?: number;
  /** "N tokens (P in, C out)", where the provider reported them. */
  readonly usage?: string;
  /** The model that wrote a reply. */
  readonly model?: string;
  /** A user message the server did not take (rejected, or an error before any reply). */
  readonly notSent?: boolean;
  /** A user message whose reply the server never finished (killed mid-reply, or the store
   * failed): GetConversation's `interrupted`. Continue answers it. */
  readonly replyInterrupted?: boolean;
  /** A user message's files: an image shows as a thumbnail (`url`, once known), a file as a chip. */
  readonly attachments?: readonly ShownAttachment[];
}

interface ShownAttachment {
  readonly id?: string;
  readonly name: string;
  readonly type: string;
  readonly size: number;
  readonly image: boolean;
}

/** A file chosen in the composer, before it is sent: uploaded when the message is. */
interface ChosenFile {
  readonly key: number;
  readonly file: File;
  readonly image: boolean;
  /** A preview of an image (an object URL, revoked when the chip goes). */
  readonly url?: string;
  /** UploadAttachment's id, once uploaded (a retry after a refusal of another file reuses it). */
  uploaded?: AttachmentInfo;
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
  private readonly injector = inject(Injector);
  private readonly list = viewChild.required<ElementRef<HTMLElement>>('list');
  private readonly themeButton = viewChild.required<ElementRef<HTMLButtonElement>>('themeBtn');

  /** The connection's state, but Connected only once the conversation is loaded (sending is possible). */
  protected readonly status = computed(() => {
    const status = this.ai.status();
    return status === 'Connected' && !this.ready() ? 'Connecting' : status;
  });
  /** The conversation is loaded: sending before that would race the load. */
  private readonly ready = signal(false);
  protected readonly connected = computed(() => this.status() === 'Connected');
  protected readonly messages = signal<readonly ChatMessage[]>([]);
  protected readonly prompt = signal('');
  protected readonly info = signal<ChatInfo | null>(null);
  /** Code points, as the server counts. */
  protected readonly length = computed(() => [...this.prompt()].length);
  protected readonly limit = computed(() => this.info()?.maxMessageLength ?? Infinity);
  protected readonly overLimit = computed(() => this.length() > this.limit());
  protected readonly showCounter = computed(() => this.length() >= this.limit() * COUNTER_FROM);
  protected readonly canAsk = computed(
    () =>
      this.connected() &&
      (this.prompt().trim() !== '' || (this.files().length > 0 && this.editing() === null)) &&
      !this.overLimit() &&
      !this.uploading(),
  );

  // -- attachments: chosen by picker, drop or paste; uploaded with the message --------------
  protected readonly files = signal<readonly ChosenFile[]>([]);
  /** Why a file was refused (here or by the server), next to the composer; the typed text stays. */
  protected readonly attachError = signal<string | null>(null);
  protected readonly uploading = signal(false);
  protected readonly attachLimits = computed(() => this.info()?.attachments ?? null);
  protected readonly canAttach = computed(() => (this.attachLimits()?.maxFiles ?? 0) > 0);
  /** The open conversation's model reads images (GetChatInfo's visionModels). */
  protected readonly takesImages = computed(() => takesImages(this.info(), this.conversationModel()));
  /** Images shown again after a reload (GetAttachment), by attachment id. */
  protected readonly imageUrls = signal<ReadonlyMap<string, string>>(new Map());
  protected readonly dragging = signal(false);
  /** Replies running in the conversation, by reply id. */
  private readonly running = signal<ReadonlySet<string>>(new Set());
  protected readonly typing = computed(() => this.running().size > 0);
  /** `StartReply` invocations not yet returned. */
  private readonly starting = signal(0);
  protected readonly streaming = computed(() => this.running().size > 0 || this.starting() > 0);
  /** The conversation shown; at first the default one, which is the seed's history. */
  protected conversationId = localStorage.getItem(CONVERSATION_KEY) ?? 'default';
  protected readonly conversations = signal<readonly ConversationEntry[]>([]);
  /** The phone's conversation panel is open. */
  protected readonly sidebarOpen = signal(false);
  /** A clear that Undo can take back: the conversation it emptied. */
  protected readonly undoable = signal<string | null>(null);
  private readonly followers = new Map<string, Follower>();
  /** New content arrived below while the reader was scrolled up. */
  protected readonly unseen = signal(false);
  /** Seconds until the next connection attempt, while one is waited for. */
  protected readonly retryIn = signal<number | null>(null);
  /** The search box's text; the results replace the list while it holds any. */
  protected readonly searchText = signal('');
  protected readonly searchResults = signal<readonly SearchResult[]>([]);
  protected readonly searchMore = signal(false);
  /** What the search found, or why it failed; null while no search is shown. */
  protected readonly searchStatus = signal<string | null>(null);
  private searchPage = 0;
  private searchTimer: ReturnType<typeof setTimeout> | undefined;

  // -- the open conversation's model and custom instructions (SetModel, SetInstructions)
  protected readonly models = computed(() => this.info()?.models ?? []);
  /** Replies are labelled with their model when the server offers several. */
  protected readonly showModels = computed(() => this.models().length > 1);
  protected readonly maxInstructions = computed(() => this.info()?.maxInstructionsLength ?? 0);
  protected readonly conversationModel = signal('');
  protected readonly savedInstructions = signal('');
  protected readonly instructionsDraft = signal('');
  protected readonly instructionsOpen = signal(false);
  /** What the last save said: "Saved.", or the server's refusal (`error`). */
  protected readonly instructionsStatus = signal<{ text: string; error: boolean } | null>(null);
  protected readonly instructionsLength = computed(() => [...this.instructionsDraft().trim()].length);
  protected readonly instructionsOver = computed(() => this.instructionsLength() > this.maxInstructions());

  private nextKey = 0;
  /** The log's height at the last render: the reader was at the bottom if within 40 px of it. */
  private lastHeight = 0;
  /** The reader sent a message or jumped: follow whatever happened to the scroll position. */
  private follow = true;

  constructor() {
    // The connection dropped: the replies go on on the server; reconnecting resumes them.
    this.ai.connectionLost$.pipe(takeUntilDestroyed()).subscribe(() => {
      this.ready.set(false);
      for (const follower of this.followers.values()) follower.stream?.dispose();
    });
    this.ai.reconnected$.pipe(takeUntilDestroyed()).subscribe(() => void this.onConnected(true));

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

    // the page's theme toggle (wwwroot/js/theme.js, bundled as a global script)
    afterNextRender(() => ChatTheme.bind(this.themeButton().nativeElement));

    void this.ai.start().then(() => this.onConnected(false));
  }

  /** Connected (again): who we are, the limits, and the conversation with its running reply. */
  private async onConnected(again: boolean): Promise<void> {
    this.ready.set(false);
    try {
      await this.load(again);
    } finally {
      this.ready.set(true);
    }
  }

  private async load(again: boolean): Promise<void> {
    let same = false;
    try {
      const kept = localStorage.getItem(GUEST_KEY);
      const guest = await this.ai.useGuest(kept);
      if (guest !== null) localStorage.setItem(GUEST_KEY, guest);
      same = guest === null || guest === kept;
    } catch {
      // an older server: the seed's per-connection conversation
    }
    await this.loadInfo();
    if (!same) this.conversationId = 'default';
    await this.refreshList();
    if (!this.conversations().some((c) => c.id === this.conversationId)) this.conversationId = 'default';
    try {
      await this.open(this.conversationId);
    } catch {
      this.add('notice', 'The conversation could not be loaded.');
    }
    if (again) this.add('notice', same ? 'Reconnected.' : 'Reconnected. The conversation was reset.');
  }

  /** Shows the conversation and follows the reply running in it. */
  private async open(id: string): Promise<void> {
    const conversation = await this.ai.getConversation(id);
    this.stopFollowing();
    this.conversationId = conversation.id;
    localStorage.setItem(CONVERSATION_KEY, conversation.id);
    this.undoable.set(null);
    this.conversationModel.set(conversation.model ?? this.models()[0] ?? '');
    this.savedInstructions.set(conversation.instructions ?? '');
    this.instructionsDraft.set(conversation.instructions ?? '');
    this.instructionsStatus.set(null);
    const shown: ChatMessage[] = conversation.messages.map((m, index) =>
      m.role === 'user'
        ? {
            key: this.nextKey++,
            kind: 'user',
            text: m.content,
            index,
            replyInterrupted: m.interrupted === true,
            attachments: m.attachments?.map((a) => ({ ...a, image: a.type.startsWith('image/') })),
          }
        : { key: this.nextKey++, kind: 'assistant', text: m.content, done: true, cut: m.cut === 'length', model: m.model },
    );
    void this.loadImages(conversation.id, shown);
    this.messages.set(shown);
    this.storedCount = shown.length;
    this.editing.set(null);
    const reply = conversation.reply;
    if (reply && reply.running) {
      let userKey: number | undefined;
      if (reply.continues) {
        const last = [...shown].reverse().find((m) => m.kind === 'assistant');
        if (last) this.messages.update((list) => list.map((m) => (m === last ? { ...m, id: reply.replyId, done: false } : m)));
      } else if (reply.userMessage !== null) {
        userKey = this.add('user', reply.userMessage);
        const files = reply.userAttachments?.map((a) => ({ ...a, image: a.type.startsWith('image/') }));
        if (files?.length) {
          this.messages.update((list) => list.map((m) => (m.key === userKey ? { ...m, attachments: files } : m)));
          void this.loadImages(conversation.id, this.messages().filter((m) => m.key === userKey));
        }
      }
      this.followReply(reply, userKey, reply.userMessage ?? '', reply.continues ? 'continue' : 'send');
    }
  }

  /** Follows a reply by chunk number (ResumeReply): after a reload or reconnect, from its start. */
  private followReply(
    reply: ReplyInfo,
    userKey: number | undefined,
    prompt: string,
    kind: ReplyKind = 'send',
    unanswered?: number,
  ): void {
    const id = reply.replyId;
    const follower: Follower = { kind, unanswered, stream: null };
    this.followers.set(id, follower);
    this.running.update((ids) => new Set(ids).add(id));
    // the page's own follower (wwwroot/js/chat/reply-follower.js): in order, no gap, no duplicate
    follower.stream = followReply({
      subscribe: (after, observer) => {
        const subscription = this.ai.resumeReply(reply.conversationId, after).subscribe(observer);
        return { dispose: () => subscription.unsubscribe() };
      },
      onText: (text) => {
        this.reply(id);
        this.updateReply(id, (m) => ({ ...m, text: m.text + text }));
      },
      onEnd: (end) => this.finishReply(id, follower, userKey, prompt, end),
      // a lost connection: reconnecting opens the conversation and follows the reply again
      connected: () => this.connected(),
      followError: 'The reply could not be followed.',
    });
  }

  private finishReply(id: string, follower: Follower, userKey: number | undefined, prompt: string, end: ReplyEnd): void {
    if (this.followers.get(id) !== follower) return;
    this.followers.delete(id);
    this.running.update((ids) => {
      const next = new Set(ids);
      next.delete(id);
      return next;
    });
    if (end.withdrawn) {
      // taken back by the content filter: nothing of it stays, on screen or stored
      if (follower.kind === 'regenerate' || follower.kind === 'continue') {
        // the reply it replaced or extended is still stored: show it again, then why
        void this.refreshList();
        void this.open(this.conversationId).then(() => this.add('error', end.error ?? 'The reply was withdrawn.', id));
        return;
      }
      this.messages.update((list) => list.filter((m) => !(m.kind === 'assistant' && m.id === id)));
    }
    if (end.outcome === 'error') {
      // an error before any text replaces the empty reply bubble
      this.messages.update((list) => list.filter((m) => !(m.kind === 'assistant' && m.id === id && m.text === '')));
      this.add('error', end.error ?? 'The reply failed.', id);
    }
    // failed or stopped before any text: nothing was stored
    if (!end.produced && end.outcome !== 'completed' && userKey !== undefined) this.notSent(userKey, prompt);
    // nothing was stored: the interrupted message still waits for its reply
    if (!end.produced && end.outcome !== 'completed') this.markInterrupted(follower.unanswered);
    const u = end.usage;
    const n = (x: number) => x.toLocaleString('en');
    const usage = u ? `${n(u.total_tokens)} tokens (${n(u.prompt_tokens)} in, ${n(u.completion_tokens)} out)` : undefined;
    this.updateReply(id, (m) => ({ ...m, done: true, stopped: m.stopped || end.outcome === 'stopped', cut: end.cut === 'length', usage }));
    void this.refreshList();
    if (end.produced && follower.kind === 'send') this.storedCount += 2;
    // regenerate, edit and continue rewrote the stored conversation: show it as stored
    else if (end.produced) void this.open(this.conversationId);
  }

  // -- regenerate, edit, continue -------------------------------------------------------------
  /** The last reply, which Regenerate (and, when it was stopped or cut short, Continue) act on; none when
   * the conversation ends with a question (one whose reply was interrupted). */
  protected readonly lastReplyKey = computed(() => {
    const turns = this.messages().filter((m) => m.kind === 'assistant' || (m.kind === 'user' && !m.notSent));
    const last = turns[turns.length - 1];
    return last?.kind === 'assistant' ? last.key : null;
  });
  protected readonly editing = signal<number | null>(null);
  private storedCount = 0;

  protected async rewrite(kind: 'regenerate' | 'continue'): Promise<void> {
    if (this.streaming() || !this.connected()) return;
    const last = this.lastReplyKey();
    const unanswered = this.unmarkInterrupted();
    this.starting.update((n) => n + 1);
    try {
      const reply =
        kind === 'regenerate'
          ? await this.ai.regenerateReply(this.conversationId)
          : await this.ai.continueReply(this.conversationId);
      // ContinueReply of an interrupted question answers it (`continues: false`): a new reply under it
      if (kind === 'regenerate' || reply.continues) {
        this.messages.update((list) =>
          kind === 'regenerate'
            ? list.filter((m) => m.key !== last)
            : list.map((m) => (m.key === last ? { ...m, id: reply.replyId, done: false, stopped: false, cut: false, usage: undefined } : m)),
        );
      }
      this.followReply(reply, undefined, '', kind, unanswered);
    } catch (err) {
      this.markInterrupted(unanswered);
      this.add('error', serverText(err) ?? failure(`Could not ${kind} the reply`, err));
    } finally {
      this.starting.update((n) => n - 1);
    }
  }

  protected beginEdit(m: ChatMessage): void {
    if (m.index === undefined || this.streaming()) return;
    this.editing.set(m.index);
    this.prompt.set(m.text);
  }

  protected cancelEdit(): void {
    this.editing.set(null);
    this.prompt.set('');
  }

  // -- the conversation's model and custom instructions --------------------------------------
  protected async chooseModel(select: HTMLSelectElement): Promise<void> {
    const id = this.conversationId;
    try {
      const entry = await this.ai.setModel(id, select.value);
      if (id === this.conversationId) this.conversationModel.set(entry.model ?? select.value);
    } catch (err) {
      select.value = this.conversationModel();
      this.add('error', serverText(err) ?? failure('The model could not be changed', err));
    }
  }

  protected toggleInstructions(): void {
    this.instructionsOpen.set(!this.instructionsOpen());
  }

  /** Saves the instructions; a refusal is said next to them, and the text stays to fix. */
  protected async saveInstructions(): Promise<void> {
    const id = this.conversationId;
    try {
      const entry = await this.ai.setInstructions(id, this.instructionsDraft());
      if (id !== this.conversationId) return;
      this.savedInstructions.set(entry.instructions ?? '');
      this.instructionsDraft.set(entry.instructions ?? '');
      this.instructionsStatus.set({ text: entry.instructions ? 'Saved.' : 'Instructions removed.', error: false });
    } catch (err) {
      this.instructionsStatus.set({ text: serverText(err) ?? failure('The instructions could not be saved', err), error: true });
    }
  }

  // -- conversations ------------------------------------------------------------------------
  private async refreshList(): Promise<void> {
    try {
      this.conversations.set(await this.ai.listConversations());
    } catch {
      // the list stays as it was
    }
  }

  protected async openConversation(id: string): Promise<void> {
    this.sidebarOpen.set(false);
    try {
      await this.open(id);
    } catch (err) {
      this.add('error', serverText(err) ?? failure('The conversation could not be opened', err));
    }
  }

  protected async newConversation(): Promise<void> {
    try {
      const created = await this.ai.createConversation();
      await this.openConversation(created.id);
      await this.refreshList();
    } catch (err) {
      this.add('error', serverText(err) ?? failure('A new conversation could not be started', err));
    }
  }

  protected async renameConversation(c: ConversationEntry): Promise<void> {
    const title = prompt('New name for the conversation', c.title);
    if (title === null || !title.trim()) return;
    try {
      await this.ai.renameConversation(c.id, title);
    } catch (err) {
      this.add('error', serverText(err) ?? failure('The conversation could not be renamed', err));
    }
    await this.refreshList();
  }

  protected async deleteConversation(c: ConversationEntry): Promise<void> {
    if (!confirm(`Delete “${c.title}”? This cannot be undone.`)) return;
    try {
      await this.ai.deleteConversation(c.id);
    } catch (err) {
      this.add('error', serverText(err) ?? failure('The conversation could not be deleted', err));
      return;
    }
    await this.refreshList();
    if (c.id === this.conversationId) await this.openConversation(this.conversations()[0]?.id ?? 'default');
  }

  protected async undoClear(): Promise<void> {
    const id = this.undoable();
    this.undoable.set(null);
    if (id !== null && (await this.ai.restoreConversation(id).catch(() => false)) && id === this.conversationId) {
      await this.open(id);
    }
    await this.refreshList();
  }

  // -- search, export, and deleting everything (issue 23) --------------------------------------
  protected onSearchInput(text: string): void {
    this.searchText.set(text);
    clearTimeout(this.searchTimer);
    this.searchTimer = setTimeout(() => void this.search(), SEARCH_DELAY);
  }

  /** The first page of the query in the box, or (`more`) the next page of it. */
  protected async search(more = false): Promise<void> {
    clearTimeout(this.searchTimer);
    const query = this.searchText().trim();
    if (!query) {
      this.searchStatus.set(null);
      this.searchResults.set([]);
      this.searchMore.set(false);
      return;
    }
    const page = more ? this.searchPage + 1 : 1;
    try {
      const found = await this.ai.searchConversations(query, page, SEARCH_PAGE_SIZE);
      if (this.searchText().trim() !== query) return; // typed on meanwhile: that search is next
      this.searchPage = page;
      const results = more ? [...this.searchResults(), ...found.results] : found.results;
      this.searchResults.set(results);
      this.searchMore.set(found.more);
      const count = results.length;
      this.searchStatus.set(
        count === 0
          ? 'No conversation matches.'
          : `${count}${found.more ? '+' : ''} conversation${count === 1 && !found.more ? '' : 's'} found.`,
      );
    } catch (err) {
      this.searchStatus.set(serverText(err) ?? failure('The search failed', err));
    }
  }

  /** Downloads the open conversation as the server renders it. */
  protected async exportConversation(format: 'markdown' | 'json'): Promise<void> {
    try {
      const file = await this.ai.exportConversation(this.conversationId, format);
      downloadFile(file);
    } catch (err) {
      this.add('error', serverText(err) ?? failure('The conversation could not be exported', err));
    }
  }

  /** Every conversation deleted on the server, after a confirmation; a guest starts over as a new guest. */
  protected async deleteAllData(): Promise<void> {
    if (!confirm('Delete all your conversations and everything the server keeps of them? This cannot be undone.')) return;
    try {
      await this.ai.deleteAllMyData();
    } catch (err) {
      this.add('error', serverText(err) ?? failure('Your data could not be deleted', err));
      return;
    }
    this.stopFollowing();
    this.sidebarOpen.set(false);
    this.searchText.set('');
    await this.search();
    try {
      const guest = await this.ai.useGuest(null);
      if (guest !== null) localStorage.setItem(GUEST_KEY, guest);
    } catch {
      // the seed's per-connection conversation
    }
    this.conversationId = 'default';
    await this.refreshList();
    await this.openConversation('default');
    this.add('notice', 'All your conversations were deleted.');
  }

  protected snippetParts(result: SearchResult): [string, string, string] {
    const [start, end] = result.match;
    return [result.snippet.slice(0, start), result.snippet.slice(start, end), result.snippet.slice(end)];
  }

  private stopFollowing(): void {
    for (const follower of this.followers.values()) follower.stream?.dispose();
    this.followers.clear();
    this.running.set(new Set());
  }

  /** Each image of the shown messages, fetched once (GetAttachment) to show its thumbnail. */
  private async loadImages(conversationId: string, shown: readonly ChatMessage[]): Promise<void> {
    for (const m of shown) {
      for (const a of m.attachments ?? []) {
        if (!a.image || a.id === undefined || this.imageUrls().has(a.id)) continue;
        try {
          const { url } = await this.ai.getAttachment(conversationId, a.id);
          this.imageUrls.update((urls) => new Map(urls).set(a.id!, url));
        } catch {
          // the chip with its name still shows
        }
      }
    }
  }

  protected imageUrl(a: ShownAttachment): string | undefined {
    return a.id !== undefined ? this.imageUrls().get(a.id) : undefined;
  }

  /** Files from the picker, a drop or a paste: each checked as the server will check it (the
   * shared attachments.js), so a refusal is said before any upload (the server checks again). */
  protected addFiles(list: FileList | readonly File[] | null | undefined): void {
    const limits = this.attachLimits();
    if (!list || list.length === 0 || limits === null) return;
    const { accepted, refused } = check(Array.from(list), {
      limits,
      chosen: this.files().length,
      model: this.conversationModel() || this.info()?.model || '',
      readsImages: this.takesImages(),
    });
    this.attachError.set(refused);
    for (const file of accepted) {
      const image = isImage(file);
      const url = image ? URL.createObjectURL(file) : undefined;
      this.files.update((files) => [...files, { key: this.nextKey++, file, image, url }]);
    }
  }

  /** The picker's `accept` and hint (text files only for a model that reads no images). */
  protected pickerAccept(): string | null {
    const limits = this.attachLimits();
    return limits === null ? null : pickerAccept(limits, this.takesImages());
  }

  protected pickerHint(): { text: string; reason: string } {
    return pickerHint(this.takesImages());
  }

  protected removeFile(chosen: ChosenFile): void {
    if (chosen.url) URL.revokeObjectURL(chosen.url);
    this.files.update((files) => files.filter((f) => f !== chosen));
    this.attachError.set(null);
  }

  /** A chip's Remove button: the file goes, and the focus moves to the chip that takes its place
   * (the one before it when it was the last), or to the input when none is left, as on the page. */
  protected removeChip(chosen: ChosenFile, prompt: HTMLTextAreaElement): void {
    const at = this.files().indexOf(chosen);
    this.removeFile(chosen);
    afterNextRender(
      () => {
        const buttons = document.querySelectorAll<HTMLButtonElement>('#chosen-files .chip-remove');
        (buttons[Math.min(at, buttons.length - 1)] ?? prompt).focus();
      },
      { injector: this.injector },
    );
  }

  protected pickFiles(input: HTMLInputElement): void {
    this.addFiles(input.files);
    input.value = ''; // the same file can be chosen again
  }

  protected onDragOver(event: DragEvent): void {
    if (!this.canAttach() || !event.dataTransfer?.types.includes('Files')) return;
    event.preventDefault();
    this.dragging.set(true);
  }

  protected onDrop(event: DragEvent): void {
    this.dragging.set(false);
    if (!this.canAttach() || !event.dataTransfer?.files.length) return;
    event.preventDefault();
    this.addFiles(event.dataTransfer.files);
  }

  /** A pasted image (a screenshot) or file is attached; pasted text is typed as usual. */
  protected onPaste(event: ClipboardEvent): void {
    const files = event.clipboardData?.files;
    if (!this.canAttach() || !files || files.length === 0) return;
    event.preventDefault();
    this.addFiles(files);
  }

  protected sizeText(bytes: number): string {
    return sizeText(bytes);
  }

  /** Uploads the chosen files (those not uploaded yet); null when one was refused: its chip goes,
   * the refusal is shown next to the composer, and the text and the other files stay. */
  private async uploadChosen(): Promise<AttachmentInfo[] | null> {
    const uploaded: AttachmentInfo[] = [];
    this.uploading.set(true);
    try {
      for (const chosen of this.files()) {
        if (chosen.uploaded === undefined) {
          try {
            chosen.uploaded = await this.ai.uploadAttachment(this.conversationId, chosen.file);
          } catch (err) {
            this.removeFile(chosen);
            this.attachError.set(serverText(err) ?? failure(`${chosen.file.name} could not be attached`, err));
            return null;
          }
        }
        uploaded.push(chosen.uploaded);
      }
      return uploaded;
    } finally {
      this.uploading.set(false);
    }
  }

  protected async send(): Promise<void> {
    if (!this.canAsk()) return;
    const prompt = this.prompt();
    const chosen = this.editing() === null ? this.files() : [];
    let attachments: AttachmentInfo[] = [];
    if (chosen.length > 0) {
      const uploaded = await this.uploadChosen();
      if (uploaded === null) return; // refused: said next to the composer, the text kept
      attachments = uploaded;
      this.files.set([]);
    }
    this.attachError.set(null);
    this.prompt.set('');
    this.follow = true;
    this.unseen.set(false);
    const editing = this.editing();
    this.editing.set(null);
    if (editing !== null) {
      // what followed the edited message is replaced
      const from = this.messages().findIndex((m) => m.kind === 'user' && m.index === editing);
      if (from >= 0) this.messages.update((list) => list.slice(0, from));
    }
    const unanswered = this.unmarkInterrupted();
    const shownFiles = attachments.map((a, i) => ({ ...a, image: chosen[i].image }));
    for (const [i, a] of attachments.entries()) {
      const url = chosen[i].url;
      if (url) this.imageUrls.update((urls) => new Map(urls).set(a.id, url));
    }
    const key = this.addUser(prompt, editing ?? this.storedCount, shownFiles);
    this.starting.update((n) => n + 1);
    try {
      const reply =
        editing !== null
          ? await this.ai.editMessage(this.conversationId, editing, prompt)
          : attachments.length > 0
            ? await this.ai.startReplyWithAttachments(this.conversationId, prompt, attachments.map((a) => a.id))
            : await this.ai.startReply(this.conversationId, prompt);
      this.followReply(reply, key, prompt, editing === null ? 'send' : 'edit', unanswered);
    } catch (err) {
      this.markInterrupted(unanswered);
      this.notSent(key, prompt);
      const text = serverText(err) ?? failure('The message could not be sent', err);
      if (chosen.length > 0 && this.files().length === 0) {
        // the files still wait on the server (uploaded): given back as chips, the refusal beside them
        this.files.set(chosen);
        this.attachError.set(text);
      } else {
        this.add('error', text);
      }
    } finally {
      this.starting.update((n) => n - 1);
    }
  }

  protected async stop(): Promise<void> {
    try {
      await this.ai.stopReply(this.conversationId);
    } catch (err) {
      this.add('error', failure('Could not stop the reply', err));
    }
  }

  protected async clear(): Promise<void> {
    try {
      await this.ai.clearConversation(this.conversationId);
    } catch (err) {
      this.add('error', failure('Could not clear the conversation', err));
      return;
    }
    this.stopFollowing();
    this.messages.set([]);
    this.unseen.set(false);
    this.undoable.set(this.conversationId);
    void this.refreshList();
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
    if (key.key === 'Escape') return;
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

  /** A reply starts: the interrupted mark goes. Returns its message's key, to mark again if no reply text comes. */
  private unmarkInterrupted(): number | undefined {
    const marked = this.messages().find((m) => m.replyInterrupted);
    if (marked) this.messages.update((list) => list.map((m) => (m === marked ? { ...m, replyInterrupted: false } : m)));
    return marked?.key;
  }

  private markInterrupted(key: number | undefined): void {
    if (key === undefined) return;
    this.messages.update((list) => list.map((m) => (m.key === key ? { ...m, replyInterrupted: true } : m)));
  }

  private addUser(text: string, index: number, attachments?: readonly ShownAttachment[]): number {
    const key = this.nextKey++;
    const files = attachments && attachments.length > 0 ? attachments : undefined;
    this.messages.update((list) => [...list, { key, kind: 'user', text, index, attachments: files }]);
    return key;
  }

  private add(kind: ChatMessage['kind'], text: string, id?: string): number {
    const key = this.nextKey++;
    this.messages.update((list) => [...list, { key, kind, text, id }]);
    return key;
  }

  /** The reply bubble for an id, created by its first event. */
  private reply(id: string): void {
    if (this.messages().some((m) => m.kind === 'assistant' && m.id === id)) return;
    const key = this.nextKey++;
    const model = this.conversationModel() || undefined;
    this.messages.update((list) => [...list, { key, kind: 'assistant', text: '', id, model }]);
  }

  private updateReply(id: string, change: (m: ChatMessage) => ChatMessage): void {
    this.messages.update((list) => list.map((m) => (m.kind === 'assistant' && m.id === id ? change(m) : m)));
  }

}

type ReplyKind = 'send' | 'edit' | 'regenerate' | 'continue';

interface Follower {
  kind: ReplyKind;
  /** The interrupted question this reply took the mark from (marked again if no text comes). */
  unanswered?: number;
  /** Set once following starts (just after the follower is registered). */
  stream: ReplyFollower | null;
}

declare const ChatTheme: { bind(button: HTMLButtonElement): void };

const GUEST_KEY = 'chat-guest';
/** Results per SearchConversations page, and how long typing pauses before the search runs. */
const SEARCH_PAGE_SIZE = 20;
const SEARCH_DELAY = 250;
const CONVERSATION_KEY = 'chat-conversation';
const HUB_ERROR = 'HubException: ';

/** The text for the user in a HubException the server raised, if it is one. */
function serverText(err: unknown): string | null {
  const text = err instanceof Error ? err.message : String(err);
  const at = text.indexOf(HUB_ERROR);
  return at >= 0 ? text.slice(at + HUB_ERROR.length) : null;
}

function failure(what: string, err: unknown): string {
  return `${what}: ${err instanceof Error ? err.message : String(err)}`;
}

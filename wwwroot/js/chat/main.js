// The chat page's wiring: the page's state, and what each event does with the hub
// (hub.js), the reply follower (reply-follower.js) and the view (view.js).
//
// Query options: ?transport=WebSockets|ServerSentEvents|LongPolling, ?protocol=messagepack.
// Signing in: open the page as /#token=<JWT>; the token moves to sessionStorage (the fragment
// never reaches the server or its logs). Without it the page is a guest: the server issues a
// guest id (UseGuestSession) that localStorage keeps, so a reload keeps the conversations.
//
// Replies belong to their conversation on the server: the page starts one with StartReply
// and follows it with the ResumeReply stream, by chunk number. After a reload or a dropped
// connection it opens the conversation again and follows the running reply from its start,
// so the reply is shown whole, once.
//
// A reply cut at a length limit ends with `cut: "length"` (and is stored so): it is marked
// "Cut short" and offered Continue. A reply withdrawn by a late content filter signal ends
// with `withdrawn: true`: its text is taken off the screen, as the server took it from the
// history, and the policy text is shown instead.

import * as attachments from "./attachments.js";
import * as hub from "./hub.js";
import { DEFAULT, serverText, storage, token } from "./hub.js";
import { followReply } from "./reply-follower.js";
import * as view from "./view.js";
import { el } from "./view.js";

/** Results per SearchConversations page. */
const SEARCH_PAGE_SIZE = 20;
/** How long typing pauses before the search runs. */
const SEARCH_DELAY = 250;
const CONVERSATION_KEY = "chat-conversation";

/** The page's state: what it shows is drawn from this, never read back from the DOM. */
const state = {
    /** The connection pill's text: Connecting, Connected, Reconnecting, Disconnected. */
    status: "Connecting",
    /** Connected, and the conversation is loaded: sending before that would race the load. */
    ready: false,
    everConnected: false,
    /** The Retry button stopped the automatic reconnect: onclose starts again at once. */
    retryingNow: false,
    closedRetry: 0,
    /** A reply is being followed (Stop shows; nothing else starts). */
    streaming: false,
    /** The reply being followed: its conversation, follower, bubbles, and how it started. */
    active: null,
    maxLength: Infinity,
    /** The conversation shown, and how many stored messages it has (the index of the next one). */
    conversationId: storage.getItem(CONVERSATION_KEY) || DEFAULT,
    storedCount: 0,
    /** What the log shows, in order: `{role: "user", bubble, index, text}` and `{role: "assistant", message}`. */
    shown: [],
    /** The user message whose reply was interrupted, and its note: `{entry, note}`. */
    interrupted: null,
    /** Set while the composer edits an earlier message: its index. */
    editing: null,
    /** GetChatInfo, the models a conversation may pick, and the open conversation's choices. */
    chatInfo: null,
    models: [],
    maxInstructions: 0,
    conversationModel: "",
    savedInstructions: "",
    instructionsOpen: false,
    conversations: [],
    search: { timer: 0, query: "", page: 0, count: 0 },
    sidebarOpen: false,
    /** The files chosen for the next message: `{key, file, image, url, uploaded}` (`uploaded`:
     * UploadAttachment's answer and its conversation, reused when another file was refused). */
    files: [],
    nextFileKey: 0,
    /** The chosen files are being uploaded: Send waits, the chips cannot be removed. */
    uploading: false,
    /** Images of the shown messages, by attachment id: an object URL or GetAttachment's data URL. */
    imageUrls: new Map(),
};

const canAct = () => state.status === "Connected" && state.ready;

function setStatus(text) {
    state.status = text;
    view.showStatus(text);
    if (text === "Reconnecting" || text === "Disconnected") state.ready = false;
    view.enableControls(canAct());
    updateComposer();
    updateInstructions();
}

function setStreaming(on) {
    const composerFocused = document.activeElement === el.input || document.activeElement === el.sendBtn;
    state.streaming = on;
    el.stopBtn.hidden = !on;
    setStatus(state.status);
    view.disableReplyActions(on);
    if (on && composerFocused) el.stopBtn.focus(); // keyboard users can stop at once
    if (!on && canAct()) el.input.focus(); // the input is enabled exactly then (setStatus above)
}

/** Returns whether the composer's text is over the length limit. */
function updateComposer() {
    updatePicker();
    return view.showComposer({ maxLength: state.maxLength, canSend: canAct() && !state.streaming, uploading: state.uploading });
}

// -- attachments: chosen by picker, drop or paste; uploaded with the message --------------------
const attachLimits = () => state.chatInfo?.attachments ?? null;
const canAttach = () => (attachLimits()?.maxFiles ?? 0) > 0;
/** The open conversation's model reads images (GetChatInfo's visionModels). */
const readsImages = () => attachments.takesImages(state.chatInfo, state.conversationModel);

function updatePicker() {
    const limits = attachLimits();
    view.showPicker({
        canAttach: canAttach(),
        enabled: canAct() && !state.uploading && state.editing === null,
        accept: limits ? attachments.pickerAccept(limits, readsImages()) : null,
        hint: attachments.pickerHint(readsImages()),
    });
}

function renderFiles() {
    view.showChosenFiles(state.files, { onRemove: removeFile, disabled: state.uploading });
}

/**
 * Files from the picker, a drop or a paste: each checked as the server will check it (the
 * shared attachments.js), so a refusal is said before any upload; the server checks again.
 */
function addFiles(list) {
    const limits = attachLimits();
    if (!list || list.length === 0 || limits === null) return;
    const { accepted, refused } = attachments.check(Array.from(list), {
        limits,
        chosen: state.files.length,
        model: state.conversationModel || state.chatInfo?.model || "",
        readsImages: readsImages(),
    });
    view.showAttachError(refused);
    for (const file of accepted) {
        const image = attachments.isImage(file);
        state.files.push({ key: state.nextFileKey++, file, image, url: image ? URL.createObjectURL(file) : undefined, uploaded: null });
    }
    renderFiles();
}

/** A chip's Remove: the file goes (and its preview); the focus moves to the next chip, or the input. */
function removeFile(chosen, { focus = true } = {}) {
    const at = state.files.indexOf(chosen);
    if (at < 0) return;
    if (chosen.url && !state.imageUrls.has(chosen.uploaded?.info.id)) URL.revokeObjectURL(chosen.url);
    state.files.splice(at, 1);
    view.showAttachError(null);
    renderFiles();
    if (focus) view.focusChip(at);
}

/**
 * Uploads the chosen files not uploaded yet (to this conversation); null when one was refused:
 * its chip goes, the refusal is shown next to the composer, and the text and the other files stay.
 */
async function uploadChosen(conversationId) {
    const uploaded = [];
    state.uploading = true;
    renderFiles();
    updateComposer();
    try {
        for (const chosen of [...state.files]) {
            if (chosen.uploaded?.conversationId !== conversationId) {
                try {
                    chosen.uploaded = { conversationId, info: await hub.uploadAttachment(conversationId, chosen.file) };
                } catch (err) {
                    removeFile(chosen, { focus: false });
                    view.showAttachError(serverText(err) ?? `${chosen.file.name} could not be attached: ${err?.message ?? err}`);
                    return null;
                }
            }
            uploaded.push(chosen.uploaded.info);
        }
        return uploaded;
    } finally {
        state.uploading = false;
        renderFiles();
        updateComposer();
    }
}

/** A message's files as the log shows them; each image's address when the page has it. */
function shownFiles(list) {
    return (list ?? []).map((a) => {
        const image = a.type.startsWith("image/");
        return { ...a, image, url: image ? state.imageUrls.get(a.id) : undefined };
    });
}

/** Each image of a shown message, fetched once (GetAttachment) to show its thumbnail. */
async function loadImages(conversationId, entry, files) {
    for (const a of files) {
        if (!a.image || a.url) continue;
        try {
            const { url } = await hub.getAttachment(conversationId, a.id);
            state.imageUrls.set(a.id, url);
            const chip = entry.bubble.images.get(a.id);
            if (chip?.isConnected) entry.bubble.images.set(a.id, view.showImage(chip, a, url));
        } catch {
            // the chip with its name stays
        }
    }
}

// -- the log: user messages and replies ----------------------------------------------------------
/** A user message; `index` is its place in the stored conversation (for Edit). */
function userMessage(text, index, files = []) {
    const entry = { role: "user", index, text, bubble: null };
    entry.bubble = view.userBubble(text, { onEdit: () => beginEdit(entry), disabled: state.streaming, attachments: files });
    state.shown.push(entry);
    return entry;
}

/** An assistant reply; `model`: the model that wrote it, labelled when the server offers several. */
function assistant(prefix = "", model = state.conversationModel) {
    const labelled = model && (state.models.length > 1 || !state.models.includes(model));
    const message = view.assistant(prefix, labelled ? model : "");
    state.shown.push({ role: "assistant", message });
    return message;
}

/** The last reply shown, if any. */
function lastReply() {
    for (let i = state.shown.length - 1; i >= 0; i--) {
        if (state.shown[i].role === "assistant") return state.shown[i].message;
    }
    return null;
}

function removeReply(message) {
    message.div.remove();
    state.shown = state.shown.filter((e) => e.message !== message);
}

function markInterrupted(entry) {
    const note = view.markInterrupted(entry.bubble, { onContinue: () => startReply("continue"), disabled: state.streaming });
    state.interrupted = { entry, note };
}

/** Takes the interrupted mark away (a reply starts); returns its message, to mark again if none comes. */
function unmarkInterrupted() {
    const marked = state.interrupted;
    if (!marked) return null;
    state.interrupted = null;
    view.unmarkInterrupted(marked.entry.bubble, marked.note);
    return marked.entry;
}

/** Regenerate and Continue under the conversation's last reply. */
function addReplyActions(message, canContinue) {
    view.replyActions(message.div, {
        canContinue,
        onRegenerate: () => startReply("regenerate"),
        onContinue: () => startReply("continue"),
    });
}

function emptyLog() {
    view.clearLog();
    state.shown = [];
    state.interrupted = null;
}

// -- following a reply ---------------------------------------------------------------------------
function showReply(current) {
    view.hideThinking();
    current.reply ??= assistant();
}

/** Follows the conversation's reply from its first chunk (ResumeReply). */
function follow(current) {
    current.follower?.dispose();
    current.follower = followReply({
        subscribe: hub.resumeReply(current.conversationId),
        onText: (text) => {
            showReply(current);
            view.appendSoon(current.reply, text);
        },
        onEnd: (end) => { if (state.active === current) endReply(current, end); },
        // a lost connection: the reply goes on on the server; reconnecting resumes it
        connected: hub.isConnected,
    });
}

/** Stops following the reply shown (another conversation opens, or this one was cleared). */
function dropActive() {
    if (!state.active) return;
    state.active.follower?.dispose();
    state.active = null;
    view.dropPending();
    setStreaming(false);
}

/** The reply ended (`end` as the follower reports it): mark it, and say what became of the message. */
function endReply(current, end) {
    view.flushNow();
    state.active = null;
    view.hideThinking();
    if (end.withdrawn) {
        // taken back by the content filter: nothing of it stays, on screen or stored
        if (current.reply) removeReply(current.reply);
        current.reply = null;
        if (current.kind === "regenerate" || current.kind === "continue") {
            // the reply it replaced or extended is still stored: show it again, then why
            setStreaming(false);
            refreshList();
            openConversation(current.conversationId, { quiet: true }).then(() => view.error(end.error));
            return;
        }
    }
    const produced = end.produced;
    if (current.reply) {
        view.complete(current.reply);
        if (end.outcome === "stopped") view.mark(current.reply.div, "stopped", "Stopped");
        if (end.cut) view.mark(current.reply.div, "cut", "Cut short");
        if (end.usage) view.showUsage(current.reply.div, end.usage);
        if (end.outcome === "stopped" || end.outcome === "completed") {
            addReplyActions(current.reply, end.outcome === "stopped" || Boolean(end.cut));
        }
    }
    // nothing was stored: the interrupted message still waits for its reply
    if (!produced && current.unanswered && state.shown.includes(current.unanswered)) markInterrupted(current.unanswered);
    if (end.outcome === "error" && end.error) view.error(end.error);
    if (current.user && !produced && end.outcome !== "completed") {
        notSent(current); // failed or stopped before any text: nothing was stored
    } else if (current.kind === "send" && produced) {
        state.storedCount += 2;
    }
    setStreaming(false);
    refreshList();
    if (current.kind !== "send" && produced) openConversation(current.conversationId, { quiet: true });
}

/** The message was not taken: say so on its bubble and give its text back to edit or resend. */
function notSent(current) {
    view.mark(current.user.bubble.div, "not-sent", "Not sent");
    if (!el.input.value.trim()) {
        el.input.value = current.text;
        updateComposer();
    }
}

/** Starts a reply: "send" (the composer's text), "edit", "regenerate" or "continue". */
async function startReply(kind) {
    if (state.streaming || state.uploading || !canAct()) return;
    const text = el.input.value;
    const current = { kind, conversationId: state.conversationId, reply: null, user: null, text, follower: null };
    const chosen = kind === "send" ? [...state.files] : [];
    if (kind === "send" || kind === "edit") {
        if (!text.trim() && chosen.length === 0) return; // files alone may be sent
        if (view.length(text) > state.maxLength) { updateComposer(); return; }
    }
    let uploaded = [];
    if (chosen.length > 0) {
        if (state.uploading) return;
        const id = state.conversationId;
        uploaded = await uploadChosen(id);
        // refused (said next to the composer, the text kept), or the page moved on meanwhile
        if (uploaded === null || state.streaming || id !== state.conversationId || !canAct()) return;
        state.files = [];
        renderFiles();
    }
    view.showAttachError(null);
    view.followNext();
    // ContinueReply answers an interrupted message (a new reply under it) rather than
    // extending the last reply; any new reply takes the mark away
    const answering = kind === "continue" && state.interrupted !== null;
    current.unanswered = unmarkInterrupted();
    if (kind === "edit") {
        // what followed the edited message is replaced
        const index = state.editing;
        const at = state.shown.findIndex((e) => e.role === "user" && e.index === index);
        if (at >= 0) {
            view.removeFrom(state.shown[at].bubble.div);
            state.shown = state.shown.slice(0, at);
        }
        current.index = index;
        cancelEdit();
    }
    if (kind === "send" || kind === "edit") {
        const files = uploaded.map((a, i) => ({ ...a, image: chosen[i].image, url: chosen[i].url }));
        for (const a of files) if (a.url) state.imageUrls.set(a.id, a.url);
        current.user = userMessage(text, kind === "edit" ? current.index : state.storedCount, files);
        el.input.value = "";
        updateComposer();
    } else if (kind === "regenerate") {
        const last = lastReply();
        if (last) removeReply(last);
    } else if (!answering) {
        const last = lastReply();
        if (last) removeReply(last);
        current.reply = assistant(last?.renderer.text ?? "", last?.label ?? "");
    }
    view.removeReplyActions();
    state.active = current;
    setStreaming(true);
    if (!current.reply) view.showThinking();
    const id = state.conversationId;
    try {
        if (kind === "send" && uploaded.length > 0) await hub.startReplyWithAttachments(id, text, uploaded.map((a) => a.id));
        else if (kind === "send") await hub.startReply(id, text);
        else if (kind === "edit") await hub.editMessage(id, current.index, text);
        else if (kind === "regenerate") await hub.regenerateReply(id);
        else await hub.continueReply(id);
    } catch (err) {
        if (state.active === current) {
            const error = serverText(err) ?? "The message could not be sent. Please try again.";
            if (chosen.length > 0 && state.files.length === 0) {
                // the files still wait on the server (uploaded): given back as chips, the refusal beside them
                state.files = chosen;
                renderFiles();
                endReply(current, { outcome: "error", error: null, cut: null, withdrawn: false, usage: null, produced: false });
                view.showAttachError(error);
            } else {
                endReply(current, { outcome: "error", error, cut: null, withdrawn: false, usage: null, produced: false });
            }
        }
        return;
    }
    if (state.active === current) follow(current);
}

// -- conversations -------------------------------------------------------------------------
async function refreshList() {
    try {
        state.conversations = await hub.listConversations();
    } catch {
        return;
    }
    renderList();
}

function renderList() {
    const id = state.conversationId;
    const items = state.conversations.some((c) => c.id === id)
        ? state.conversations
        : [{ id, title: "New chat" }, ...state.conversations];
    view.showList(items, id, {
        open: (c) => { openConversation(c.id); closeSidebarOnPhone(); },
        rename: renameConversation,
        remove: deleteConversation,
    });
}

async function renameConversation(c) {
    const title = prompt("New name for the conversation", c.title);
    if (title === null || !title.trim()) return;
    try {
        await hub.renameConversation(c.id, title);
    } catch (err) {
        view.error(serverText(err) ?? "The conversation could not be renamed.");
    }
    refreshList();
}

async function deleteConversation(c) {
    if (!confirm(`Delete “${c.title}”? This cannot be undone.`)) return;
    try {
        await hub.deleteConversation(c.id);
    } catch (err) {
        view.error(serverText(err) ?? "The conversation could not be deleted.");
        return;
    }
    await refreshList();
    if (c.id === state.conversationId) await openConversation(state.conversations[0]?.id ?? DEFAULT);
}

async function newConversation() {
    try {
        const created = await hub.createConversation();
        await openConversation(created.id);
        await refreshList();
        closeSidebarOnPhone();
    } catch (err) {
        view.error(serverText(err) ?? "A new conversation could not be started.");
    }
}

/** Shows a conversation, and follows the reply running in it. */
async function openConversation(id, { quiet = false } = {}) {
    const opened = await hub.getConversation(id).catch(() => null)
        ?? (id !== DEFAULT ? await hub.getConversation(DEFAULT) : null);
    if (!opened) return;
    dropActive();
    state.conversationId = opened.id;
    storage.setItem(CONVERSATION_KEY, state.conversationId);
    cancelEdit();
    emptyLog();
    const messages = opened.messages;
    let last = null;
    showChoices(opened);
    messages.forEach(({ role, content, interrupted, cut, model, attachments: files }, index) => {
        if (role === "user") {
            const shown = shownFiles(files);
            const entry = userMessage(content, index, shown);
            loadImages(opened.id, entry, shown);
            if (interrupted) markInterrupted(entry);
        } else if (role === "assistant") {
            const message = assistant("", model ?? "");
            message.renderer.append(content);
            view.complete(message);
            if (cut) view.mark(message.div, "cut", "Cut short");
            message.cut = Boolean(cut);
            last = message;
        }
    });
    state.storedCount = messages.length;
    const reply = opened.reply;
    if (reply && reply.running !== false) {
        const current = {
            kind: reply.continues ? "continue" : "send",
            conversationId: state.conversationId,
            reply: null,
            user: null,
            text: reply.userMessage ?? "",
            follower: null,
        };
        if (reply.continues && last) {
            removeReply(last);
            current.reply = assistant(last.renderer.text, last.label);
        } else if (reply.userMessage !== null) {
            const shown = shownFiles(reply.userAttachments);
            current.user = userMessage(reply.userMessage, state.storedCount, shown);
            loadImages(opened.id, current.user, shown);
        }
        state.active = current;
        setStreaming(true);
        follow(current);
    } else if (last && messages[messages.length - 1]?.role === "assistant") {
        addReplyActions(last, last.cut);
    }
    renderList();
    view.scrollToEnd();
    if (!quiet) el.input.focus();
}

// -- search, export, and deleting everything -------------------------------------------------------
/** The first page of a new query, or the next page of the current one. */
async function search(more = false) {
    const query = el.searchInput.value.trim();
    if (!query) {
        state.search.query = "";
        view.showSearchPanel(false);
        return;
    }
    const page = more ? state.search.page + 1 : 1;
    let found;
    try {
        found = await hub.searchConversations(query, page, SEARCH_PAGE_SIZE);
    } catch (err) {
        view.showSearchFailed(serverText(err) ?? "The search failed. Please try again.");
        return;
    }
    if (el.searchInput.value.trim() !== query) return; // typed on meanwhile: that search is next
    state.search.query = query;
    state.search.page = page;
    state.search.count = (more ? state.search.count : 0) + found.results.length;
    view.showSearchResults(found.results, {
        more,
        hasMore: found.more,
        count: state.search.count,
        onOpen: async (result) => { await openConversation(result.id); closeSidebarOnPhone(); },
    });
}

/** Downloads the open conversation as the server renders it (ExportConversation). */
async function exportConversation(format) {
    let file;
    try {
        file = await hub.exportConversation(state.conversationId, format);
    } catch (err) {
        view.error(serverText(err) ?? "The conversation could not be exported.");
        return;
    }
    view.download(file);
}

/** Every conversation deleted on the server, after a confirmation; a guest starts over as a new guest. */
async function deleteAllData() {
    if (!confirm("Delete all your conversations and everything the server keeps of them? This cannot be undone.")) return;
    try {
        await hub.deleteAllMyData();
    } catch (err) {
        view.error(serverText(err) ?? "Your data could not be deleted.");
        return;
    }
    dropActive();
    if (!token) {
        hub.forgetGuest();
        await hub.identify().catch(() => false);
    }
    el.searchInput.value = "";
    await search();
    state.conversationId = DEFAULT;
    await refreshList();
    await openConversation(DEFAULT, { quiet: true });
    closeSidebarOnPhone();
    view.notice("All your conversations were deleted.");
}

// -- the conversation's model and custom instructions ----------------------------------------
/** The open conversation's choices, as GetConversation returned them. */
function showChoices(opened) {
    state.conversationModel = opened.model ?? state.models[0] ?? "";
    el.modelSelect.value = state.conversationModel;
    nameModel(state.conversationModel);
    state.savedInstructions = opened.instructions ?? "";
    el.instructionsInput.value = state.savedInstructions;
    view.showInstructionsStatus("");
    updateInstructions();
}

function updateInstructions() {
    view.showInstructions({ maxInstructions: state.maxInstructions, saved: state.savedInstructions, canSave: canAct() });
}

function setInstructionsOpen(open) {
    state.instructionsOpen = open;
    view.setInstructionsOpen(open);
}

/** Saves the instructions; a refusal is said next to them, and the text stays to fix. */
async function saveInstructions() {
    const id = state.conversationId;
    view.clearInstructionsError();
    try {
        const entry = await hub.setInstructions(id, el.instructionsInput.value);
        if (id !== state.conversationId) return;
        state.savedInstructions = entry.instructions;
        el.instructionsInput.value = state.savedInstructions;
        view.showInstructionsStatus(state.savedInstructions ? "Saved." : "Instructions removed.");
    } catch (err) {
        view.showInstructionsStatus(serverText(err) ?? "The instructions could not be saved.", true);
    }
    updateInstructions();
}

async function chooseModel() {
    const id = state.conversationId, chosen = el.modelSelect.value;
    try {
        const entry = await hub.setModel(id, chosen);
        if (id === state.conversationId) {
            state.conversationModel = entry.model;
            nameModel(state.conversationModel);
        }
    } catch (err) {
        el.modelSelect.value = state.conversationModel;
        view.error(serverText(err) ?? "The model could not be changed.");
    }
}

/** The header names the model that answers in the open conversation (and the picker says whether it reads images). */
function nameModel(model) {
    if (state.chatInfo) view.nameModel(state.chatInfo, model);
    updatePicker();
}

/** The length limit and the model, from the server. */
async function loadInfo() {
    const info = await hub.getChatInfo();
    state.maxLength = info.maxMessageLength;
    state.models = info.models ?? [info.model];
    state.maxInstructions = info.maxInstructionsLength ?? 0;
    view.showModels(state.models);
    el.instructionsBtn.hidden = state.maxInstructions === 0;
    if (state.maxInstructions === 0) setInstructionsOpen(false);
    state.chatInfo = info;
    nameModel(info.model);
    el.modelLabel.hidden = false;
    updateComposer();
}

// -- editing an earlier message: what followed it is replaced ----------------------------
function beginEdit(entry) {
    if (state.streaming || state.uploading) return;
    state.editing = entry.index;
    el.input.value = entry.text;
    view.showEditing(true);
    updateComposer();
    el.input.focus();
}

function cancelEdit() {
    state.editing = null;
    view.showEditing(false);
}

// -- the phone's collapsible conversation list -----------------------------------------------
function setSidebar(open) {
    state.sidebarOpen = open;
    view.setSidebar(open);
}

function closeSidebarOnPhone() {
    if (view.isPhone()) setSidebar(false);
}

// -- clearing, with Undo -------------------------------------------------------------------------
async function clearConversation() {
    try {
        await hub.clearConversation(state.conversationId);
    } catch (err) {
        view.error(serverText(err) ?? "The conversation could not be cleared.");
        return;
    }
    dropActive();
    emptyLog();
    state.storedCount = 0;
    view.followNext();
    view.notice("Conversation cleared.");
    const cleared = state.conversationId;
    const undo = view.button("Undo", "Undo the clear", async () => {
        undo.disabled = true;
        const restored = await hub.restoreConversation(cleared).catch(() => false);
        if (restored && state.conversationId === cleared) await openConversation(cleared);
        else if (!restored) undo.replaceWith(document.createTextNode(""));
        refreshList();
    }, "undo-btn");
    el.container.append(undo);
    undo.focus(); // one key away for a keyboard user who cleared by mistake
    refreshList();
}

// -- connecting, and reconnecting with a countdown and "Retry now" ---------------------------------
/** Connected (again): who we are, the limits, the conversation, and the reply running in it. */
async function connected(again) {
    view.hideCountdown();
    // the pill says Connected once the conversation is loaded, when sending is possible
    const same = await hub.identify().catch(() => false);
    await loadInfo().catch(() => {});
    if (!same) state.conversationId = DEFAULT;
    await refreshList();
    if (!state.conversations.some((c) => c.id === state.conversationId)) state.conversationId = DEFAULT;
    await openConversation(state.conversationId, { quiet: again }).catch(() => view.notice("The conversation could not be loaded."));
    if (again) view.notice(same ? "Reconnected." : "Reconnected. The conversation was reset.");
    state.ready = true;
    setStatus("Connected");
    el.input.focus();
}

function retryLater() {
    view.showCountdown(hub.CLOSED_RETRY_DELAY);
    clearTimeout(state.closedRetry);
    state.closedRetry = setTimeout(start, hub.CLOSED_RETRY_DELAY);
}

async function start() {
    setStatus(state.everConnected ? "Reconnecting" : "Connecting");
    try {
        await hub.start();
    } catch {
        setStatus("Disconnected");
        retryLater();
        return;
    }
    const again = state.everConnected;
    state.everConnected = true;
    await connected(again);
}

async function retryNow() {
    view.hideCountdown();
    if (hub.isReconnecting()) {
        state.retryingNow = true; // stop() ends the automatic reconnect; onclose then starts at once
        await hub.stop();
    } else if (hub.isDisconnected()) {
        clearTimeout(state.closedRetry);
        start();
    }
}

hub.onConnectionEvents({
    retrying: view.showCountdown,
    reconnecting: () => { setStatus("Reconnecting"); },
    reconnected: () => connected(true),
    closed: () => {
        setStatus("Disconnected");
        if (state.retryingNow) {
            state.retryingNow = false;
            start();
            return;
        }
        retryLater(); // automatic reconnect gave up: keep trying, more slowly
    },
});

// -- the page's events ---------------------------------------------------------------------------
const send = () => startReply(state.editing === null ? "send" : "edit");

el.input.addEventListener("input", updateComposer);
el.composer.addEventListener("submit", (e) => { e.preventDefault(); send(); });
el.input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        send();
    } else if (e.key === "Escape" && state.editing !== null) {
        cancelEdit();
        el.input.value = "";
        updateComposer();
    }
});
el.stopBtn.addEventListener("click", () => {
    const current = state.active;
    if (!current) return;
    hub.stopReply(current.conversationId).catch(() => {});
});
el.clearBtn.addEventListener("click", clearConversation);
el.retryBtn.addEventListener("click", retryNow);
ChatTheme.bind(el.themeBtn);
el.chatsBtn.addEventListener("click", () => setSidebar(!state.sidebarOpen));
el.newChatBtn.addEventListener("click", newConversation);
el.searchInput.addEventListener("input", () => {
    clearTimeout(state.search.timer);
    state.search.timer = setTimeout(search, SEARCH_DELAY);
});
el.searchForm.addEventListener("submit", (e) => { e.preventDefault(); clearTimeout(state.search.timer); search(); });
el.searchMore.addEventListener("click", () => { if (state.search.query) search(true); });
el.exportMdBtn.addEventListener("click", () => exportConversation("markdown"));
el.exportJsonBtn.addEventListener("click", () => exportConversation("json"));
el.deleteAllBtn.addEventListener("click", deleteAllData);
el.modelSelect.addEventListener("change", chooseModel);
el.instructionsBtn.addEventListener("click", () => setInstructionsOpen(!state.instructionsOpen));
el.instructionsInput.addEventListener("input", updateInstructions);
el.instructionsPanel.addEventListener("submit", (e) => { e.preventDefault(); saveInstructions(); });
el.attachBtn.addEventListener("click", () => el.attachInput.click());
el.attachInput.addEventListener("change", () => {
    addFiles(el.attachInput.files);
    el.attachInput.value = ""; // the same file can be chosen again
});
el.composer.addEventListener("dragover", (e) => {
    if (!canAttach() || !e.dataTransfer?.types.includes("Files")) return;
    e.preventDefault();
    view.showDragging(true);
});
el.composer.addEventListener("dragleave", () => view.showDragging(false));
el.composer.addEventListener("drop", (e) => {
    view.showDragging(false);
    if (!canAttach() || !e.dataTransfer?.files.length) return;
    e.preventDefault();
    addFiles(e.dataTransfer.files);
});
// a pasted image (a screenshot) or file is attached; pasted text is typed as usual
el.input.addEventListener("paste", (e) => {
    const files = e.clipboardData?.files;
    if (!canAttach() || !files || files.length === 0) return;
    e.preventDefault();
    addFiles(files);
});

start();

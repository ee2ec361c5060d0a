// The page's DOM: the elements, the bubbles (replies rendered as Markdown by the classic
// script markdown.js, the global `ChatMarkdown`), scroll following, the sidebar and the
// panels. It shows what it is given and calls back on clicks; it keeps no state of the
// chat (that is main.js'), only the view's own: scrolling, the thinking line, and the text
// waiting for the next animation frame.

import { sizeText } from "./attachments.js";

/** Downloads a file the server rendered (shared with the Angular client). */
export { downloadFile as download } from "./download.js";

const $ = (id) => document.getElementById(id);

/** The page's elements, by role. */
export const el = {
    status: $("status"),
    container: $("chat-container"),
    input: $("message-input"),
    composer: $("composer"),
    sendBtn: $("send-btn"),
    stopBtn: $("stop-btn"),
    clearBtn: $("clear-btn"),
    jumpBtn: $("jump-btn"),
    charCount: $("char-count"),
    modelLabel: $("model"),
    reconnectBox: $("reconnect"),
    countdownText: $("reconnect-countdown"),
    retryBtn: $("retry-btn"),
    themeBtn: $("theme-btn"),
    chatsBtn: $("chats-btn"),
    newChatBtn: $("new-chat-btn"),
    list: $("conversation-list"),
    searchForm: $("search-form"),
    searchInput: $("search-input"),
    searchPanel: $("search-panel"),
    searchStatus: $("search-status"),
    searchResults: $("search-results"),
    searchMore: $("search-more-btn"),
    exportMdBtn: $("export-md-btn"),
    exportJsonBtn: $("export-json-btn"),
    deleteAllBtn: $("delete-all-btn"),
    modelPicker: $("model-picker"),
    modelSelect: $("model-select"),
    instructionsBtn: $("instructions-btn"),
    instructionsPanel: $("instructions-panel"),
    instructionsInput: $("instructions-input"),
    instructionsCount: $("instructions-count"),
    instructionsStatus: $("instructions-status"),
    instructionsSave: $("instructions-save"),
    attachRow: $("attachments-row"),
    chosenFiles: $("chosen-files"),
    attachError: $("attach-error"),
    attachInput: $("attach-input"),
    attachBtn: $("attach-btn"),
    attachHint: $("attach-hint"),
};

/** The counter shows from this share of the length limit on. */
const COUNTER_FROM = 0.8;

/** Code points, as the server counts. */
export function length(text) {
    return [...text].length;
}

const count = (n) => n.toLocaleString("en");

// -- the connection pill, and the countdown to the next try ------------------------------------
export function showStatus(text) {
    el.status.textContent = text;
    el.status.className = "status " + text.toLowerCase();
}

/** Every control that needs the connection (and the conversation loaded). */
export function enableControls(connected) {
    el.input.disabled = !connected; // the next message can be drafted while a reply streams
    el.clearBtn.disabled = !connected;
    el.newChatBtn.disabled = !connected;
    for (const control of [el.searchInput, el.exportMdBtn, el.exportJsonBtn, el.deleteAllBtn]) control.disabled = !connected;
    el.modelSelect.disabled = !connected;
    el.instructionsBtn.disabled = !connected;
}

let countdownTimer = 0;

export function showCountdown(ms) {
    clearInterval(countdownTimer);
    const until = Date.now() + ms;
    const tick = () => {
        const left = Math.ceil((until - Date.now()) / 1000);
        el.countdownText.textContent = left > 0 ? `Next try in ${left} s` : "Trying…";
        if (left <= 0) clearInterval(countdownTimer);
    };
    tick();
    countdownTimer = setInterval(tick, 250);
    el.reconnectBox.hidden = false;
}

export function hideCountdown() {
    clearInterval(countdownTimer);
    el.reconnectBox.hidden = true;
}

// -- scrolling: follow the reply only while the reader is at the bottom ----------------
/** The log's height when content was last added: the reader was at the bottom if within 40 px of it. */
let lastHeight = 0;
/** The reader sent a message or jumped: follow whatever the scroll position says. */
let follow = true;

export function scrollToEnd() {
    el.container.scrollTop = el.container.scrollHeight;
    lastHeight = el.container.scrollHeight;
}

/**
 * New content arrived: follow it if the reader was at the bottom before it came (measured
 * now, against the old height: a scroll event may not have been delivered yet), or offer
 * to jump to it.
 */
function contentAdded() {
    const c = el.container;
    const wasAtBottom = lastHeight - c.scrollTop - c.clientHeight < 40;
    if (follow || wasAtBottom) {
        follow = false;
        scrollToEnd();
    } else {
        el.jumpBtn.hidden = false;
        lastHeight = c.scrollHeight;
    }
}

/** The reader asked for something new (sent, cleared): follow it to the end. */
export function followNext() {
    follow = true;
    el.jumpBtn.hidden = true;
}

el.container.addEventListener("scroll", () => {
    const c = el.container;
    if (c.scrollHeight - c.scrollTop - c.clientHeight < 40) el.jumpBtn.hidden = true;
});
el.jumpBtn.addEventListener("click", () => {
    el.jumpBtn.hidden = true;
    scrollToEnd();
    el.input.focus();
});

// -- bubbles ---------------------------------------------------------------------------------
export function add(kind, text) {
    const div = document.createElement("div");
    div.className = kind;
    div.textContent = text;
    el.container.appendChild(div);
    contentAdded();
    return div;
}

export function notice(text) {
    return add("message notice", text);
}

export function error(text) {
    const div = add("message error", text);
    div.setAttribute("role", "alert");
    return div;
}

/** A small label inside a message: "Not sent", "Stopped", "Cut short". */
export function mark(div, className, text) {
    div.classList.add(className);
    const label = document.createElement("span");
    label.className = "message-state";
    label.textContent = text;
    div.append(label);
}

export function button(text, label, onClick, className = "copy-btn") {
    const b = document.createElement("button");
    b.type = "button";
    b.className = className;
    b.textContent = text;
    b.setAttribute("aria-label", label);
    b.addEventListener("click", onClick);
    return b;
}

function copyButton(text, label) {
    const copy = button("Copy", label, async () => {
        try {
            await navigator.clipboard.writeText(text());
            copy.textContent = "Copied";
        } catch {
            copy.textContent = "Copy failed";
        }
        setTimeout(() => { copy.textContent = "Copy"; }, 1500);
    });
    return copy;
}

/** Empties the log (a conversation opened or cleared). */
export function clearLog() {
    el.container.replaceChildren();
    thinking = null;
}

/** Removes `div` and everything after it (an edited message and what followed it). */
export function removeFrom(div) {
    while (div?.nextSibling) div.nextSibling.remove();
    div?.remove();
}

/**
 * A user message with its Edit button; `{div, edit, images}`. `attachments`: its files, each
 * `{id, name, size, image, url}`: an image is a thumbnail once its `url` is known (`images`, by
 * id, takes it later: `showImage`), any other file a chip with its name and size.
 */
export function userBubble(text, { onEdit, disabled, attachments = [] }) {
    const div = add("message user", text);
    const images = new Map();
    if (attachments.length > 0) {
        const files = document.createElement("span");
        files.className = "message-files";
        for (const a of attachments) {
            const chip = document.createElement("span");
            chip.className = "file-chip";
            chip.textContent = `${a.name} · ${sizeText(a.size)}`;
            files.append(chip);
            if (a.image) {
                images.set(a.id, chip);
                if (a.url) showImage(chip, a, a.url);
            }
        }
        div.append(files);
    }
    const edit = button("Edit", "Edit and resend", onEdit, "edit-btn reply-action");
    edit.disabled = disabled;
    div.after(edit);
    return { div, edit, images };
}

/** An attached image's thumbnail in place of its chip (`chip`: the chip, or the image shown before). */
export function showImage(chip, attachment, url) {
    const img = document.createElement("img");
    img.className = "message-image";
    img.src = url;
    img.alt = attachment.name;
    img.title = `${attachment.name} · ${sizeText(attachment.size)}`;
    chip.replaceWith(img);
    return img;
}

// -- attachments in the composer ------------------------------------------------------------------
/**
 * The files chosen for the next message, as chips: a thumbnail for an image, the name, the
 * size, and a Remove button (`onRemove(chosen)`), disabled while they upload.
 */
export function showChosenFiles(files, { onRemove, disabled }) {
    const items = files.map((chosen) => {
        const li = document.createElement("li");
        li.className = "file-chip chosen-file";
        if (chosen.url) {
            const thumb = document.createElement("img");
            thumb.className = "chip-thumb";
            thumb.src = chosen.url;
            thumb.alt = "";
            li.append(thumb);
        }
        const name = document.createElement("span");
        name.className = "chosen-name";
        name.textContent = chosen.file.name;
        const size = document.createElement("span");
        size.className = "chosen-size";
        size.textContent = sizeText(chosen.file.size);
        const remove = button("×", `Remove ${chosen.file.name}`, () => onRemove(chosen), "chip-remove");
        remove.disabled = disabled;
        li.append(name, " ", size, remove);
        return li;
    });
    el.chosenFiles.replaceChildren(...items);
    el.attachRow.hidden = files.length === 0;
}

/** Focuses the Remove button of chip `at` (or the one before it; the input when none is left). */
export function focusChip(at) {
    const buttons = el.chosenFiles.querySelectorAll(".chip-remove");
    (buttons[Math.min(at, buttons.length - 1)] ?? el.input).focus();
}

/** A refused file's text next to the composer (announced: role="alert"), or nothing. */
export function showAttachError(text) {
    el.attachError.textContent = text ?? "";
    el.attachError.hidden = !text;
}

/**
 * The Attach button and its hint: shown when the server takes attachments; for a model that
 * reads no images the hint says "Text files only" (why, for screen readers and on hover) and the
 * picker offers text and code files only.
 */
export function showPicker({ canAttach, enabled, accept, hint }) {
    el.attachBtn.hidden = !canAttach;
    el.attachHint.hidden = !canAttach;
    el.attachBtn.disabled = !enabled;
    if (accept) el.attachInput.setAttribute("accept", accept);
    else el.attachInput.removeAttribute("accept");
    el.attachHint.textContent = hint.text;
    if (hint.reason) {
        const why = document.createElement("span");
        why.className = "visually-hidden";
        why.textContent = `: ${hint.reason.toLowerCase()}`;
        el.attachHint.append(why);
        el.attachHint.title = hint.reason;
    } else {
        el.attachHint.removeAttribute("title");
    }
}

export function showDragging(on) {
    el.composer.classList.toggle("dragging", on);
}

/**
 * The server stopped before it stored the reply to this message (it was killed, or the
 * store failed): say so under the message, and offer Continue, which answers it.
 */
export function markInterrupted(bubble, { onContinue, disabled }) {
    const note = document.createElement("div");
    note.className = "interrupted-note";
    note.id = "interrupted-note";
    const text = document.createElement("span");
    text.id = "interrupted-text";
    text.textContent = "The reply to this message was interrupted.";
    const resume = button("Continue", "Continue the reply", onContinue, "reply-action");
    resume.setAttribute("aria-describedby", "interrupted-text");
    resume.disabled = disabled;
    note.append(text, resume);
    bubble.div.setAttribute("aria-describedby", "interrupted-text");
    bubble.edit.after(note);
    return note;
}

export function unmarkInterrupted(bubble, note) {
    note.remove();
    bubble.div.removeAttribute("aria-describedby");
}

/**
 * An assistant reply: Markdown content, and its buttons once it is complete. `label`: the
 * model that wrote it, shown when the server offers several ("" for none). Returns
 * `{div, content, renderer, label}`; `renderer.text` is the reply's Markdown source.
 */
export function assistant(prefix, label) {
    const div = add("message assistant", "");
    if (label) {
        const span = document.createElement("span");
        span.className = "model-label";
        span.textContent = label;
        div.append(span);
    }
    const content = document.createElement("div");
    content.className = "content";
    div.append(content);
    div.setAttribute("aria-busy", "true");
    const message = { div, content, renderer: new ChatMarkdown.StreamingRenderer(content), label };
    if (prefix) message.renderer.append(prefix);
    return message;
}

export function complete(message) {
    message.renderer.finish();
    ChatMarkdown.addCodeCopyButtons(message.content, copyButton);
    message.div.append(copyButton(() => message.renderer.text, "Copy reply"));
    message.div.setAttribute("aria-busy", "false");
    contentAdded(); // the final render and the buttons make the reply taller
}

/** The tokens a reply cost, where the provider reported them. */
export function showUsage(div, usage) {
    const span = document.createElement("span");
    span.className = "reply-usage";
    const n = (x) => Number(x ?? 0).toLocaleString("en");
    span.textContent = `${n(usage.total_tokens)} tokens (${n(usage.prompt_tokens)} in, ${n(usage.completion_tokens)} out)`;
    div.append(span);
}

/** Regenerate and, for a reply stopped or cut short, Continue: under the conversation's last reply. */
export function replyActions(div, { canContinue, onRegenerate, onContinue }) {
    removeReplyActions();
    const actions = document.createElement("div");
    actions.className = "reply-actions";
    actions.append(button("Regenerate", "Regenerate the reply", onRegenerate, "reply-action"));
    if (canContinue) actions.append(button("Continue", "Continue the reply", onContinue, "reply-action"));
    div.append(actions);
}

export function removeReplyActions() {
    for (const old of el.container.querySelectorAll(".reply-actions")) old.remove();
}

/** While a reply streams, the buttons that would start another are off. */
export function disableReplyActions(on) {
    for (const b of el.container.querySelectorAll(".reply-action")) b.disabled = on;
}

// -- the thinking line, and a reply's text once per animation frame ----------------------------
let thinking = null;

export function showThinking() {
    thinking = add("thinking", "Thinking…");
}

export function hideThinking() {
    if (thinking) { thinking.remove(); thinking = null; }
}

/** Text waiting for the next frame, and the reply it goes to. */
let pending = "", pendingFor = null, frame = 0;

/** Chunks are rendered once per animation frame, however fast they arrive. */
export function appendSoon(message, text) {
    if (pendingFor !== message) flush();
    pendingFor = message;
    pending += text;
    if (!frame) frame = requestAnimationFrame(flush);
}

export function flush() {
    frame = 0;
    if (pendingFor && pending) {
        pendingFor.renderer.append(pending);
        pending = "";
        contentAdded();
    }
}

/** The reply ends: what waits is shown now, and no frame is asked for any more. */
export function flushNow() {
    flush();
    if (frame) { cancelAnimationFrame(frame); frame = 0; }
    pendingFor = null;
}

/** The reply is no longer followed: what waits for it is dropped. */
export function dropPending() {
    pending = "";
    pendingFor = null;
}

// -- the composer and the header -------------------------------------------------------------------
/** The length counter (from COUNTER_FROM of the limit on) and Send; returns whether the text is too long. */
export function showComposer({ maxLength, canSend, uploading = false }) {
    const n = length(el.input.value);
    const over = n > maxLength;
    el.charCount.hidden = n < maxLength * COUNTER_FROM;
    el.charCount.textContent = `${count(n)} / ${count(maxLength)}`;
    el.charCount.classList.toggle("over", over);
    el.input.setAttribute("aria-invalid", String(over));
    el.sendBtn.disabled = !canSend || over || uploading;
    el.sendBtn.textContent = uploading ? "Uploading…" : document.body.classList.contains("editing") ? "Save and send" : "Send";
    return over;
}

export function showEditing(on) {
    document.body.classList.toggle("editing", on);
    el.sendBtn.textContent = on ? "Save and send" : "Send";
}

/** The header names the model that answers in the open conversation. */
export function nameModel(info, model) {
    el.modelLabel.textContent = info.offlineDemo
        ? `${model} · small offline demo, often wrong`
        : `${info.provider} · ${model}`;
    el.modelLabel.title = info.offlineDemo
        ? "The built-in local model: small and offline; its answers are often wrong."
        : `Answers come from ${model} (${info.provider}).`;
}

/** The model picker's choices (shown when there are several). */
export function showModels(models) {
    el.modelSelect.replaceChildren(...models.map((name) => new Option(name, name)));
    el.modelPicker.hidden = models.length < 2;
}

// -- the instructions panel ----------------------------------------------------------------------------
export function showInstructions({ maxInstructions, saved, canSave }) {
    const n = length(el.instructionsInput.value.trim());
    const over = n > maxInstructions;
    el.instructionsCount.textContent = `${count(n)} / ${count(maxInstructions)}`;
    el.instructionsCount.classList.toggle("over", over);
    el.instructionsInput.setAttribute("aria-invalid", String(over));
    el.instructionsSave.disabled = !canSave;
    el.instructionsBtn.textContent = saved ? "Instructions (on)" : "Instructions";
}

export function showInstructionsStatus(text, isError = false) {
    el.instructionsStatus.textContent = text;
    el.instructionsStatus.classList.toggle("error", isError);
}

/** A save starts: a refusal said before no longer stands as one. */
export function clearInstructionsError() {
    el.instructionsStatus.classList.remove("error");
}

export function setInstructionsOpen(open) {
    el.instructionsPanel.hidden = !open;
    el.instructionsBtn.setAttribute("aria-expanded", String(open));
    if (open) el.instructionsInput.focus();
}

// -- the sidebar: the conversation list, search -------------------------------------------------------
/** The phone's collapsible conversation list. */
export function setSidebar(open) {
    document.body.classList.toggle("sidebar-open", open);
    el.chatsBtn.setAttribute("aria-expanded", String(open));
}

export const isPhone = () => matchMedia("(max-width: 600px)").matches;

/** The conversations, `currentId` marked; `on.open(c)`, `on.rename(c)`, `on.remove(c)`. */
export function showList(items, currentId, on) {
    el.list.replaceChildren(...items.map((c) => {
        const li = document.createElement("li");
        li.className = "conversation";
        const open = button(c.title, `Open “${c.title}”`, () => on.open(c), "conversation-open");
        open.title = c.title;
        if (c.id === currentId) open.setAttribute("aria-current", "true");
        const rename = button("Rename", `Rename “${c.title}”`, () => on.rename(c), "conversation-action");
        const remove = button("Delete", `Delete “${c.title}”`, () => on.remove(c), "conversation-action");
        li.append(open, rename, remove);
        return li;
    }));
}

/** The snippet as text, its match in <mark>: never HTML from the server. */
function snippetNode(result) {
    const span = document.createElement("span");
    span.className = "search-result-snippet";
    const [start, end] = result.match;
    const marked = document.createElement("mark");
    marked.textContent = result.snippet.slice(start, end);
    span.append(result.snippet.slice(0, start), marked, result.snippet.slice(end));
    return span;
}

function searchResult(result, onOpen) {
    const li = document.createElement("li");
    const open = document.createElement("button");
    open.type = "button";
    open.className = "search-result";
    const title = document.createElement("span");
    title.className = "search-result-title";
    title.textContent = result.title;
    open.append(title, snippetNode(result));
    open.addEventListener("click", () => onOpen(result));
    li.append(open);
    return li;
}

/** The search panel instead of the list, or (null) the list again. */
export function showSearchPanel(on) {
    el.searchPanel.hidden = !on;
    el.list.hidden = on;
}

export function showSearchFailed(text) {
    showSearchPanel(true);
    el.searchStatus.textContent = text;
}

/** A page of results, after (`more`) or instead of those shown; `count`: how many are shown then. */
export function showSearchResults(results, { more, hasMore, count: shown, onOpen }) {
    if (!more) el.searchResults.replaceChildren();
    el.searchResults.append(...results.map((r) => searchResult(r, onOpen)));
    el.searchStatus.textContent = shown === 0
        ? "No conversation matches."
        : `${shown}${hasMore ? "+" : ""} conversation${shown === 1 && !hasMore ? "" : "s"} found.`;
    el.searchMore.hidden = !hasMore;
    showSearchPanel(true);
}


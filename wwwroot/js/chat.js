"use strict";
// The chat page: the stock SignalR browser client against /chatHub.
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

(() => {
    const $ = (id) => document.getElementById(id);
    const status = $("status"), container = $("chat-container"), input = $("message-input");
    const sendBtn = $("send-btn"), stopBtn = $("stop-btn"), clearBtn = $("clear-btn");
    const jumpBtn = $("jump-btn"), charCount = $("char-count"), modelLabel = $("model");
    const reconnectBox = $("reconnect"), countdownText = $("reconnect-countdown"), retryBtn = $("retry-btn");
    const sidebar = $("sidebar"), chatsBtn = $("chats-btn"), newChatBtn = $("new-chat-btn");
    const list = $("conversation-list");
    const searchInput = $("search-input"), searchPanel = $("search-panel"), searchStatus = $("search-status");
    const searchResults = $("search-results"), searchMore = $("search-more-btn");
    const exportMdBtn = $("export-md-btn"), exportJsonBtn = $("export-json-btn"), deleteAllBtn = $("delete-all-btn");
    const modelPicker = $("model-picker"), modelSelect = $("model-select");
    const instructionsBtn = $("instructions-btn"), instructionsPanel = $("instructions-panel");
    const instructionsInput = $("instructions-input"), instructionsCount = $("instructions-count");
    const instructionsStatus = $("instructions-status"), instructionsSave = $("instructions-save");
    const params = new URLSearchParams(location.search);
    const token = takeToken();
    /** The automatic reconnect's delays (ms); after the last one the page retries every 5 s. */
    const RETRY_DELAYS = [0, 2000, 5000, 10000, 30000];
    const CLOSED_RETRY_DELAY = 5000;
    /** The counter shows from this share of the length limit on. */
    const COUNTER_FROM = 0.8;
    const HUB_ERROR = "HubException: ";
    const DEFAULT = "default";
    const storage = token ? sessionStorage : localStorage;

    function takeToken() {
        const fragment = new URLSearchParams(location.hash.slice(1));
        if (fragment.has("token")) {
            sessionStorage.setItem("chat-token", fragment.get("token"));
            history.replaceState(null, "", location.pathname + location.search);
        }
        return sessionStorage.getItem("chat-token");
    }

    // -- reconnecting, with a countdown and "Retry now" ---------------------------------
    let countdownTimer = 0, closedRetry = 0, retryingNow = false;

    function showCountdown(ms) {
        clearInterval(countdownTimer);
        const until = Date.now() + ms;
        const tick = () => {
            const left = Math.ceil((until - Date.now()) / 1000);
            countdownText.textContent = left > 0 ? `Next try in ${left} s` : "Trying…";
            if (left <= 0) clearInterval(countdownTimer);
        };
        tick();
        countdownTimer = setInterval(tick, 250);
        reconnectBox.hidden = false;
    }

    function hideCountdown() {
        clearInterval(countdownTimer);
        reconnectBox.hidden = true;
    }

    const retryPolicy = {
        nextRetryDelayInMilliseconds(context) {
            const delay = RETRY_DELAYS[context.previousRetryCount];
            if (delay === undefined) return null;
            showCountdown(delay);
            return delay;
        },
    };

    const options = {};
    const transport = params.get("transport");
    if (transport) options.transport = signalR.HttpTransportType[transport];
    if (token) options.accessTokenFactory = () => token;
    let builder = new signalR.HubConnectionBuilder()
        .withUrl("/chatHub", options)
        .withAutomaticReconnect(retryPolicy)
        .configureLogging(signalR.LogLevel.Warning);
    if (params.get("protocol") === "messagepack") {
        builder = builder.withHubProtocol(new signalR.protocols.msgpack.MessagePackHubProtocol());
    }
    const connection = builder.build();

    let streaming = false, thinking = null, pending = "", frame = 0;
    /** The reply being followed: its conversation, bubble, last chunk number, and how it started. */
    let active = null;
    let maxLength = Infinity;
    /** The conversation shown, and how many stored messages it has (the index of the next one). */
    let conversationId = storage.getItem("chat-conversation") || DEFAULT;
    let storedCount = 0;
    /** Set while the composer edits an earlier message: its index. */
    let editing = null;
    /** The log's height when content was last added: the reader was at the bottom if within 40 px of it. */
    let lastHeight = 0;
    /** The reader sent a message or jumped: follow whatever the scroll position says. */
    let follow = true;

    /** Connected, and the conversation is loaded: sending before that would race the load. */
    let ready = false;

    /** The models a conversation may pick (GetChatInfo), and the open conversation's choices. */
    let models = [], maxInstructions = 0, conversationModel = "", savedInstructions = "";

    function setStatus(text) {
        status.textContent = text;
        status.className = "status " + text.toLowerCase();
        if (text === "Reconnecting" || text === "Disconnected") ready = false;
        const connected = text === "Connected" && ready;
        input.disabled = !connected; // the next message can be drafted while a reply streams
        clearBtn.disabled = !connected;
        newChatBtn.disabled = !connected;
        for (const control of [searchInput, exportMdBtn, exportJsonBtn, deleteAllBtn]) control.disabled = !connected;
        modelSelect.disabled = !connected;
        instructionsBtn.disabled = !connected;
        updateComposer();
        updateInstructions();
    }

    // -- scrolling: follow the reply only while the reader is at the bottom ----------------
    function scrollToEnd() {
        container.scrollTop = container.scrollHeight;
        lastHeight = container.scrollHeight;
    }

    /**
     * New content arrived: follow it if the reader was at the bottom before it came (measured
     * now, against the old height: a scroll event may not have been delivered yet), or offer
     * to jump to it.
     */
    function contentAdded() {
        const wasAtBottom = lastHeight - container.scrollTop - container.clientHeight < 40;
        if (follow || wasAtBottom) {
            follow = false;
            scrollToEnd();
        } else {
            jumpBtn.hidden = false;
            lastHeight = container.scrollHeight;
        }
    }

    container.addEventListener("scroll", () => {
        if (container.scrollHeight - container.scrollTop - container.clientHeight < 40) jumpBtn.hidden = true;
    });
    jumpBtn.addEventListener("click", () => {
        jumpBtn.hidden = true;
        scrollToEnd();
        input.focus();
    });

    function add(kind, text) {
        const div = document.createElement("div");
        div.className = kind;
        div.textContent = text;
        container.appendChild(div);
        contentAdded();
        return div;
    }

    function notice(text) {
        return add("message notice", text);
    }

    function error(text) {
        const div = add("message error", text);
        div.setAttribute("role", "alert");
        return div;
    }

    /** A small label inside a message: "Not sent", "Stopped", "Cut short". */
    function mark(div, className, text) {
        div.classList.add(className);
        const label = document.createElement("span");
        label.className = "message-state";
        label.textContent = text;
        div.append(label);
    }

    function button(text, label, onClick, className = "copy-btn") {
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

    /** A user message; `index` is its place in the stored conversation (for Edit). */
    function userMessage(text, index) {
        const div = add("message user", text);
        div.dataset.index = String(index);
        const edit = button("Edit", "Edit and resend", () => beginEdit(div), "edit-btn reply-action");
        edit.disabled = streaming;
        div.after(edit);
        return div;
    }

    /**
     * The server stopped before it stored the reply to this message (it was killed, or the
     * store failed): say so under the message, and offer Continue, which answers it.
     */
    function markInterrupted(div) {
        const note = document.createElement("div");
        note.className = "interrupted-note";
        note.id = "interrupted-note";
        const text = document.createElement("span");
        text.id = "interrupted-text";
        text.textContent = "The reply to this message was interrupted.";
        const resume = button("Continue", "Continue the reply", () => startReply("continue"), "reply-action");
        resume.setAttribute("aria-describedby", "interrupted-text");
        resume.disabled = streaming;
        note.append(text, resume);
        div.setAttribute("aria-describedby", "interrupted-text");
        (div.nextElementSibling?.classList.contains("edit-btn") ? div.nextElementSibling : div).after(note);
    }

    /** Takes the interrupted mark away (a reply starts); returns its message, to mark again if none comes. */
    function unmarkInterrupted() {
        const note = $("interrupted-note");
        if (!note) return null;
        note.remove();
        const div = container.querySelector('.message.user[aria-describedby="interrupted-text"]');
        div?.removeAttribute("aria-describedby");
        return div;
    }

    /** Each reply bubble's renderer, whose text is the reply's Markdown source. */
    const renderers = new WeakMap();

    /** An assistant reply: Markdown content, and its buttons once it is complete. `model`:
     * the model that wrote it, labelled when the server offers several. */
    function assistant(prefix = "", model = conversationModel) {
        const div = add("message assistant", "");
        if (model && (models.length > 1 || !models.includes(model))) {
            const label = document.createElement("span");
            label.className = "model-label";
            label.textContent = model;
            div.append(label);
        }
        const content = document.createElement("div");
        content.className = "content";
        div.append(content);
        div.setAttribute("aria-busy", "true");
        const message = { div, content, renderer: new ChatMarkdown.StreamingRenderer(content) };
        renderers.set(div, message.renderer);
        if (prefix) message.renderer.append(prefix);
        return message;
    }

    function complete(message) {
        message.renderer.finish();
        ChatMarkdown.addCodeCopyButtons(message.content, copyButton);
        message.div.append(copyButton(() => message.renderer.text, "Copy reply"));
        message.div.setAttribute("aria-busy", "false");
        contentAdded(); // the final render and the buttons make the reply taller
    }

    function setStreaming(on) {
        const composerFocused = document.activeElement === input || document.activeElement === sendBtn;
        streaming = on;
        stopBtn.hidden = !on;
        setStatus(status.textContent);
        for (const b of container.querySelectorAll(".reply-action")) b.disabled = on;
        if (on && composerFocused) stopBtn.focus(); // keyboard users can stop at once
        if (!on && !input.disabled) input.focus();
    }

    // -- the composer: the length limit is shown before sending ----------------------------
    function length(text) {
        return [...text].length; // code points, as the server counts
    }

    function updateComposer() {
        const count = length(input.value);
        const over = count > maxLength;
        charCount.hidden = count < maxLength * COUNTER_FROM;
        charCount.textContent = `${count.toLocaleString("en")} / ${maxLength.toLocaleString("en")}`;
        charCount.classList.toggle("over", over);
        input.setAttribute("aria-invalid", String(over));
        sendBtn.disabled = status.textContent !== "Connected" || !ready || streaming || over;
    }

    input.addEventListener("input", updateComposer);

    // -- following a reply -------------------------------------------------------------------
    // Chunks are rendered once per animation frame, however fast they arrive.
    function flush() {
        frame = 0;
        if (active?.reply && pending) {
            active.reply.renderer.append(pending);
            pending = "";
            contentAdded();
        }
    }

    function showReply() {
        if (thinking) { thinking.remove(); thinking = null; }
        active.reply ??= assistant();
    }

    /** Follows the conversation's reply from chunk `after` on (ResumeReply). */
    function followReply(after) {
        const current = active;
        current.subscription?.dispose();
        current.subscription = connection.stream("ResumeReply", current.conversationId, after).subscribe({
            next: (item) => {
                if (active !== current) return;
                if ("text" in item) {
                    if (item.sequence <= current.sequence) return; // already shown
                    current.sequence = item.sequence;
                    showReply();
                    pending += item.text;
                    if (!frame) frame = requestAnimationFrame(flush);
                } else if ("end" in item) {
                    current.outcome = item.end;
                    current.error = item.error ?? null;
                    current.usage = item.usage ?? null;
                    current.cut = item.cut ?? null;
                    current.withdrawn = item.withdrawn === true;
                }
            },
            complete: () => { if (active === current) endReply(); },
            error: () => {
                // a lost connection: the reply goes on on the server; reconnecting resumes it
                if (active === current && connection.state === signalR.HubConnectionState.Connected) {
                    current.error = "The reply could not be followed. Please reload the page.";
                    current.outcome = "error";
                    endReply();
                }
            },
        });
    }

    function endReply() {
        const current = active;
        if (!current) return;
        flush();
        if (frame) { cancelAnimationFrame(frame); frame = 0; }
        active = null;
        if (thinking) { thinking.remove(); thinking = null; }
        if (current.withdrawn) {
            // taken back by the content filter: nothing of it stays, on screen or stored
            current.reply?.div.remove();
            current.reply = null;
            current.sequence = 0;
            if (current.kind === "regenerate" || current.kind === "continue") {
                // the reply it replaced or extended is still stored: show it again, then why
                setStreaming(false);
                refreshList();
                openConversation(current.conversationId, { quiet: true }).then(() => error(current.error));
                return;
            }
        }
        const produced = current.sequence > 0;
        if (current.reply) {
            complete(current.reply);
            if (current.outcome === "stopped") mark(current.reply.div, "stopped", "Stopped");
            if (current.cut) mark(current.reply.div, "cut", "Cut short");
            if (current.usage) showUsage(current.reply.div, current.usage);
            if (current.outcome === "stopped" || current.outcome === "completed") addReplyActions(current.reply.div);
        }
        // nothing was stored: the interrupted message still waits for its reply
        if (!produced && current.unanswered?.isConnected) markInterrupted(current.unanswered);
        if (current.outcome === "error" && current.error) error(current.error);
        if (current.user && !produced && current.outcome !== "completed") {
            notSent(current); // failed or stopped before any text: nothing was stored
        } else if (current.kind === "send" && produced) {
            storedCount += 2;
        }
        setStreaming(false);
        refreshList();
        if (current.kind !== "send" && produced) openConversation(current.conversationId, { quiet: true });
    }

    /** The tokens a reply cost, where the provider reported them. */
    function showUsage(div, usage) {
        const span = document.createElement("span");
        span.className = "reply-usage";
        const n = (x) => Number(x ?? 0).toLocaleString("en");
        span.textContent = `${n(usage.total_tokens)} tokens (${n(usage.prompt_tokens)} in, ${n(usage.completion_tokens)} out)`;
        div.append(span);
    }

    /** Regenerate and Continue under the conversation's last reply. */
    function addReplyActions(div) {
        for (const old of container.querySelectorAll(".reply-actions")) old.remove();
        const actions = document.createElement("div");
        actions.className = "reply-actions";
        actions.append(button("Regenerate", "Regenerate the reply", () => startReply("regenerate"), "reply-action"));
        if (div.classList.contains("stopped") || div.classList.contains("cut")) {
            actions.append(button("Continue", "Continue the reply", () => startReply("continue"), "reply-action"));
        }
        div.append(actions);
    }

    /** The message was not taken: say so on its bubble and give its text back to edit or resend. */
    function notSent(current) {
        mark(current.user, "not-sent", "Not sent");
        if (!input.value.trim()) {
            input.value = current.text;
            updateComposer();
        }
    }

    function serverText(err) {
        const text = String(err?.message ?? err);
        const at = text.indexOf(HUB_ERROR);
        return at >= 0 ? text.slice(at + HUB_ERROR.length) : null;
    }

    /** Starts a reply: "send" (the composer's text), "edit", "regenerate" or "continue". */
    async function startReply(kind) {
        if (streaming || !ready || status.textContent !== "Connected") return;
        const text = input.value;
        const current = { kind, conversationId, sequence: 0, reply: null, user: null, text, outcome: null };
        if (kind === "send" || kind === "edit") {
            if (!text.trim()) return;
            if (length(text) > maxLength) { updateComposer(); return; }
        }
        follow = true;
        jumpBtn.hidden = true;
        // ContinueReply answers an interrupted message (a new reply under it) rather than
        // extending the last reply; any new reply takes the mark away
        const answering = kind === "continue" && $("interrupted-note") !== null;
        current.unanswered = unmarkInterrupted();
        if (kind === "edit") {
            // what followed the edited message is replaced
            const index = editing;
            const from = container.querySelector(`.message.user[data-index="${index}"]`);
            while (from?.nextSibling) from.nextSibling.remove();
            from?.remove();
            current.index = index;
            cancelEdit();
        }
        if (kind === "send" || kind === "edit") {
            current.user = userMessage(text, kind === "edit" ? current.index : storedCount);
            input.value = "";
            updateComposer();
        } else if (kind === "regenerate") {
            const replies = container.querySelectorAll(".message.assistant");
            replies[replies.length - 1]?.remove();
        } else if (!answering) {
            const replies = container.querySelectorAll(".message.assistant");
            const last = replies[replies.length - 1];
            const prefix = last ? renderers.get(last)?.text ?? "" : "";
            const label = last?.querySelector(".model-label")?.textContent ?? "";
            last?.remove();
            current.reply = assistant(prefix, label);
        }
        for (const old of container.querySelectorAll(".reply-actions")) old.remove();
        active = current;
        setStreaming(true);
        thinking = current.reply ? null : add("thinking", "Thinking…");
        try {
            if (kind === "send") await connection.invoke("StartReply", conversationId, text);
            else if (kind === "edit") await connection.invoke("EditMessage", conversationId, current.index, text);
            else if (kind === "regenerate") await connection.invoke("RegenerateReply", conversationId);
            else await connection.invoke("ContinueReply", conversationId);
        } catch (err) {
            if (active === current) {
                current.outcome = "error";
                current.error = serverText(err) ?? "The message could not be sent. Please try again.";
                endReply();
            }
            return;
        }
        if (active === current) followReply(0);
    }

    // -- conversations -------------------------------------------------------------------------
    let conversations = [];

    async function refreshList() {
        try {
            conversations = await connection.invoke("ListConversations");
        } catch {
            return;
        }
        renderList();
    }

    function renderList() {
        const items = conversations.some((c) => c.id === conversationId)
            ? conversations
            : [{ id: conversationId, title: "New chat" }, ...conversations];
        list.replaceChildren(...items.map((c) => {
            const li = document.createElement("li");
            li.className = "conversation";
            const open = button(c.title, `Open “${c.title}”`, () => { openConversation(c.id); closeSidebarOnPhone(); }, "conversation-open");
            open.title = c.title;
            if (c.id === conversationId) open.setAttribute("aria-current", "true");
            const rename = button("Rename", `Rename “${c.title}”`, () => renameConversation(c), "conversation-action");
            const remove = button("Delete", `Delete “${c.title}”`, () => deleteConversation(c), "conversation-action");
            li.append(open, rename, remove);
            return li;
        }));
    }

    async function renameConversation(c) {
        const title = prompt("New name for the conversation", c.title);
        if (title === null || !title.trim()) return;
        try {
            await connection.invoke("RenameConversation", c.id, title);
        } catch (err) {
            error(serverText(err) ?? "The conversation could not be renamed.");
        }
        refreshList();
    }

    async function deleteConversation(c) {
        if (!confirm(`Delete “${c.title}”? This cannot be undone.`)) return;
        try {
            await connection.invoke("DeleteConversation", c.id);
        } catch (err) {
            error(serverText(err) ?? "The conversation could not be deleted.");
            return;
        }
        await refreshList();
        if (c.id === conversationId) await openConversation(conversations[0]?.id ?? DEFAULT);
    }

    async function newConversation() {
        try {
            const created = await connection.invoke("CreateConversation", null);
            await openConversation(created.id);
            await refreshList();
            closeSidebarOnPhone();
        } catch (err) {
            error(serverText(err) ?? "A new conversation could not be started.");
        }
    }

    /** Shows a conversation, and follows the reply running in it. */
    async function openConversation(id, { quiet = false } = {}) {
        const opened = await connection.invoke("GetConversation", id).catch(() => null)
            ?? (id !== DEFAULT ? await connection.invoke("GetConversation", DEFAULT) : null);
        if (!opened) return;
        if (active) {
            active.subscription?.dispose();
            active = null;
            pending = "";
            setStreaming(false);
        }
        conversationId = opened.id;
        storage.setItem("chat-conversation", conversationId);
        cancelEdit();
        container.replaceChildren();
        thinking = null;
        const messages = opened.messages;
        let lastReply = null;
        showChoices(opened);
        messages.forEach(({ role, content, interrupted, cut, model }, index) => {
            if (role === "user") {
                const div = userMessage(content, index);
                if (interrupted) markInterrupted(div);
            } else if (role === "assistant") {
                const message = assistant("", model ?? "");
                message.renderer.append(content);
                complete(message);
                if (cut) mark(message.div, "cut", "Cut short");
                lastReply = message;
            }
        });
        storedCount = messages.length;
        const reply = opened.reply;
        if (reply && reply.running !== false) {
            const current = { kind: reply.continues ? "continue" : "send", conversationId, sequence: 0, reply: null, user: null, text: reply.userMessage ?? "", outcome: null };
            if (reply.continues && lastReply) {
                const label = lastReply.div.querySelector(".model-label")?.textContent ?? "";
                lastReply.div.remove();
                current.reply = assistant(lastReply.renderer.text, label);
            } else if (reply.userMessage !== null) {
                current.user = userMessage(reply.userMessage, storedCount);
            }
            active = current;
            setStreaming(true);
            followReply(0);
        } else if (lastReply && messages[messages.length - 1]?.role === "assistant") {
            addReplyActions(lastReply.div);
        }
        renderList();
        scrollToEnd();
        if (!quiet) input.focus();
    }

    // -- search, export, and deleting everything (issue 23) ------------------------------------
    /** Results per SearchConversations page. */
    const SEARCH_PAGE_SIZE = 20;
    /** How long typing pauses before the search runs. */
    const SEARCH_DELAY = 250;
    let searchTimer = 0, searchQuery = "", searchPage = 0;

    /** The snippet as text, its match in <mark>: never HTML from the server. */
    function snippetNode(result) {
        const span = document.createElement("span");
        span.className = "search-result-snippet";
        const [start, end] = result.match;
        const mark = document.createElement("mark");
        mark.textContent = result.snippet.slice(start, end);
        span.append(result.snippet.slice(0, start), mark, result.snippet.slice(end));
        return span;
    }

    function searchResult(result) {
        const li = document.createElement("li");
        const open = document.createElement("button");
        open.type = "button";
        open.className = "search-result";
        const title = document.createElement("span");
        title.className = "search-result-title";
        title.textContent = result.title;
        open.append(title, snippetNode(result));
        open.addEventListener("click", async () => { await openConversation(result.id); closeSidebarOnPhone(); });
        li.append(open);
        return li;
    }

    /** The first page of a new query, or the next page of the current one. */
    async function search(more = false) {
        const query = searchInput.value.trim();
        if (!query) {
            searchQuery = "";
            searchPanel.hidden = true;
            list.hidden = false;
            return;
        }
        const page = more ? searchPage + 1 : 1;
        let found;
        try {
            found = await connection.invoke("SearchConversations", query, page, SEARCH_PAGE_SIZE);
        } catch (err) {
            searchPanel.hidden = false;
            list.hidden = true;
            searchStatus.textContent = serverText(err) ?? "The search failed. Please try again.";
            return;
        }
        if (searchInput.value.trim() !== query) return; // typed on meanwhile: that search is next
        searchQuery = query;
        searchPage = page;
        if (!more) searchResults.replaceChildren();
        searchResults.append(...found.results.map(searchResult));
        const count = searchResults.children.length;
        searchStatus.textContent = count === 0
            ? "No conversation matches."
            : `${count}${found.more ? "+" : ""} conversation${count === 1 && !found.more ? "" : "s"} found.`;
        searchMore.hidden = !found.more;
        searchPanel.hidden = false;
        list.hidden = true;
    }

    searchInput.addEventListener("input", () => {
        clearTimeout(searchTimer);
        searchTimer = setTimeout(search, SEARCH_DELAY);
    });
    $("search-form").addEventListener("submit", (e) => { e.preventDefault(); clearTimeout(searchTimer); search(); });
    searchMore.addEventListener("click", () => { if (searchQuery) search(true); });

    /** Downloads the open conversation as the server renders it (ExportConversation). */
    async function exportConversation(format) {
        let file;
        try {
            file = await connection.invoke("ExportConversation", conversationId, format);
        } catch (err) {
            error(serverText(err) ?? "The conversation could not be exported.");
            return;
        }
        const url = URL.createObjectURL(new Blob([file.text], { type: `${file.mediaType};charset=utf-8` }));
        const link = document.createElement("a");
        link.href = url;
        link.download = file.fileName;
        document.body.append(link);
        link.click();
        link.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10000);
    }

    exportMdBtn.addEventListener("click", () => exportConversation("markdown"));
    exportJsonBtn.addEventListener("click", () => exportConversation("json"));

    /** Every conversation deleted on the server, after a confirmation; a guest starts over as a new guest. */
    async function deleteAllData() {
        if (!confirm("Delete all your conversations and everything the server keeps of them? This cannot be undone.")) return;
        try {
            await connection.invoke("DeleteAllMyData");
        } catch (err) {
            error(serverText(err) ?? "Your data could not be deleted.");
            return;
        }
        if (active) { active.subscription?.dispose(); active = null; pending = ""; setStreaming(false); }
        if (!token) {
            localStorage.removeItem("chat-guest");
            await identify().catch(() => false);
        }
        searchInput.value = "";
        await search();
        conversationId = DEFAULT;
        await refreshList();
        await openConversation(DEFAULT, { quiet: true });
        closeSidebarOnPhone();
        notice("All your conversations were deleted.");
    }

    deleteAllBtn.addEventListener("click", deleteAllData);

    // -- the conversation's model and custom instructions ----------------------------------------
    /** The open conversation's choices, as GetConversation returned them. */
    function showChoices(opened) {
        conversationModel = opened.model ?? models[0] ?? "";
        modelSelect.value = conversationModel;
        nameModel(conversationModel);
        savedInstructions = opened.instructions ?? "";
        instructionsInput.value = savedInstructions;
        instructionsStatus.textContent = "";
        instructionsStatus.classList.remove("error");
        updateInstructions();
    }

    function updateInstructions() {
        const count = length(instructionsInput.value.trim());
        const over = count > maxInstructions;
        instructionsCount.textContent = `${count.toLocaleString("en")} / ${maxInstructions.toLocaleString("en")}`;
        instructionsCount.classList.toggle("over", over);
        instructionsInput.setAttribute("aria-invalid", String(over));
        instructionsSave.disabled = status.textContent !== "Connected" || !ready;
        instructionsBtn.textContent = savedInstructions ? "Instructions (on)" : "Instructions";
    }

    function setInstructionsOpen(open) {
        instructionsPanel.hidden = !open;
        instructionsBtn.setAttribute("aria-expanded", String(open));
        if (open) instructionsInput.focus();
    }

    /** Saves the instructions; a refusal is said next to them, and the text stays to fix. */
    async function saveInstructions() {
        const id = conversationId;
        instructionsStatus.classList.remove("error");
        try {
            const entry = await connection.invoke("SetInstructions", id, instructionsInput.value);
            if (id !== conversationId) return;
            savedInstructions = entry.instructions;
            instructionsInput.value = savedInstructions;
            instructionsStatus.textContent = savedInstructions ? "Saved." : "Instructions removed.";
        } catch (err) {
            instructionsStatus.textContent = serverText(err) ?? "The instructions could not be saved.";
            instructionsStatus.classList.add("error");
        }
        updateInstructions();
    }

    modelSelect.addEventListener("change", async () => {
        const id = conversationId, chosen = modelSelect.value;
        try {
            const entry = await connection.invoke("SetModel", id, chosen);
            if (id === conversationId) {
                conversationModel = entry.model;
                nameModel(conversationModel);
            }
        } catch (err) {
            modelSelect.value = conversationModel;
            error(serverText(err) ?? "The model could not be changed.");
        }
    });
    instructionsBtn.addEventListener("click", () => setInstructionsOpen(instructionsPanel.hidden));
    instructionsInput.addEventListener("input", updateInstructions);
    instructionsPanel.addEventListener("submit", (e) => { e.preventDefault(); saveInstructions(); });

    // -- editing an earlier message: what followed it is replaced ----------------------------
    function beginEdit(bubble) {
        if (streaming) return;
        editing = Number(bubble.dataset.index);
        input.value = bubble.firstChild?.textContent ?? "";
        document.body.classList.add("editing");
        sendBtn.textContent = "Save and send";
        updateComposer();
        input.focus();
    }

    function cancelEdit() {
        editing = null;
        document.body.classList.remove("editing");
        sendBtn.textContent = "Send";
    }

    // -- the phone's collapsible conversation list -----------------------------------------------
    function setSidebar(open) {
        document.body.classList.toggle("sidebar-open", open);
        chatsBtn.setAttribute("aria-expanded", String(open));
    }
    function closeSidebarOnPhone() {
        if (matchMedia("(max-width: 600px)").matches) setSidebar(false);
    }
    ChatTheme.bind($("theme-btn"));
    chatsBtn.addEventListener("click", () => setSidebar(!document.body.classList.contains("sidebar-open")));
    newChatBtn.addEventListener("click", newConversation);

    let chatInfo = null;

    /** The header names the model that answers in the open conversation. */
    function nameModel(model) {
        if (!chatInfo) return;
        modelLabel.textContent = chatInfo.offlineDemo
            ? `${model} · small offline demo, often wrong`
            : `${chatInfo.provider} · ${model}`;
        modelLabel.title = chatInfo.offlineDemo
            ? "The built-in local model: small and offline; its answers are often wrong."
            : `Answers come from ${model} (${chatInfo.provider}).`;
    }

    /** The length limit and the model, from the server. */
    async function loadInfo() {
        const info = await connection.invoke("GetChatInfo");
        maxLength = info.maxMessageLength;
        models = info.models ?? [info.model];
        maxInstructions = info.maxInstructionsLength ?? 0;
        modelSelect.replaceChildren(...models.map((name) => new Option(name, name)));
        modelPicker.hidden = models.length < 2;
        instructionsBtn.hidden = maxInstructions === 0;
        if (instructionsBtn.hidden) setInstructionsOpen(false);
        chatInfo = info;
        nameModel(info.model);
        modelLabel.hidden = false;
        updateComposer();
    }

    /** Who this page is: a signed-in user (the token), or a guest the server remembers. */
    async function identify() {
        if (token) return true;
        const kept = localStorage.getItem("chat-guest");
        const guest = await connection.invoke("UseGuestSession", kept);
        localStorage.setItem("chat-guest", guest);
        return guest === kept;
    }

    $("composer").addEventListener("submit", (e) => { e.preventDefault(); startReply(editing === null ? "send" : "edit"); });
    input.addEventListener("keydown", (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
            e.preventDefault();
            startReply(editing === null ? "send" : "edit");
        } else if (e.key === "Escape" && editing !== null) {
            cancelEdit();
            input.value = "";
            updateComposer();
        }
    });
    stopBtn.addEventListener("click", () => {
        const current = active;
        if (!current) return;
        connection.invoke("StopReply", current.conversationId).catch(() => {});
    });
    clearBtn.addEventListener("click", async () => {
        try {
            await connection.invoke("ClearConversation", conversationId);
        } catch (err) {
            error(serverText(err) ?? "The conversation could not be cleared.");
            return;
        }
        if (active) { active.subscription?.dispose(); active = null; pending = ""; setStreaming(false); }
        container.replaceChildren();
        storedCount = 0;
        jumpBtn.hidden = true;
        follow = true;
        notice("Conversation cleared.");
        const cleared = conversationId;
        const undo = button("Undo", "Undo the clear", async () => {
            undo.disabled = true;
            const restored = await connection.invoke("RestoreConversation", cleared).catch(() => false);
            if (restored && conversationId === cleared) await openConversation(cleared);
            else if (!restored) undo.replaceWith(document.createTextNode(""));
            refreshList();
        }, "undo-btn");
        container.append(undo);
        undo.focus(); // one key away for a keyboard user who cleared by mistake
        refreshList();
    });
    retryBtn.addEventListener("click", async () => {
        hideCountdown();
        if (connection.state === signalR.HubConnectionState.Reconnecting) {
            retryingNow = true; // stop() ends the automatic reconnect; onclose then starts at once
            await connection.stop();
        } else if (connection.state === signalR.HubConnectionState.Disconnected) {
            clearTimeout(closedRetry);
            start();
        }
    });

    /** Connected (again): who we are, the limits, the conversation, and the reply running in it. */
    async function connected(again) {
        hideCountdown();
        // the pill says Connected once the conversation is loaded, when sending is possible
        const same = await identify().catch(() => false);
        await loadInfo().catch(() => {});
        if (!same) conversationId = DEFAULT;
        await refreshList();
        if (!conversations.some((c) => c.id === conversationId)) conversationId = DEFAULT;
        await openConversation(conversationId, { quiet: again }).catch(() => notice("The conversation could not be loaded."));
        if (again) notice(same ? "Reconnected." : "Reconnected. The conversation was reset.");
        ready = true;
        setStatus("Connected");
        input.focus();
    }

    connection.onreconnecting(() => { setStatus("Reconnecting"); });
    connection.onreconnected(() => connected(true));
    connection.onclose(() => {
        setStatus("Disconnected");
        if (retryingNow) {
            retryingNow = false;
            start();
            return;
        }
        retryLater(); // automatic reconnect gave up: keep trying, more slowly
    });

    function retryLater() {
        showCountdown(CLOSED_RETRY_DELAY);
        clearTimeout(closedRetry);
        closedRetry = setTimeout(start, CLOSED_RETRY_DELAY);
    }

    let everConnected = false;

    async function start() {
        setStatus(everConnected ? "Reconnecting" : "Connecting");
        try {
            await connection.start();
        } catch {
            setStatus("Disconnected");
            retryLater();
            return;
        }
        const again = everConnected;
        everConnected = true;
        await connected(again);
    }
    start();
})();

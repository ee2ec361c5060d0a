"use strict";
// The chat page: the stock SignalR browser client against /chatHub.
// Query options: ?transport=WebSockets|ServerSentEvents|LongPolling, ?protocol=messagepack.
// Signing in: open the page as /#token=<JWT>; the token moves to sessionStorage (the fragment
// never reaches the server or its logs) and the conversation is reloaded after a reconnect.

(() => {
    const $ = (id) => document.getElementById(id);
    const status = $("status"), container = $("chat-container"), input = $("message-input");
    const sendBtn = $("send-btn"), stopBtn = $("stop-btn"), clearBtn = $("clear-btn");
    const jumpBtn = $("jump-btn"), charCount = $("char-count"), modelLabel = $("model");
    const reconnectBox = $("reconnect"), countdownText = $("reconnect-countdown"), retryBtn = $("retry-btn");
    const params = new URLSearchParams(location.search);
    const token = takeToken();
    /** The automatic reconnect's delays (ms); after the last one the page retries every 5 s. */
    const RETRY_DELAYS = [0, 2000, 5000, 10000, 30000];
    const CLOSED_RETRY_DELAY = 5000;
    /** The counter shows from this share of the length limit on. */
    const COUNTER_FROM = 0.8;

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

    let streaming = false, thinking = null, reply = null, pending = "", frame = 0;
    /** The message being answered: its bubble and text, and how its reply went. */
    let turn = null;
    let maxLength = Infinity;
    /** The log's height when content was last added: the reader was at the bottom if within 40 px of it. */
    let lastHeight = 0;
    /** The reader sent a message or jumped: follow whatever the scroll position says. */
    let follow = true;

    function setStatus(text) {
        status.textContent = text;
        status.className = "status " + text.toLowerCase();
        const connected = text === "Connected";
        input.disabled = !connected || streaming;
        clearBtn.disabled = !connected;
        updateComposer();
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

    /** A small label inside a message: "Not sent", "Stopped". */
    function mark(div, className, text) {
        div.classList.add(className);
        const label = document.createElement("span");
        label.className = "message-state";
        label.textContent = text;
        div.append(label);
    }

    function copyButton(text, label) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "copy-btn";
        button.textContent = "Copy";
        button.setAttribute("aria-label", label);
        button.addEventListener("click", async () => {
            try {
                await navigator.clipboard.writeText(text());
                button.textContent = "Copied";
            } catch {
                button.textContent = "Copy failed";
            }
            setTimeout(() => { button.textContent = "Copy"; }, 1500);
        });
        return button;
    }

    /** An assistant reply: Markdown content, and a copy button once it is complete. */
    function assistant() {
        const div = add("message assistant", "");
        const content = document.createElement("div");
        content.className = "content";
        div.append(content);
        div.setAttribute("aria-busy", "true");
        return { div, content, renderer: new ChatMarkdown.StreamingRenderer(content) };
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
        sendBtn.disabled = status.textContent !== "Connected" || streaming || over;
    }

    input.addEventListener("input", updateComposer);

    // Tokens are rendered once per animation frame, however fast they arrive.
    function flush() {
        frame = 0;
        if (reply && pending) {
            reply.renderer.append(pending);
            pending = "";
            contentAdded();
        }
    }

    function endReply() {
        flush();
        if (frame) { cancelAnimationFrame(frame); frame = 0; }
        if (thinking) { thinking.remove(); thinking = null; }
        if (reply) {
            complete(reply);
            if (turn?.stopRequested) mark(reply.div, "stopped", "Stopped");
        }
        reply = null;
        pending = "";
    }

    connection.on("ReceiveStatusUpdate", (state) => {
        if (state === "thinking") {
            thinking = add("thinking", "Thinking…");
        } else if (state === "history_cleared") {
            container.replaceChildren();
            jumpBtn.hidden = true;
            follow = true;
            notice("Conversation cleared.");
        }
    });
    connection.on("ReceiveStreamStart", () => {
        if (thinking) { thinking.remove(); thinking = null; }
        if (turn) turn.started = true;
        reply = assistant();
    });
    connection.on("ReceiveStreamToken", (token) => {
        pending += token;
        if (!frame) frame = requestAnimationFrame(flush);
    });
    connection.on("ReceiveStreamEnd", () => { endReply(); });
    connection.on("ReceiveError", (text) => {
        // an error before the reply started: the server stored nothing of this message
        if (turn && !turn.started) turn.notSent = true;
        endReply();
        error(text);
        setStreaming(false);
    });

    /** The message was not taken: say so on its bubble and give its text back to edit or resend. */
    function notSent(current) {
        mark(current.bubble, "not-sent", "Not sent");
        if (!input.value.trim()) {
            input.value = current.text;
            updateComposer();
        }
    }

    async function send() {
        const text = input.value;
        if (!text.trim() || streaming) return;
        if (length(text) > maxLength) {
            updateComposer();
            return;
        }
        follow = true;
        jumpBtn.hidden = true;
        const current = turn = { text, bubble: add("message user", text), started: false, notSent: false };
        input.value = "";
        setStreaming(true);
        try {
            await connection.invoke("SendMessage", text);
        } catch {
            const started = reply !== null;
            endReply();
            if (!current.started) current.notSent = true;
            error(started
                ? "The connection was lost before the reply finished."
                : "The message could not be sent. Please try again.");
        } finally {
            if (turn === current) turn = null;
            if (current.notSent) notSent(current);
            setStreaming(false);
        }
    }

    /** A signed-in user's conversation lives on the server: show it again. */
    async function loadHistory() {
        const messages = await connection.invoke("GetHistory");
        container.replaceChildren();
        for (const { role, content } of messages) {
            if (role === "user") {
                add("message user", content);
            } else if (role === "assistant") {
                const message = assistant();
                message.renderer.append(content);
                complete(message);
            }
        }
        scrollToEnd();
    }

    /** The length limit and the model, from the server. */
    async function loadInfo() {
        const info = await connection.invoke("GetChatInfo");
        maxLength = info.maxMessageLength;
        modelLabel.textContent = info.offlineDemo
            ? `${info.model} · small offline demo, often wrong`
            : `${info.provider} · ${info.model}`;
        modelLabel.title = info.offlineDemo
            ? "The built-in local model: small and offline; its answers are often wrong."
            : `Answers come from ${info.model} (${info.provider}).`;
        modelLabel.hidden = false;
        updateComposer();
    }

    $("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
    input.addEventListener("keydown", (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
    });
    stopBtn.addEventListener("click", () => {
        if (turn) turn.stopRequested = true;
        connection.invoke("StopGeneration").catch(() => {});
    });
    clearBtn.addEventListener("click", () => { connection.invoke("ClearHistory").catch(() => {}); });
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

    connection.onreconnecting(() => { setStatus("Reconnecting"); });
    connection.onreconnected(async () => {
        hideCountdown();
        endReply();
        setStreaming(false);
        setStatus("Connected");
        if (token) {
            try {
                await loadHistory();
                notice("Reconnected.");
            } catch {
                notice("Reconnected, but the conversation could not be loaded.");
            }
        } else {
            notice("Reconnected. The conversation was reset.");
        }
    });
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
        hideCountdown();
        const again = everConnected;
        everConnected = true;
        endReply();
        setStatus("Connected");
        await loadInfo().catch(() => {});
        if (token) {
            await loadHistory().catch(() => notice("The conversation could not be loaded."));
        }
        if (again) notice(token ? "Reconnected." : "Reconnected. The conversation was reset.");
        input.focus();
    }
    start();
})();

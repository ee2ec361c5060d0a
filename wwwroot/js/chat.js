"use strict";
// The chat page: the stock SignalR browser client against /chatHub.
// Query options: ?transport=WebSockets|ServerSentEvents|LongPolling, ?protocol=messagepack.
// Signing in: open the page as /#token=<JWT>; the token moves to sessionStorage (the fragment
// never reaches the server or its logs) and the conversation is reloaded after a reconnect.

(() => {
    const $ = (id) => document.getElementById(id);
    const status = $("status"), container = $("chat-container"), input = $("message-input");
    const sendBtn = $("send-btn"), stopBtn = $("stop-btn"), clearBtn = $("clear-btn");
    const params = new URLSearchParams(location.search);
    const token = takeToken();

    function takeToken() {
        const fragment = new URLSearchParams(location.hash.slice(1));
        if (fragment.has("token")) {
            sessionStorage.setItem("chat-token", fragment.get("token"));
            history.replaceState(null, "", location.pathname + location.search);
        }
        return sessionStorage.getItem("chat-token");
    }

    const options = {};
    const transport = params.get("transport");
    if (transport) options.transport = signalR.HttpTransportType[transport];
    if (token) options.accessTokenFactory = () => token;
    let builder = new signalR.HubConnectionBuilder()
        .withUrl("/chatHub", options)
        .withAutomaticReconnect([0, 2000, 5000, 10000, 30000])
        .configureLogging(signalR.LogLevel.Warning);
    if (params.get("protocol") === "messagepack") {
        builder = builder.withHubProtocol(new signalR.protocols.msgpack.MessagePackHubProtocol());
    }
    const connection = builder.build();

    let streaming = false, thinking = null, reply = null, pending = "", frame = 0;

    function setStatus(text) {
        status.textContent = text;
        status.className = "status " + text.toLowerCase();
        const connected = text === "Connected";
        input.disabled = !connected || streaming;
        sendBtn.disabled = !connected || streaming;
        clearBtn.disabled = !connected;
    }

    function scrollToEnd() {
        container.scrollTop = container.scrollHeight;
    }

    function add(kind, text) {
        const div = document.createElement("div");
        div.className = kind;
        div.textContent = text;
        container.appendChild(div);
        scrollToEnd();
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
    }

    function setStreaming(on) {
        const composerFocused = document.activeElement === input || document.activeElement === sendBtn;
        streaming = on;
        stopBtn.hidden = !on;
        setStatus(status.textContent);
        if (on && composerFocused) stopBtn.focus(); // keyboard users can stop at once
        if (!on && !input.disabled) input.focus();
    }

    // Tokens are rendered once per animation frame, however fast they arrive.
    function flush() {
        frame = 0;
        if (reply && pending) {
            reply.renderer.append(pending);
            pending = "";
            scrollToEnd();
        }
    }

    function endReply() {
        flush();
        if (frame) { cancelAnimationFrame(frame); frame = 0; }
        if (thinking) { thinking.remove(); thinking = null; }
        if (reply) complete(reply);
        reply = null;
        pending = "";
    }

    connection.on("ReceiveStatusUpdate", (state) => {
        if (state === "thinking") {
            thinking = add("thinking", "Thinking…");
        } else if (state === "history_cleared") {
            container.replaceChildren();
            notice("Conversation cleared.");
        }
    });
    connection.on("ReceiveStreamStart", () => {
        if (thinking) { thinking.remove(); thinking = null; }
        reply = assistant();
    });
    connection.on("ReceiveStreamToken", (token) => {
        pending += token;
        if (!frame) frame = requestAnimationFrame(flush);
    });
    connection.on("ReceiveStreamEnd", () => { endReply(); });
    connection.on("ReceiveError", (text) => { endReply(); error(text); setStreaming(false); });

    async function send() {
        const text = input.value;
        if (!text.trim() || streaming) return;
        add("message user", text);
        input.value = "";
        setStreaming(true);
        try {
            await connection.invoke("SendMessage", text);
        } catch {
            const started = reply !== null;
            endReply();
            error(started
                ? "The connection was lost before the reply finished."
                : "The message could not be sent. Please try again.");
        } finally {
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

    $("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
    input.addEventListener("keydown", (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
    });
    stopBtn.addEventListener("click", () => { connection.invoke("StopGeneration").catch(() => {}); });
    clearBtn.addEventListener("click", () => { connection.invoke("ClearHistory").catch(() => {}); });

    connection.onreconnecting(() => { setStatus("Reconnecting"); });
    connection.onreconnected(async () => {
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
        setTimeout(start, 5000); // automatic reconnect gave up: keep trying, more slowly
    });

    async function start() {
        setStatus("Connecting");
        try {
            await connection.start();
        } catch {
            setStatus("Disconnected");
            setTimeout(start, 5000);
            return;
        }
        setStatus("Connected");
        if (token) {
            await loadHistory().catch(() => notice("The conversation could not be loaded."));
        }
        input.focus();
    }
    start();
})();

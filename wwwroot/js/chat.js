"use strict";
// The chat page: the stock SignalR browser client against /chatHub.
// Query options: ?transport=WebSockets|ServerSentEvents|LongPolling, ?protocol=messagepack.

(() => {
    const $ = (id) => document.getElementById(id);
    const status = $("status"), container = $("chat-container"), input = $("message-input");
    const sendBtn = $("send-btn"), stopBtn = $("stop-btn"), clearBtn = $("clear-btn");
    const params = new URLSearchParams(location.search);

    const options = {};
    const transport = params.get("transport");
    if (transport) options.transport = signalR.HttpTransportType[transport];
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

    function add(kind, text) {
        const div = document.createElement("div");
        div.className = kind;
        div.textContent = text;
        container.appendChild(div);
        container.scrollTop = container.scrollHeight;
        return div;
    }

    function setStreaming(on) {
        streaming = on;
        stopBtn.hidden = !on;
        setStatus(status.textContent);
        if (!on) input.focus();
    }

    // Tokens are appended once per animation frame, however fast they arrive.
    function flush() {
        frame = 0;
        if (reply && pending) {
            reply.textContent += pending;
            pending = "";
            container.scrollTop = container.scrollHeight;
        }
    }

    function endReply() {
        flush();
        if (thinking) { thinking.remove(); thinking = null; }
        reply = null;
    }

    connection.on("ReceiveStatusUpdate", (state) => {
        if (state === "thinking") thinking = add("thinking", "Thinking…");
        else if (state === "history_cleared") { container.replaceChildren(); add("message notice", "Conversation cleared."); }
    });
    connection.on("ReceiveStreamStart", () => {
        if (thinking) { thinking.remove(); thinking = null; }
        reply = add("message assistant", "");
    });
    connection.on("ReceiveStreamToken", (token) => {
        pending += token;
        if (!frame) frame = requestAnimationFrame(flush);
    });
    connection.on("ReceiveStreamEnd", () => { endReply(); });
    connection.on("ReceiveError", (text) => { endReply(); add("message error", text); setStreaming(false); });

    async function send() {
        const text = input.value;
        if (!text.trim() || streaming) return;
        add("message user", text);
        input.value = "";
        setStreaming(true);
        try {
            await connection.invoke("SendMessage", text);
        } catch (err) {
            endReply();
            add("message error", "The message could not be sent. Please try again.");
        } finally {
            setStreaming(false);
        }
    }

    $("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
    input.addEventListener("keydown", (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
    });
    stopBtn.addEventListener("click", () => { connection.invoke("StopGeneration").catch(() => {}); });
    clearBtn.addEventListener("click", () => { connection.invoke("ClearHistory").catch(() => {}); });

    connection.onreconnecting(() => { setStatus("Reconnecting"); });
    connection.onreconnected(() => {
        setStatus("Connected");
        endReply();
        setStreaming(false);
        add("message notice", "Reconnected. The conversation was reset.");
    });
    connection.onclose(() => { setStatus("Disconnected"); });

    async function start() {
        try {
            await connection.start();
            setStatus("Connected");
            input.focus();
        } catch (err) {
            setStatus("Disconnected");
            setTimeout(start, 5000);
        }
    }
    start();
})();

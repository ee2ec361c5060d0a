// Connection lifecycle: start/stop/restart, automatic reconnect, server-initiated close,
// skipNegotiation, negotiate redirects, and what the server sees of the HTTP request.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { test } from "node:test";
import {
    DIRECT_ONLY,
    MATRIX,
    TEST_TIMEOUT,
    WEBSOCKETS,
    build,
    connect,
    deferred,
    eventually,
    label,
    makeProtocol,
    matrixTest,
    signalR,
    stopQuietly,
    url,
    withTimeout,
} from "./harness.mjs";

const { HubConnectionState } = signalR;
const EventSource = createRequire(import.meta.url)("eventsource");

/** An HttpClient that forwards to the stock client and records every request it sends. */
class RecordingHttpClient extends signalR.HttpClient {
    /**
     * deleteDelay: hold each DELETE back this many ms, and until every POST has been answered.
     * postDelay (settable at any time): hold each later POST back this many ms.
     */
    constructor({ deleteDelay = 0 } = {}) {
        super();
        this.inner = new signalR.DefaultHttpClient(signalR.NullLogger.instance);
        this.requests = [];
        this.deleteDelay = deleteDelay;
        this.postDelay = 0;
        this.posts = [];
    }

    async send(request) {
        const entry = { method: request.method, url: request.url, status: undefined };
        this.requests.push(entry);
        if (request.method === "DELETE" && this.deleteDelay) {
            await Promise.allSettled(this.posts);
            await new Promise((resolve) => setTimeout(resolve, this.deleteDelay));
        }
        const sent = this.forward(request, entry, request.method === "POST" ? this.postDelay : 0);
        if (request.method === "POST") {
            this.posts.push(sent);
        }
        return sent;
    }

    async forward(request, entry, delay) {
        if (delay) {
            await new Promise((resolve) => setTimeout(resolve, delay));
        }
        try {
            const response = await this.inner.send(request);
            entry.status = response.statusCode;
            return response;
        } catch (err) {
            entry.status = err.statusCode ?? String(err);
            throw err;
        }
    }

    getCookieString(target) {
        return this.inner.getCookieString(target);
    }
}

/** Asks a separate connection whether the server ran on_disconnected for `id`. */
async function serverSawDisconnect(t, id, ms = 3_000) {
    const observer = await connect(t, "/testhub", MATRIX[0]);
    await eventually(() => observer.invoke("has_disconnected", id), ms, `on_disconnected for ${id}`);
}

matrixTest("start, invoke, stop: states and connection id", async (t, combo) => {
    const c = build("/testhub", combo);
    t.after(() => stopQuietly(c));
    assert.equal(c.state, HubConnectionState.Disconnected);
    assert.equal(c.connectionId, null);
    await withTimeout(c.start(), 10_000, "start");
    assert.equal(c.state, HubConnectionState.Connected);
    assert.equal(typeof c.connectionId, "string");
    assert.equal(await c.invoke("get_connection_id"), c.connectionId);
    let closeError = "not called";
    c.onclose((error) => {
        closeError = error;
    });
    await withTimeout(c.stop(), 5_000, "stop");
    assert.equal(c.state, HubConnectionState.Disconnected);
    assert.equal(closeError, undefined, "a clean stop calls onclose without an error");
    assert.equal(c.connectionId, null);
});

matrixTest("stop() ends the connection on the server", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const id = await c.invoke("get_connection_id");
    const started = performance.now();
    await withTimeout(c.stop(), 5_000, "stop");
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 2_000, `stop took ${elapsed.toFixed(0)} ms`);
    await serverSawDisconnect(t, id);
});

matrixTest("stop() then start() again gives a new working connection", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const first = await c.invoke("get_connection_id");
    await withTimeout(c.stop(), 5_000, "stop");
    await withTimeout(c.start(), 10_000, "second start");
    assert.equal(c.state, HubConnectionState.Connected);
    const second = await c.invoke("get_connection_id");
    assert.notEqual(second, first);
    assert.equal(second, c.connectionId);
    assert.equal(await c.invoke("echo", "again"), "again");
    await serverSawDisconnect(t, first);
});

matrixTest("start() twice rejects without disturbing the connection", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    await assert.rejects(c.start(), /Cannot start a HubConnection that is not in the 'Disconnected' state\./);
    assert.equal(await c.invoke("echo", 1), 1);
});

matrixTest("long polling stop() sends one DELETE and the server disconnects", async (t, combo) => {
    const http = new RecordingHttpClient();
    const c = await connect(t, "/testhub", combo, { options: { httpClient: http } });
    const id = await c.invoke("get_connection_id");
    const started = performance.now();
    await withTimeout(c.stop(), 5_000, "stop");
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 2_000, `stop took ${elapsed.toFixed(0)} ms`);
    const deletes = http.requests.filter((r) => r.method === "DELETE");
    assert.equal(deletes.length, 1, "one DELETE");
    assert.match(deletes[0].url, /[?&]id=/);
    await serverSawDisconnect(t, id);
}, { combos: MATRIX.filter((x) => x.transport === "LongPolling") });

// stop() sends the Close message (a POST it does not await), aborts its poll at once and then
// sends DELETE. ASP.NET Core keeps a connection whose poll was aborted registered until its
// DELETE or the disconnect timeout, so the DELETE is answered 202 even when the Close message
// was handled first. Holding the Close POST back lets the abort reach the server first, as it
// does on an idle machine; holding the DELETE until the POST is answered makes Close come first.
matrixTest("long polling DELETE after the client's Close message is answered 202", async (t, combo) => {
    const http = new RecordingHttpClient({ deleteDelay: 50 });
    const c = await connect(t, "/testhub", combo, { options: { httpClient: http } });
    assert.equal(await c.invoke("echo", 1), 1);
    http.postDelay = 100;
    await withTimeout(c.stop(), 5_000, "stop");
    const deletes = http.requests.filter((r) => r.method === "DELETE");
    assert.equal(deletes.length, 1, "one DELETE");
    assert.equal(deletes[0].status, 202);
}, { combos: MATRIX.filter((x) => x.transport === "LongPolling") });

test("long polling: the first poll returns at once and later polls carry messages", { timeout: TEST_TIMEOUT, skip: DIRECT_ONLY }, async (t) => {
    const http = new RecordingHttpClient();
    const c = await connect(t, "/testhub", { transport: "LongPolling", protocol: "json" }, { options: { httpClient: http } });
    assert.equal(await c.invoke("echo", "polled"), "polled");
    const polls = http.requests.filter((r) => r.method === "GET");
    assert.ok(polls.length >= 2, "at least the initial poll and one data poll");
    assert.equal(polls[0].status, 200);
    const posts = http.requests.filter((r) => r.method === "POST" && !r.url.includes("/negotiate"));
    assert.ok(posts.length >= 1 && posts.every((r) => r.status === 200), "sends are POSTed and answered 200");
});

/** Promises for a connection's reconnecting/reconnected events, and whether onclose fired. */
function watchReconnect(c) {
    const reconnecting = deferred();
    const reconnected = deferred();
    const closed = { value: false };
    c.onreconnecting((error) => reconnecting.resolve(error));
    c.onreconnected((id) => reconnected.resolve(id));
    c.onclose(() => {
        closed.value = true;
    });
    return { reconnecting, reconnected, closed };
}

matrixTest("automatic reconnect after the server drops the WebSocket", async (t, combo) => {
    const c = await connect(t, "/testhub", combo, { reconnect: [0] });
    const { reconnecting, reconnected, closed } = watchReconnect(c);
    const before = await c.invoke("get_connection_id");
    c.invoke("drop_transport").catch(() => {}); // its completion is lost with the socket
    await withTimeout(reconnecting.promise, 5_000, "onreconnecting");
    const newId = await withTimeout(reconnected.promise, 10_000, "onreconnected");
    assert.equal(c.state, HubConnectionState.Connected);
    assert.equal(closed.value, false);
    assert.equal(typeof newId, "string");
    assert.notEqual(newId, before);
    assert.equal(await c.invoke("get_connection_id"), newId);
    assert.equal(await c.invoke("echo", "back"), "back");
}, { combos: WEBSOCKETS });

matrixTest("a dropped WebSocket without automatic reconnect closes with an error", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const closed = deferred();
    c.onclose((error) => closed.resolve(error));
    c.invoke("drop_transport").catch(() => {});
    const error = await withTimeout(closed.promise, 5_000, "onclose");
    assert.ok(error instanceof Error, "onclose receives the transport error");
    assert.equal(c.state, HubConnectionState.Disconnected);
}, { combos: WEBSOCKETS });

matrixTest("server abort with allowReconnect: the client reconnects", async (t, combo) => {
    const c = await connect(t, "/testhub", combo, { reconnect: [0] });
    const { reconnecting, reconnected, closed } = watchReconnect(c);
    const before = await c.invoke("get_connection_id");
    c.invoke("abort", true).catch(() => {});
    const reason = await withTimeout(reconnecting.promise, 5_000, "onreconnecting");
    assert.equal(reason, undefined, "a Close without an error gives no reconnect reason");
    await withTimeout(reconnected.promise, 10_000, "onreconnected");
    assert.equal(closed.value, false);
    const after = await c.invoke("get_connection_id");
    assert.notEqual(after, before);
    assert.equal(await c.invoke("echo", "back"), "back");
});

matrixTest("server abort without allowReconnect: onclose, no reconnect", async (t, combo) => {
    const c = await connect(t, "/testhub", combo, { reconnect: [0] });
    const closed = deferred();
    let reconnecting = false;
    c.onreconnecting(() => {
        reconnecting = true;
    });
    c.onclose((error) => closed.resolve(error));
    c.invoke("abort", false).catch(() => {});
    const error = await withTimeout(closed.promise, 5_000, "onclose");
    assert.equal(error, undefined, "a Close without an error gives onclose no error");
    assert.equal(reconnecting, false);
    assert.equal(c.state, HubConnectionState.Disconnected);
});

matrixTest("an exception in on_connected closes the connection with the generic error", async (t, combo) => {
    const c = build("/testhub?fail_connect=1", combo);
    t.after(() => stopQuietly(c));
    const closed = deferred();
    c.onclose((error) => closed.resolve(error));
    const expected = "Server returned an error on close: Connection closed with an error.";
    let startError;
    try {
        await withTimeout(c.start(), 10_000, "start");
    } catch (err) {
        startError = err;
    }
    // The Close message may arrive with the handshake answer (start() rejects) or just
    // after it (start() resolves, then onclose): both carry the same error.
    const error = startError ?? (await withTimeout(closed.promise, 5_000, "onclose"));
    assert.equal(error.message, expected);
    await eventually(() => c.state === HubConnectionState.Disconnected, 2_000, "Disconnected state");
});

matrixTest("skipNegotiation connects straight to the WebSocket", async (t, combo) => {
    const http = new RecordingHttpClient();
    const c = await connect(t, "/testhub", combo, { options: { skipNegotiation: true, httpClient: http } });
    assert.equal(http.requests.length, 0, "no HTTP request (no negotiate)");
    assert.deepEqual(await c.invoke("echo", { skip: true }), { skip: true });
    assert.deepEqual(await c.invoke("echo", [1, 2]), [1, 2]);
    const id = await c.invoke("get_connection_id");
    assert.equal(typeof id, "string");
    assert.ok(id.length > 0);
    const recorded = deferred();
    c.on("Recorded", (v) => recorded.resolve(v));
    await c.send("record", "skipped");
    assert.equal(await withTimeout(recorded.promise, 5_000, "Recorded"), "skipped");
}, { combos: WEBSOCKETS, skip: DIRECT_ONLY });

matrixTest("negotiate redirect with an access token", async (t, combo) => {
    const c = await connect(t, "/redirect", combo);
    assert.equal(await c.invoke("who_am_i"), "redirected");
    assert.equal(await c.invoke("echo", "via redirect"), "via redirect");
});

matrixTest("custom headers reach the hub", async (t, combo) => {
    const c = await connect(t, "/testhub", combo, { options: { headers: { "X-Test": "v" } } });
    assert.equal(await c.invoke("get_header", "X-Test"), "v");
    assert.equal(await c.invoke("get_header", "x-test"), "v", "header names are case-insensitive");
    assert.equal(await c.invoke("get_header", "X-Absent"), null);
});

matrixTest("query string parameters of the hub URL reach the hub", async (t, combo) => {
    const c = await connect(t, "/testhub?flavour=vanilla&n=1", combo);
    assert.equal(await c.invoke("get_query", "flavour"), "vanilla");
    assert.equal(await c.invoke("get_query", "n"), "1");
    assert.equal(await c.invoke("get_query", "absent"), null);
    assert.equal(await c.invoke("echo", "ok"), "ok");
});

matrixTest("cookies held by the client's HttpClient reach the hub", async (t, combo) => {
    const http = new RecordingHttpClient();
    const response = await http.get(url("/cookie"));
    assert.equal(response.statusCode, 200);
    assert.match(http.getCookieString(url("/testhub")), /flavour=oatmeal/);
    const c = await connect(t, "/testhub", combo, { options: { httpClient: http } });
    assert.equal(await c.invoke("get_cookie", "flavour"), "oatmeal");
});

matrixTest("the hub path matches case-insensitively", async (t, combo) => {
    const c = await connect(t, "/TestHub", combo);
    assert.equal(await c.invoke("echo", "case"), "case");
});

test("SSE + messagepack: the stock client finds no usable transport", { timeout: TEST_TIMEOUT, skip: DIRECT_ONLY }, async (t) => {
    const c = build("/testhub", { transport: "ServerSentEvents", protocol: "messagepack" });
    t.after(() => stopQuietly(c));
    await assert.rejects(withTimeout(c.start(), 10_000, "start"), (err) => {
        assert.equal(
            err.message,
            "Unable to connect to the server with any of the available transports. " +
                "WebSockets failed: Error: 'WebSockets' is disabled by the client. " +
                "ServerSentEvents failed: Error: 'ServerSentEvents' does not support Binary. " +
                "LongPolling failed: Error: 'LongPolling' is disabled by the client.",
        );
        return true;
    });
    assert.equal(c.state, HubConnectionState.Disconnected);
});

/**
 * The stock EventSource, delivering messages and errors 100 ms late, in order. This server
 * answers the handshake on the event stream before it answers the handshake POST; the client
 * then rejects its handshake promise before start() awaits it, and Node's test runner counts
 * that short-lived unhandled rejection as a failure. Late delivery lets start() await the
 * promise first, as it usually does against ASP.NET Core.
 */
class LateEventSource extends EventSource {
    set onmessage(handler) {
        super.onmessage = handler && ((event) => setTimeout(() => handler(event), 100));
    }

    get onmessage() {
        return super.onmessage;
    }

    set onerror(handler) {
        super.onerror = handler && ((event) => setTimeout(() => handler(event), 100));
    }

    get onerror() {
        return super.onerror;
    }
}

test("SSE + messagepack: the server refuses the handshake with the exact text", { timeout: TEST_TIMEOUT, skip: DIRECT_ONLY }, async (t) => {
    // The stock client never sends a messagepack handshake over SSE (the transport is text
    // only), so present the messagepack protocol as a text protocol to reach the server's check.
    const protocol = makeProtocol("messagepack");
    const disguised = Object.create(protocol, { transferFormat: { value: signalR.TransferFormat.Text } });
    const c = new signalR.HubConnectionBuilder()
        .withUrl(url("/testhub"), {
            transport: signalR.HttpTransportType.ServerSentEvents,
            logger: signalR.LogLevel.None,
            EventSource: LateEventSource,
        })
        .withHubProtocol(disguised)
        .configureLogging(signalR.LogLevel.None)
        .build();
    t.after(() => stopQuietly(c));
    await assert.rejects(withTimeout(c.start(), 10_000, "start"), (err) => {
        assert.equal(
            err.message,
            "Server returned handshake error: Cannot use the 'messagepack' protocol on the current transport. " +
                "The transport does not support 'Binary' transfer format.",
        );
        return true;
    });
    assert.equal(c.state, HubConnectionState.Disconnected);
});

// Shared helpers for the conformance suite: the transport x protocol matrix,
// connection builders that always clean up, and small promise utilities.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

export { signalR, MessagePackHubProtocol };

const base = process.env.SIGNALR_BASE_URL;
if (!base) {
    throw new Error("SIGNALR_BASE_URL is not set (e.g. http://127.0.0.1:5000)");
}
/** The server root, without a trailing slash. */
export const BASE = base.replace(/\/+$/, "");

/** Default per-test timeout in milliseconds. */
export const TEST_TIMEOUT = 20_000;

/** The transports to test (SIGNALR_TRANSPORTS, comma-separated): all unless a server offers fewer. */
const TRANSPORTS = (process.env.SIGNALR_TRANSPORTS ?? "WebSockets,ServerSentEvents,LongPolling").split(",");

/** Every supported transport/protocol pair (SSE carries text only, so no SSE/messagepack). */
export const MATRIX = [
    { transport: "WebSockets", protocol: "json" },
    { transport: "WebSockets", protocol: "messagepack" },
    { transport: "ServerSentEvents", protocol: "json" },
    { transport: "LongPolling", protocol: "json" },
    { transport: "LongPolling", protocol: "messagepack" },
].filter((c) => TRANSPORTS.includes(c.transport));

export const WEBSOCKETS = MATRIX.filter((c) => c.transport === "WebSockets");

export function label(combo) {
    return `${combo.transport}/${combo.protocol}`;
}

export function url(path) {
    return BASE + path;
}

export function makeProtocol(name) {
    return name === "messagepack" ? new MessagePackHubProtocol() : new signalR.JsonHubProtocol();
}

/**
 * A HubConnection for `combo` on `path` (not started).
 * opts: { options: extra IHttpConnectionOptions, reconnect: delays array | true,
 *         stateful: true | IStatefulReconnectOptions, configure: (builder) => void }
 */
export function build(path, combo, opts = {}) {
    const options = {
        transport: signalR.HttpTransportType[combo.transport],
        logger: signalR.LogLevel.None,
        ...opts.options,
    };
    let builder = new signalR.HubConnectionBuilder()
        .withUrl(path.startsWith("http") ? path : url(path), options)
        .withHubProtocol(makeProtocol(combo.protocol))
        .configureLogging(signalR.LogLevel.None);
    if (opts.reconnect) {
        builder = opts.reconnect === true ? builder.withAutomaticReconnect() : builder.withAutomaticReconnect(opts.reconnect);
    }
    if (opts.stateful) {
        builder = opts.stateful === true ? builder.withStatefulReconnect() : builder.withStatefulReconnect(opts.stateful);
    }
    if (opts.configure) {
        opts.configure(builder);
    }
    return builder.build();
}

/** Builds a connection, registers its stop() with the test, starts it and returns it. */
export async function connect(t, path, combo, opts = {}) {
    const connection = build(path, combo, opts);
    t.after(() => stopQuietly(connection));
    await withTimeout(connection.start(), 10_000, `start ${path} [${label(combo)}]`);
    return connection;
}

export async function stopQuietly(connection) {
    try {
        await withTimeout(connection.stop(), 5_000, "stop");
    } catch {
        // the test already failed or the connection is gone; nothing more to clean up
    }
}

/**
 * Set (SIGNALR_BEHIND_SERVICE=1) when the hubs run behind Azure SignalR Service: the client
 * negotiates with the app, which redirects it to the service, so nothing that needs a direct
 * connection to the app (skipNegotiation, a transport the service double does not offer) applies.
 */
export const BEHIND_SERVICE = process.env.SIGNALR_BEHIND_SERVICE === "1";
/** The `skip` of a test that needs a direct connection to the app server. */
export const DIRECT_ONLY = BEHIND_SERVICE && "needs a direct connection to the app server, not Azure SignalR Service";
/** The `skip` of a stateful-reconnect test: through the service that is the service's part, which
 * only the live service can show (the double does not model it; docs/azure-signalr.md). */
export const STATEFUL_DIRECT_ONLY = BEHIND_SERVICE && "stateful reconnect through Azure SignalR Service is live-only";

/** Defines `name [transport/protocol]` for each combo. fn(t, combo). */
export function matrixTest(name, fn, { combos = MATRIX, timeout = TEST_TIMEOUT, skip = false } = {}) {
    for (const combo of combos) {
        test(`${name} [${label(combo)}]`, { timeout, skip }, (t) => fn(t, combo));
    }
}

export function delay(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Rejects with a clear message if `promise` does not settle within `ms`. */
export function withTimeout(promise, ms, what = "operation") {
    let handle;
    const timer = new Promise((_, reject) => {
        handle = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    });
    return Promise.race([promise, timer]).finally(() => clearTimeout(handle));
}

/** A promise plus its resolve/reject, for callbacks. */
export function deferred() {
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => {
        resolve = res;
        reject = rej;
    });
    return { promise, resolve, reject };
}

/**
 * Records every call of client method `name`; `.until(n)` waits for n calls.
 * Each call is stored as its argument array.
 */
export function recorder(connection, name) {
    const calls = [];
    const waiters = [];
    connection.on(name, (...args) => {
        calls.push(args);
        for (const w of waiters.slice()) {
            if (calls.length >= w.count) {
                waiters.splice(waiters.indexOf(w), 1);
                w.resolve(calls);
            }
        }
    });
    return {
        calls,
        until(count, ms = 10_000) {
            if (calls.length >= count) {
                return Promise.resolve(calls);
            }
            const d = deferred();
            waiters.push({ count, resolve: d.resolve });
            return withTimeout(d.promise, ms, `${count} call(s) of '${name}' (got ${calls.length})`);
        },
    };
}

/** Collects a server stream: resolves { items } on completion, rejects with the stream error. */
export function collect(streamResult, ms = 10_000) {
    const items = [];
    const d = deferred();
    streamResult.subscribe({
        next: (item) => items.push(item),
        complete: () => d.resolve({ items }),
        error: (err) => {
            err.items = items;
            d.reject(err);
        },
    });
    return withTimeout(d.promise, ms, "stream completion");
}

/** Polls `check` (async, truthy = done) until it holds or `ms` elapses. */
export async function eventually(check, ms = 5_000, what = "condition") {
    const deadline = Date.now() + ms;
    for (;;) {
        if (await check()) {
            return;
        }
        if (Date.now() > deadline) {
            assert.fail(`timed out after ${ms} ms waiting for ${what}`);
        }
        await delay(50);
    }
}

/** Asserts that `promise` rejects with an Error whose message is exactly `message`. */
export async function rejectsWith(promise, message) {
    await assert.rejects(withTimeout(promise, 10_000, `rejection '${message}'`), (err) => {
        assert.equal(err.message, message);
        return true;
    });
}

/** A unique key for server-side bookkeeping. */
export function uniqueKey(prefix) {
    return `${prefix}-${Date.now()}-${Math.random().toString(36).slice(2)}`;
}

// Tokens that expire while connected, through the stock @microsoft/signalr 11.0.0 client (the
// `signalr11` alias; the other files use 10.x): authentication refresh keeps a connection past its
// first token, a connection not refreshed is closed at expiry with ASP.NET Core's Close, a refresh
// with another user's token is refused, and an expired long poll is answered 409 so the client
// refreshes and polls again. Tokens live LIFETIME seconds (`token-<user>-exp<unix>`, see
// tests/support/hub_app.py): /authexpiry closes on expiry and serves refresh, /authrefresh only refreshes.
import assert from "node:assert/strict";
import { test } from "node:test";
import * as signalR from "signalr11";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import { MATRIX, deferred, eventually, label, stopQuietly, url, withTimeout } from "./harness.mjs";

/** Seconds a token lives: the client refreshes after half of what negotiate reports (1-1.5 s). */
const LIFETIME = 3;
const TIMEOUT = 30_000;
const LONG_POLLING = MATRIX.filter((c) => c.transport === "LongPolling");

/** A token of `user` that the test hub's validator accepts for `seconds` from now. */
function expiringToken(user, seconds = LIFETIME) {
    return `token-${user}-exp${(Date.now() / 1000 + seconds).toFixed(3)}`;
}

function expiryOf(token) {
    return Number(token.slice(token.lastIndexOf("-exp") + 4));
}

/** Every request the client makes, with its answer (status and body). */
class RecordingHttpClient extends signalR.DefaultHttpClient {
    constructor() {
        super(signalR.NullLogger.instance);
        this.log = [];
    }

    async send(request) {
        const response = await super.send(request);
        this.log.push({ method: request.method, url: request.url, status: response.statusCode, body: text(response.content) });
        return response;
    }
}

function text(content) {
    if (content === undefined || typeof content === "string") {
        return content;
    }
    return Buffer.from(content).toString();
}

/**
 * A 11.0.0 HubConnection for `combo` on `path` (not started).
 * opts: { tokens: accessTokenFactory, refresh: true | IAuthenticationRefreshOptions,
 *         reconnect: delays, httpClient }
 */
function build(path, combo, opts) {
    const options = {
        transport: signalR.HttpTransportType[combo.transport],
        logger: signalR.LogLevel.None,
        accessTokenFactory: opts.tokens,
    };
    if (opts.httpClient) {
        options.httpClient = opts.httpClient;
    }
    let builder = new signalR.HubConnectionBuilder()
        .withUrl(url(path), options)
        .withHubProtocol(combo.protocol === "messagepack" ? new MessagePackHubProtocol() : new signalR.JsonHubProtocol())
        .configureLogging(signalR.LogLevel.None);
    if (opts.refresh) {
        builder = builder.withAuthenticationRefresh(opts.refresh === true ? {} : opts.refresh);
    }
    if (opts.reconnect) {
        builder = builder.withAutomaticReconnect(opts.reconnect);
    }
    return builder.build();
}

/** Builds, watches for the close, starts; stopped after the test. */
async function connect(t, path, combo, opts) {
    const c = build(path, combo, opts);
    const closed = deferred();
    c.onclose((error) => closed.resolve(error ?? null));
    t.after(() => stopQuietly(c));
    await withTimeout(c.start(), 10_000, `start ${path} [${label(combo)}]`);
    return { c, closed: closed.promise };
}

/** `name [Transport/protocol]` for each combo, the combos at once (each mostly waits for a token to expire). */
function expiryTest(name, fn, combos = MATRIX) {
    test(name, { timeout: TIMEOUT, concurrency: combos.length }, async (t) => {
        await Promise.all(combos.map((combo) => t.test(`${name} [${label(combo)}]`, { timeout: TIMEOUT }, (st) => fn(st, combo))));
    });
}

/** Whether the hub ran on_disconnected for `id`, asked over a connection of its own. */
async function serverSawDisconnect(t, id) {
    const probe = build("/testhub", { transport: "WebSockets", protocol: "json" }, {});
    t.after(() => stopQuietly(probe));
    await probe.start();
    return probe.invoke("has_disconnected", id);
}

expiryTest("a connection refreshed before its token expires lives on", async (t, combo) => {
    const { c, closed } = await connect(t, "/authexpiry", combo, { tokens: () => expiringToken("alice"), refresh: true });
    const refreshed = [];
    c.onAuthenticationRefreshed((context) => refreshed.push(context.newTokenLifetimeInSeconds));
    const firstExpiry = await c.invoke("auth_expires_at");
    assert.ok(firstExpiry > Date.now() / 1000, "the hub knows when the first token expires");

    // negotiate reported the token's lifetime, so the client refreshes on its own
    await eventually(() => refreshed.length >= 1, 5_000, "an automatic refresh");
    assert.ok(refreshed[0] >= 1 && refreshed[0] <= LIFETIME, `the refresh reported the new lifetime (${refreshed[0]})`);
    // past the first token's expiry and a heartbeat: a connection still on it would be closed by now
    await eventually(() => Date.now() / 1000 > firstExpiry + 1.5, 5_000, "the first token's expiry to pass");

    assert.equal(await c.invoke("who_am_i"), "alice");
    assert.ok((await c.invoke("auth_expires_at")) > firstExpiry, "the hub sees the refreshed expiry");
    assert.ok((await c.invoke("refreshed_count")) >= 1, "on_authentication_refreshed ran");
    assert.equal(c.state, signalR.HubConnectionState.Connected);
    assert.equal(await Promise.race([closed, Promise.resolve("open")]), "open");
});

expiryTest("a connection not refreshed is closed when its token expires", async (t, combo) => {
    const token = expiringToken("bob");
    const { c, closed } = await connect(t, "/authexpiry", combo, { tokens: () => token });
    const id = await c.invoke("get_connection_id");

    // ASP.NET Core's close on expiration: a Close message without an error (allowReconnect: true)
    const error = await withTimeout(closed, (LIFETIME + 5) * 1000, "the close at expiry");
    assert.equal(error, null, "the close carries no error");
    assert.ok(Date.now() / 1000 >= expiryOf(token) - 0.05, "not before the token expired");
    assert.equal(c.state, signalR.HubConnectionState.Disconnected);
    assert.equal(await serverSawDisconnect(t, id), true);
});

expiryTest("the close at expiry lets automatic reconnect run with a new token", async (t, combo) => {
    const { c } = await connect(t, "/authexpiry", combo, { tokens: () => expiringToken("carol"), reconnect: [0] });
    const id = await c.invoke("get_connection_id");
    const reconnecting = deferred();
    const reconnected = deferred();
    c.onreconnecting((error) => reconnecting.resolve(error ?? null));
    c.onreconnected((newId) => reconnected.resolve(newId));

    assert.equal(await withTimeout(reconnecting.promise, (LIFETIME + 5) * 1000, "reconnecting at expiry"), null);
    const newId = await withTimeout(reconnected.promise, 10_000, "reconnected");
    assert.notEqual(newId, id);
    assert.equal(await c.invoke("who_am_i"), "carol");
});

expiryTest("a refresh with another user's token is refused and the connection stays as it was", async (t, combo) => {
    const alice = expiringToken("alice");
    let signedIn = alice;
    const { c, closed } = await connect(t, "/authexpiry", combo, { tokens: () => signedIn, refresh: true });
    const failed = [];
    c.onAuthenticationRefreshFailed((context) => failed.push(context.error.message));
    signedIn = expiringToken("mallory", 60); // the next refresh presents someone else

    await eventually(() => failed.length >= 1, 5_000, "the refused refresh");
    assert.deepEqual(failed, ["Unexpected status code returned from authentication refresh '403'"]);
    assert.equal(await c.invoke("who_am_i"), "alice");
    assert.equal(await c.invoke("auth_expires_at"), expiryOf(alice));
    assert.equal(await c.invoke("refreshed_count"), 0);

    // it still ends with alice's token
    assert.equal(await withTimeout(closed, (LIFETIME + 5) * 1000, "the close at expiry"), null);
    assert.ok(Date.now() / 1000 >= expiryOf(alice) - 0.05, "not before alice's token expired");
});

expiryTest("an expired long poll is answered 409 and the client refreshes and polls again", async (t, combo) => {
    const http = new RecordingHttpClient();
    const tokens = [];
    const { c, closed } = await connect(t, "/authrefresh", combo, {
        tokens: () => {
            tokens.push(expiringToken("dave", 2));
            return tokens.at(-1);
        },
        httpClient: http,
    });
    const notified = deferred();
    c.on("Notified", (value) => notified.resolve(value));
    // the answer comes after the token expired: the poll that follows it carries the expired token
    await c.invoke("notify_after", 2.5, "late");
    assert.equal(await withTimeout(notified.promise, 10_000, "the late notification"), "late");

    await eventually(() => http.log.some((r) => r.url.includes("/refresh") && r.status === 200), 5_000, "the refresh");
    const conflict = http.log.findIndex((r) => r.method === "GET" && r.status === 409);
    assert.ok(conflict >= 0, "a poll was answered 409");
    assert.deepEqual(JSON.parse(http.log[conflict].body).error, "authentication_refresh_required");
    const refresh = http.log.findIndex((r) => r.url.includes("/refresh"));
    assert.ok(refresh > conflict, "the refresh followed the 409");
    assert.equal(http.log[refresh].method, "POST");

    assert.equal(await c.invoke("who_am_i"), "dave");
    assert.ok((await c.invoke("auth_expires_at")) > expiryOf(tokens[0]), "the hub sees the refreshed expiry");
    assert.ok((await c.invoke("refreshed_count")) >= 1);
    assert.equal(await Promise.race([closed, Promise.resolve("open")]), "open");
}, LONG_POLLING);

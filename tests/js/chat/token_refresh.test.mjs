// The chat closes a signed-in connection when its token's `exp` passes, unless the client
// refreshes the token first (on by default: AUTH_TOKEN_REFRESH), through the stock
// @microsoft/signalr 11.0.0 client's withAuthenticationRefresh(). Tokens are JWTs signed here
// with the server's secret (CHAT_JWT_SECRET), living a few seconds.
import { createHmac } from "node:crypto";
import { test } from "node:test";
import * as signalR from "signalr11";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";
import { assert, eventually, label, LP_MSGPACK, SERVERS, SSE_JSON, withTimeout, WS_JSON } from "./chat_harness.mjs";
import { deferred, stopQuietly } from "../harness.mjs";

const COMBOS = [WS_JSON, SSE_JSON, LP_MSGPACK];
const LIFETIME = 3;
const TIMEOUT = 30_000;

function b64url(value) {
    return Buffer.from(JSON.stringify(value)).toString("base64url");
}

/** A JWT for `user` that expires `seconds` from now (a whole second, as `exp` is usually written). */
function jwtFor(user, seconds = LIFETIME) {
    const secret = process.env.CHAT_JWT_SECRET;
    if (!secret) {
        throw new Error("CHAT_JWT_SECRET is not set (tests/clients/test_chat_js.py sets it)");
    }
    const exp = Math.ceil(Date.now() / 1000 + seconds);
    const signed = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url({ sub: user, name: user, exp })}`;
    return { token: `${signed}.${createHmac("sha256", secret).update(signed).digest("base64url")}`, exp };
}

async function open(t, combo, { tokens, refresh = false }) {
    let builder = new signalR.HubConnectionBuilder()
        .withUrl(`${SERVERS.main}/chat`, {
            transport: signalR.HttpTransportType[combo.transport],
            logger: signalR.LogLevel.None,
            accessTokenFactory: tokens,
        })
        .withHubProtocol(combo.protocol === "messagepack" ? new MessagePackHubProtocol() : new signalR.JsonHubProtocol())
        .configureLogging(signalR.LogLevel.None);
    if (refresh) {
        builder = builder.withAuthenticationRefresh();
    }
    const c = builder.build();
    const closed = deferred();
    c.onclose((error) => closed.resolve(error ?? null));
    t.after(() => stopQuietly(c));
    await withTimeout(c.start(), 10_000, `start /chat [${label(combo)}]`);
    return { c, closed: closed.promise };
}

function comboTest(name, fn) {
    test(name, { timeout: TIMEOUT, concurrency: COMBOS.length }, async (t) => {
        await Promise.all(COMBOS.map((combo) => t.test(`${name} [${label(combo)}]`, (st) => fn(st, combo))));
    });
}

comboTest("a signed-in connection that refreshes its token outlives the first one", async (t, combo) => {
    const first = jwtFor("refresher");
    let issued = 0;
    const { c, closed } = await open(t, combo, {
        tokens: () => (issued++ === 0 ? first.token : jwtFor("refresher").token),
        refresh: true,
    });
    const refreshed = [];
    c.onAuthenticationRefreshed((context) => refreshed.push(context.newTokenLifetimeInSeconds));
    await eventually(() => refreshed.length >= 1, 5_000, "an automatic refresh");
    // past the first token's exp and a heartbeat: a connection still on it would be closed by now
    await eventually(() => Date.now() / 1000 > first.exp + 1.5, 6_000, "the first token's expiry to pass");
    assert.ok(Array.isArray(await c.invoke("ListConversations")));
    assert.equal(c.state, signalR.HubConnectionState.Connected);
    assert.equal(await Promise.race([closed, Promise.resolve("open")]), "open");
});

comboTest("a signed-in connection that does not refresh is closed when its token expires", async (t, combo) => {
    const only = jwtFor("sleeper");
    const { c, closed } = await open(t, combo, { tokens: () => only.token });
    assert.ok(Array.isArray(await c.invoke("ListConversations")));
    assert.equal(await withTimeout(closed, (LIFETIME + 6) * 1000, "the close at expiry"), null);
    assert.ok(Date.now() / 1000 >= only.exp - 0.05, "not before the token expired");
});

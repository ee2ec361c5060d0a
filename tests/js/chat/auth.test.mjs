// Sign-in on the chat hub: a valid bearer token makes the caller a user (carol here),
// no token is anonymous, and any token the server cannot trust fails start().
import { createHmac } from "node:crypto";
import { test } from "node:test";
import {
    assert,
    ChatClient,
    echo,
    echoTokens,
    label,
    LP_JSON,
    LP_MSGPACK,
    MATRIX,
    NEGOTIATE_401,
    nonce,
    seed1Reply,
    SERVERS,
    signalR,
    token,
    turn,
    withTimeout,
    WS_JSON,
} from "./chat_harness.mjs";
import { build, stopQuietly } from "../harness.mjs";

const TIMEOUT = 20_000;
const AUTH_COMBOS = [WS_JSON, { transport: "ServerSentEvents", protocol: "json" }, LP_MSGPACK];

function b64url(value) {
    return Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
}

function decodePart(part) {
    return JSON.parse(Buffer.from(part, "base64url").toString());
}

/** Tokens the server must refuse, by why. */
function badTokens() {
    const [header, payload, signature] = token("alice").split(".");
    const claims = decodePart(payload);
    return {
        "that expired": token("expired"),
        "that is not a JWT": "not-a-jwt",
        // alice's signature on a payload that claims to be bob
        "tampered with": `${header}.${b64url({ ...claims, sub: "bob" })}.${signature}`,
        // an unsigned token
        "that is unsigned (alg none)": `${b64url({ alg: "none", typ: "JWT" })}.${payload}.`,
        // signed with a key the server does not have
        "signed with another key": `${header}.${payload}.${createHmac("sha256", "not-the-server-secret-but-long-enough-for-hs256").update(`${header}.${payload}`).digest("base64url")}`,
    };
}

for (const combo of AUTH_COMBOS) {
    for (const [why, bad] of Object.entries(badTokens())) {
        test(`a token ${why} fails start() with negotiate's 401 [${label(combo)}]`, { timeout: TIMEOUT }, async (t) => {
            const c = build(`${SERVERS.main}/chatHub`, combo, { options: { accessTokenFactory: () => bad } });
            t.after(() => stopQuietly(c));
            await assert.rejects(withTimeout(c.start(), 10_000, "start"), (err) => {
                assert.equal(err.message, NEGOTIATE_401);
                return true;
            });
            assert.equal(c.state, signalR.HubConnectionState.Disconnected);
        });
    }
}

test("an expired token is refused on /chat too", { timeout: TIMEOUT }, async (t) => {
    const c = build(`${SERVERS.main}/chat`, LP_JSON, { options: { accessTokenFactory: () => token("expired") } });
    t.after(() => stopQuietly(c));
    await assert.rejects(withTimeout(c.start(), 10_000, "start"), { message: NEGOTIATE_401 });
});

test("an expired token cannot skip negotiation either: the WebSocket upgrade is refused", { timeout: TIMEOUT }, async (t) => {
    const c = build(`${SERVERS.main}/chatHub`, WS_JSON, {
        options: { skipNegotiation: true, accessTokenFactory: () => token("expired") },
    });
    t.after(() => stopQuietly(c));
    await assert.rejects(withTimeout(c.start(), 10_000, "start"));
    assert.equal(c.state, signalR.HubConnectionState.Disconnected);
});

for (const combo of MATRIX) {
    test(`no token: an anonymous caller chats [${label(combo)}]`, { timeout: TIMEOUT }, async (t) => {
        const c = await ChatClient.open(t, SERVERS.main, "/chatHub", { combo });
        const text = `anonymous ${nonce("auth")}`;
        assert.deepEqual(await c.send(text), seed1Reply(echoTokens(text, 2)));
    });
}

test("a valid token makes the caller a user, whether it travels in the query or the header", { timeout: TIMEOUT }, async (t) => {
    // WebSockets and SSE send access_token in the query; long polling sends an Authorization header
    const ws = await ChatClient.open(t, SERVERS.main, "/chatHub", { user: "carol", combo: WS_JSON });
    await ws.clear();
    const text = `carol ${nonce("auth")}`;
    assert.deepEqual(await ws.send(text), seed1Reply(echoTokens(text, 2)));
    for (const combo of [{ transport: "ServerSentEvents", protocol: "json" }, LP_JSON, LP_MSGPACK]) {
        const other = await ChatClient.open(t, SERVERS.main, "/chat", { user: "carol", combo });
        assert.deepEqual(await other.history(), turn(text, echo(text, 2)), label(combo));
    }
    await ws.clear();
});

test("a skipNegotiation WebSocket carries the token too", { timeout: TIMEOUT }, async (t) => {
    const c = await ChatClient.open(t, SERVERS.main, "/chatHub", {
        user: "carol",
        combo: WS_JSON,
        options: { skipNegotiation: true },
    });
    await c.clear();
    const text = `carol skip ${nonce("auth")}`;
    await c.send(text);
    const other = await ChatClient.open(t, SERVERS.main, "/chat", { user: "carol", combo: LP_JSON });
    assert.deepEqual(await other.history(), turn(text, echo(text, 2)));
    await c.clear();
});

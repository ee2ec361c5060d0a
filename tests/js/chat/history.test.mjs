// Conversation history: multi-turn requests, per-connection history for anonymous
// callers, per-user history (shared across connections, paths and transports, kept
// across reconnects) for signed-in ones, and isolation between them.
// Users here: alice and bob (other files use other users on this server).
import { test } from "node:test";
import {
    assert,
    ChatClient,
    echo,
    echoTokens,
    LP_JSON,
    LP_MSGPACK,
    nonce,
    numbered,
    recordsFor,
    seed1Reply,
    seed2Reply,
    SERVERS,
    SSE_JSON,
    turn,
    WS_JSON,
    WS_MSGPACK,
} from "./chat_harness.mjs";

const TIMEOUT = 20_000;

function open(t, opts = {}, path = "/chatHub") {
    return ChatClient.open(t, SERVERS.main, path, opts);
}

/** A signed-in connection whose user's history is cleared first. */
async function openCleared(t, user, opts = {}, path = "/chatHub") {
    const c = await open(t, { ...opts, user }, path);
    await c.clear();
    assert.deepEqual(await c.history(), []);
    return c;
}

test("the third message's request carries the system prompt, both earlier turns and the new message", { timeout: TIMEOUT }, async (t) => {
    const c = await open(t);
    const texts = [1, 2, 3].map((i) => `turn${i} ${nonce("hist")}`);
    const expectedHistory = [];
    for (const [i, text] of texts.entries()) {
        const count = 2 + 2 * i;
        assert.deepEqual(await c.send(text), seed1Reply(echoTokens(text, count)));
        const [record] = await recordsFor(text);
        assert.equal(record.body.messages.length, count);
        assert.equal(record.body.messages[0].role, "system");
        assert.deepEqual(record.body.messages.slice(1), [...expectedHistory, { role: "user", content: text }]);
        expectedHistory.push(...turn(text, echo(text, count)));
    }
    const requests = await Promise.all(texts.map(async (text) => (await recordsFor(text))[0]));
    // the same system prompt leads every request
    assert.equal(new Set(requests.map((r) => JSON.stringify(r.body.messages[0]))).size, 1);
    assert.deepEqual(await c.history(), expectedHistory);
});

test("anonymous connections each have a conversation of their own", { timeout: TIMEOUT }, async (t) => {
    const a = await open(t, { combo: WS_JSON });
    const b = await open(t, { combo: LP_JSON }, "/chat");
    const fromA = `from a ${nonce("hist")}`;
    await a.send(fromA);
    const fromB = `from b ${nonce("hist")}`;
    assert.deepEqual(await b.send(fromB), seed1Reply(echoTokens(fromB, 2)), "b starts fresh");
    assert.deepEqual(await a.history(), turn(fromA, echo(fromA, 2)));
    assert.deepEqual(await b.history(), turn(fromB, echo(fromB, 2)));
});

test("an anonymous conversation ends with its connection: a new connection starts fresh", { timeout: TIMEOUT }, async (t) => {
    const first = await open(t);
    const before = `before ${nonce("hist")}`;
    await first.send(before);
    await first.connection.stop();
    const second = await open(t);
    assert.deepEqual(await second.history(), []);
    const after = `after ${nonce("hist")}`;
    assert.deepEqual(await second.send(after), seed1Reply(echoTokens(after, 2)));
});

test("a signed-in user's history is shared across connections, paths and transports", { timeout: TIMEOUT }, async (t) => {
    const onHub = await openCleared(t, "alice", { combo: WS_JSON }, "/chatHub");
    const onChat = await open(t, { user: "alice", combo: LP_MSGPACK }, "/chat");
    const onSse = await open(t, { user: "alice", combo: SSE_JSON }, "/chatHub");

    const first = `alice first ${nonce("hist")}`;
    assert.deepEqual(await onHub.send(first), seed1Reply(echoTokens(first, 2)));
    assert.deepEqual(await onChat.history(), turn(first, echo(first, 2)));

    const second = `alice second ${nonce("hist")}`;
    const { id, events } = await onChat.ask(second);
    assert.deepEqual(events, seed2Reply(id, echoTokens(second, 4)));
    const [record] = await recordsFor(second);
    assert.deepEqual(record.body.messages.slice(1), [...turn(first, echo(first, 2)), { role: "user", content: second }]);

    const third = `alice third ${nonce("hist")}`;
    assert.deepEqual((await onSse.stream(third).done).items, echoTokens(third, 6));
    const all = [...turn(first, echo(first, 2)), ...turn(second, echo(second, 4)), ...turn(third, echo(third, 6))];
    for (const c of [onHub, onChat, onSse]) {
        assert.deepEqual(await c.history(), all);
    }
});

test("a signed-in user's history survives a reconnect", { timeout: TIMEOUT }, async (t) => {
    const first = await openCleared(t, "alice", { combo: WS_MSGPACK });
    const earlier = [`kept one ${nonce("hist")}`, `kept two ${nonce("hist")}`];
    await first.send(earlier[0]);
    await first.send(earlier[1]);
    const stored = [...turn(earlier[0], echo(earlier[0], 2)), ...turn(earlier[1], echo(earlier[1], 4))];
    await first.connection.stop();

    const second = await open(t, { user: "alice", combo: LP_JSON }, "/chat");
    assert.deepEqual(await second.history(), stored);
    const next = `after reconnect ${nonce("hist")}`;
    assert.deepEqual(await second.send(next), seed1Reply(echoTokens(next, 6)));
    const [record] = await recordsFor(next);
    assert.deepEqual(record.body.messages.slice(1), [...stored, { role: "user", content: next }]);
});

test("users are isolated from each other and from anonymous callers", { timeout: TIMEOUT }, async (t) => {
    const alice = await openCleared(t, "alice");
    const bob = await openCleared(t, "bob", { combo: LP_JSON });
    const anonymous = await open(t);

    const fromAlice = `alice says ${nonce("hist")}`;
    await alice.send(fromAlice);
    assert.deepEqual(await bob.history(), []);
    assert.deepEqual(await anonymous.history(), []);

    const fromBob = `bob says ${nonce("hist")}`;
    assert.deepEqual(await bob.send(fromBob), seed1Reply(echoTokens(fromBob, 2)));
    const fromAnonymous = `anonymous says ${nonce("hist")}`;
    assert.deepEqual(await anonymous.send(fromAnonymous), seed1Reply(echoTokens(fromAnonymous, 2)));

    assert.deepEqual(await alice.history(), turn(fromAlice, echo(fromAlice, 2)));
    assert.deepEqual(await bob.history(), turn(fromBob, echo(fromBob, 2)));
    assert.deepEqual(await anonymous.history(), turn(fromAnonymous, echo(fromAnonymous, 2)));

    // bob clearing his history leaves alice's alone
    await bob.clear();
    assert.deepEqual(await alice.history(), turn(fromAlice, echo(fromAlice, 2)));
});

test("ClearHistory clears a user's conversation for all their connections", { timeout: TIMEOUT }, async (t) => {
    const one = await openCleared(t, "bob");
    const two = await open(t, { user: "bob", combo: SSE_JSON }, "/chat");
    const text = `bob before clear ${nonce("hist")}`;
    const from = one.events.length;
    await one.send(text);
    assert.deepEqual(await two.history(), turn(text, echo(text, 2)));
    assert.deepEqual(await two.clear(), [["ReceiveStatusUpdate", "history_cleared"]]);
    // history_cleared goes to the caller only
    await one.assertQuiet();
    assert.deepEqual(one.events.slice(from), seed1Reply(echoTokens(text, 2)));
    assert.deepEqual(await one.history(), []);
    const next = `bob after clear ${nonce("hist")}`;
    assert.deepEqual(await one.send(next), seed1Reply(echoTokens(next, 2)));
});

test("a user's replies take turns: a message from a second connection waits for the first reply", { timeout: TIMEOUT }, async (t) => {
    const one = await openCleared(t, "bob");
    const two = await open(t, { user: "bob", combo: LP_JSON });
    const first = `[[tokens:20]] ${nonce("hist")}`;
    const firstReply = one.send(first);
    await one.untilCount("ReceiveStreamToken", 1);
    const second = `meanwhile ${nonce("hist")}`;
    const secondReply = two.send(second);
    const tokens = numbered("t", 20);
    assert.deepEqual(await firstReply, seed1Reply(tokens));
    // the second request went upstream only after the first turn was stored
    assert.deepEqual(await secondReply, seed1Reply(echoTokens(second, 4)));
    const [record] = await recordsFor(second);
    assert.deepEqual(record.body.messages.slice(1), [...turn(first, tokens.join("")), { role: "user", content: second }]);
});

test("many concurrent conversations never mix", { timeout: TIMEOUT }, async (t) => {
    const combos = [WS_JSON, WS_MSGPACK, SSE_JSON, LP_JSON, LP_MSGPACK];
    const clients = await Promise.all(
        Array.from({ length: 10 }, (_, i) => open(t, { combo: combos[i % combos.length] }, i % 2 ? "/chat" : "/chatHub")),
    );
    await Promise.all(
        clients.map(async (c, i) => {
            const expected = [];
            for (let n = 0; n < 3; n += 1) {
                const text = `client${i} turn${n} ${nonce("mix")}`;
                assert.deepEqual(await c.send(text), seed1Reply(echoTokens(text, 2 + 2 * n)));
                expected.push(...turn(text, echo(text, 2 + 2 * n)));
            }
            assert.deepEqual(await c.history(), expected);
        }),
    );
});

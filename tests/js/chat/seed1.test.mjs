// Seed 1 (the wwwroot page) on /chatHub over every transport and protocol:
// SendMessage's event sequence, empty messages, ClearHistory, GetHistory and
// the two shapes of an upstream failure.
import { test } from "node:test";
import {
    assert,
    assertNoInternals,
    ChatClient,
    echo,
    echoTokens,
    fakeRequests,
    label,
    lastContent,
    MATRIX,
    nonce,
    numbered,
    recordsFor,
    seed1Reply,
    SERVERS,
    settledRecord,
    settledRecords,
    TEXT,
    turn,
} from "./chat_harness.mjs";

const TIMEOUT = 20_000;

function matrix(name, fn) {
    for (const combo of MATRIX) {
        test(`${name} [${label(combo)}]`, { timeout: TIMEOUT }, (t) => fn(t, combo));
    }
}

function open(t, combo) {
    return ChatClient.open(t, SERVERS.main, "/chatHub", { combo });
}

function assertSystem(message) {
    assert.equal(message.role, "system");
    assert.equal(typeof message.content, "string");
    assert.ok(message.content.length > 0, "the system prompt is not empty");
}

matrix("SendMessage streams thinking, StreamStart, one token per delta and StreamEnd", async (t, combo) => {
    const c = await open(t, combo);
    const text = `hello ${nonce("s1")} world`;
    const tokens = echoTokens(text, 2);
    // resolved only after ReceiveStreamEnd: the slice taken at resolution is the whole turn
    assert.deepEqual(await c.send(text), seed1Reply(tokens));
    assert.equal(tokens.join(""), echo(text, 2));

    const record = await settledRecord(text);
    assert.equal(record.outcome, "completed");
    assert.equal(record.status, 200);
    assert.equal(record.tokens_sent, tokens.length);
    assert.equal(record.body.messages.length, 2);
    assertSystem(record.body.messages[0]);
    assert.deepEqual(record.body.messages[1], { role: "user", content: text });
    await c.assertQuiet();
});

matrix("empty and whitespace-only messages get only ReceiveError and reach no model", async (t, combo) => {
    const c = await open(t, combo);
    // the other chat files run at the same time: count only requests that carry a blank message
    const blankRequests = async () => (await fakeRequests()).filter((r) => lastContent(r).trim() === "").length;
    const before = await blankRequests();
    for (const blank of ["", "   ", "\t\n \r\n"]) {
        assert.deepEqual(await c.send(blank), [["ReceiveError", TEXT.empty]], JSON.stringify(blank));
    }
    await c.assertQuiet();
    assert.equal(await blankRequests(), before, "no upstream request for a blank message");
    assert.deepEqual(await c.history(), []);

    // nothing was stored: the next message is the conversation's first
    const text = `after blanks ${nonce("s1")}`;
    assert.deepEqual(await c.send(text), seed1Reply(echoTokens(text, 2)));
});

matrix("null counts as empty; numbers, objects and arrays are not text", async (t, combo) => {
    const c = await open(t, combo);
    // the other chat files run at the same time: count only requests that carry one of these values
    const tag = nonce("nt");
    const sent = (r) => ["", "null", "42", "true"].includes(lastContent(r).trim()) || lastContent(r).includes(tag);
    const sentRequests = async () => (await fakeRequests()).filter(sent).length;
    const before = await sentRequests();
    assert.deepEqual(await c.send(null), [["ReceiveError", TEXT.empty]]);
    for (const value of [42, true, { text: tag }, [tag]]) {
        assert.deepEqual(await c.send(value), [["ReceiveError", TEXT.notText]], JSON.stringify(value));
    }
    assert.equal(await sentRequests(), before, "nothing went upstream");
    const text = `after non-text ${nonce("s1")}`;
    assert.deepEqual(await c.send(text), seed1Reply(echoTokens(text, 2)), "the connection still works");
});

matrix("a reply without tokens still gets StreamStart and StreamEnd", async (t, combo) => {
    const c = await open(t, combo);
    const text = `[[empty]] ${nonce("s1")}`;
    assert.deepEqual(await c.send(text), [["ReceiveStatusUpdate", "thinking"], ["ReceiveStreamStart"], ["ReceiveStreamEnd"]]);
    const record = await settledRecord(text);
    assert.equal(record.outcome, "completed");
    assert.equal(record.tokens_sent, 0);
    await c.assertQuiet();
});

matrix("GetHistory returns the caller's turns, oldest first, without the system prompt", async (t, combo) => {
    const c = await open(t, combo);
    assert.deepEqual(await c.history(), []);
    const first = `first ${nonce("s1")}`;
    const second = `second ${nonce("s1")}`;
    await c.send(first);
    await c.send(second);
    assert.deepEqual(await c.history(), [...turn(first, echo(first, 2)), ...turn(second, echo(second, 4))]);
});

matrix("ClearHistory resets the conversation to the system prompt", async (t, combo) => {
    const c = await open(t, combo);
    const first = `before clear ${nonce("s1")}`;
    assert.deepEqual(await c.send(first), seed1Reply(echoTokens(first, 2)));
    assert.deepEqual(await c.clear(), [["ReceiveStatusUpdate", "history_cleared"]]);
    assert.deepEqual(await c.history(), []);

    const after = `after clear ${nonce("s1")}`;
    assert.deepEqual(await c.send(after), seed1Reply(echoTokens(after, 2)));
    const record = await settledRecord(after);
    assert.equal(record.body.messages.length, 2, "system + the new message");
    assertSystem(record.body.messages[0]);
    assert.deepEqual(record.body.messages[1], { role: "user", content: after });
    assert.deepEqual(await c.history(), turn(after, echo(after, 2)));
});

matrix("an upstream error before any token: thinking, then only ReceiveError; nothing stored", async (t, combo) => {
    const c = await open(t, combo);
    const failing = `[[401]] ${nonce("s1")}`;
    assert.deepEqual(await c.send(failing), [["ReceiveStatusUpdate", "thinking"], ["ReceiveError", TEXT.auth]]);
    assertNoInternals(TEXT.auth);
    assert.equal((await settledRecords(failing, 1)).length, 1, "a 401 is not retried");
    assert.deepEqual(await c.history(), []);

    // the same connection keeps working, and the failed question was not stored
    const next = `after error ${nonce("s1")}`;
    assert.deepEqual(await c.send(next), seed1Reply(echoTokens(next, 2)));
});

matrix("an upstream error after some tokens: tokens, StreamEnd, ReceiveError; the partial reply is stored", async (t, combo) => {
    const c = await open(t, combo);
    const failing = `[[filter-finish]] ${nonce("s1")}`;
    const partial = numbered("t", 3);
    assert.deepEqual(await c.send(failing), [...seed1Reply(partial), ["ReceiveError", TEXT.filtered]]);
    assert.deepEqual(await c.history(), turn(failing, partial.join("")));

    const next = `after filter ${nonce("s1")}`;
    assert.deepEqual(await c.send(next), seed1Reply(echoTokens(next, 4)));
    const [record] = await recordsFor(next);
    assert.deepEqual(record.body.messages.slice(1), [...turn(failing, "t0 t1 t2"), { role: "user", content: next }]);
    await c.assertQuiet();
});

matrix("non-ASCII, markup and multi-line text round-trips unchanged", async (t, combo) => {
    const c = await open(t, combo);
    const text = `héllo wörld 👋🏽 日本語 "quoted" back\\slash <b>&amp;</b>\nsecond line ${nonce("s1")}`;
    assert.deepEqual(await c.send(text), seed1Reply(echoTokens(text, 2)));
    const record = await settledRecord(text);
    assert.deepEqual(record.body.messages[1], { role: "user", content: text });
    assert.deepEqual(await c.history(), turn(text, echo(text, 2)));
});

matrix("a long reply arrives complete and in order", async (t, combo) => {
    const c = await open(t, combo);
    const text = `[[tokens:200]] ${nonce("s1")}`;
    const tokens = numbered("t", 200);
    assert.deepEqual(await c.send(text), seed1Reply(tokens));
    assert.deepEqual(await c.history(), turn(text, tokens.join("")));
});

// Stopping a reply (StopGeneration, ClearHistory, disposing a stream, closing the
// connection) and StreamMessage: the stream ends the way the contract says, the
// upstream request is aborted at the fake, and the partial reply is kept.
import { test } from "node:test";
import {
    abortedRecord,
    assert,
    ChatClient,
    delay,
    echo,
    echoTokens,
    eventually,
    label,
    MATRIX,
    nonce,
    numbered,
    recordsFor,
    seed1Reply,
    SERVERS,
    settledRecord,
    turn,
    untilItems,
    withTimeout,
    WS_JSON,
    LP_JSON,
    LP_MSGPACK,
    SSE_JSON,
} from "./chat_harness.mjs";

const TIMEOUT = 20_000;
// [[slow]] streams 400 tokens 50 ms apart (20 s): a stopped reply ends far earlier.

function matrix(name, fn, combos = MATRIX) {
    for (const combo of combos) {
        test(`${name} [${label(combo)}]`, { timeout: TIMEOUT }, (t) => fn(t, combo));
    }
}

function open(t, combo = WS_JSON, path = "/chatHub") {
    return ChatClient.open(t, SERVERS.main, path, { combo });
}

function tokensIn(events) {
    return events.filter((e) => e[0] === "ReceiveStreamToken").map((e) => e[1]);
}

/** Sends `[[slow]] <nonce>` and resolves once `count` tokens arrived: { message, sending, from }. */
async function slowReply(c, count = 3) {
    const message = `[[slow]] ${nonce("stop")}`;
    const from = c.events.length;
    const sending = c.send(message);
    sending.catch(() => {}); // observed by the test; keeps an early failure from going unhandled
    await c.untilCount("ReceiveStreamToken", count, from);
    return { message, sending, from };
}

/** The next message's upstream request carries `stored` as the conversation so far. */
async function assertNextCarries(c, stored) {
    const next = `next ${nonce("stop")}`;
    assert.deepEqual(await c.send(next), seed1Reply(echoTokens(next, 2 + stored.length)));
    const [record] = await recordsFor(next);
    assert.deepEqual(record.body.messages.slice(1), [...stored, { role: "user", content: next }]);
}

matrix("StopGeneration ends the reply normally, aborts the upstream request and keeps the partial reply", async (t, combo) => {
    const c = await open(t, combo);
    const { message, sending } = await slowReply(c);
    const stopAt = Date.now();
    assert.equal((await c.invoke("StopGeneration")) ?? null, null);
    const events = await sending; // resolves, no error
    const endedAfter = Date.now() - stopAt;
    const tokens = tokensIn(events);
    assert.deepEqual(events, seed1Reply(tokens), "thinking, start, tokens, end; no ReceiveError");
    assert.deepEqual(tokens, numbered("tok", tokens.length));
    assert.ok(tokens.length >= 3 && tokens.length < 40, `${tokens.length} tokens before the stop took effect`);
    assert.ok(endedAfter < 1_000, `StreamEnd ${endedAfter} ms after the stop`);

    const { record } = await abortedRecord(message);
    assert.ok(record.tokens_sent >= tokens.length && record.tokens_sent < 40, `tokens_sent ${record.tokens_sent}`);
    await c.assertQuiet();

    assert.deepEqual(await c.history(), turn(message, tokens.join("")));
    await assertNextCarries(c, turn(message, tokens.join("")));
});

test("StopGeneration with no reply in flight does nothing", { timeout: TIMEOUT }, async (t) => {
    const c = await open(t);
    assert.equal((await c.invoke("StopGeneration")) ?? null, null);
    const text = `after idle stop ${nonce("stop")}`;
    assert.deepEqual(await c.send(text), seed1Reply(echoTokens(text, 2)));
    assert.equal((await c.invoke("StopGeneration")) ?? null, null);
    await c.assertQuiet();
    assert.deepEqual(await c.history(), turn(text, echo(text, 2)));
});

test("StopGeneration stops only the caller's reply", { timeout: TIMEOUT }, async (t) => {
    const a = await open(t);
    const b = await open(t);
    const first = await slowReply(a);
    const second = await slowReply(b);
    await a.invoke("StopGeneration");
    await first.sending;
    await abortedRecord(first.message);

    // b keeps streaming after a's stop
    const seen = tokensIn(b.events.slice(second.from)).length;
    await b.untilCount("ReceiveStreamToken", seen + 3, second.from);
    const [other] = await recordsFor(second.message);
    assert.equal(other.outcome, "streaming");

    await b.invoke("StopGeneration");
    const events = await second.sending;
    assert.deepEqual(events, seed1Reply(tokensIn(events)));
    await abortedRecord(second.message);
});

test("ClearHistory during a reply stops it and leaves an empty conversation", { timeout: TIMEOUT }, async (t) => {
    const c = await open(t);
    const earlier = `earlier ${nonce("stop")}`;
    await c.send(earlier);
    const { message, sending, from } = await slowReply(c);
    const clearing = c.invoke("ClearHistory");
    const events = await sending;
    await clearing;
    // the reply ends normally; history_cleared comes once the reply let go of the conversation
    const reply = events.filter((e) => e[1] !== "history_cleared");
    assert.deepEqual(reply, seed1Reply(tokensIn(reply)));
    await c.until((ev) => ev.length > from && ev.some((e, i) => i >= from && e[1] === "history_cleared"));
    assert.deepEqual(
        c.events.slice(from).filter((e) => e[0] === "ReceiveStatusUpdate"),
        [
            ["ReceiveStatusUpdate", "thinking"],
            ["ReceiveStatusUpdate", "history_cleared"],
        ],
    );
    const { record } = await abortedRecord(message);
    assert.ok(record.tokens_sent < 40, `tokens_sent ${record.tokens_sent}`);
    assert.deepEqual(await c.history(), []);
    await assertNextCarries(c, []);
});

matrix("StreamMessage yields one item per delta and completes", async (t, combo) => {
    const c = await open(t, combo);
    const message = `stream ${nonce("stream")} me`;
    const { items } = await c.stream(message).done;
    assert.deepEqual(items, echoTokens(message, 2));
    const record = await settledRecord(message);
    assert.equal(record.outcome, "completed");
    assert.equal(record.body.messages.length, 2);
    // StreamMessage sends no seed-1 events
    await c.assertQuiet();
    assert.deepEqual(c.events, []);
    assert.deepEqual(await c.history(), turn(message, echo(message, 2)));
});

test("StreamMessage shares the conversation with SendMessage and AskAi", { timeout: TIMEOUT }, async (t) => {
    const c = await open(t);
    const sent = `sent ${nonce("stream")}`;
    await c.send(sent);
    const streamed = `streamed ${nonce("stream")}`;
    assert.deepEqual((await c.stream(streamed).done).items, echoTokens(streamed, 4));
    const asked = `asked ${nonce("stream")}`;
    const { id, events } = await c.ask(asked);
    assert.equal(events.at(-1)[1], id);
    const [record] = await recordsFor(asked);
    assert.deepEqual(record.body.messages.slice(1), [
        ...turn(sent, echo(sent, 2)),
        ...turn(streamed, echo(streamed, 4)),
        { role: "user", content: asked },
    ]);
});

matrix("disposing a StreamMessage subscription aborts the upstream request", async (t, combo) => {
    const c = await open(t, combo);
    const message = `[[slow]] ${nonce("stream")}`;
    const stream = c.stream(message);
    stream.done.catch(() => {}); // a disposed stream never completes
    await untilItems(stream.items, 3);
    stream.subscription.dispose();
    const { record } = await abortedRecord(message);
    assert.ok(record.tokens_sent < 40, `tokens_sent ${record.tokens_sent}`);
    assert.deepEqual(stream.items, numbered("tok", stream.items.length));

    // the connection keeps working
    const next = `after dispose ${nonce("stream")}`;
    const { items } = await c.stream(next).done;
    assert.equal(items.join(""), echo(next, Number(items.join("").match(/history: (\d+)/)[1])));
    assert.deepEqual(await c.send(`[[tokens:2]] ${nonce("stream")}`), seed1Reply(["t0", " t1"]));
}, [WS_JSON, LP_JSON]);

matrix("StopGeneration during a StreamMessage completes the stream normally", async (t, combo) => {
    const c = await open(t, combo);
    const message = `[[slow]] ${nonce("stream")}`;
    const stream = c.stream(message);
    await untilItems(stream.items, 3);
    const stopAt = Date.now();
    await c.invoke("StopGeneration");
    const { items } = await stream.done; // completes without an error
    assert.ok(Date.now() - stopAt < 1_000, "the stream completed soon after the stop");
    assert.deepEqual(items, numbered("tok", items.length));
    assert.ok(items.length >= 3 && items.length < 40, `${items.length} items`);
    const { record } = await abortedRecord(message);
    assert.ok(record.tokens_sent < 40, `tokens_sent ${record.tokens_sent}`);
    assert.deepEqual(await c.history(), turn(message, items.join("")));
    await assertNextCarries(c, turn(message, items.join("")));
}, [WS_JSON, LP_JSON]);

matrix("closing the connection mid-reply aborts the upstream request; other connections carry on", async (t, combo) => {
    const other = await open(t, WS_JSON);
    const c = await open(t, combo);
    const { message, sending } = await slowReply(c);
    const stopping = Date.now();
    await withTimeout(c.connection.stop(), 5_000, "stop");
    const { record } = await abortedRecord(message, 1_000);
    const abortedAfter = Date.now() - stopping;
    assert.ok(record.tokens_sent < 100, `tokens_sent ${record.tokens_sent}`);
    assert.ok(abortedAfter < 1_500, `aborted ${abortedAfter} ms after stop()`);
    // the client rejects the pending invocation when its connection closes
    await assert.rejects(sending);

    const text = `still here ${nonce("stop")}`;
    assert.deepEqual(await other.send(text), seed1Reply(echoTokens(text, 2)));
    const fresh = await open(t, combo);
    const again = `fresh ${nonce("stop")}`;
    assert.deepEqual(await fresh.send(again), seed1Reply(echoTokens(again, 2)));
});

matrix("closing the connection mid-stream aborts the upstream request", async (t, combo) => {
    const c = await open(t, combo);
    const message = `[[slow]] ${nonce("stream")}`;
    const stream = c.stream(message);
    stream.done.catch(() => {});
    await untilItems(stream.items, 3);
    await withTimeout(c.connection.stop(), 5_000, "stop");
    const { record } = await abortedRecord(message, 1_000);
    assert.ok(record.tokens_sent < 100, `tokens_sent ${record.tokens_sent}`);
}, [WS_JSON, LP_JSON]);

/** Sends `[[500]] <nonce>` and resolves once the fake answered the first attempt (the SDK then waits to retry). */
async function failingReply(c) {
    const message = `[[500]] ${nonce("retry")}`;
    const from = c.events.length;
    const sending = c.send(message);
    sending.catch(() => {});
    await eventually(async () => (await recordsFor(message)).length >= 1, 5_000, "the first attempt");
    return { message, sending, from };
}

test("StopGeneration while the SDK waits to retry ends the turn quietly and makes no more attempts", { timeout: TIMEOUT }, async (t) => {
    const c = await open(t);
    const { message, sending } = await failingReply(c);
    await c.invoke("StopGeneration");
    // stopped before any token: an empty reply, not an error
    assert.deepEqual(await sending, [["ReceiveStatusUpdate", "thinking"], ["ReceiveStreamStart"], ["ReceiveStreamEnd"]]);
    await delay(1_500); // longer than the SDK's first two backoffs
    assert.equal((await recordsFor(message)).length, 1, "no retry after the stop");
    assert.deepEqual(await c.history(), []);
    await c.assertQuiet();
});

matrix("closing the connection while the SDK waits to retry makes no more attempts", async (t, combo) => {
    const c = await open(t, combo);
    const { message, sending } = await failingReply(c);
    await withTimeout(c.connection.stop(), 5_000, "stop");
    await assert.rejects(sending);
    await delay(1_500);
    assert.equal((await recordsFor(message)).length, 1, "no retry after the disconnect");
}, [WS_JSON, LP_JSON]);

test("ClearHistory from a user's other tab stops the reply streaming there, then clears", { timeout: TIMEOUT }, async (t) => {
    const streaming = await ChatClient.open(t, SERVERS.main, "/chatHub", { user: "dave" });
    await streaming.clear();
    const other = await ChatClient.open(t, SERVERS.main, "/chatHub", { user: "dave", combo: SSE_JSON });
    const { message, sending } = await slowReply(streaming);
    await withTimeout(other.invoke("ClearHistory"), 2_000, "ClearHistory from the other tab");
    const events = await sending;
    assert.deepEqual(events, seed1Reply(tokensIn(events)), "the reply ended normally");
    const { record } = await abortedRecord(message);
    assert.ok(record.tokens_sent < 40, `tokens_sent ${record.tokens_sent}`);
    assert.deepEqual(await other.history(), [], "the conversation is empty for both tabs");
    assert.deepEqual(await streaming.history(), []);
});

test("StopGeneration stops the caller's reply while it still waits for the conversation", { timeout: TIMEOUT }, async (t) => {
    // dave on two connections: one conversation, one reply at a time. The second
    // connection's message waits (it has seen "thinking") while the first streams.
    const streaming = await ChatClient.open(t, SERVERS.main, "/chatHub", { user: "dave" });
    await streaming.clear();
    const waiting = await ChatClient.open(t, SERVERS.main, "/chat", { user: "dave", combo: LP_JSON });
    const first = await slowReply(streaming);
    const queued = `queued ${nonce("stop")}`;
    const sending = waiting.send(queued);
    sending.catch(() => {});
    await waiting.until((ev) => ev.some((e) => e[1] === "thinking"), 5_000, "thinking");
    await delay(100);
    assert.deepEqual(await recordsFor(queued), [], "still waiting for the conversation");

    // the waiting caller stops its reply, then the streaming one ends
    await waiting.invoke("StopGeneration");
    await streaming.invoke("StopGeneration");
    const streamed = tokensIn(await first.sending);

    // stopped before any token: an empty reply, never sent upstream, nothing stored
    assert.deepEqual(await sending, [["ReceiveStatusUpdate", "thinking"], ["ReceiveStreamStart"], ["ReceiveStreamEnd"]]);
    await delay(200);
    assert.deepEqual(await recordsFor(queued), [], "the stopped message never went upstream");
    assert.deepEqual(await streaming.history(), turn(first.message, streamed.join("")));
    await streaming.clear();
});

matrix("StopGeneration during AskAi: typing false and completed, no error; the partial reply is kept", async (t, combo) => {
    const c = await open(t, combo, "/chat");
    const prompt = `[[slow]] ${nonce("stop")}`;
    const from = c.events.length;
    const asking = c.ask(prompt);
    asking.catch(() => {});
    await c.untilCount("partial", 3, from);
    await c.invoke("StopGeneration");
    const { id, events } = await asking;
    const partials = events.filter((e) => e[0] === "partial").map((e) => e[2]);
    assert.deepEqual(events, [
        ["typing", id, true],
        ...partials.map((tok) => ["partial", id, tok]),
        ["typing", id, false],
        ["completed", id],
    ]);
    assert.deepEqual(partials, numbered("tok", partials.length));
    assert.ok(partials.length >= 3 && partials.length < 40, `${partials.length} partials`);
    const { record } = await abortedRecord(prompt);
    assert.ok(record.tokens_sent < 40, `tokens_sent ${record.tokens_sent}`);
    assert.deepEqual(await c.history(), turn(prompt, partials.join("")));
}, [WS_JSON, LP_MSGPACK]);

test("closing the connection during AskAi aborts the upstream request", { timeout: TIMEOUT }, async (t) => {
    const c = await open(t, WS_JSON, "/chat");
    const prompt = `[[slow]] ${nonce("stop")}`;
    const asking = c.ask(prompt);
    asking.catch(() => {});
    await c.untilCount("partial", 3);
    await withTimeout(c.connection.stop(), 5_000, "stop");
    const { record } = await abortedRecord(prompt, 1_000);
    assert.ok(record.tokens_sent < 100, `tokens_sent ${record.tokens_sent}`);
    await assert.rejects(asking);
});

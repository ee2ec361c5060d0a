// The tight server (CHAT_TIGHT_URL): MAX_MESSAGE_LENGTH=200, RATE_LIMIT_MESSAGES=3 per
// 60 s per conversation key, MAX_HISTORY_MESSAGES=4, AI_CONTEXT_TOKENS=600 with
// AI_MAX_OUTPUT_TOKENS=100. Each conversation can send 3 messages, so every test uses
// fresh anonymous connections, or dave (the only user this file signs in).
import { test } from "node:test";
import {
    assert,
    ChatClient,
    echo,
    echoTokens,
    label,
    LP_JSON,
    LP_MSGPACK,
    nonce,
    numbered,
    recordsFor,
    seed1Reply,
    seed2Reply,
    SERVERS,
    STREAM_ERROR_PREFIX,
    TEXT,
    turn,
    WS_JSON,
} from "./chat_harness.mjs";

const TIMEOUT = 20_000;
const RATE_LIMITED = /^You are sending messages too quickly\. Please wait (\d+) seconds?\.$/;

function open(t, opts = {}, path = "/chatHub") {
    return ChatClient.open(t, SERVERS.tight, path, opts);
}

/** `prefix`, padded with x's to exactly `length` characters. */
function sized(prefix, length) {
    const text = `${prefix} ${"x".repeat(Math.max(0, length - prefix.length - 1))}`;
    assert.equal(text.length, length);
    return text;
}

/** The text must be the rate-limit message, asking for a wait that fits a 60 s window. */
function assertRateLimited(text) {
    const match = RATE_LIMITED.exec(text);
    assert.ok(match, `rate-limit text: ${JSON.stringify(text)}`);
    const seconds = Number(match[1]);
    assert.ok(seconds >= 50 && seconds <= 60, `wait ${seconds} s`);
}

test("a 201-character message is refused, 200 are accepted, and the connection keeps working", { timeout: TIMEOUT }, async (t) => {
    const c = await open(t, { combo: WS_JSON });
    const tag = nonce("len");
    const tooLong = sized(tag, 201);
    assert.deepEqual(await c.send(tooLong), [["ReceiveError", TEXT.tooLong200]]);
    const asked = await c.ask(tooLong);
    assert.deepEqual(asked.events, [
        ["error", asked.id, TEXT.tooLong200],
        ["completed", asked.id],
    ]);
    await assert.rejects(c.stream(tooLong).done, { message: STREAM_ERROR_PREFIX + TEXT.tooLong200 });
    assert.deepEqual(await recordsFor(tag), [], "a refused message never goes upstream");
    await c.assertQuiet();

    const longest = sized(nonce("len"), 200);
    assert.deepEqual(await c.send(longest), seed1Reply(echoTokens(longest, 2)));
    const next = `next ${nonce("len")}`;
    assert.deepEqual(await c.send(next), seed1Reply(echoTokens(next, 4)));
});

test("refused messages do not count toward the rate limit", { timeout: TIMEOUT }, async (t) => {
    const c = await open(t, { combo: LP_JSON });
    for (const refused of ["", "   ", sized(nonce("rate"), 201), sized(nonce("rate"), 300)]) {
        const events = await c.send(refused);
        assert.equal(events.length, 1);
        assert.equal(events[0][0], "ReceiveError");
        assert.ok(!RATE_LIMITED.test(events[0][1]));
    }
    for (let i = 0; i < 3; i += 1) {
        const text = `[[tokens:2]] ${nonce("rate")}`;
        assert.deepEqual(await c.send(text), seed1Reply(numbered("t", 2)), `message ${i + 1}`);
    }
    const [[name, text]] = await c.send(`fourth ${nonce("rate")}`);
    assert.equal(name, "ReceiveError");
    assertRateLimited(text);
});

test("the 4th message within 60 s is refused on that connection only", { timeout: TIMEOUT }, async (t) => {
    const c = await open(t, { combo: WS_JSON });
    const sent = [];
    for (let i = 0; i < 3; i += 1) {
        const text = `[[tokens:1]] ${nonce("rate")}`;
        assert.deepEqual(await c.send(text), seed1Reply(["t0"]));
        sent.push(text);
    }
    const fourth = `fourth ${nonce("rate")}`;
    const events = await c.send(fourth);
    assert.equal(events.length, 1, JSON.stringify(events));
    assert.equal(events[0][0], "ReceiveError");
    assertRateLimited(events[0][1]);
    assert.deepEqual(await recordsFor(fourth), [], "a rate-limited message never goes upstream");

    // AskAi and StreamMessage count toward the same limit
    const { id, events: askEvents } = await c.ask(`ask ${nonce("rate")}`);
    assert.equal(askEvents.length, 2, JSON.stringify(askEvents));
    assert.equal(askEvents[0][0], "error");
    assert.equal(askEvents[0][1], id);
    assertRateLimited(askEvents[0][2]);
    assert.deepEqual(askEvents[1], ["completed", id]);
    await assert.rejects(c.stream(`stream ${nonce("rate")}`).done, (err) => {
        assert.ok(err.message.startsWith(STREAM_ERROR_PREFIX), err.message);
        assertRateLimited(err.message.slice(STREAM_ERROR_PREFIX.length));
        return true;
    });

    // still connected, and the history is intact (the last 4 messages)
    assert.deepEqual(await c.history(), [...turn(sent[1], "t0"), ...turn(sent[2], "t0")]);

    // another connection has a limit of its own
    const other = await open(t, { combo: LP_MSGPACK });
    const text = `other ${nonce("rate")}`;
    assert.deepEqual(await other.send(text), seed1Reply(echoTokens(text, 2)));
});

test("a signed-in user's limit spans their connections", { timeout: TIMEOUT }, async (t) => {
    const one = await open(t, { user: "dave", combo: WS_JSON });
    await one.clear();
    const two = await open(t, { user: "dave", combo: LP_JSON }, "/chat");
    const sent = [];
    for (const c of [one, two, one]) {
        const text = `[[tokens:1]] ${nonce("rate")}`;
        assert.deepEqual(await c.send(text), seed1Reply(["t0"]));
        sent.push(text);
    }
    // a user's stored history is trimmed to the last 4 messages too
    assert.deepEqual(await two.history(), [...turn(sent[1], "t0"), ...turn(sent[2], "t0")]);
    const { id, events } = await two.ask(`dave fourth ${nonce("rate")}`);
    assert.equal(events.length, 2, JSON.stringify(events));
    assert.equal(events[0][0], "error");
    assertRateLimited(events[0][2]);
    assert.deepEqual(events[1], ["completed", id]);
    // anonymous callers are not held back by dave's limit
    const anonymous = await open(t);
    const text = `anonymous ${nonce("rate")}`;
    assert.deepEqual(await anonymous.send(text), seed1Reply(echoTokens(text, 2)));
});

test("history keeps the last 4 messages, and the system prompt always leads", { timeout: TIMEOUT }, async (t) => {
    const c = await open(t, { combo: WS_JSON });
    const texts = [1, 2, 3].map((i) => `keep${i} ${nonce("trim")}`);
    for (const [i, text] of texts.entries()) {
        assert.deepEqual(await c.send(text), seed1Reply(echoTokens(text, 2 + 2 * i)));
    }
    const requests = await Promise.all(texts.map(async (text) => (await recordsFor(text))[0]));
    for (const record of requests) {
        assert.equal(record.body.messages[0].role, "system");
        assert.ok(record.body.messages.length <= 1 + 4 + 1, `${record.body.messages.length} messages`);
    }
    // the third request: system + the 4 stored messages + the new one
    assert.deepEqual(requests[2].body.messages.slice(1), [
        ...turn(texts[0], echo(texts[0], 2)),
        ...turn(texts[1], echo(texts[1], 4)),
        { role: "user", content: texts[2] },
    ]);
    // the first turn has now been dropped from the store
    assert.deepEqual(await c.history(), [...turn(texts[1], echo(texts[1], 4)), ...turn(texts[2], echo(texts[2], 6))]);
});

test("the context budget drops the oldest turns first and keeps whole turns", { timeout: TIMEOUT }, async (t) => {
    const c = await open(t, { combo: WS_JSON });
    // ~190-character questions with ~640-character replies: one earlier turn fits a
    // 500-token budget (600 context - 100 output) beside the new message, two do not
    const long = numbered("t", 150);
    const first = sized(`[[tokens:150]] ${nonce("budget")}`, 190);
    const second = sized(`[[tokens:150]] ${nonce("budget")}`, 190);
    const third = sized(nonce("budget"), 190);
    assert.deepEqual(await c.send(first), seed1Reply(long));
    assert.deepEqual(await c.send(second), seed1Reply(long));
    assert.deepEqual(await c.history(), [...turn(first, long.join("")), ...turn(second, long.join(""))]);

    const [secondRequest] = await recordsFor(second);
    assert.deepEqual(secondRequest.body.messages.slice(1), [...turn(first, long.join("")), { role: "user", content: second }]);

    assert.deepEqual(await c.send(third), seed1Reply(echoTokens(third, 4)));
    const [thirdRequest] = await recordsFor(third);
    assert.equal(thirdRequest.body.messages[0].role, "system");
    assert.deepEqual(thirdRequest.body.messages.slice(1), [...turn(second, long.join("")), { role: "user", content: third }]);
    assert.equal(thirdRequest.body.max_tokens, 100);
});

test("AskAi on /chat: three replies, then the rate limit", { timeout: TIMEOUT }, async (t) => {
    const c = await open(t, { combo: LP_MSGPACK }, "/chat");
    for (let i = 0; i < 3; i += 1) {
        const prompt = `[[tokens:2]] ${nonce("rate")}`;
        const ok = await c.ask(prompt);
        assert.deepEqual(ok.events, seed2Reply(ok.id, numbered("t", 2)));
    }
    const { id, events } = await c.ask(`fourth ask ${nonce("rate")}`);
    assert.equal(events.length, 2, JSON.stringify(events));
    assert.deepEqual(events.map((e) => e[0]), ["error", "completed"]);
    assert.equal(events[0][1], id);
    assertRateLimited(events[0][2]);
});

for (const combo of [WS_JSON, LP_MSGPACK]) {
    test(`the default limit (CHAT_URL, 8000 characters) holds for text that escapes to 6 bytes a character [${label(combo)}]`, { timeout: TIMEOUT }, async (t) => {
        const c = await ChatClient.open(t, SERVERS.main, "/chatHub", { combo });
        // U+0001 is no whitespace, and JSON escapes it as \u0001: the largest message the limit allows
        const head = `[[tokens:1]] ${nonce("len")} `;
        const atLimit = head + "\u0001".repeat(8000 - head.length);
        assert.equal(atLimit.length, 8000);
        assert.deepEqual(await c.send(atLimit), seed1Reply(["t0"]));
        const [record] = await recordsFor(head.trim());
        assert.equal(record.body.messages.at(-1).content, atLimit);

        const overLimit = `${atLimit}\u0001`;
        const events = await c.send(overLimit);
        assert.equal(events.length, 1, JSON.stringify(events).slice(0, 200));
        assert.equal(events[0][0], "ReceiveError");
        assert.match(events[0][1], /^Message is too long\. The limit is 8,?000 characters\.$/);
        const next = `after the limit ${nonce("len")}`;
        assert.deepEqual(await c.send(next), seed1Reply(echoTokens(next, 4)));
    });
}

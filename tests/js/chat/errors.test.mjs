// Upstream failures as users see them: the friendly texts for every kind, the SDK's
// retries as the fake saw them, what is stored, and that the connection keeps working.
import { test } from "node:test";
import {
    assert,
    assertNoInternals,
    ChatClient,
    echo,
    echoTokens,
    label,
    LP_MSGPACK,
    nonce,
    numbered,
    recordsFor,
    seed1Reply,
    seed2Reply,
    SERVERS,
    settledRecords,
    STREAM_ERROR_PREFIX,
    TEXT,
    turn,
    WS_JSON,
} from "./chat_harness.mjs";

const TIMEOUT = 20_000;
const COMBOS = [WS_JSON, LP_MSGPACK];

/**
 * marker -> what the user sees and what the fake recorded.
 * tokens: the partial reply streamed before the failure (null: failed before any token).
 * statuses: one per upstream attempt (the openai SDK retries 429 and 5xx twice);
 * outcome: how the fake recorded each attempt.
 */
const FAILURES = [
    { marker: "[[429]]", text: TEXT.busy, tokens: null, statuses: [429, 429, 429], outcome: "error" },
    { marker: "[[401]]", text: TEXT.auth, tokens: null, statuses: [401], outcome: "error" },
    { marker: "[[403]]", text: TEXT.auth, tokens: null, statuses: [403], outcome: "error" },
    { marker: "[[500]]", text: TEXT.failed, tokens: null, statuses: [500, 500, 500], outcome: "error" },
    { marker: "[[filter]]", text: TEXT.filtered, tokens: null, statuses: [400], outcome: "error" },
    { marker: "[[filter-finish]]", text: TEXT.filtered, tokens: numbered("t", 3), statuses: [200], outcome: "completed" },
    { marker: "[[drop]]", text: TEXT.failed, tokens: numbered("t", 2), statuses: [200], outcome: "error" },
];

async function assertAttempts(message, failure) {
    const records = await settledRecords(message, failure.statuses.length);
    assert.deepEqual(
        records.map((r) => r.status),
        failure.statuses,
        `upstream attempts for ${failure.marker}`,
    );
    assert.deepEqual(
        records.map((r) => r.outcome),
        failure.statuses.map(() => failure.outcome),
    );
    if (failure.tokens !== null) {
        assert.equal(records[0].tokens_sent, failure.tokens.length);
    }
}

for (const combo of COMBOS) {
    for (const failure of FAILURES) {
        test(`SendMessage ${failure.marker}: the friendly text, and the connection keeps working [${label(combo)}]`, { timeout: TIMEOUT }, async (t) => {
            const c = await ChatClient.open(t, SERVERS.main, "/chatHub", { combo });
            const message = `${failure.marker} ${nonce("err")}`;
            const expected =
                failure.tokens === null
                    ? [["ReceiveStatusUpdate", "thinking"], ["ReceiveError", failure.text]]
                    : [...seed1Reply(failure.tokens), ["ReceiveError", failure.text]];
            assert.deepEqual(await c.send(message), expected);
            assertNoInternals(failure.text);
            await assertAttempts(message, failure);

            const stored = failure.tokens === null ? [] : turn(message, failure.tokens.join(""));
            assert.deepEqual(await c.history(), stored);

            // a normal message on the same connection gets a full reply, on top of what was stored
            const next = `next ${nonce("err")}`;
            const count = 2 + stored.length;
            assert.deepEqual(await c.send(next), seed1Reply(echoTokens(next, count)));
            const [record] = await recordsFor(next);
            assert.deepEqual(record.body.messages.slice(1), [...stored, { role: "user", content: next }]);
            await c.assertQuiet();
        });
    }
}

for (const failure of FAILURES) {
    test(`AskAi ${failure.marker}: typing false, error with the friendly text, completed [${label(WS_JSON)}]`, { timeout: TIMEOUT }, async (t) => {
        const c = await ChatClient.open(t, SERVERS.main, "/chat", { combo: WS_JSON });
        const prompt = `${failure.marker} ${nonce("err")}`;
        const { id, events } = await c.ask(prompt);
        assert.deepEqual(events, [
            ["typing", id, true],
            ...(failure.tokens ?? []).map((tok) => ["partial", id, tok]),
            ["typing", id, false],
            ["error", id, failure.text],
            ["completed", id],
        ]);
        await assertAttempts(prompt, failure);

        const next = `next ask ${nonce("err")}`;
        const again = await c.ask(next);
        assert.deepEqual(again.events, seed2Reply(again.id, echoTokens(next, failure.tokens === null ? 2 : 4)));
    });
}

for (const failure of FAILURES) {
    test(`StreamMessage ${failure.marker}: the stream fails with the friendly text [${label(WS_JSON)}]`, { timeout: TIMEOUT }, async (t) => {
        const c = await ChatClient.open(t, SERVERS.main, "/chatHub", { combo: WS_JSON });
        const message = `${failure.marker} ${nonce("err")}`;
        const { done } = c.stream(message);
        await assert.rejects(done, (err) => {
            assert.equal(err.message, STREAM_ERROR_PREFIX + failure.text);
            assert.deepEqual(err.items, failure.tokens ?? []);
            return true;
        });
        await assertAttempts(message, failure);

        const next = `next stream ${nonce("err")}`;
        assert.deepEqual((await c.stream(next).done).items, echoTokens(next, failure.tokens === null ? 2 : 4));
    });
}

test("a 429 once is retried by the SDK and the user sees only the reply", { timeout: TIMEOUT }, async (t) => {
    const c = await ChatClient.open(t, SERVERS.main, "/chatHub", { combo: WS_JSON });
    const message = `[[429-once]] ${nonce("err")}`;
    assert.deepEqual(await c.send(message), seed1Reply(echoTokens(message, 2)));
    const records = await settledRecords(message, 2);
    assert.deepEqual(
        records.map((r) => [r.status, r.outcome]),
        [
            [429, "error"],
            [200, "completed"],
        ],
    );
    assert.deepEqual(await c.history(), turn(message, echo(message, 2)));
});

test("a question that failed is not stored, so asking it again does not repeat it", { timeout: TIMEOUT }, async (t) => {
    const c = await ChatClient.open(t, SERVERS.main, "/chatHub", { combo: WS_JSON });
    const first = `first ${nonce("err")}`;
    await c.send(first);
    const failing = `[[500]] ${nonce("err")}`;
    for (let attempt = 0; attempt < 2; attempt += 1) {
        assert.deepEqual(await c.send(failing), [["ReceiveStatusUpdate", "thinking"], ["ReceiveError", TEXT.failed]]);
    }
    const records = await settledRecords(failing, 6);
    assert.equal(records.length, 6, "3 attempts per try");
    for (const record of records) {
        // every attempt carries the one earlier turn and the question once
        assert.deepEqual(record.body.messages.slice(1), [...turn(first, echo(first, 2)), { role: "user", content: failing }]);
    }
    assert.deepEqual(await c.history(), turn(first, echo(first, 2)));
});

test("an empty StreamMessage fails the stream with the empty-message text", { timeout: TIMEOUT }, async (t) => {
    const c = await ChatClient.open(t, SERVERS.main, "/chatHub", { combo: WS_JSON });
    for (const blank of ["", "   "]) {
        await assert.rejects(c.stream(blank).done, (err) => {
            assert.equal(err.message, STREAM_ERROR_PREFIX + TEXT.empty);
            assert.deepEqual(err.items, []);
            return true;
        });
    }
    await c.assertQuiet();
});

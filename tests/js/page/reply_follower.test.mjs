// The page's reply follower (wwwroot/js/chat/reply-follower.js) under Node, no browser and
// no server: scripted ResumeReply streams, and what the follower reports from them.
import assert from "node:assert/strict";
import { test } from "node:test";

import { FOLLOW_FAILED, MAX_RESTARTS, followReply } from "../../../wwwroot/js/chat/reply-follower.js";

/** A scripted server: each subscription gets the items `script(after, n)` gives (n: 0, 1, …). */
function server(script, { complete = true } = {}) {
    const opened = [];
    const disposed = [];
    const subscribe = (after, observer) => {
        const n = opened.length;
        opened.push(after);
        const subscription = { dispose: () => disposed.push(n) };
        queueMicrotask(() => {
            const items = script(after, n, observer);
            if (items === undefined) return; // the script drives the observer itself
            for (const item of items) {
                if (disposed.includes(n)) return;
                observer.next(item);
            }
            if (complete && !disposed.includes(n)) observer.complete();
        });
        return subscription;
    };
    return { subscribe, opened, disposed };
}

/** Follows until the end is reported: the texts, the end, and the server's record. */
function follow(script, options = {}) {
    const texts = [];
    const s = server(script, options);
    return new Promise((resolve) => {
        followReply({
            subscribe: s.subscribe,
            onText: (text, sequence) => texts.push([sequence, text]),
            onEnd: (end) => resolve({ texts, end, opened: s.opened, disposed: s.disposed }),
            ...options,
        });
    });
}

const chunks = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => ({ sequence: from + i, text: `t${from + i}` }));
const end = (sequence, extra = {}) => ({ sequence, end: "completed", replyId: "r1", ...extra });

test("chunks in order are reported once each, then the completed end", async () => {
    const { texts, end: e, opened } = await follow(() => [...chunks(1, 3), end(3)]);
    assert.deepEqual(texts, [[1, "t1"], [2, "t2"], [3, "t3"]]);
    assert.equal(e.kind, "completed");
    assert.equal(e.outcome, "completed");
    assert.equal(e.sequence, 3);
    assert.equal(e.produced, true);
    assert.equal(e.replyId, "r1");
    assert.equal(e.error, null);
    assert.deepEqual(opened, [0]);
});

test("a follower that starts after a chunk asks for what follows it", async () => {
    const texts = [];
    const s = server((after) => [...chunks(after + 1, 4), end(4)]);
    const e = await new Promise((resolve) => {
        followReply({ subscribe: s.subscribe, after: 2, onText: (t, n) => texts.push([n, t]), onEnd: resolve });
    });
    assert.deepEqual(s.opened, [2]);
    assert.deepEqual(texts, [[3, "t3"], [4, "t4"]]);
    assert.equal(e.sequence, 4);
});

test("duplicates, as a replay after a resume brings them, are skipped", async () => {
    const { texts, end: e } = await follow(() => [...chunks(1, 2), ...chunks(1, 3), chunks(2, 2)[0], end(3)]);
    assert.deepEqual(texts.map(([n]) => n), [1, 2, 3]);
    assert.equal(e.sequence, 3);
});

test("a gap makes it subscribe again after the last chunk reported: no gap, no duplicate", async () => {
    const { texts, end: e, opened, disposed } = await follow((after, n) =>
        n === 0 ? [...chunks(1, 2), { sequence: 5, text: "t5" }, end(5)] : [...chunks(after + 1, 5), end(5)],
    );
    assert.deepEqual(opened, [0, 2], "asked again from chunk 2");
    assert.deepEqual(disposed, [0], "the first stream was given up");
    assert.deepEqual(texts.map(([n]) => n), [1, 2, 3, 4, 5]);
    assert.equal(e.kind, "completed");
    assert.equal(e.sequence, 5);
});

test("an end numbered past the last chunk reported is a gap too", async () => {
    const { texts, opened } = await follow((after, n) => (n === 0 ? [...chunks(1, 2), end(4)] : [...chunks(after + 1, 4), end(4)]));
    assert.deepEqual(opened, [0, 2]);
    assert.deepEqual(texts.map(([n]) => n), [1, 2, 3, 4]);
});

test("gaps that never close end as an error after MAX_RESTARTS tries", async () => {
    const { texts, end: e, opened } = await follow((after) => [{ sequence: after + 2, text: "x" }]);
    assert.equal(opened.length, MAX_RESTARTS + 1);
    assert.deepEqual(texts, []);
    assert.equal(e.kind, "error");
    assert.equal(e.error, FOLLOW_FAILED);
    assert.equal(e.produced, false);
});

test("each end kind: stopped, error, cut, withdrawn, none", async () => {
    const stopped = await follow(() => [...chunks(1, 2), end(2, { end: "stopped" })]);
    assert.equal(stopped.end.kind, "stopped");
    assert.equal(stopped.end.produced, true);

    const error = await follow(() => [end(0, { end: "error", error: "The AI service is busy." })]);
    assert.equal(error.end.kind, "error");
    assert.equal(error.end.error, "The AI service is busy.");
    assert.equal(error.end.produced, false);

    const usage = { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 };
    const cut = await follow(() => [...chunks(1, 2), end(2, { cut: "length", usage })]);
    assert.equal(cut.end.kind, "cut");
    assert.equal(cut.end.outcome, "completed");
    assert.equal(cut.end.cut, "length");
    assert.deepEqual(cut.end.usage, usage);

    const none = await follow(() => []);
    assert.equal(none.end.kind, "none");
    assert.equal(none.end.outcome, null);
    assert.equal(none.end.produced, false);
});

test("a withdrawn reply starts over from 0: what was reported of it no longer stands", async () => {
    const policy = "The content was filtered by the AI service's content policy. Please rephrase your message.";
    const { texts, end: e } = await follow(() => [...chunks(1, 3), end(0, { end: "error", error: policy, withdrawn: true })]);
    assert.equal(texts.length, 3, "the text was reported as it came");
    assert.equal(e.kind, "withdrawn");
    assert.equal(e.withdrawn, true);
    assert.equal(e.outcome, "error");
    assert.equal(e.error, policy);
    assert.equal(e.sequence, 0);
    assert.equal(e.produced, false);
});

test("the end is reported when the stream completes, and nothing after it", async () => {
    const texts = [];
    const ends = [];
    let observer;
    followReply({
        subscribe: (_after, o) => {
            observer = o;
            return { dispose() {} };
        },
        onText: (t) => texts.push(t),
        onEnd: (e) => ends.push(e),
    });
    observer.next({ sequence: 1, text: "a" });
    observer.next(end(1));
    assert.equal(ends.length, 0, "not before the stream completes");
    observer.next({ sequence: 2, text: "late" });
    observer.complete();
    observer.complete();
    assert.deepEqual(texts, ["a"]);
    assert.equal(ends.length, 1);
    assert.equal(ends[0].kind, "completed");
});

test("an error mid-way while connected ends the reply with the follow error, keeping what was shown", async () => {
    const { texts, end: e } = await follow((_after, _n, observer) => {
        observer.next({ sequence: 1, text: "t1" });
        observer.error(new Error("Invocation canceled"));
    });
    assert.deepEqual(texts, [[1, "t1"]]);
    assert.equal(e.kind, "error");
    assert.equal(e.error, FOLLOW_FAILED);
    assert.equal(e.sequence, 1);
    assert.equal(e.produced, true);
});

test("the caller's own follow error text is used", async () => {
    const { end: e } = await follow((_after, _n, observer) => observer.error(new Error("x")), { followError: "Lost it." });
    assert.equal(e.error, "Lost it.");
});

test("an error after the connection dropped ends nothing: reconnecting follows the reply again", async () => {
    const ends = [];
    const texts = [];
    let observer;
    const follower = followReply({
        subscribe: (_after, o) => {
            observer = o;
            return { dispose() {} };
        },
        onText: (t) => texts.push(t),
        onEnd: (e) => ends.push(e),
        connected: () => false,
    });
    observer.next({ sequence: 1, text: "a" });
    observer.error(new Error("WebSocket closed"));
    observer.next({ sequence: 2, text: "b" });
    observer.complete();
    assert.deepEqual(texts, ["a"]);
    assert.deepEqual(ends, []);
    assert.equal(follower.ended, false);
    assert.equal(follower.sequence, 1, "the place to resume from");
});

test("dispose stops the reports and the stream", async () => {
    const ends = [];
    const texts = [];
    let observer;
    let disposed = 0;
    const follower = followReply({
        subscribe: (_after, o) => {
            observer = o;
            return { dispose: () => (disposed += 1) };
        },
        onText: (t) => texts.push(t),
        onEnd: (e) => ends.push(e),
    });
    observer.next({ sequence: 1, text: "a" });
    follower.dispose();
    observer.next({ sequence: 2, text: "b" });
    observer.next(end(2));
    observer.complete();
    assert.deepEqual(texts, ["a"]);
    assert.deepEqual(ends, []);
    assert.equal(disposed, 1);
    assert.equal(follower.ended, true);
});

// Plain invocations, non-blocking sends, server-to-client calls and ordering.
import assert from "node:assert/strict";
import { connect, matrixTest, recorder, rejectsWith, withTimeout } from "./harness.mjs";

matrixTest("echo returns objects, arrays, strings and null unchanged", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const object = { name: "ada", tags: ["x", "y"], nested: { n: 1, ok: true, none: null } };
    assert.deepEqual(await c.invoke("echo", object), object);
    assert.deepEqual(await c.invoke("echo", [1, "two", [3], { four: 4 }]), [1, "two", [3], { four: 4 }]);
    assert.equal(await c.invoke("echo", "hello"), "hello");
    assert.equal(await c.invoke("echo", ""), "");
    assert.equal(await c.invoke("echo", null), null);
    assert.equal(await c.invoke("add", 2, 3), 5);
});

matrixTest("a void method resolves with undefined", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    assert.equal(await c.invoke("do_nothing"), undefined);
});

matrixTest("method lookup is case-insensitive", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    assert.equal(await c.invoke("Echo", "a"), "a");
    assert.equal(await c.invoke("echo", "b"), "b");
    assert.equal(await c.invoke("ECHO", "c"), "c");
    assert.equal(await c.invoke("Get_Connection_Id"), await c.invoke("get_connection_id"));
});

matrixTest("send() is non-blocking and the server answers with an event", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const recorded = recorder(c, "Recorded");
    const sent = c.send("record", { value: 42 });
    assert.equal(await sent, undefined);
    const calls = await recorded.until(1);
    assert.deepEqual(calls, [[{ value: 42 }]]);
});

matrixTest("several sends arrive in order", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const recorded = recorder(c, "Recorded");
    await Promise.all([0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((i) => c.send("record", i)));
    const calls = await recorded.until(10);
    assert.deepEqual(
        calls.map((args) => args[0]),
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
});

matrixTest("server calls a client method on the caller", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const hello = recorder(c, "Hello");
    await c.invoke("send_to_caller", "Hello", { three: [3] });
    const calls = await hello.until(1);
    assert.deepEqual(calls[0], [{ three: [3] }]);
});

matrixTest("server calls a client method with several arguments", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const hello = recorder(c, "Hello");
    await c.invoke("send_three", "Hello", 1, "two", null);
    const calls = await hello.until(1);
    assert.deepEqual(calls[0], [1, "two", null]);
});

matrixTest("client handler names match case-insensitively", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const mixed = recorder(c, "MiXeDcAsE");
    await c.invoke("send_to_caller", "mixedcase", "x");
    assert.deepEqual((await mixed.until(1))[0], ["x"]);
});

matrixTest("broadcast reaches every connection", async (t, combo) => {
    const a = await connect(t, "/testhub", combo);
    const b = await connect(t, "/testhub", combo);
    const gotA = recorder(a, "Broadcast");
    const gotB = recorder(b, "Broadcast");
    const message = `hi-${Math.random()}`;
    await a.invoke("broadcast", message);
    const matches = (calls) => calls.some((args) => args[0] === message);
    await Promise.all([gotA.until(1), gotB.until(1)]);
    // other tests' broadcasts may interleave: look for ours
    assert.ok(matches(gotA.calls), "sender received its broadcast");
    assert.ok(matches(gotB.calls), "second connection received the broadcast");
});

matrixTest("sends made during a method arrive before its completion", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const before = recorder(c, "Before");
    const result = await c.invoke("send_then_return", 5);
    const seenAtCompletion = before.calls.map((args) => args[0]);
    assert.equal(result, "done");
    assert.deepEqual(seenAtCompletion, [0, 1, 2, 3, 4]);
});

/**
 * Invokes slow('a', 0.6) and slow('b', 0.05) at once. Returns the completion order and
 * the delay between the two `Started` events (a completion and the next event can share
 * one frame, so their relative order is not observable through promise callbacks).
 */
async function raceSlow(c) {
    const started = {};
    const ended = [];
    c.on("Started", (name) => {
        started[name] = performance.now();
    });
    const a = c.invoke("slow", "a", 0.6).then((r) => ended.push(r));
    const b = c.invoke("slow", "b", 0.05).then((r) => ended.push(r));
    await withTimeout(Promise.all([a, b]), 10_000, "both slow invocations");
    assert.deepEqual(Object.keys(started).sort(), ["a", "b"]);
    return { ended, gap: started.b - started.a };
}

matrixTest("invocations from one client run one at a time by default", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const { ended, gap } = await raceSlow(c);
    assert.deepEqual(ended, ["a", "b"]);
    assert.ok(gap >= 500, `'b' started ${gap.toFixed(0)} ms after 'a'; expected after 'a' finished (600 ms)`);
});

matrixTest("invocations run in parallel when the hub allows it", async (t, combo) => {
    const c = await connect(t, "/parallel", combo);
    const { ended, gap } = await raceSlow(c);
    assert.deepEqual(ended, ["b", "a"]);
    assert.ok(gap < 400, `'b' started ${gap.toFixed(0)} ms after 'a'; expected at once`);
});

matrixTest("a plain def method answers as an async one does", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    assert.equal(await c.invoke("multiply", 6, 7), 42);
    assert.equal(await c.invoke("Multiply", -2, 3), -6);
    assert.equal(await c.invoke("plain_nothing"), undefined);
    assert.equal(await c.invoke("plain_connection_id"), await c.invoke("get_connection_id"));
    assert.equal(await c.invoke("plain_deferred", "later"), "later");
    await rejectsWith(c.invoke("multiply", 1), "Failed to invoke 'multiply' due to an error on the server.");
});

/** slow('a', 0.3) and then multiply(2, 3), invoked at once: the order their results came back. */
async function slowThenPlain(c) {
    const ended = [];
    const a = c.invoke("slow", "a", 0.3).then((r) => ended.push(r));
    const b = c.invoke("multiply", 2, 3).then((r) => ended.push(r));
    await withTimeout(Promise.all([a, b]), 10_000, "slow and multiply");
    return ended;
}

matrixTest("a plain def waits its turn behind a running invocation", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    assert.deepEqual(await slowThenPlain(c), ["a", 6]);
});

matrixTest("a plain def runs at once when the hub allows parallel invocations", async (t, combo) => {
    const c = await connect(t, "/parallel", combo);
    assert.deepEqual(await slowThenPlain(c), [6, "a"]);
});

matrixTest("invocation ids are independent per connection", async (t, combo) => {
    const a = await connect(t, "/testhub", combo);
    const b = await connect(t, "/testhub", combo);
    const results = await Promise.all([a.invoke("echo", "from-a"), b.invoke("echo", "from-b"), a.invoke("add", 1, 1)]);
    assert.deepEqual(results, ["from-a", "from-b", 2]);
});

// send_to_caller(method, *payload) in tests/support/hub_app.py is variadic: a Python hub method
// with *args should accept any number of trailing arguments.
matrixTest("a variadic (*args) hub method binds zero, one or several arguments", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const hello = recorder(c, "Hello");
    await c.invoke("send_to_caller", "Hello");
    await c.invoke("send_to_caller", "Hello", "one");
    await c.invoke("send_to_caller", "Hello", 1, "two", { three: 3 });
    const calls = await hello.until(3);
    assert.deepEqual(calls, [[], ["one"], [1, "two", { three: 3 }]]);
}, { combos: [{ transport: "WebSockets", protocol: "json" }] });

matrixTest("a result larger than the outbox bound reaches a client that keeps up", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const size = 1_300_000; // over the 1 MiB max_buffer_size
    const result = await withTimeout(c.invoke("big_result", size), 15_000, "big_result");
    assert.equal(result.length, size);
    assert.equal(await c.invoke("echo", "still here"), "still here");
});

matrixTest("a long reply of many events waits for the client instead of dropping it", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const chunks = recorder(c, "Chunk");
    const count = 200;
    const size = 16_384; // 3.2 MB in all, queued far faster than any client reads
    assert.equal(await withTimeout(c.invoke("send_many", count, size), 30_000, "send_many"), count);
    await chunks.until(count);
    assert.deepEqual(chunks.calls.map((args) => args[0]), Array.from({ length: count }, (_, i) => i));
    assert.ok(chunks.calls.every((args) => args[1].length === size));
});

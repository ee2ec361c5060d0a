// Exact error texts for failing invocations, as the client reports them.
import assert from "node:assert/strict";
import { connect, matrixTest, rejectsWith } from "./harness.mjs";

matrixTest("an exception in a method hides its details", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    await rejectsWith(c.invoke("throw"), "An unexpected error occurred invoking 'throw' on the server.");
    // the text names the target as the client sent it
    await rejectsWith(c.invoke("THROW"), "An unexpected error occurred invoking 'THROW' on the server.");
    assert.equal(await c.invoke("echo", "alive"), "alive");
});

matrixTest("a HubException's message reaches the client", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    await rejectsWith(
        c.invoke("throw_hub_exception", "you may know this"),
        "An unexpected error occurred invoking 'throw_hub_exception' on the server. HubException: you may know this",
    );
});

matrixTest("detailed errors show the exception type and message", async (t, combo) => {
    const c = await connect(t, "/detailed", combo);
    await rejectsWith(
        c.invoke("throw"),
        "An unexpected error occurred invoking 'throw' on the server. RuntimeError: secret internals",
    );
    await rejectsWith(
        c.invoke("throw_hub_exception", "visible"),
        "An unexpected error occurred invoking 'throw_hub_exception' on the server. HubException: visible",
    );
});

matrixTest("a plain def method's exceptions read as an async one's", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    await rejectsWith(c.invoke("plain_throw"), "An unexpected error occurred invoking 'plain_throw' on the server.");
    await rejectsWith(
        c.invoke("plain_hub_exception", "told"),
        "An unexpected error occurred invoking 'plain_hub_exception' on the server. HubException: told",
    );
    const detailed = await connect(t, "/detailed", combo);
    await rejectsWith(
        detailed.invoke("plain_throw"),
        "An unexpected error occurred invoking 'plain_throw' on the server. RuntimeError: secret internals",
    );
    assert.equal(await c.invoke("multiply", 3, 3), 9);
});

matrixTest("a result the protocol cannot encode fails that invocation only", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    await rejectsWith(c.invoke("unserializable"), "An unexpected error occurred invoking 'unserializable' on the server.");
    assert.equal(await c.invoke("echo", "alive"), "alive");
});

matrixTest("unknown method", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    await rejectsWith(
        c.invoke("no_such_method", 1),
        "Failed to invoke 'no_such_method' due to an error on the server. HubException: Method does not exist.",
    );
    assert.equal(await c.invoke("echo", "alive"), "alive");
});

matrixTest("unknown method as a stream", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const failed = new Promise((resolve, reject) => {
        c.stream("no_such_stream").subscribe({ next: () => {}, complete: () => resolve(null), error: reject });
    });
    await rejectsWith(
        failed,
        "Failed to invoke 'no_such_stream' due to an error on the server. HubException: Method does not exist.",
    );
});

matrixTest("wrong argument count hides details", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    await rejectsWith(c.invoke("add", 1), "Failed to invoke 'add' due to an error on the server.");
    await rejectsWith(c.invoke("add", 1, 2, 3), "Failed to invoke 'add' due to an error on the server.");
});

matrixTest("wrong argument count with detailed errors", async (t, combo) => {
    const c = await connect(t, "/detailed", combo);
    await rejectsWith(
        c.invoke("add", 1),
        "Failed to invoke 'add' due to an error on the server. InvalidDataException: Invocation provides 1 argument(s) but target expects 2.",
    );
    await rejectsWith(
        c.invoke("add", 1, 2, 3),
        "Failed to invoke 'add' due to an error on the server. InvalidDataException: Invocation provides 3 argument(s) but target expects 2.",
    );
});

matrixTest("a failed send() is never answered and the connection stays up", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    let closed = false;
    c.onclose(() => {
        closed = true;
    });
    await c.send("no_such_method");
    await c.send("throw");
    await c.send("add", 1);
    assert.equal(await c.invoke("echo", "alive"), "alive");
    assert.equal(closed, false);
});

matrixTest("errors do not disturb other invocations", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const outcomes = await Promise.allSettled([c.invoke("echo", 1), c.invoke("throw"), c.invoke("echo", 2)]);
    assert.deepEqual(
        outcomes.map((o) => o.status),
        ["fulfilled", "rejected", "fulfilled"],
    );
    assert.equal(outcomes[0].value, 1);
    assert.equal(outcomes[2].value, 2);
});

matrixTest("a message over the 32 KB limit closes the connection with an error", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const closed = new Promise((resolve) => c.onclose(resolve));
    const expected = "Server returned an error on close: Connection closed with an error.";
    await rejectsWith(c.invoke("echo", "x".repeat(40 * 1024)), expected);
    const error = await closed;
    assert.equal(error?.message, expected);
});

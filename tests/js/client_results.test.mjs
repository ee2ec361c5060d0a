// Client results: the server invokes a client handler and awaits its return value.
// ASP.NET Core only allows this from inside a hub method when more than one invocation
// may run at a time, so these tests use the /parallel hub. ask_client(method, *args) is
// always given exactly one handler argument: see invocation.test.mjs on variadic binding.
import assert from "node:assert/strict";
import { connect, matrixTest, rejectsWith } from "./harness.mjs";

const HUB = "/parallel";

matrixTest("a handler's return value becomes the server's result", async (t, combo) => {
    const c = await connect(t, HUB, combo);
    c.on("double", (n) => n * 2);
    assert.equal(await c.invoke("ask_client", "double", 21), 42);
});

matrixTest("an async handler's resolved value becomes the result", async (t, combo) => {
    const c = await connect(t, HUB, combo);
    c.on("describe", async ({ name, tags }) => {
        await new Promise((resolve) => setTimeout(resolve, 20));
        return { name, tags, count: tags.length };
    });
    assert.deepEqual(await c.invoke("ask_client", "describe", { name: "ada", tags: ["x", "y"] }), {
        name: "ada",
        tags: ["x", "y"],
        count: 2,
    });
});

matrixTest("client result handler names match case-insensitively", async (t, combo) => {
    const c = await connect(t, HUB, combo);
    c.on("GetAnswer", (question) => `forty-two is the answer to ${question}`);
    assert.equal(await c.invoke("ask_client", "getanswer", "everything"), "forty-two is the answer to everything");
});

matrixTest("a throwing handler fails the invocation with the client's error text", async (t, combo) => {
    const c = await connect(t, HUB, combo);
    c.on("explode", (_unused) => {
        throw new Error("nope");
    });
    // the client sends `${error}` ("Error: nope"); the server raises it as a HubException,
    // whose message always reaches the caller
    await rejectsWith(
        c.invoke("ask_client", "explode", 0),
        "An unexpected error occurred invoking 'ask_client' on the server. HubException: Error: nope",
    );
    assert.equal(await c.invoke("echo", "still usable"), "still usable");
});

matrixTest("no handler: the server sees the client's error", async (t, combo) => {
    const c = await connect(t, HUB, combo);
    assert.equal(await c.invoke("ask_client_safely", "nobody_handles_this"), "error: Client didn't provide a result.");
});

matrixTest("a handler returning nothing: the server sees the client's error", async (t, combo) => {
    const c = await connect(t, HUB, combo);
    c.on("silent", () => undefined);
    assert.equal(await c.invoke("ask_client_safely", "silent"), "error: Client didn't provide a result.");
});

matrixTest("a handler's value seen by ask_client_safely", async (t, combo) => {
    const c = await connect(t, HUB, combo);
    c.on("value", () => "v");
    assert.equal(await c.invoke("ask_client_safely", "value"), "ok: v");
});

matrixTest("several concurrent client results are matched to their calls", async (t, combo) => {
    const c = await connect(t, HUB, combo);
    c.on("slowIdentity", async ([n, ms]) => {
        await new Promise((resolve) => setTimeout(resolve, ms));
        return n;
    });
    const results = await Promise.all([
        c.invoke("ask_client", "slowIdentity", [1, 120]),
        c.invoke("ask_client", "slowIdentity", [2, 10]),
        c.invoke("ask_client", "slowIdentity", [3, 60]),
    ]);
    assert.deepEqual(results, [1, 2, 3]);
});

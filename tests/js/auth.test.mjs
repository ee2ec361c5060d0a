// Bearer tokens: hub-level and method-level authorization, and the 401 the client reports.
import assert from "node:assert/strict";
import { DIRECT_ONLY, WEBSOCKETS, build, connect, matrixTest, rejectsWith, signalR, stopQuietly, withTimeout } from "./harness.mjs";

const UNAUTHORIZED = "Failed to complete negotiation with the server: Error: Unauthorized: Status code '401'";

function tokenFor(user) {
    return { options: { accessTokenFactory: () => `token-${user}` } };
}

matrixTest("an authorized hub refuses a client without a token", async (t, combo) => {
    const c = build("/authhub", combo);
    t.after(() => stopQuietly(c));
    await rejectsWith(c.start(), UNAUTHORIZED);
    assert.equal(c.state, signalR.HubConnectionState.Disconnected);
});

matrixTest("an invalid token is refused with 401", async (t, combo) => {
    for (const path of ["/authhub", "/testhub"]) {
        const c = build(path, combo, { options: { accessTokenFactory: () => "not-a-valid-token" } });
        t.after(() => stopQuietly(c));
        await rejectsWith(c.start(), UNAUTHORIZED);
    }
});

matrixTest("an authorized hub accepts a valid token and knows the user", async (t, combo) => {
    const c = await connect(t, "/authhub", combo, tokenFor("alice"));
    assert.equal(await c.invoke("who_am_i"), "alice");
    assert.equal(await c.invoke("secret"), "classified");
});

matrixTest("an async token factory works", async (t, combo) => {
    const c = await connect(t, "/authhub", combo, {
        options: {
            accessTokenFactory: async () => {
                await new Promise((resolve) => setTimeout(resolve, 10));
                return "token-carol";
            },
        },
    });
    assert.equal(await c.invoke("who_am_i"), "carol");
});

matrixTest("anonymous callers have no user", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    assert.equal(await c.invoke("who_am_i"), null);
});

matrixTest("an authorized method refuses an anonymous caller", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    await rejectsWith(c.invoke("secret"), "Failed to invoke 'secret' because user is unauthorized");
    // the text names the target as the client sent it
    await rejectsWith(c.invoke("Secret"), "Failed to invoke 'Secret' because user is unauthorized");
    assert.equal(await c.invoke("echo", "still connected"), "still connected");
});

matrixTest("an authorized method accepts an authenticated caller", async (t, combo) => {
    const c = await connect(t, "/testhub", combo, tokenFor("bob"));
    assert.equal(await c.invoke("secret"), "classified");
    assert.equal(await c.invoke("who_am_i"), "bob");
});

matrixTest("an authorized method refuses an anonymous send() silently", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    await c.send("secret");
    assert.equal(await c.invoke("echo", "fine"), "fine");
});

matrixTest("skipNegotiation carries the token on the WebSocket upgrade", async (t, combo) => {
    const c = await connect(t, "/authhub", combo, {
        options: { skipNegotiation: true, accessTokenFactory: () => "token-dave" },
    });
    assert.equal(await c.invoke("who_am_i"), "dave");
}, { combos: WEBSOCKETS, skip: DIRECT_ONLY });

matrixTest("skipNegotiation without a token cannot reach an authorized hub", async (t, combo) => {
    const c = build("/authhub", combo, { options: { skipNegotiation: true } });
    t.after(() => stopQuietly(c));
    await assert.rejects(withTimeout(c.start(), 10_000, "start"));
    assert.equal(c.state, signalR.HubConnectionState.Disconnected);
}, { combos: WEBSOCKETS, skip: DIRECT_ONLY });

// Run by tests/scale_out/test_chat_scale_out.py after it killed the Redis both servers share: a
// user's calls fail with a clear text within REDIS_TIMEOUT, never hang, and the server
// keeps serving.
import { test } from "node:test";
import { assert, ChatClient, nonce, withTimeout } from "../chat/chat_harness.mjs";

const A = process.env.CHAT_A_URL;
const UNAVAILABLE =
    "Your conversations are unavailable right now (the history store did not answer). Please try again shortly.";

test("with Redis down a user's calls fail fast with a clear error, and the server keeps serving", { timeout: 30_000 }, async (t) => {
    const c = await ChatClient.open(t, A, "/chatHub", { user: "eve" });
    for (const call of [() => c.invoke("ListConversations"), () => c.invoke("GetConversation", "default"), () => c.invoke("GetHistory")]) {
        await assert.rejects(withTimeout(call(), 10_000, "a call while Redis is down"), (err) => {
            assert.ok(err.message.endsWith(`HubException: ${UNAVAILABLE}`), err.message);
            return true;
        });
    }
    const events = await c.send(`hello ${nonce("down")}`);
    assert.deepEqual(events.at(-1), ["ReceiveError", UNAVAILABLE]);
    assert.deepEqual(await c.invoke("GetChatInfo").then((info) => typeof info.maxMessageLength), "number");
});

// Honest ends of a reply through the stock client, against a server process and the fake
// Azure OpenAI (through the real openai SDK): a reply the provider cut at its token limit
// ([[length]]) ends with `cut: "length"`, is stored marked and is continued by ContinueReply,
// which takes the mark away; a reply Azure's asynchronous filter flags late ([[async-filter]])
// is withdrawn: its end says so, nothing of it is stored or replayed; its annotation chunks
// ([[async-filter-pass]]) never count as text. The seed methods get their own signals.
import { test } from "node:test";
import {
    assert,
    ChatClient,
    fakeRequests,
    label,
    LP_MSGPACK,
    nonce,
    numbered,
    recordsFor,
    seed1Reply,
    SERVERS,
    TEXT,
    turn,
    WS_JSON,
    resumeItems,
    textOf,
} from "./chat_harness.mjs";

const COMBOS = [WS_JSON, LP_MSGPACK];
/** The main server's default model: GetConversation labels each reply with it. */
const DEPLOYMENT = "chat-deployment";
const labelled = (messages) => messages.map((m) => (m.role === "assistant" ? { ...m, model: DEPLOYMENT } : m));
/** What a provider is sent of stored messages: role and content only. */
const bare = (messages) => messages.map(({ role, content }) => ({ role, content }));

/** ResumeReply(conversation, after) to its completion: the items. */
const resume = resumeItems;

async function reply(client, method, ...args) {
    const started = await client.invoke(method, ...args);
    return { started, items: await resume(client, args[0]) };
}

for (const combo of COMBOS) {
    test(`a reply cut at the provider's token limit is marked cut, stored so, and Continue takes the mark away [${label(combo)}]`, async (t) => {
        const c = await ChatClient.open(t, SERVERS.main, "/chatHub", { combo });
        const question = `[[length]] ${nonce("cut")}`;
        const cutText = numbered("t", 3).join("");
        const { items } = await reply(c, "StartReply", "default", question);
        assert.equal(textOf(items), cutText);
        const end = items.at(-1);
        assert.equal(end.end, "completed");
        assert.equal(end.cut, "length");
        assert.equal(end.error, undefined);
        const marked = [{ role: "user", content: question }, { role: "assistant", content: cutText, cut: "length" }];
        assert.deepEqual((await c.invoke("GetConversation", "default")).messages, labelled(marked));
        assert.deepEqual(await c.history(), marked, "GetHistory carries the mark too");

        const { started, items: rest } = await reply(c, "ContinueReply", "default");
        assert.equal(started.continues, true);
        assert.equal(rest.at(-1).end, "completed");
        assert.equal(rest.at(-1).cut, undefined);
        const record = (await fakeRequests()).filter((r) => r.body?.messages?.some((m) => m.content === question)).at(-1);
        const sent = record.body.messages.at(-2);
        assert.deepEqual(sent, { role: "assistant", content: cutText }, "the mark is never sent to the model");
        const messages = (await c.invoke("GetConversation", "default")).messages;
        assert.deepEqual(messages, labelled([
            { role: "user", content: question },
            { role: "assistant", content: cutText + textOf(rest) },
        ]));
    });

    test(`a reply the asynchronous filter flags late is withdrawn: not stored, not replayed [${label(combo)}]`, async (t) => {
        const c = await ChatClient.open(t, SERVERS.main, "/chatHub", { combo });
        const first = `first ${nonce("wd")}`;
        await reply(c, "StartReply", "default", first);
        const kept = (await c.invoke("GetConversation", "default")).messages;
        const question = `[[async-filter]] ${nonce("wd")}`;
        const { started, items } = await reply(c, "StartReply", "default", question);
        assert.equal(textOf(items), numbered("t", 6).join(""), "the text streamed before the verdict");
        assert.deepEqual(items.at(-1), {
            sequence: 6,
            end: "error",
            error: TEXT.filtered,
            withdrawn: true,
            replyId: started.replyId,
        });
        const opened = await c.invoke("GetConversation", "default");
        assert.deepEqual(opened.messages, kept, "nothing of it stored; the question is taken back as for any error before text");
        assert.deepEqual(await resume(c, "default", 0), [
            { sequence: 0, end: "error", error: TEXT.filtered, withdrawn: true, replyId: started.replyId },
        ]);
        // the next question is asked without it
        const next = `next ${nonce("wd")}`;
        await reply(c, "StartReply", "default", next);
        const [record] = await recordsFor(next);
        assert.deepEqual(record.body.messages.slice(1), [...bare(kept), { role: "user", content: next }]);
    });
}

test("annotation-only chunks of the asynchronous filter never break the stream or count as text", async (t) => {
    const c = await ChatClient.open(t, SERVERS.main, "/chatHub");
    const question = `[[async-filter-pass]] ${nonce("ann")}`;
    const { items } = await reply(c, "StartReply", "default", question);
    assert.deepEqual(
        items.filter((i) => "text" in i).map((i) => i.text),
        numbered("t", 6),
    );
    assert.equal(items.at(-1).end, "completed");
    assert.equal(items.at(-1).withdrawn, undefined);
    assert.deepEqual((await c.invoke("GetConversation", "default")).messages, labelled(turn(question, numbered("t", 6).join(""))));
});

test("SendMessage: a withdrawn reply closes its events, says reply_withdrawn, then the policy text; nothing stored", async (t) => {
    const c = await ChatClient.open(t, SERVERS.main, "/chatHub");
    const question = `[[async-filter]] ${nonce("seed")}`;
    assert.deepEqual(await c.send(question), [
        ...seed1Reply(numbered("t", 6)),
        ["ReceiveStatusUpdate", "reply_withdrawn"],
        ["ReceiveError", TEXT.filtered],
    ]);
    assert.deepEqual(await c.history(), []);
    await c.assertQuiet();
});

test("SendMessage: a reply cut at the model's token limit keeps the seed's events and is stored marked", async (t) => {
    const c = await ChatClient.open(t, SERVERS.main, "/chatHub");
    const question = `[[length]] ${nonce("seed")}`;
    assert.deepEqual(await c.send(question), seed1Reply(numbered("t", 3)));
    assert.deepEqual(await c.history(), [
        { role: "user", content: question },
        { role: "assistant", content: numbered("t", 3).join(""), cut: "length" },
    ]);
});

test("AskAi: a withdrawn reply ends with the policy error and completed, as before; nothing stored", async (t) => {
    const c = await ChatClient.open(t, SERVERS.main, "/chat");
    const { id, events } = await c.ask(`[[async-filter]] ${nonce("ask")}`);
    assert.deepEqual(events, [
        ["typing", id, true],
        ...numbered("t", 6).map((tok) => ["partial", id, tok]),
        ["typing", id, false],
        ["error", id, TEXT.filtered],
        ["completed", id],
    ]);
    assert.deepEqual(await c.history(), []);
});

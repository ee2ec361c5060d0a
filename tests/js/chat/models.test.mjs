// Custom instructions and several models per conversation (issue 23), through the stock client:
// the main server offers two Azure OpenAI deployments (AI_MODELS=chat-deployment,chat-deployment-mini).
// The fake Azure OpenAI must see the chosen deployment in the request path and the instructions as
// a system message after the server's; the choices and each reply's label survive a new connection.
import { test } from "node:test";
import {
    assert,
    ChatClient,
    echo,
    nonce,
    SERVERS,
    settledRecord,
    WS_JSON,
    WS_MSGPACK,
    LP_JSON,
    label,
    resumeItems,
    textOf,
} from "./chat_harness.mjs";

const DEFAULT_MODEL = "chat-deployment";
const MINI = "chat-deployment-mini";
const HUB_ERROR = "HubException: ";

async function guest(t, id = null, combo = WS_JSON) {
    const client = await ChatClient.open(t, SERVERS.main, "/chatHub", { combo });
    client.guest = await client.invoke("UseGuestSession", id);
    return client;
}

/** StartReply, then ResumeReply to the end; the reply's text. */
async function reply(client, conversation, message) {
    await client.invoke("StartReply", conversation, message);
    const items = await resumeItems(client, conversation);
    assert.equal(items.at(-1).end, "completed", JSON.stringify(items.at(-1)));
    return textOf(items);
}

async function rejects(promise, text) {
    await assert.rejects(promise, (err) => {
        assert.ok(err.message.endsWith(HUB_ERROR + text), err.message);
        return true;
    });
}

test("GetChatInfo lists the models, the default first, and the instructions' limit", async (t) => {
    const c = await guest(t);
    const info = await c.invoke("GetChatInfo");
    assert.deepEqual(info.models, [DEFAULT_MODEL, MINI]);
    assert.equal(info.model, DEFAULT_MODEL);
    assert.equal(info.maxInstructionsLength, 4000);
});

for (const combo of [WS_JSON, WS_MSGPACK, LP_JSON]) {
    test(`the chosen deployment answers, told the instructions, and both survive a reload [${label(combo)}]`, async (t) => {
        const c = await guest(t, null, combo);
        const { id } = await c.invoke("CreateConversation", null);
        const tag = nonce("models");
        const instructions = `Answer like a pirate ${tag}.`;
        let entry = await c.invoke("SetInstructions", id, `  ${instructions}\n`);
        assert.equal(entry.instructions, instructions, "trimmed");
        entry = await c.invoke("SetModel", id, MINI);
        assert.deepEqual([entry.id, entry.model, entry.instructions], [id, MINI, instructions]);

        const text = await reply(c, id, `ahoy ${tag}`);
        assert.equal(text, echo(`ahoy ${tag}`, 3), "the fake counts the instructions' system message");
        const record = await settledRecord(`ahoy ${tag}`);
        assert.equal(record.path, `/openai/deployments/${MINI}/chat/completions`);
        assert.equal(record.deployment, MINI);
        const sent = record.body.messages;
        assert.equal(sent[0].role, "system");
        assert.notEqual(sent[0].content, instructions, "the server's system prompt comes first");
        assert.deepEqual(sent[1], { role: "system", content: instructions });
        assert.deepEqual(sent.slice(2), [{ role: "user", content: `ahoy ${tag}` }]);

        // a reload: a new connection of the same guest
        const again = await guest(t, c.guest, combo);
        const opened = await again.invoke("GetConversation", id);
        assert.deepEqual([opened.model, opened.instructions], [MINI, instructions]);
        assert.deepEqual(opened.messages.map((m) => [m.role, m.model]), [["user", undefined], ["assistant", MINI]]);
        const listed = (await again.invoke("ListConversations")).find((x) => x.id === id);
        assert.deepEqual([listed.model, listed.instructions], [MINI, instructions]);

        // switching back: the next reply is the default deployment's, the earlier keeps its label
        await again.invoke("SetModel", id, DEFAULT_MODEL);
        await again.invoke("SetInstructions", id, null);
        await reply(again, id, `plain ${tag}`);
        const next = await settledRecord(`plain ${tag}`);
        assert.equal(next.path, `/openai/deployments/${DEFAULT_MODEL}/chat/completions`);
        assert.deepEqual(next.body.messages.map((m) => m.role), ["system", "user", "assistant", "user"]);
        assert.ok(next.body.messages.every((m) => Object.keys(m).sort().join() === "content,role"), "labels are never sent");
        const after = await again.invoke("GetConversation", id);
        assert.deepEqual(after.messages.map((m) => m.model), [undefined, MINI, undefined, DEFAULT_MODEL]);
        assert.equal(after.instructions, "");
    });
}

test("an unknown model, instructions over the limit or not text are refused, and nothing changes", async (t) => {
    const c = await guest(t);
    const { id } = await c.invoke("CreateConversation", null);
    await c.invoke("SetInstructions", id, "Be brief.");
    await rejects(c.invoke("SetModel", id, "gpt-5"), `Unknown model. Choose one of: ${DEFAULT_MODEL}, ${MINI}.`);
    await rejects(c.invoke("SetModel", id, 7), "A model must be named by text.");
    await rejects(c.invoke("SetInstructions", id, "x".repeat(4001)), "Instructions are too long. The limit is 4,000 characters.");
    await rejects(c.invoke("SetInstructions", id, { text: "x" }), "Instructions must be text.");
    const opened = await c.invoke("GetConversation", id);
    assert.deepEqual([opened.model, opened.instructions], [DEFAULT_MODEL, "Be brief."]);
    assert.equal((await c.invoke("SetInstructions", id, "x".repeat(4000))).instructions.length, 4000, "the limit itself is taken");
});

test("another guest's or user's conversation is refused as one that does not exist", async (t) => {
    const owner = await guest(t);
    const { id } = await owner.invoke("CreateConversation", null);
    const stranger = await guest(t);
    const user = await ChatClient.open(t, SERVERS.main, "/chatHub", { user: "carol" });
    for (const other of [stranger, user]) {
        await rejects(other.invoke("SetInstructions", id, "Reveal the secrets."), "Conversation not found.");
        await rejects(other.invoke("SetModel", id, MINI), "Conversation not found.");
        await rejects(other.invoke("SetModel", "no-such-conversation", MINI), "Conversation not found.");
    }
    const opened = await owner.invoke("GetConversation", id);
    assert.deepEqual([opened.model, opened.instructions], [DEFAULT_MODEL, ""]);
});

test("the seed's SendMessage answers with the default conversation's choices; GetHistory keeps its shape", async (t) => {
    const c = await guest(t);
    const tag = nonce("seedmodel");
    await c.invoke("SetModel", "default", MINI);
    await c.invoke("SetInstructions", "default", `Seed rules ${tag}.`);
    await c.send(`seed ${tag}`);
    const record = await settledRecord(`seed ${tag}`);
    assert.equal(record.path, `/openai/deployments/${MINI}/chat/completions`);
    assert.deepEqual(record.body.messages[1], { role: "system", content: `Seed rules ${tag}.` });
    const history = await c.history();
    assert.deepEqual(history.map((m) => Object.keys(m).sort().join()), ["content,role", "content,role"]);
    const opened = await c.invoke("GetConversation", "default");
    assert.equal(opened.messages.at(-1).model, MINI);
});

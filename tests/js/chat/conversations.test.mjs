// Conversations (list/new/open/rename/delete, guests), regenerate/edit/continue, and replies
// that belong to their conversation: ResumeReply replays then follows live, with no gap and
// no duplicate, after a new connection; a reply nobody comes back for is aborted after the
// grace period (2 s on the main server, 0 on the tight one).
import { test } from "node:test";
import {
    assert,
    ChatClient,
    echo,
    echoTokens,
    eventually,
    LP_JSON,
    nonce,
    numbered,
    recordsFor,
    SERVERS,
    settledRecord,
    SSE_JSON,
    WS_MSGPACK,
} from "./chat_harness.mjs";

const HUB_ERROR = "HubException: ";

/** A guest's connection: UseGuestSession(guest) first, as the page does. */
async function guest(t, id = null, opts = {}) {
    const client = await ChatClient.open(t, opts.base ?? SERVERS.main, "/chatHub", opts);
    client.guest = await client.invoke("UseGuestSession", id);
    return client;
}

/** ResumeReply(conversation, after) -> { items, done } where done resolves on completion. */
function resume(client, conversation, after = 0) {
    const items = [];
    let subscription;
    const done = new Promise((resolve, reject) => {
        subscription = client.connection.stream("ResumeReply", conversation, after).subscribe({
            next: (item) => items.push(item),
            complete: () => resolve(items),
            error: reject,
        });
    });
    done.catch(() => {}); // a test that closes the connection on purpose never awaits it
    return { items, done, subscription };
}

const textOf = (items) => items.filter((i) => "text" in i).map((i) => i.text).join("");
const endOf = (items) => items.at(-1);

/** Starts a reply and follows it to its end; returns the items. */
async function reply(client, conversation, message) {
    await client.invoke("StartReply", conversation, message);
    return resume(client, conversation).done;
}

async function rejects(promise, text) {
    await assert.rejects(promise, (err) => {
        assert.ok(err.message.endsWith(HUB_ERROR + text), err.message);
        return true;
    });
}

test("a guest's conversations: new, list newest first with derived titles, open, rename, delete; kept across connections", async (t) => {
    const a = await guest(t);
    assert.match(a.guest, /^[A-Za-z0-9_-]{32}$/);
    assert.deepEqual(await a.invoke("ListConversations"), []);
    const tag = nonce("conv");
    const first = await a.invoke("CreateConversation", null);
    assert.equal(first.title, "New chat");
    const items = await reply(a, first.id, `First question ${tag}\nsecond line`);
    assert.equal(textOf(items), echo(`First question ${tag}\nsecond line`, 2));
    assert.deepEqual(endOf(items).end, "completed");
    assert.deepEqual(items.filter((i) => "text" in i).map((i) => i.sequence), items.slice(0, -1).map((_, i) => i + 1));
    const second = await a.invoke("CreateConversation", "Named by hand");
    await reply(a, second.id, `other ${tag}`);

    let list = await a.invoke("ListConversations");
    assert.deepEqual(list.map((c) => c.id), [second.id, first.id], "newest first");
    assert.equal(list[1].title, `First question ${tag}`, "title from the first line of the first message");
    assert.equal(list[0].title, "Named by hand", "a given title stays");

    const renamed = await a.invoke("RenameConversation", first.id, "  Renamed   title ");
    assert.equal(renamed.title, "Renamed title");
    await rejects(a.invoke("RenameConversation", first.id, "   "), "A title must be text of 1 to 200 characters.");

    const opened = await a.invoke("GetConversation", first.id);
    assert.equal(opened.title, "Renamed title");
    assert.deepEqual(opened.messages.map((m) => m.role), ["user", "assistant"]);
    assert.equal(opened.reply, null, "nothing running");

    // another connection of the same guest (a reload) sees the same list; another guest sees nothing
    const b = await guest(t, a.guest);
    assert.equal(b.guest, a.guest);
    assert.deepEqual((await b.invoke("ListConversations")).map((c) => c.id), [first.id, second.id]);
    const stranger = await guest(t);
    assert.notEqual(stranger.guest, a.guest);
    assert.deepEqual(await stranger.invoke("ListConversations"), []);
    await rejects(stranger.invoke("GetConversation", first.id), "Conversation not found.");
    const forged = await guest(t, "x".repeat(32));
    assert.notEqual(forged.guest, "x".repeat(32), "an id the server never issued is not taken");

    await b.invoke("DeleteConversation", second.id);
    assert.deepEqual((await a.invoke("ListConversations")).map((c) => c.id), [first.id]);
    await rejects(a.invoke("GetConversation", second.id), "Conversation not found.");
    await rejects(a.invoke("StartReply", second.id, "hello"), "Conversation not found.");
});

test("the seed's history is the default conversation", async (t) => {
    const c = await guest(t);
    const tag = nonce("default");
    await c.send(`seed ${tag}`);
    const opened = await c.invoke("GetConversation", "default");
    // GetConversation labels each reply with the model that wrote it; GetHistory keeps the seed's shape
    assert.deepEqual(opened.messages.map(({ role, content }) => ({ role, content })), await c.history());
    assert.deepEqual(opened.messages.map((m) => m.model), [undefined, "chat-deployment"]);
    assert.equal(opened.title, `seed ${tag}`);
    assert.deepEqual((await c.invoke("ListConversations")).map((x) => x.id), ["default"]);
    const items = await reply(c, "default", `next ${tag}`);
    assert.equal(textOf(items), echo(`next ${tag}`, 4), "the new methods continue the seed's history");
    assert.equal((await c.history()).length, 4);
});

test("regenerate, edit and continue rewrite the conversation from that point", async (t) => {
    const c = await guest(t);
    const { id } = await c.invoke("CreateConversation", null);
    const tag = nonce("edit");
    await reply(c, id, `one ${tag}`);
    await reply(c, id, `two ${tag}`);

    await reply(c, id, "ignored");
    await c.invoke("RegenerateReply", id);
    const again = await resume(c, id).done;
    assert.equal(textOf(again), echo("ignored", 6), "the last reply again, to the same question and history");
    let messages = (await c.invoke("GetConversation", id)).messages;
    assert.equal(messages.length, 6);
    assert.equal(messages[4].content, "ignored");

    await c.invoke("EditMessage", id, 2, `two, edited ${tag}`);
    const edited = await resume(c, id).done;
    assert.equal(textOf(edited), echo(`two, edited ${tag}`, 4), "the model sees the history before the edit only");
    messages = (await c.invoke("GetConversation", id)).messages;
    assert.deepEqual(messages.map((m) => m.content), [`one ${tag}`, echo(`one ${tag}`, 2), `two, edited ${tag}`, echo(`two, edited ${tag}`, 4)]);
    await rejects(c.invoke("EditMessage", id, 1, "not mine"), "Only your own messages can be edited.");

    // continue: a stopped reply goes on where it stopped
    await c.invoke("StartReply", id, `[[slow]] ${tag}`);
    const stream = resume(c, id);
    await eventually(() => stream.items.length >= 4, 10_000, "four chunks");
    assert.equal(await c.invoke("StopReply", id), true);
    const stopped = await stream.done;
    assert.equal(endOf(stopped).end, "stopped");
    const partial = textOf(stopped);
    assert.ok(partial.startsWith(numbered("tok", 4).join("")) && !partial.includes("tok399"), partial);
    assert.equal((await settledRecord(`[[slow]] ${tag}`)).outcome, "aborted", "Stop stops the upstream at once");

    await c.invoke("ContinueReply", id);
    const more = await resume(c, id).done;
    assert.equal(endOf(more).end, "completed");
    messages = (await c.invoke("GetConversation", id)).messages;
    assert.equal(messages.length, 6);
    assert.equal(messages[5].content, partial + textOf(more), "the continuation extends the cut reply");
    // the other files run at the same time against the same fake: pick this conversation's request
    const ours = (await recordsFor("Continue your previous reply")).filter((r) =>
        r.body.messages.some((m) => typeof m.content === "string" && m.content.includes(tag)),
    );
    assert.equal(ours.length, 1, "one continuation request for this conversation");
    const sent = ours[0].body.messages;
    assert.deepEqual(sent.at(-2), { role: "assistant", content: partial }, "the model sees its cut reply");
});

test("a second start while a reply runs is refused; the first one is not disturbed", async (t) => {
    const c = await guest(t);
    const { id } = await c.invoke("CreateConversation", null);
    await c.invoke("StartReply", id, `[[tokens:80]] ${nonce("busy")}`);
    await rejects(c.invoke("StartReply", id, "meanwhile"), "A reply is still being written in this conversation. Stop it or wait for it to finish.");
    const items = await resume(c, id).done;
    assert.equal(textOf(items), numbered("t", 80).join(""));
});

for (const combo of [WS_MSGPACK, SSE_JSON, LP_JSON]) {
    test(`a new connection resumes after the last chunk it has: no gap, no duplicate [${combo.transport}/${combo.protocol}]`, async (t) => {
        const a = await guest(t, null, { combo });
        const { id } = await a.invoke("CreateConversation", null);
        const tag = nonce("resume");
        const started = await a.invoke("StartReply", id, `[[tokens:300]] ${tag}`);
        assert.equal(started.running, true);
        const first = resume(a, id);
        await eventually(() => first.items.length >= 20, 10_000, "20 chunks");
        const have = first.items.length;
        await a.connection.stop(); // the tab goes away mid-reply

        const b = await guest(t, a.guest, { combo });
        const opened = await b.invoke("GetConversation", id);
        const rest = await resume(b, id, have).done;
        assert.equal(rest[0].sequence, have + 1, "starts right after the last chunk the client has");
        assert.equal(textOf(first.items.slice(0, have)) + textOf(rest), numbered("t", 300).join(""), "whole reply, once");
        assert.equal(endOf(rest).end, "completed");
        if (opened.reply !== null) {
            assert.equal(opened.reply.replyId, started.replyId);
            assert.equal(opened.messages.length, 0, "the running turn is in `reply`, not yet in `messages`");
        }
        assert.equal((await settledRecord(tag)).outcome, "completed", "came back within the grace period: not aborted");
        // after the end the chunks are still there for a late client
        const late = await resume(b, id, 0).done;
        assert.equal(textOf(late), numbered("t", 300).join(""));
    });
}

test("a reply nobody of its conversation came back for is aborted after the grace period, and kept as far as it got", async (t) => {
    const a = await guest(t);
    const { id } = await a.invoke("CreateConversation", null);
    const tag = nonce("grace");
    await a.invoke("StartReply", id, `[[slow]] ${tag}`);
    const stream = resume(a, id);
    await eventually(() => stream.items.length >= 3, 10_000, "three chunks");
    await a.connection.stop();
    const gone = Date.now();
    const record = await settledRecord(tag, 15_000);
    assert.equal(record.outcome, "aborted");
    assert.ok(Date.now() - gone >= 1_500, "not before the 2 s grace period");
    const b = await guest(t, a.guest);
    const { messages } = await b.invoke("GetConversation", id);
    assert.equal(messages.length, 2);
    assert.ok(messages[1].content.startsWith(numbered("tok", 3).join("")), "the partial reply is kept");
});

test("with a grace period of 0 the upstream is aborted as soon as the last client goes", async (t) => {
    const a = await guest(t, null, { base: SERVERS.tight });
    const { id } = await a.invoke("CreateConversation", null);
    const tag = nonce("nograce");
    await a.invoke("StartReply", id, `[[slow]] ${tag}`);
    const stream = resume(a, id);
    await eventually(() => stream.items.length >= 2, 10_000, "two chunks");
    await a.connection.stop();
    assert.equal((await settledRecord(tag, 5_000)).outcome, "aborted");
});

test("the end of a reply carries the token usage the provider reported; the seed's requests ask for none", async (t) => {
    const c = await guest(t);
    const { id } = await c.invoke("CreateConversation", null);
    const tag = nonce("usage");
    const items = await reply(c, id, `count me ${tag}`);
    const { usage } = endOf(items);
    assert.equal(usage.completion_tokens, echoTokens(`count me ${tag}`, 2).length);
    assert.ok(usage.prompt_tokens > 0);
    assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
    const record = await settledRecord(`count me ${tag}`);
    assert.deepEqual(record.body.stream_options, { include_usage: true });
    await c.send(`seed ${tag}`);
    const seed = await settledRecord(`seed ${tag}`);
    assert.equal(seed.body.stream_options, undefined, "SendMessage's request is as before");
});

test("the built-in model counts its own tokens, and is named a small offline demo", async (t) => {
    const c = await guest(t, null, { base: SERVERS.local });
    const info = await c.invoke("GetChatInfo");
    assert.equal(info.provider, "local");
    assert.equal(info.offlineDemo, true);
    const { id } = await c.invoke("CreateConversation", null);
    const items = await reply(c, id, "Say hello.");
    const chunks = items.filter((i) => "text" in i);
    assert.ok(chunks.length > 0);
    const { usage } = endOf(items);
    assert.equal(usage.completion_tokens, chunks.length, "one chunk per generated token");
    assert.ok(usage.prompt_tokens > 5);
    assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
});

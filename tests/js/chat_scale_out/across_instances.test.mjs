// The chat across two server processes on one Redis (tests/scale_out/test_chat_scale_out.py starts
// them): one signed-in user whose connections land on A and on B, as behind a load
// balancer after a reload. A reply started on A is opened and followed on B, Stop from B
// ends it on A, the seed's StopGeneration and ClearHistory reach A from B, and the history
// is the same on both.
import { test } from "node:test";
import {
    assert,
    ChatClient,
    eventually,
    label,
    LP_JSON,
    nonce,
    numbered,
    recordsFor,
    settledRecord,
    SSE_JSON,
    WS_JSON,
    WS_MSGPACK,
} from "../chat/chat_harness.mjs";

const A = process.env.CHAT_A_URL;
const B = process.env.CHAT_B_URL;
const TIMEOUT = 30_000;

function open(t, base, user, combo = WS_JSON) {
    return ChatClient.open(t, base, "/chatHub", { user, combo });
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
    done.catch(() => {});
    return { items, done, subscription };
}

const textOf = (items) => items.filter((i) => "text" in i).map((i) => i.text).join("");

for (const combo of [WS_MSGPACK, SSE_JSON, LP_JSON]) {
    test(`a reply started on A is opened on B and its rest arrives there: whole, once [${label(combo)}]`, { timeout: TIMEOUT }, async (t) => {
        const user = "amy";
        const onA = await open(t, A, user);
        const { id } = await onA.invoke("CreateConversation", null);
        const tag = nonce("move");
        const started = await onA.invoke("StartReply", id, `[[slow]] ${tag}`);
        const first = resume(onA, id);
        await eventually(() => first.items.length >= 5, 10_000, "five chunks on A");
        const have = first.items.length;
        await onA.connection.stop(); // the tab reloads, and lands on B

        const onB = await open(t, B, user, combo);
        const listed = await onB.invoke("ListConversations");
        assert.equal(listed.find((c) => c.id === id).running, true, "B lists it as running");
        const opened = await onB.invoke("GetConversation", id);
        assert.equal(opened.reply.replyId, started.replyId, "B shows the reply A runs");
        assert.equal(opened.reply.running, true);
        assert.deepEqual(opened.messages, [], "the running turn is in `reply`, not yet in `messages`");
        const rest = resume(onB, id, have);
        // past A's 2 s grace period: the follower on B keeps the reply going
        await eventually(() => rest.items.length >= 60, 15_000, "60 more chunks on B");
        assert.equal(rest.items[0].sequence, have + 1, "right after the last chunk the client had");
        const [record] = await recordsFor(tag);
        assert.equal(record.outcome, "streaming", "not aborted while a client follows on B");

        // Stop from B ends it on A
        assert.equal(await onB.invoke("StopReply", id), true);
        const items = await rest.done;
        assert.equal(items.at(-1).end, "stopped");
        assert.equal((await settledRecord(tag)).outcome, "aborted", "A closed the upstream request");
        const text = textOf(first.items.slice(0, have)) + textOf(items);
        assert.ok(text.startsWith(numbered("tok", have + 60).join("")), "whole so far, no gap, no duplicate");
        const sequences = items.filter((i) => "text" in i).map((i) => i.sequence);
        assert.deepEqual(sequences, sequences.map((_, i) => have + 1 + i));

        // the same history on both instances
        const again = await open(t, A, user);
        const onAHistory = await again.invoke("GetConversation", id);
        const onBHistory = await onB.invoke("GetConversation", id);
        assert.deepEqual(onAHistory.messages, onBHistory.messages);
        assert.deepEqual(onBHistory.messages, [
            { role: "user", content: `[[slow]] ${tag}` },
            { role: "assistant", content: text, model: "chat-deployment" },
        ]);
        assert.equal(onAHistory.reply, null);
        assert.equal(onBHistory.reply, null);
    });
}

test("one reply per conversation across instances: B refuses a second start while A's runs", { timeout: TIMEOUT }, async (t) => {
    const onA = await open(t, A, "ben");
    const onB = await open(t, B, "ben");
    const { id } = await onA.invoke("CreateConversation", null);
    await onA.invoke("StartReply", id, `[[tokens:200]] ${nonce("busy")}`);
    await assert.rejects(onB.invoke("StartReply", id, "meanwhile"), /A reply is still being written in this conversation/);
    const items = await resume(onB, id).done;
    assert.equal(textOf(items), numbered("t", 200).join(""), "followed to its end on B");
});

test("StopGeneration from the user's tab on B stops the seed reply streaming on A", { timeout: TIMEOUT }, async (t) => {
    const onA = await open(t, A, "cat");
    await onA.clear();
    const onB = await open(t, B, "cat", SSE_JSON);
    const message = `[[slow]] ${nonce("stopgen")}`;
    const sending = onA.send(message, 25_000);
    await onA.untilCount("ReceiveStreamToken", 3);
    await onB.invoke("StopGeneration");
    const events = await sending;
    assert.equal(events.at(-1)[0], "ReceiveStreamEnd", "the reply ended normally");
    assert.equal((await settledRecord(message)).outcome, "aborted");
    const streamed = events.filter((e) => e[0] === "ReceiveStreamToken").map((e) => e[1]).join("");
    const history = await onB.history();
    assert.deepEqual(history, [
        { role: "user", content: message },
        { role: "assistant", content: streamed },
    ], "stored as far as it got, and B reads it");
});

test("ClearHistory on B stops A's reply, waits for it to be stored, then clears: empty on both", { timeout: TIMEOUT }, async (t) => {
    const onA = await open(t, A, "dan");
    await onA.clear();
    const onB = await open(t, B, "dan", LP_JSON);
    const message = `[[slow]] ${nonce("clear")}`;
    const sending = onA.send(message, 25_000);
    await onA.untilCount("ReceiveStreamToken", 3);
    await onB.invoke("ClearHistory");
    await sending;
    assert.equal((await settledRecord(message)).outcome, "aborted");
    assert.deepEqual(await onB.history(), []);
    assert.deepEqual(await onA.history(), [], "nothing in flight wrote into the cleared conversation");
});

test("the rate limit holds across instances: a user's messages on A and B count against one limit", { timeout: TIMEOUT }, async (t) => {
    // both servers allow 4 messages a minute (test_chat_scale_out.py)
    const onA = await open(t, A, "fay");
    const onB = await open(t, B, "fay", WS_MSGPACK);
    for (const [client, n] of [[onA, 1], [onB, 2], [onA, 3], [onB, 4]]) {
        const events = await client.send(`message ${n} ${nonce("limit")}`);
        assert.equal(events.at(-1)[0], "ReceiveStreamEnd", `message ${n} is answered`);
    }
    for (const client of [onA, onB]) {
        const events = await client.send(`one too many ${nonce("limit")}`);
        assert.match(events.at(-1)[1], /^You are sending messages too quickly\. Please wait \d+ seconds\.$/);
    }
});

test("a guest's page that lands on B keeps its conversations and its running reply", { timeout: TIMEOUT }, async (t) => {
    const onA = await ChatClient.open(t, A, "/chatHub");
    const guest = await onA.invoke("UseGuestSession", null);
    const { id } = await onA.invoke("CreateConversation", "A guest's chat");
    const tag = nonce("guest");
    const started = await onA.invoke("StartReply", id, `[[slow]] ${tag}`);
    const first = resume(onA, id);
    await eventually(() => first.items.length >= 3, 10_000, "three chunks on A");
    await onA.connection.stop();

    const onB = await ChatClient.open(t, B, "/chatHub", { combo: SSE_JSON });
    assert.equal(await onB.invoke("UseGuestSession", guest), guest, "B knows the guest A issued");
    const listed = await onB.invoke("ListConversations");
    assert.deepEqual(listed.map((c) => [c.id, c.title, c.running]), [[id, "A guest's chat", true]]);
    const opened = await onB.invoke("GetConversation", id);
    assert.equal(opened.reply.replyId, started.replyId);
    const rest = resume(onB, id, first.items.length);
    await eventually(() => rest.items.length >= 3, 10_000, "three more chunks on B");
    assert.equal(rest.items[0].sequence, first.items.length + 1);
    assert.equal(await onB.invoke("StopReply", id), true);
    assert.equal((await rest.done).at(-1).end, "stopped");
    const { messages } = await onB.invoke("GetConversation", id);
    assert.equal(messages.length, 2);
    assert.equal(messages[1].content, textOf(first.items) + textOf(await rest.done), "stored as far as it got, once");
});

// Issue 22, isolation through the stock client: two signed-in users and two guests, on both
// hub paths; every method that takes a conversation id answers another owner's id with the
// very error an id that never existed gets, and the owner's conversation is untouched.
import { test } from "node:test";
import { assert, ChatClient, nonce, SERVERS, signalR } from "./chat_harness.mjs";

const NOT_FOUND = "Conversation not found.";

async function owner(t, path, who) {
    if (who.startsWith("guest")) {
        const client = await ChatClient.open(t, SERVERS.main, path);
        await client.invoke("UseGuestSession", null);
        return client;
    }
    return ChatClient.open(t, SERVERS.main, path, { user: who });
}

function finished(client, id) {
    return new Promise((resolve, reject) => {
        client.connection.stream("ResumeReply", id, 0).subscribe({ next: () => {}, complete: resolve, error: reject });
    });
}

/** UploadAttachment of a one-byte text file through a Subject. */
function upload(client, id) {
    const subject = new signalR.Subject();
    const result = client.invoke("UploadAttachment", id, { name: "a.txt", type: "text/plain" }, subject);
    subject.next("YQ==");
    subject.complete();
    return result;
}

/** The error text a call ends with (a stream's error too), or null when it succeeds. */
async function errorOf(work) {
    try {
        await work();
        return null;
    } catch (err) {
        return err.message.replace(/^.*HubException: /s, "");
    }
}

const METHODS = {
    GetConversation: (c, id) => c.invoke("GetConversation", id),
    RenameConversation: (c, id) => c.invoke("RenameConversation", id, "taken over"),
    DeleteConversation: (c, id) => c.invoke("DeleteConversation", id),
    ClearConversation: (c, id) => c.invoke("ClearConversation", id),
    RestoreConversation: (c, id) => c.invoke("RestoreConversation", id),
    StartReply: (c, id) => c.invoke("StartReply", id, "hello"),
    RegenerateReply: (c, id) => c.invoke("RegenerateReply", id),
    EditMessage: (c, id) => c.invoke("EditMessage", id, 0, "changed"),
    ContinueReply: (c, id) => c.invoke("ContinueReply", id),
    StopReply: (c, id) => c.invoke("StopReply", id),
    ResumeReply: (c, id) => finished(c, id),
    UploadAttachment: (c, id) => upload(c, id),
    StartReplyWithAttachments: (c, id) => c.invoke("StartReplyWithAttachments", id, "hello", []),
    GetAttachment: (c, id) => c.invoke("GetAttachment", id, "0123456789abcdef"),
};

for (const path of ["/chatHub", "/chat"]) {
    test(`no user or guest reaches another's conversation on ${path}`, async (t) => {
        const names = ["alice", "bob", "guest-1", "guest-2"];
        const clients = await Promise.all(names.map((who) => owner(t, path, who)));
        const tag = nonce("iso");
        const ids = [];
        for (const [n, client] of clients.entries()) {
            const created = await client.invoke("CreateConversation", `mine ${n} ${tag}`);
            await client.invoke("StartReply", created.id, `secret ${n} ${tag}`);
            await finished(client, created.id);
            ids.push(created.id);
        }
        const before = await Promise.all(clients.map((c, n) => c.invoke("GetConversation", ids[n])));

        for (const [name, method] of Object.entries(METHODS)) {
            for (const [n, intruder] of clients.entries()) {
                assert.equal(await errorOf(() => method(intruder, "0123456789abcdef")), NOT_FOUND, name);
                for (const [m, id] of ids.entries()) {
                    if (m === n) continue;
                    assert.equal(await errorOf(() => method(intruder, id)), NOT_FOUND, `${name}: ${names[n]} on ${names[m]}'s`);
                }
            }
        }

        for (const [n, client] of clients.entries()) {
            const after = await client.invoke("GetConversation", ids[n]);
            assert.deepEqual(after.messages, before[n].messages);
            assert.equal(after.title, `mine ${n} ${tag}`);
        }
    });
}

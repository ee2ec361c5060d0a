// Attachments (issue 23) through the stock client: UploadAttachment takes a Subject of chunks
// (base64 text with JSON, bytes with MessagePack), StartReplyWithAttachments sends the files with
// a message, and the fake Azure OpenAI names the content parts it received. The main server's
// default deployment reads images (AI_VISION_MODELS), its second one does not.
import { test } from "node:test";
import {
    assert,
    ChatClient,
    label,
    LP_JSON,
    nonce,
    SERVERS,
    signalR,
    withTimeout,
    WS_JSON,
    WS_MSGPACK,
} from "./chat_harness.mjs";

const MINI = "chat-deployment-mini";
const HUB_ERROR = "HubException: ";
const PNG = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, ...Array.from({ length: 56 }, (_, i) => i)]);
const FIVE_MB = 5 * 1024 * 1024;

async function guest(t, combo) {
    const client = await ChatClient.open(t, SERVERS.main, "/chatHub", { combo });
    client.guest = await client.invoke("UseGuestSession", null);
    return client;
}

async function rejects(promise, text) {
    await assert.rejects(promise, (err) => {
        assert.ok(err.message.endsWith(HUB_ERROR + text), err.message);
        return true;
    });
}

/** A chunk as the protocol carries it: bytes with MessagePack, base64 text with JSON. */
function chunk(combo, bytes) {
    return combo.protocol === "messagepack" ? bytes : Buffer.from(bytes).toString("base64");
}

/** UploadAttachment with a Subject, `bytes` sent in chunks of `size`; the invocation's promise. */
function upload(client, combo, conversation, name, type, bytes, size = 16) {
    const subject = new signalR.Subject();
    const result = client.connection.invoke("UploadAttachment", conversation, { name, type }, subject);
    for (let at = 0; at < bytes.length; at += size) {
        subject.next(chunk(combo, bytes.subarray(at, at + size)));
    }
    subject.complete();
    return withTimeout(result, 15_000, "UploadAttachment");
}

async function follow(client, conversation) {
    const items = await new Promise((resolve, reject) => {
        const got = [];
        client.connection.stream("ResumeReply", conversation, 0).subscribe({
            next: (item) => got.push(item),
            complete: () => resolve(got),
            error: reject,
        });
    });
    assert.equal(items.at(-1).end, "completed", JSON.stringify(items.at(-1)));
    return items.filter((i) => "text" in i).map((i) => i.text).join("");
}

test("GetChatInfo says which models read images, and the attachment limits", async (t) => {
    const c = await guest(t, WS_JSON);
    const info = await c.invoke("GetChatInfo");
    assert.deepEqual(info.visionModels, ["chat-deployment"]);
    assert.equal(info.attachments.maxBytes, FIVE_MB);
    assert.equal(info.attachments.maxFiles, 4);
    assert.ok(info.attachments.types.includes("image/png"));
});

for (const combo of [WS_JSON, WS_MSGPACK, LP_JSON]) {
    test(`an image and a code file go up through a Subject and reach the model as parts [${label(combo)}]`, async (t) => {
        const c = await guest(t, combo);
        const { id } = await c.invoke("CreateConversation", "Files");
        const image = await upload(c, combo, id, "cat.png", "image/png", PNG);
        assert.deepEqual({ ...image, id: undefined }, { id: undefined, name: "cat.png", type: "image/png", size: PNG.length });
        const code = new TextEncoder().encode(`print("${nonce("py")}")\n`);
        const file = await upload(c, combo, id, "hello.py", "", code, 7);
        assert.equal(file.type, "text/plain");

        await c.invoke("StartReplyWithAttachments", id, "What is this?", [image.id, file.id]);
        const answer = await follow(c, id);
        assert.ok(
            answer.endsWith(`Received: text; image image/png ${PNG.length} bytes; file hello.py ${code.length - 1} chars.`),
            answer,
        );

        // a new connection finds the files with the message, and the image again
        const again = await ChatClient.open(t, SERVERS.main, "/chatHub", { combo });
        await again.invoke("UseGuestSession", c.guest);
        const opened = await again.invoke("GetConversation", id);
        assert.deepEqual(
            opened.messages[0].attachments.map((a) => [a.name, a.type, a.size]),
            [["cat.png", "image/png", PNG.length], ["hello.py", "text/plain", code.length]],
        );
        const shown = await again.invoke("GetAttachment", id, image.id);
        assert.equal(shown.url, `data:image/png;base64,${Buffer.from(PNG).toString("base64")}`);
    });
}

for (const combo of [WS_JSON, WS_MSGPACK, LP_JSON]) {
    test(`an oversize file is refused at the limit and the connection keeps working [${label(combo)}]`, async (t) => {
        const c = await guest(t, combo);
        const { id } = await c.invoke("CreateConversation", "Big");
        const subject = new signalR.Subject();
        const result = c.connection.invoke("UploadAttachment", id, { name: "big.txt", type: "text/plain" }, subject);
        let refused = null;
        result.catch((err) => {
            refused = err;
        });
        const piece = new Uint8Array(16 * 1024).fill(0x61); // a hub message holds at most ~48 KB
        // the client's sends that went through, so it sends as fast as the transport takes them
        // (long polling would queue every item) and the test ends with nothing left to send
        const transport = c.connection.connection;
        const send = transport.send.bind(transport);
        let done = 0;
        let settled = () => {};
        transport.send = (data) =>
            send(data).finally(() => {
                done += 1;
                settled();
            });
        const sentUpTo = (count) =>
            withTimeout(
                new Promise((resolve) => {
                    settled = () => done >= count && resolve();
                    settled();
                }),
                15_000,
                "sends",
            );
        // send until refused (a client that stops on the error), never more than twice the limit
        let queued = 0;
        for (let sent = 0; refused === null && sent < 2 * FIVE_MB; sent += piece.length) {
            subject.next(chunk(combo, piece));
            queued += 1;
            await sentUpTo(queued - 4);
            await new Promise((resolve) => setImmediate(resolve)); // the server's answer is read between chunks
        }
        subject.complete();
        await sentUpTo(queued + 1); // the items and the completion
        assert.ok(refused !== null, "refused while sending, before twice the limit was sent");
        await rejects(result, "The file is too large. The limit is 5 MB.");
        // nothing of it waits: four more files fit, and the connection answers
        const small = await upload(c, combo, id, "small.txt", "text/plain", new TextEncoder().encode("ok"));
        assert.equal(small.size, 2);
        const info = await c.invoke("GetChatInfo");
        assert.equal(info.attachments.maxFiles, 4);
    });
}

test("a wrong type, an image for a model that reads none, and another guest's id are refused", async (t) => {
    const combo = WS_JSON;
    const c = await guest(t, combo);
    const { id } = await c.invoke("CreateConversation", "Refusals");
    await rejects(
        upload(c, combo, id, "a.zip", "application/zip", new Uint8Array([0x50, 0x4b])),
        "This type of file cannot be attached: a.zip. Attach images (PNG, JPEG, GIF, WebP) or text and code files.",
    );
    await rejects(
        upload(c, combo, id, "fake.png", "image/png", new TextEncoder().encode("not a png")),
        "This type of file cannot be attached: fake.png. Attach images (PNG, JPEG, GIF, WebP) or text and code files. " +
            "Its content is not a PNG image.",
    );
    await c.invoke("SetModel", id, MINI);
    await rejects(
        upload(c, combo, id, "cat.png", "image/png", PNG),
        `The model ${MINI} cannot read images. Attach text files only, or choose a model that reads images.`,
    );
    const mine = await upload(c, combo, id, "a.txt", "text/plain", new TextEncoder().encode("a"));

    const other = await guest(t, combo);
    const theirs = await other.invoke("CreateConversation", "Theirs");
    await rejects(other.invoke("StartReplyWithAttachments", theirs.id, "x", [mine.id]), "Attachment not found.");
    await rejects(other.invoke("StartReplyWithAttachments", theirs.id, "x", ["nope"]), "Attachment not found.");
    await rejects(upload(other, combo, id, "b.txt", "text/plain", new TextEncoder().encode("b")), "Conversation not found.");
    await rejects(other.invoke("GetAttachment", id, mine.id), "Conversation not found.");
});

for (const combo of [WS_JSON, WS_MSGPACK]) {
    test(`a client that sends on after a refusal leaves the connection working [${label(combo)}]`, async (t) => {
        // refused before a byte is read (a type no model takes); the client sends 50 chunks at once,
        // more than the server buffers for a stream, while the server reads the conversation from
        // SQLite (a signed-in user's store): the chunks it buffered are let go
        const c = await ChatClient.open(t, SERVERS.main, "/chatHub", { combo, user: "ivan" });
        const { id } = await c.invoke("CreateConversation", "Flood");
        const subject = new signalR.Subject();
        const result = c.connection.invoke("UploadAttachment", id, { name: "a.zip", type: "application/zip" }, subject);
        const piece = new Uint8Array(16 * 1024).fill(0x62);
        for (let i = 0; i < 50; i += 1) {
            subject.next(chunk(combo, piece));
        }
        subject.complete();
        await rejects(result, "This type of file cannot be attached: a.zip. Attach images (PNG, JPEG, GIF, WebP) or text and code files.");
        const info = await c.invoke("GetChatInfo");
        assert.equal(info.attachments.maxFiles, 4);
        const small = await upload(c, combo, id, "after.txt", "text/plain", new TextEncoder().encode("after"));
        assert.equal(small.size, 5);
    });
}

// The shared attachment module (wwwroot/js/chat/attachments.js) under Node, no browser and no
// server: the checks made before an upload, their texts, and the chunks a file is read into.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
    UPLOAD_CHUNK,
    check,
    isImage,
    pickerAccept,
    pickerHint,
    refusal,
    sendChunks,
    sizeText,
    takesImages,
    toBase64,
} from "../../../wwwroot/js/chat/attachments.js";

/** The server's defaults (settings.py), as GetChatInfo reports them. */
const limits = {
    maxBytes: 5 * 1024 * 1024,
    maxFiles: 4,
    types: ["image/png", "image/jpeg", "image/gif", "image/webp", "text/*", "application/json"],
    extensions: [".txt", ".md", ".py", ".js"],
};
const vision = { limits, chosen: 0, model: "gpt-4o", readsImages: true };
const file = (name, type, size = 10) => ({ name, type, size });

/** A subject-like recorder of what an upload sends. */
function recorder() {
    const sent = { items: [], completed: false, error: null };
    return {
        sent,
        next: (item) => sent.items.push(item),
        complete: () => { sent.completed = true; },
        error: (err) => { sent.error = err; },
    };
}

test("accepts images for a vision model, text types, JSON and code files by their name", () => {
    for (const f of [
        file("cat.png", "image/png"),
        file("a.JPG", "image/jpeg"),
        file("notes.txt", "text/plain"),
        file("data.csv", "text/csv"),
        file("d.json", "application/json"),
        file("hello.py", ""),
        file("app.js", "application/octet-stream"),
    ]) {
        assert.equal(refusal(f, vision), null, f.name);
    }
});

test("refuses a type that is neither an allowed image nor text, in the server's words", () => {
    assert.equal(
        refusal(file("a.zip", "application/zip"), vision),
        "This type of file cannot be attached: a.zip. Attach images (PNG, JPEG, GIF, WebP) or text and code files.",
    );
    // an image type the server does not read (SVG, TIFF) is refused as a type, even for a vision model
    assert.match(refusal(file("v.svg", "image/svg+xml"), vision), /^This type of file cannot be attached: v\.svg\./);
    // text/* off: only the listed endings
    const strict = { ...vision, limits: { ...limits, types: ["image/png"] } };
    assert.match(refusal(file("a.log", "text/plain"), strict), /cannot be attached/);
    assert.equal(refusal(file("a.md", "text/plain"), strict), null);
});

test("refuses an image for a model that reads none, naming the model; text still goes", () => {
    const plain = { ...vision, model: "plain", readsImages: false };
    assert.equal(
        refusal(file("cat.png", "image/png"), plain),
        "The model plain cannot read images. Attach text files only, or choose a model that reads images.",
    );
    assert.equal(refusal(file("hello.py", "text/x-python"), plain), null);
});

test("refuses a file over the size limit, saying the limit as the server does", () => {
    assert.equal(refusal(file("big.txt", "text/plain", limits.maxBytes), vision), null);
    assert.equal(
        refusal(file("big.txt", "text/plain", limits.maxBytes + 1), vision),
        "The file is too large. The limit is 5 MB.",
    );
    const small = { ...vision, limits: { ...limits, maxBytes: 512 * 1024 } };
    assert.equal(refusal(file("b.txt", "text/plain", 600 * 1024), small), "The file is too large. The limit is 512 KB.");
});

test("the count: chosen files count, and 0 means attachments are off", () => {
    assert.equal(refusal(file("a.txt", "text/plain"), { ...vision, chosen: 4 }), "At most 4 files can be attached to a message.");
    const one = { ...vision, limits: { ...limits, maxFiles: 1 }, chosen: 1 };
    assert.equal(refusal(file("a.txt", "text/plain"), one), "At most 1 file can be attached to a message.");
    const off = { ...vision, limits: { ...limits, maxFiles: 0 } };
    assert.equal(refusal(file("a.txt", "text/plain"), off), "Attachments are turned off on this server.");
});

test("check takes files in turn: the accepted ones, and the last refusal", () => {
    const files = [file("a.txt", "text/plain"), file("a.zip", "application/zip"), file("b.txt", "text/plain"), file("c.txt", "text/plain"), file("d.txt", "text/plain")];
    const { accepted, refused } = check(files, { ...vision, chosen: 1 });
    assert.deepEqual(accepted.map((f) => f.name), ["a.txt", "b.txt", "c.txt"]);
    assert.equal(refused, "At most 4 files can be attached to a message.");
    assert.deepEqual(check([file("a.txt", "text/plain")], vision), { accepted: [file("a.txt", "text/plain")], refused: null });
});

test("sizes as the server writes them", () => {
    assert.equal(sizeText(100), "100 bytes");
    assert.equal(sizeText(1536), "1.5 KB");
    assert.equal(sizeText(512 * 1024), "512 KB");
    assert.equal(sizeText(5 * 1024 * 1024), "5 MB");
    assert.equal(sizeText(1.5 * 1024 * 1024 + 1), "1.5 MB");
});

test("which models read images, and what the picker says and accepts", () => {
    const info = { model: "gpt-4o", visionModels: ["gpt-4o"] };
    assert.equal(takesImages(info, "gpt-4o"), true);
    assert.equal(takesImages(info, ""), true); // the default model
    assert.equal(takesImages(info, "plain"), false);
    assert.equal(takesImages({ model: "local" }, ""), false); // no visionModels: the built-in model
    assert.equal(isImage(file("a.png", "image/PNG")), true);
    assert.equal(isImage(file("a.svg", "image/svg+xml")), false);
    assert.equal(pickerAccept(limits, true), null);
    assert.equal(pickerAccept(limits, false), ".txt,.md,.py,.js,text/*,application/json");
    assert.deepEqual(pickerHint(true), { text: "Images or text files", reason: "" });
    assert.deepEqual(pickerHint(false), { text: "Text files only", reason: "This model takes no images" });
});

test("a file is sent as base64 chunks of UPLOAD_CHUNK bytes, then completed", async () => {
    const bytes = new Uint8Array(UPLOAD_CHUNK * 2 + 5).map((_, i) => (i * 7) % 256);
    const sink = recorder();
    await sendChunks(new Blob([bytes]), sink);
    assert.equal(sink.sent.items.length, 3);
    assert.equal(sink.sent.completed, true);
    assert.equal(sink.sent.error, null);
    const back = Buffer.concat(sink.sent.items.map((b64) => Buffer.from(b64, "base64")));
    assert.deepEqual(new Uint8Array(back), bytes);
    assert.equal(toBase64(new TextEncoder().encode("hello")), "aGVsbG8=");
});

test("an empty file sends no chunk and completes (the server says it is empty)", async () => {
    const sink = recorder();
    await sendChunks(new Blob([]), sink);
    assert.deepEqual(sink.sent, { items: [], completed: true, error: null });
});

test("sending stops once the server refused the upload", async () => {
    const sink = recorder();
    const refusedAfter = 2;
    await sendChunks(new Blob([new Uint8Array(100)]), sink, { chunk: 10, refused: () => sink.sent.items.length >= refusedAfter });
    assert.equal(sink.sent.items.length, 2);
    assert.equal(sink.sent.completed, true);
});

test("a file that cannot be read ends the stream with the error, and throws it", async () => {
    const gone = new Error("NotReadableError");
    const blob = { size: 20, slice: () => ({ arrayBuffer: () => Promise.reject(gone) }) };
    const sink = recorder();
    await assert.rejects(sendChunks(blob, sink), gone);
    assert.equal(sink.sent.error, gone);
    assert.equal(sink.sent.completed, false);
});

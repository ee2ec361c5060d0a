// Issue 23 through the stock client (users of its own, so the rate limits of the other files' users
// are not touched): SearchConversations finds only the caller's own
// conversations (two users and two guests, on both hub paths), ExportConversation gives
// Markdown and JSON that round-trip the stored conversation (JSON and MessagePack), and
// DeleteAllMyData stops the caller's running reply and leaves nothing of them, and all of the others.
import { test } from "node:test";
import { assert, ChatClient, nonce, SERVERS, WS_JSON, WS_MSGPACK } from "./chat_harness.mjs";

const NOT_FOUND = "Conversation not found.";
const BAD_QUERY = "A search must be text of 1 to 200 characters.";
const BAD_PAGE = "The page must be a whole number from 1.";
const BAD_PAGE_SIZE = "The page size must be a whole number from 1 to 50.";
const BAD_FORMAT = 'The export format must be "markdown" or "json".';

async function owner(t, path, who, combo = WS_JSON) {
    if (who.startsWith("guest")) {
        const client = await ChatClient.open(t, SERVERS.main, path, { combo });
        client.guest = await client.invoke("UseGuestSession", null);
        return client;
    }
    return ChatClient.open(t, SERVERS.main, path, { user: who, combo });
}

/** ResumeReply(id, 0): `started` resolves at its first item, `done` with every item at its end. */
function follow(client, id) {
    const items = [];
    let first;
    const started = new Promise((resolve) => {
        first = resolve;
    });
    const done = new Promise((resolve, reject) => {
        client.connection.stream("ResumeReply", id, 0).subscribe({
            next: (item) => {
                items.push(item);
                first();
            },
            complete: () => resolve(items),
            error: reject,
        });
    });
    return { started, done };
}

function followed(client, id) {
    return follow(client, id).done;
}

async function talk(client, title, ...messages) {
    const { id } = await client.invoke("CreateConversation", title);
    for (const message of messages) {
        await client.invoke("StartReply", id, message);
        await followed(client, id);
    }
    return id;
}

async function errorOf(work) {
    try {
        await work();
        return null;
    } catch (err) {
        return err.message.replace(/^.*HubException: /s, "");
    }
}

for (const path of ["/chatHub", "/chat"]) {
    test(`search finds only the caller's own conversations on ${path}`, async (t) => {
        const names = ["gina", "hank", "guest-1", "guest-2"];
        const clients = await Promise.all(names.map((who) => owner(t, path, who)));
        const word = nonce("needle");
        const mine = [];
        for (const [n, client] of clients.entries()) {
            const talked = await talk(client, null, `the ${word} of ${names[n]}`);
            const titled = await talk(client, `${word.toUpperCase()} in the title of ${names[n]}`);
            await talk(client, null, `nothing here for ${names[n]}`);
            mine.push([titled, talked]); // newest first
        }
        for (const [n, client] of clients.entries()) {
            const found = await client.invoke("SearchConversations", word.toUpperCase(), 1, 50);
            assert.deepEqual(found.results.map((r) => r.id), mine[n], names[n]);
            assert.equal(found.more, false);
            const [title, message] = found.results;
            assert.equal(title.in, "title");
            assert.equal(message.in, "user");
            assert.equal(message.snippet, `the ${word} of ${names[n]}`);
            assert.equal(message.snippet.slice(...message.match), word);
            // paged: one at a time
            const first = await client.invoke("SearchConversations", word, 1, 1);
            const second = await client.invoke("SearchConversations", word, 2, 1);
            assert.deepEqual([first.results[0].id, first.more, second.results[0].id, second.more], [...mine[n].slice(0, 1), true, mine[n][1], false]);
        }
        const gina = clients[0];
        assert.equal(await errorOf(() => gina.invoke("SearchConversations", "x".repeat(201), 1, 10)), BAD_QUERY);
        assert.equal(await errorOf(() => gina.invoke("SearchConversations", "  ", 1, 10)), BAD_QUERY);
        assert.equal(await errorOf(() => gina.invoke("SearchConversations", word, 0, 10)), BAD_PAGE);
        assert.equal(await errorOf(() => gina.invoke("SearchConversations", word, 1, 51)), BAD_PAGE_SIZE);
    });
}

for (const combo of [WS_JSON, WS_MSGPACK]) {
    test(`export round-trips the stored conversation (${combo.protocol})`, async (t) => {
        const [gina, hank] = await Promise.all([owner(t, "/chat", "gina", combo), owner(t, "/chat", "hank", combo)]);
        const tag = nonce("export");
        const id = await talk(gina, `Export ${tag}`, `first ${tag}`, `second ${tag}`);
        const stored = await gina.invoke("GetConversation", id);

        const json = await gina.invoke("ExportConversation", id, "json");
        assert.equal(json.fileName, `export-${tag.toLowerCase().replace(/[^a-z0-9]+/g, "-")}.json`);
        assert.equal(json.mediaType, "application/json");
        const document = JSON.parse(json.text);
        assert.equal(document.title, `Export ${tag}`);
        assert.deepEqual(document.messages, stored.messages);
        assert.match(document.created, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
        assert.match(document.updated, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

        const markdown = await gina.invoke("ExportConversation", id, "markdown");
        assert.ok(markdown.fileName.endsWith(".md"));
        assert.ok(markdown.text.startsWith(`# Export ${tag}\n`));
        const headings = markdown.text.split("\n").filter((line) => line.startsWith("## "));
        assert.deepEqual(headings, ["## You", "## Assistant", "## You", "## Assistant"]);
        for (const message of stored.messages) assert.ok(markdown.text.includes(message.content));

        assert.equal(await errorOf(() => gina.invoke("ExportConversation", id, "pdf")), BAD_FORMAT);
        assert.equal(await errorOf(() => hank.invoke("ExportConversation", id, "json")), NOT_FOUND);
        assert.equal(await errorOf(() => hank.invoke("ExportConversation", "0123456789abcdef", "json")), NOT_FOUND);
    });
}

test("DeleteAllMyData stops the running reply and leaves nothing of the user, and all of the others", async (t) => {
    const erin = await owner(t, "/chatHub", "erin");
    const erinElsewhere = await owner(t, "/chat", "erin", WS_MSGPACK); // another tab of hers
    const frank = await owner(t, "/chatHub", "frank");
    const guest = await owner(t, "/chatHub", "guest");
    const tag = nonce("gone");
    const others = [];
    for (const client of [erin, frank, guest]) {
        await client.send(`default ${tag}`);
        await talk(client, null, `kept ${tag}`);
    }
    for (const client of [frank, guest]) {
        others.push([await client.invoke("ListConversations"), await client.invoke("GetHistory")]);
    }
    const old = await talk(erin, null, `old ${tag}`);
    const running = (await erin.invoke("CreateConversation", null)).id;
    await erin.invoke("StartReply", running, `[[slow]] ${tag}`);
    const following = follow(erinElsewhere, running);
    await following.started; // streaming, and followed from her other tab

    await erin.invoke("DeleteAllMyData");

    const items = await following.done;
    assert.equal(items.at(-1).end, "stopped", JSON.stringify(items.at(-1)));
    for (const client of [erin, erinElsewhere]) {
        assert.deepEqual(await client.invoke("ListConversations"), []);
        assert.deepEqual(await client.invoke("GetHistory"), []);
        assert.deepEqual((await client.invoke("SearchConversations", tag, 1, 50)).results, []);
        for (const id of [old, running]) {
            assert.equal(await errorOf(() => client.invoke("GetConversation", id)), NOT_FOUND);
        }
    }
    for (const [n, client] of [frank, guest].entries()) {
        assert.deepEqual([await client.invoke("ListConversations"), await client.invoke("GetHistory")], others[n]);
    }

    // a guest: their conversations and their id go
    await guest.invoke("DeleteAllMyData");
    assert.deepEqual(await guest.invoke("ListConversations"), []);
    const again = await ChatClient.open(t, SERVERS.main, "/chatHub");
    assert.notEqual(await again.invoke("UseGuestSession", guest.guest), guest.guest, "a deleted guest's id is not taken back");
    assert.deepEqual(await again.invoke("ListConversations"), []);
    assert.deepEqual([await frank.invoke("ListConversations"), await frank.invoke("GetHistory")], others[0]);
});

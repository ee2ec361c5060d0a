// Shared helpers for the chat hub suite: the servers from the environment, a client
// that records every chat event in arrival order, the fake Azure OpenAI's records,
// and the texts and token sequences the fake makes deterministic.
import assert from "node:assert/strict";
import { build, delay, eventually, label, MATRIX, stopQuietly, withTimeout } from "../harness.mjs";

export { assert, delay, eventually, label, MATRIX, withTimeout };
export { signalR } from "../harness.mjs";

function serverUrl(name) {
    const value = process.env[name];
    if (!value) {
        throw new Error(`${name} is not set (tests/clients/test_chat_js.py sets it)`);
    }
    return value.replace(/\/+$/, "");
}

/** The servers, by role; each is read (and checked) on first use. */
export const SERVERS = {
    get main() { return serverUrl("CHAT_URL"); },
    get tight() { return serverUrl("CHAT_TIGHT_URL"); },
    get capped() { return serverUrl("CHAT_CAPPED_URL"); },
    get entra() { return serverUrl("CHAT_ENTRA_URL"); },
    get entraV1() { return serverUrl("CHAT_ENTRA_V1_URL"); },
    get openai() { return serverUrl("CHAT_OPENAI_URL"); },
    get local() { return serverUrl("CHAT_LOCAL_URL"); },
    get fake() { return serverUrl("FAKE_AI_URL"); },
};

/** Bearer tokens by user: alice, bob, carol, dave, erin, frank, gina, hank, and "expired". */
export function token(user) {
    const tokens = JSON.parse(process.env.CHAT_TOKENS ?? "{}");
    if (!tokens[user]) {
        throw new Error(`CHAT_TOKENS has no token for '${user}'`);
    }
    return tokens[user];
}

export const WS_JSON = { transport: "WebSockets", protocol: "json" };
export const WS_MSGPACK = { transport: "WebSockets", protocol: "messagepack" };
export const SSE_JSON = { transport: "ServerSentEvents", protocol: "json" };
export const LP_JSON = { transport: "LongPolling", protocol: "json" };
export const LP_MSGPACK = { transport: "LongPolling", protocol: "messagepack" };

/** What the user sees, exactly. */
export const TEXT = {
    empty: "Message cannot be empty.",
    notText: "Message must be text.",
    busy: "The AI service is busy. Please wait a moment and try again.",
    auth: "AI service authentication failed. Contact the administrator.",
    filtered: "The content was filtered by the AI service's content policy. Please rephrase your message.",
    failed: "An error occurred while generating the response. Please try again.",
    tooLong200: "Message is too long. The limit is 200 characters.",
};

/** How the server wraps a HubException's text in a stream's completion. */
export const STREAM_ERROR_PREFIX = "An error occurred on the server while streaming results. HubException: ";

/** What the client's start() throws when negotiate answers 401. */
export const NEGOTIATE_401 = "Failed to complete negotiation with the server: Error: Unauthorized: Status code '401'";

/** Things that must never reach a user: status codes, exception names, addresses, SDK names. */
export function assertNoInternals(text) {
    assert.equal(typeof text, "string");
    for (const pattern of [
        /\b[1-5]\d\d\b/,
        /[A-Z][A-Za-z]*(Error|Exception)\b/,
        /https?:|127\.0\.0\.1|localhost/i,
        /openai|azure|httpx|traceback|retry-after/i,
        /\bstatus\b/i,
    ]) {
        assert.doesNotMatch(text, pattern, `client-visible text leaks internals: ${JSON.stringify(text)}`);
    }
}

let counter = 0;
/** A word (no spaces) unique to this run, to find a message's records at the fake. */
export function nonce(tag = "n") {
    counter += 1;
    return `${tag}-${process.pid}-${counter}-${Math.random().toString(36).slice(2, 10)}`;
}

/** Splits like the fake (and a real model) streams words: "Echo:", " hello", " world". */
export function words(text) {
    return text.match(/\s*\S+/g) ?? [];
}

/** The fake's default reply to `text` when the server sent `count` messages upstream. */
export function echo(text, count) {
    return `Echo: ${text} (history: ${count} messages)`;
}

export function echoTokens(text, count) {
    return words(echo(text, count));
}

/** "t0", " t1", ... as [[tokens:N]] (prefix "t") or [[slow]] (prefix "tok") stream them. */
export function numbered(prefix, count) {
    return Array.from({ length: count }, (_, i) => (i === 0 ? `${prefix}0` : ` ${prefix}${i}`));
}

/** The seed-1 events of a successful SendMessage that streamed `tokens`. */
export function seed1Reply(tokens) {
    return [
        ["ReceiveStatusUpdate", "thinking"],
        ["ReceiveStreamStart"],
        ...tokens.map((tok) => ["ReceiveStreamToken", tok]),
        ["ReceiveStreamEnd"],
    ];
}

/** The seed-2 events of a successful AskAi `id` that streamed `tokens`. */
export function seed2Reply(id, tokens) {
    return [["typing", id, true], ...tokens.map((tok) => ["partial", id, tok]), ["typing", id, false], ["completed", id]];
}

export const CHAT_EVENTS = [
    "ReceiveStatusUpdate",
    "ReceiveStreamStart",
    "ReceiveStreamToken",
    "ReceiveStreamEnd",
    "ReceiveError",
    "typing",
    "partial",
    "completed",
    "error",
];

/**
 * A started chat connection that records every chat event as [name, ...args] in
 * arrival order. Calls return the events that arrived while they ran: the server
 * sends a turn's events before the invocation's completion, so that slice is the turn.
 */
export class ChatClient {
    constructor(connection) {
        this.connection = connection;
        this.events = [];
        this.waiters = [];
        for (const name of CHAT_EVENTS) {
            connection.on(name, (...args) => {
                this.record([name, ...args]);
            });
        }
    }

    /** opts: { combo, user, token, options } -> a started ChatClient, stopped after the test. */
    static async open(t, base, path = "/chatHub", opts = {}) {
        const combo = opts.combo ?? WS_JSON;
        const options = { ...opts.options };
        const bearer = opts.token ?? (opts.user ? token(opts.user) : undefined);
        if (bearer !== undefined) {
            options.accessTokenFactory = () => bearer;
        }
        const client = new ChatClient(build(base + path, combo, { options }));
        t.after(() => stopQuietly(client.connection));
        await withTimeout(client.connection.start(), 10_000, `start ${base}${path} [${label(combo)}]`);
        return client;
    }

    record(event) {
        this.events.push(event);
        for (const waiter of this.waiters.slice()) {
            if (waiter.check(this.events)) {
                this.waiters.splice(this.waiters.indexOf(waiter), 1);
                waiter.resolve(this.events);
            }
        }
    }

    /** Resolves once `check(events)` holds. */
    until(check, ms = 10_000, what = "events") {
        if (check(this.events)) {
            return Promise.resolve(this.events);
        }
        return withTimeout(
            new Promise((resolve) => {
                this.waiters.push({ check, resolve });
            }),
            ms,
            `${what} (got ${JSON.stringify(this.events.slice(-5))})`,
        );
    }

    /** Resolves once `count` events named `name` arrived since index `from`. */
    untilCount(name, count, from = 0, ms = 10_000) {
        return this.until((ev) => ev.slice(from).filter((e) => e[0] === name).length >= count, ms, `${count} x ${name}`);
    }

    invoke(method, ...args) {
        return this.invokeWithin(15_000, method, ...args);
    }

    /** invoke, waiting up to `ms` for the result (a real model's reply can take longer). */
    invokeWithin(ms, method, ...args) {
        return withTimeout(this.connection.invoke(method, ...args), ms, `invoke ${method}`);
    }

    /** SendMessage; resolves with the events of the turn. */
    async send(message, ms = 15_000) {
        const from = this.events.length;
        const result = await this.invokeWithin(ms, "SendMessage", message);
        assert.equal(result ?? null, null, "SendMessage returns nothing");
        return this.events.slice(from);
    }

    /** AskAi; resolves with { id, events }. */
    async ask(prompt) {
        const from = this.events.length;
        const id = await this.invoke("AskAi", prompt);
        return { id, events: this.events.slice(from) };
    }

    /** ClearHistory; resolves with the events it caused. */
    async clear() {
        const from = this.events.length;
        await this.invoke("ClearHistory");
        return this.events.slice(from);
    }

    history() {
        return this.invoke("GetHistory");
    }

    /** Asserts that no chat event arrives for `ms`. */
    async assertQuiet(ms = 150) {
        const count = this.events.length;
        await delay(ms);
        assert.deepEqual(this.events.slice(count), [], "no further events");
    }

    /** Subscribes to StreamMessage; resolves { items } on completion, rejects with the error (err.items set). */
    stream(message, ms = 15_000) {
        const items = [];
        let subscription;
        const done = new Promise((resolve, reject) => {
            subscription = this.connection.stream("StreamMessage", message).subscribe({
                next: (item) => {
                    items.push(item);
                },
                complete: () => {
                    resolve({ items });
                },
                error: (err) => {
                    err.items = items;
                    reject(err);
                },
            });
        });
        // a disposed subscription never settles: its timer must not keep the process alive
        return { items, subscription, done: unrefTimeout(done, ms, "StreamMessage completion") };
    }
}

/** Like withTimeout, but the timer does not keep Node running if `promise` never settles. */
export function unrefTimeout(promise, ms, what) {
    let handle;
    const timer = new Promise((_, reject) => {
        handle = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
        handle.unref();
    });
    return Promise.race([promise, timer]).finally(() => clearTimeout(handle));
}

/** Resolves once `items` holds at least `count` entries. */
export async function untilItems(items, count, ms = 5_000) {
    const deadline = Date.now() + ms;
    while (items.length < count) {
        if (Date.now() > deadline) {
            assert.fail(`timed out after ${ms} ms waiting for ${count} stream items (got ${items.length})`);
        }
        await delay(10);
    }
}

/** The user/assistant pair stored for one turn. */
export function turn(user, assistant) {
    return [
        { role: "user", content: user },
        { role: "assistant", content: assistant },
    ];
}

// -- the fake Azure OpenAI -------------------------------------------------

async function getJson(path) {
    const response = await fetch(SERVERS.fake + path);
    assert.equal(response.status, 200, `GET ${path}`);
    return response.json();
}

export function fakeRequests() {
    return getJson("/_fake/requests");
}

export function fakeTokenRequests() {
    return getJson("/_fake/token-requests");
}

/** The content of a fake record's last message (its user message), as text. */
export function lastContent(record) {
    const messages = record.body?.messages;
    if (!Array.isArray(messages) || messages.length === 0) {
        return "";
    }
    const content = messages.at(-1).content;
    return typeof content === "string" ? content : JSON.stringify(content);
}

/** The fake's records of requests whose last message contains `tag`, in arrival order. */
export async function recordsFor(tag) {
    return (await fakeRequests()).filter((r) => lastContent(r).includes(tag));
}

/** The single record for `tag`, once its outcome is final (not "streaming"). */
export async function settledRecord(tag, ms = 5_000) {
    let found;
    await eventually(
        async () => {
            const records = await recordsFor(tag);
            assert.ok(records.length <= 1, `one request for ${tag}, got ${records.length}`);
            found = records[0];
            return found !== undefined && found.outcome !== "streaming";
        },
        ms,
        `a settled fake record for ${tag}`,
    );
    return found;
}

/** Waits until every record for `tag` has a final outcome, then returns them all. */
export async function settledRecords(tag, count, ms = 5_000) {
    let found = [];
    await eventually(
        async () => {
            found = await recordsFor(tag);
            return found.length >= count && found.every((r) => r.outcome !== "streaming");
        },
        ms,
        `${count} settled fake record(s) for ${tag}`,
    );
    return found;
}

/** Polls until the record for `tag` is "aborted"; returns it and how long that took. */
export async function abortedRecord(tag, ms = 1_000) {
    const started = Date.now();
    let record;
    await eventually(
        async () => {
            [record] = await recordsFor(tag);
            return record?.outcome === "aborted";
        },
        ms,
        `the upstream request for ${tag} to be aborted (outcome ${record?.outcome}, tokens ${record?.tokens_sent})`,
    );
    return { record, elapsed: Date.now() - started };
}

/** ResumeReply from chunk `after` to the end of the reply: every item, its end last. */
export function resumeItems(client, conversation, after = 0) {
    return new Promise((resolve, reject) => {
        const items = [];
        client.connection.stream("ResumeReply", conversation, after).subscribe({
            next: (item) => items.push(item),
            complete: () => resolve(items),
            error: reject,
        });
    });
}

/** The text of a reply's items. */
export const textOf = (items) => items.filter((i) => "text" in i).map((i) => i.text).join("");

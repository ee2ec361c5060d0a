// The built-in offline model (CHAT_LOCAL_URL: SmolLM2-135M through llama-cpp-python,
// at most 48 output tokens, one generation at a time). Real tokens, so the tests check
// the shape of the exchange, never the words. CPU-bound: few and short.
import { test } from "node:test";
import { assert, ChatClient, LP_JSON, resumeItems, SERVERS, WS_JSON } from "./chat_harness.mjs";

const TIMEOUT = 45_000;
/** How long a reply may take: the other suites' files run beside this one and share the cores. */
const MODEL_WAIT = 40_000;

function tokensIn(events) {
    return events.filter((e) => e[0] === "ReceiveStreamToken").map((e) => e[1]);
}

/** thinking, StreamStart, the tokens, StreamEnd: nothing else. */
function assertWellFormedReply(events) {
    const tokens = tokensIn(events);
    assert.deepEqual(events, [
        ["ReceiveStatusUpdate", "thinking"],
        ["ReceiveStreamStart"],
        ...tokens.map((tok) => ["ReceiveStreamToken", tok]),
        ["ReceiveStreamEnd"],
    ]);
    for (const tok of tokens) {
        assert.equal(typeof tok, "string");
        assert.ok(tok.length > 0, "no empty tokens");
    }
    return tokens;
}

test("SendMessage streams the local model's tokens and stores the reply", { timeout: TIMEOUT }, async (t) => {
    const c = await ChatClient.open(t, SERVERS.local, "/chatHub", { combo: WS_JSON });
    const question = "What is the capital of France?";
    const tokens = assertWellFormedReply(await c.send(question, MODEL_WAIT));
    assert.ok(tokens.length >= 2, `${tokens.length} token(s)`);
    const text = tokens.join("");
    assert.ok(text.trim().length > 0, "a non-empty reply");
    const history = await c.history();
    // an answer that reaches the 48-token limit is stored marked cut (the model samples, so it may)
    const [, answer] = history;
    assert.ok(!("cut" in answer) || answer.cut === "length", JSON.stringify(answer));
    assert.deepEqual(history.map(({ role, content }) => ({ role, content })), [
        { role: "user", content: question },
        { role: "assistant", content: text },
    ]);
});

test("StreamMessage yields the local model's tokens and completes", { timeout: TIMEOUT }, async (t) => {
    const c = await ChatClient.open(t, SERVERS.local, "/chat", { combo: LP_JSON });
    const { items } = await c.stream("Name three colours.", MODEL_WAIT).done;
    assert.ok(items.length >= 2, `${items.length} item(s)`);
    assert.ok(items.join("").trim().length > 0, "a non-empty reply");
    assert.deepEqual(c.events, []);
});

test("StopGeneration stops the local model within a second and keeps the partial reply", { timeout: TIMEOUT }, async (t) => {
    const c = await ChatClient.open(t, SERVERS.local, "/chatHub", { combo: WS_JSON });
    const prompt = "Write a long story about a dragon who learns to bake bread.";
    const from = c.events.length;
    const sending = c.send(prompt, MODEL_WAIT);
    sending.catch(() => {});
    await c.untilCount("ReceiveStreamToken", 2, from, MODEL_WAIT);
    const stopAt = Date.now();
    await c.invoke("StopGeneration");
    const events = await sending;
    const endedAfter = Date.now() - stopAt;
    const tokens = assertWellFormedReply(events);
    assert.ok(endedAfter < 1_000, `StreamEnd ${endedAfter} ms after the stop`);
    assert.ok(tokens.length < 40, `${tokens.length} tokens: the stop cut the reply short of its 48-token limit`);
    assert.deepEqual(await c.history(), [
        { role: "user", content: prompt },
        { role: "assistant", content: tokens.join("") },
    ]);
});

test("two conversations at once share the one model instance: the second waits its turn", { timeout: TIMEOUT }, async (t) => {
    const a = await ChatClient.open(t, SERVERS.local, "/chatHub", { combo: WS_JSON });
    const b = await ChatClient.open(t, SERVERS.local, "/chatHub", { combo: LP_JSON });
    const [first, second] = await Promise.all([a.send("Say hi.", MODEL_WAIT), b.send("Say bye.", MODEL_WAIT)]);
    for (const events of [first, second]) {
        const tokens = assertWellFormedReply(events);
        assert.ok(tokens.length >= 1, `${tokens.length} token(s)`);
    }
    // the instance went back to the pool both times: a third reply still comes
    assert.ok(assertWellFormedReply(await a.send("Thanks.", MODEL_WAIT)).length >= 1);
});

test("a reply the built-in model stops at its 48-token limit ends marked cut, and is stored so", { timeout: TIMEOUT }, async (t) => {
    const c = await ChatClient.open(t, SERVERS.local, "/chatHub", { combo: WS_JSON });
    const prompt = "Write a long story about a dragon who learns to bake bread.";
    await c.invoke("StartReply", "default", prompt);
    const items = await resumeItems(c, "default");
    const end = items.at(-1);
    assert.equal(end.end, "completed");
    assert.equal(end.cut, "length", "llama.cpp's finish_reason length");
    const text = items.filter((i) => "text" in i).map((i) => i.text).join("");
    const { messages } = await c.invoke("GetConversation", "default");
    const [, answer] = messages;
    assert.match(answer.model ?? "", /^SmolLM2/, "labelled with the built-in model");
    assert.deepEqual(messages, [
        { role: "user", content: prompt },
        { role: "assistant", content: text, cut: "length", model: answer.model },
    ]);
});

// Seed 2 (the Angular app) on /chat over every transport and protocol: AskAi's
// message id and typing/partial/completed events, errors, and the history it shares
// with SendMessage.
import { test } from "node:test";
import {
    assert,
    ChatClient,
    echo,
    echoTokens,
    label,
    MATRIX,
    nonce,
    recordsFor,
    seed1Reply,
    seed2Reply,
    SERVERS,
    settledRecord,
    TEXT,
    turn,
    WS_JSON,
} from "./chat_harness.mjs";

const TIMEOUT = 20_000;

function matrix(name, fn) {
    for (const combo of MATRIX) {
        test(`${name} [${label(combo)}]`, { timeout: TIMEOUT }, (t) => fn(t, combo));
    }
}

function open(t, combo, path = "/chat") {
    return ChatClient.open(t, SERVERS.main, path, { combo });
}

function assertMessageId(id) {
    assert.equal(typeof id, "string", "AskAi returns the message id as a string");
    assert.ok(id.length > 0, "the message id is not empty");
}

matrix("AskAi returns a message id and streams typing, partial per delta, typing false, completed", async (t, combo) => {
    const c = await open(t, combo);
    const prompt = `ask ${nonce("s2")} please`;
    const { id, events } = await c.ask(prompt);
    assertMessageId(id);
    // the result comes after `completed`, so the slice taken at resolution is the whole reply
    assert.deepEqual(events, seed2Reply(id, echoTokens(prompt, 2)));

    const record = await settledRecord(prompt);
    assert.equal(record.outcome, "completed");
    assert.equal(record.body.messages.length, 2);
    assert.equal(record.body.messages[0].role, "system");
    assert.deepEqual(record.body.messages[1], { role: "user", content: prompt });
    await c.assertQuiet();
});

matrix("AskAi with an empty prompt: error and completed only", async (t, combo) => {
    const c = await open(t, combo);
    for (const blank of ["", "  \n "]) {
        const { id, events } = await c.ask(blank);
        assertMessageId(id);
        assert.deepEqual(events, [
            ["error", id, TEXT.empty],
            ["completed", id],
        ]);
    }
    assert.deepEqual(await c.history(), []);
    await c.assertQuiet();
});

matrix("AskAi upstream errors: typing false, error, completed, before or after partials", async (t, combo) => {
    const c = await open(t, combo);
    const denied = `[[403]] ${nonce("s2")}`;
    const first = await c.ask(denied);
    assert.deepEqual(first.events, [
        ["typing", first.id, true],
        ["typing", first.id, false],
        ["error", first.id, TEXT.auth],
        ["completed", first.id],
    ]);

    const dropped = `[[drop]] ${nonce("s2")}`;
    const second = await c.ask(dropped);
    assert.deepEqual(second.events, [
        ["typing", second.id, true],
        ["partial", second.id, "t0"],
        ["partial", second.id, " t1"],
        ["typing", second.id, false],
        ["error", second.id, TEXT.failed],
        ["completed", second.id],
    ]);
    assert.notEqual(first.id, second.id);
    // the 403 stored nothing; the dropped reply is kept as far as it got
    assert.deepEqual(await c.history(), turn(dropped, "t0 t1"));

    const prompt = `after errors ${nonce("s2")}`;
    const ok = await c.ask(prompt);
    assert.deepEqual(ok.events, seed2Reply(ok.id, echoTokens(prompt, 4)));
});

matrix("SendMessage and AskAi share one conversation", async (t, combo) => {
    const c = await open(t, combo);
    const sent = `sent ${nonce("s2")}`;
    assert.deepEqual(await c.send(sent), seed1Reply(echoTokens(sent, 2)));

    const asked = `asked ${nonce("s2")}`;
    const { id, events } = await c.ask(asked);
    assert.deepEqual(events, seed2Reply(id, echoTokens(asked, 4)));
    const [record] = await recordsFor(asked);
    assert.equal(record.body.messages.length, 4);
    assert.deepEqual(record.body.messages.slice(1), [...turn(sent, echo(sent, 2)), { role: "user", content: asked }]);

    const again = `again ${nonce("s2")}`;
    assert.deepEqual(await c.send(again), seed1Reply(echoTokens(again, 6)));
    assert.deepEqual(await c.history(), [
        ...turn(sent, echo(sent, 2)),
        ...turn(asked, echo(asked, 4)),
        ...turn(again, echo(again, 6)),
    ]);
});

test("every AskAi gets a message id of its own", { timeout: TIMEOUT }, async (t) => {
    const c = await open(t, WS_JSON);
    const ids = new Set();
    for (let i = 0; i < 3; i += 1) {
        const { id, events } = await c.ask(`[[tokens:2]] ${nonce("s2")}`);
        assert.deepEqual(events, seed2Reply(id, ["t0", " t1"]));
        ids.add(id);
    }
    assert.equal(ids.size, 3);
});

test("both paths serve both contracts: SendMessage on /chat, AskAi on /chatHub", { timeout: TIMEOUT }, async (t) => {
    const onChat = await open(t, WS_JSON, "/chat");
    const sent = `on chat ${nonce("s2")}`;
    assert.deepEqual(await onChat.send(sent), seed1Reply(echoTokens(sent, 2)));

    const onHub = await open(t, WS_JSON, "/chatHub");
    const asked = `on hub ${nonce("s2")}`;
    const { id, events } = await onHub.ask(asked);
    // anonymous: each connection has its own conversation, whatever the path
    assert.deepEqual(events, seed2Reply(id, echoTokens(asked, 2)));
});

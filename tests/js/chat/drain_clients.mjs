// Stock clients through a graceful drain, driven by tests/processes/test_drain.py over stdin/stdout.
// DRAIN_TOKENS (a JSON list of bearer tokens) users each stream a reply to DRAIN_MARKER; DRAIN_IDLE
// more connections sit idle; every transport/protocol pair takes its turn.
//   stdout "streaming"  every reply has tokens: the test may send SIGTERM now
//   stdin  "draining"   /readyz said 503: no client may have been closed yet; a new one is refused
//   stdout {...}        what every client saw, once each one was told to reconnect
import readline from "node:readline";
import { build, MATRIX, stopQuietly, withTimeout } from "../harness.mjs";

const base = process.env.SIGNALR_BASE_URL.replace(/\/+$/, "");
const tokens = JSON.parse(process.env.DRAIN_TOKENS);
const idle = Number(process.env.DRAIN_IDLE ?? "0");
const marker = process.env.DRAIN_MARKER ?? "[[slow]]";
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

function until(check, ms, what) {
    return withTimeout(
        new Promise((resolve) => {
            const poll = () => (check() ? resolve() : setTimeout(poll, 20));
            poll();
        }),
        ms,
        what,
    );
}

/** A connection whose log lines and reconnect are recorded; reconnecting is what Close(allowReconnect) starts. */
function watched(index, token) {
    const combo = MATRIX[index % MATRIX.length];
    const client = { combo, logs: [], reconnecting: undefined, closed: undefined, tokens: [], ended: false };
    const logger = { log: (_level, message) => client.logs.push(message) };
    const options = token ? { accessTokenFactory: () => token } : {};
    // a long first delay: what counts is that a reconnect starts, not that it succeeds
    client.connection = build(base + "/chatHub", combo, {
        options,
        reconnect: [60_000],
        configure: (builder) => builder.configureLogging(logger),
    });
    client.connection.onreconnecting((error) => {
        client.reconnecting = { error: error ? String(error) : null };
    });
    client.connection.onclose((error) => {
        client.closed = { error: error ? String(error) : null };
    });
    client.connection.on("ReceiveStreamToken", (text) => client.tokens.push(text));
    client.connection.on("ReceiveStreamEnd", () => {
        client.ended = true;
    });
    return client;
}

const chatting = tokens.map((token, i) => watched(i, token));
const waiting = Array.from({ length: idle }, (_, i) => watched(i, undefined));
const everyone = [...chatting, ...waiting];
await Promise.all(everyone.map((c) => withTimeout(c.connection.start(), 30_000, `start [${c.combo.transport}]`)));

const replies = chatting.map((c, i) =>
    c.connection.invoke("SendMessage", `${marker} drain-${i}`).then(
        () => null,
        (error) => String(error),
    ),
);
await until(() => chatting.every((c) => c.tokens.length >= 3), 60_000, "3 tokens on every reply");
console.log("streaming");

await lines.next(); // "draining"
const closedEarly = everyone.filter((c) => c.reconnecting || c.closed || c.logs.includes("Close message received from server.")).length;
let refused = null;
const late = build(base + "/chatHub", MATRIX[0]);
try {
    await late.start();
    await late.stop();
} catch (error) {
    refused = String(error);
}

await until(() => everyone.every((c) => c.reconnecting || c.closed), 60_000, "every client told to reconnect");
const outcomes = await Promise.all(replies);
const report = JSON.stringify({
    closedEarly,
    refused,
    clients: everyone.map((c, i) => ({
        transport: `${c.combo.transport}/${c.combo.protocol}`,
        closeMessage: c.logs.includes("Close message received from server."),
        reconnecting: c.reconnecting ?? null,
        closed: c.closed ?? null,
        reply: i < chatting.length ? { tokens: c.tokens, ended: c.ended, error: outcomes[i] } : null,
    })),
});
// a pipe takes the line in 64 KiB pieces: wait for all of it before exiting
await new Promise((resolve) => process.stdout.write(report + "\n", resolve));
await Promise.all(everyone.map((c) => stopQuietly(c.connection)));
process.exit(0);

// The chat behind Azure SignalR Service, two instances: SIGTERM on one runs its drain, whose
// handover (the service's shutdown handshake) moves its clients to the other. The page's
// client never notices: no reconnect, the same connection, and the next message is answered.
import { test } from "node:test";
import { assert, ChatClient, echoTokens, seed1Reply, withTimeout } from "../chat/chat_harness.mjs";

const [first, second] = (process.env.CHAT_INSTANCES ?? "").split(",");
const pid = Number(process.env.CHAT_FIRST_PID);
const double = process.env.AZURE_DOUBLE_URL;

async function owner(connectionId) {
    const state = await (await fetch(`${double}/_double/state`)).json();
    return state.clients[connectionId];
}

test("SIGTERM hands a chat's clients over to another instance, unnoticed", { timeout: 60_000 }, async (t) => {
    assert.ok(first && second && pid && double, "CHAT_INSTANCES, CHAT_FIRST_PID and AZURE_DOUBLE_URL are set");
    const client = await ChatClient.open(t, first, "/chatHub");
    const events = [];
    client.connection.onreconnecting(() => events.push("reconnecting"));
    client.connection.onclose(() => events.push("closed"));
    const before = await owner(client.connection.connectionId);
    assert.deepEqual(await client.send("hello before"), seed1Reply(echoTokens("hello before", 2)));

    process.kill(pid, "SIGTERM");
    const moved = await withTimeout(
        (async () => {
            for (;;) {
                const now = await owner(client.connection.connectionId);
                if (now && now.server !== before.server && now.migrated_from.includes(before.server)) {
                    return now;
                }
                await new Promise((resolve) => setTimeout(resolve, 50));
            }
        })(),
        30_000,
        "the move to the other instance",
    );
    assert.notEqual(moved.server, before.server);
    // an anonymous connection's conversation lived in the first instance's memory: a fresh one here
    assert.deepEqual(await client.send("hello after"), seed1Reply(echoTokens("hello after", 2)));
    assert.deepEqual(events, [], "no reconnect, no close");
});

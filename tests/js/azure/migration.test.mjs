// Behind Azure SignalR Service, an app server that stops (SIGTERM) runs the service's shutdown
// handshake: its clients move to another app server and never notice; and a server connection
// that is cut takes its clients with it, who reconnect through the app's negotiate.
import assert from "node:assert/strict";
import { test } from "node:test";
import { connect, deferred, withTimeout } from "../harness.mjs";
import { HUB, INSTANCES } from "../scale_out/instances.mjs";
import { control, clientState, PIDS, until } from "./service.mjs";

const combos = [
    { transport: "WebSockets", protocol: "json" },
    { transport: "WebSockets", protocol: "messagepack" },
];

function watch(connection) {
    const events = [];
    connection.onreconnecting(() => events.push("reconnecting"));
    connection.onreconnected(() => events.push("reconnected"));
    connection.onclose(() => events.push("closed"));
    return events;
}

test("a server connection cut mid-chat: its clients reconnect through negotiate and go on", { timeout: 30_000 }, async (t) => {
    const c = await connect(t, INSTANCES[1] + HUB, combos[0], { reconnect: [200, 500, 1000, 1000, 2000, 2000, 2000] });
    const events = watch(c);
    const [before, instance] = await c.invoke("whoami");
    const owner = (await clientState(before)).server;
    const reconnected = deferred();
    c.onreconnected((id) => reconnected.resolve(id));
    const dropped = await control(`drop-server-connections?server=${encodeURIComponent(owner)}`);
    assert.ok(dropped.dropped >= 1, "the double cut the app server's connections");
    const after = await withTimeout(reconnected.promise, 20_000, "onreconnected");
    assert.notEqual(after, before, "a new connection");
    assert.deepEqual(await c.invoke("whoami"), [after, instance], "the same app server serves it again");
    assert.equal(await c.invoke("echo", "still chatting"), "still chatting");
    assert.deepEqual(events, ["reconnecting", "reconnected"]);
    // the app server dialled the service again: all its connections are back
    await until((s) => s.hubs.scaled.servers[owner]?.connections === 2, "the app server's two connections");
});

for (const combo of combos) {
    test(`SIGTERM moves the clients to another app server, unnoticed [${combo.protocol}]`, { timeout: 40_000 }, async (t) => {
        // instance 0 stops in the first test, instance 2 in the second: each its own victim
        const index = combo.protocol === "json" ? 0 : 2;
        const c = await connect(t, INSTANCES[index] + HUB, combo);
        const events = watch(c);
        const [id, before] = await c.invoke("whoami");
        const group = `moved-${combo.protocol}`;
        await c.invoke("add_to_group", id, group);
        const routed = [];
        c.on("Routed", (kind, message) => routed.push([kind, message]));
        const owner = (await clientState(id)).server;
        process.kill(PIDS[index], "SIGTERM");
        const moved = await until(
            (s) => s.clients[id]?.migrated_from?.includes(owner) && s.clients[id]?.server !== owner && s.clients[id],
            "the client's move to another app server",
        );
        assert.notEqual(moved.server, owner);
        // the same connection, served elsewhere now; the handshake answer of the new server was dropped
        const [sameId, after] = await c.invoke("whoami");
        assert.equal(sameId, id, "the connection id survives the move");
        assert.notEqual(after, before, "another app server answers");
        await c.invoke("route", "group", group, "after the move");
        await withTimeout(
            (async () => { while (!routed.length) await new Promise((r) => setTimeout(r, 20)); })(),
            5_000,
            "the group send",
        );
        assert.deepEqual(routed, [["group", "after the move"]], "group membership lives in the service");
        assert.deepEqual(events, [], "no reconnect, no close: the client never noticed");
    });
}

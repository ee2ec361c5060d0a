// The stock client on two instances of one hub sharing a real Redis: every routing, group
// changes and client results for a connection served by the other instance.
import assert from "node:assert/strict";
import { matrixTest, rejectsWith, STATEFUL_DIRECT_ONLY, uniqueKey, WEBSOCKETS } from "../harness.mjs";
import { assertSame, member, routed, tags } from "./instances.mjs";

const ERROR = (method, text) => `An unexpected error occurred invoking '${method}' on the server. HubException: ${text}`;

async function four(t, combo) {
    const [ann, bob, carol] = [uniqueKey("ann"), uniqueKey("bob"), uniqueKey("carol")];
    const a1 = { name: "a1", ...(await member(t, 0, combo, { user: ann })) };
    const a2 = { name: "a2", ...(await member(t, 0, combo, { user: bob })) };
    const b1 = { name: "b1", ...(await member(t, 1, combo, { user: ann })) };
    const b2 = { name: "b2", ...(await member(t, 1, combo, { user: carol })) };
    assert.notEqual(a1.instance, b1.instance, "the connections are spread over two instances");
    return { a1, a2, b1, b2, users: { ann, bob, carol } };
}

matrixTest("every routing reaches the right connections on both instances", async (t, combo) => {
    const { a1, a2, b1, b2, users } = await four(t, combo);
    const all = [a1, a2, b1, b2];
    const [g, h] = [uniqueKey("g"), uniqueKey("h")];
    await a1.connection.invoke("add_to_group", a1.id, g);
    await b1.connection.invoke("add_to_group", b1.id, g);
    await b2.connection.invoke("add_to_group", b2.id, h);

    assertSame(await routed(all, a1, "all", null, "t-all"), all, "all");
    assertSame(await routed(all, b1, "all_except", [a2.id, b2.id], "t-allx"), [a1, b1], "all_except");
    assertSame(await routed(all, a1, "others", null, "t-others"), [a2, b1, b2], "others");
    assertSame(await routed(all, a1, "connection", b2.id, "t-conn"), [b2], "connection");
    assertSame(await routed(all, b2, "connections", [a2.id, b1.id], "t-conns"), [a2, b1], "connections");
    assertSame(await routed(all, a2, "group", g, "t-group"), [a1, b1], "group");
    assertSame(await routed(all, a2, "groups", [g, h], "t-groups"), [a1, b1, b2], "groups");
    assertSame(await routed(all, a2, "group_except", [g, [b1.id]], "t-groupx"), [a1], "group_except");
    assertSame(await routed(all, a1, "others_in_group", g, "t-othersg"), [b1], "others_in_group");
    assertSame(await routed(all, b2, "user", users.ann, "t-user"), [a1, b1], "user");
    assertSame(await routed(all, a2, "users", [users.ann, users.carol], "t-users"), [a1, b1, b2], "users");
});

matrixTest("group membership of a connection on the other instance", async (t, combo) => {
    const { a1, a2, b1, b2 } = await four(t, combo);
    const all = [a1, a2, b1, b2];
    const room = uniqueKey("room");
    await a1.connection.invoke("add_to_group", b1.id, room); // b1 lives on the other instance
    assertSame(await routed(all, a2, "group", room, "t-in"), [b1], "added from A");
    await a2.connection.invoke("remove_from_group", b1.id, room);
    assertSame(await routed(all, a2, "group", room, "t-out"), [], "removed from A");
    await rejectsWith(
        a1.connection.invoke("add_to_group", "no-such-connection", room),
        ERROR("add_to_group", "Connection 'no-such-connection' does not exist."),
    );
});

matrixTest("a connection's groups go when it leaves", async (t, combo) => {
    const { a1, a2, b1, b2 } = await four(t, combo);
    const room = uniqueKey("room");
    await a1.connection.invoke("add_to_group", b1.id, room);
    await b1.connection.stop();
    assertSame(await routed([a1, a2, b2], a2, "group", room, "t-gone"), [], "nobody left in the group");
    assert.deepEqual(tags(b1), []);
});

matrixTest("client results from a connection on the other instance", async (t, combo) => {
    const { a1, b1 } = await four(t, combo);
    b1.connection.on("double", (n) => n * 2);
    b1.connection.on("explode", () => {
        throw new Error("nope");
    });
    assert.equal(await a1.connection.invoke("ask", b1.id, "double", 21), 42);
    await rejectsWith(a1.connection.invoke("ask", b1.id, "explode", 0), ERROR("ask", "Error: nope"));
    await rejectsWith(
        a1.connection.invoke("ask", "no-such-connection", "double", 1),
        ERROR("ask", "Connection 'no-such-connection' does not exist."),
    );
    assert.equal(await a1.connection.invoke("ask", b1.id, "double", 5), 10, "still usable");
});

matrixTest("one send reaches json and messagepack clients on both instances", async (t, combo) => {
    const other = { ...combo, protocol: combo.protocol === "json" ? "messagepack" : "json" };
    const a1 = { name: "a1", ...(await member(t, 0, combo)) };
    const b1 = { name: "b1", ...(await member(t, 1, other)) };
    const a2 = { name: "a2", ...(await member(t, 0, other)) };
    const b2 = { name: "b2", ...(await member(t, 1, combo)) };
    const all = [a1, a2, b1, b2];
    assertSame(await routed(all, a1, "all", null, "t-mixed"), all, "all, both protocols");
}, { combos: WEBSOCKETS });

matrixTest("stateful reconnect replays what came through the backplane", async (t, combo) => {
    const x = await member(t, 0, combo, { stateful: true });
    const y = await member(t, 1, combo);
    let reconnected = false;
    x.connection.onreconnecting(() => {
        reconnected = true;
    });
    await x.connection.invoke("drop_transport");
    for (let i = 0; i < 20; i++) {
        await y.connection.invoke("route", "connection", x.id, `s${i}`);
    }
    await x.routed.until(20);
    assert.equal(await x.connection.invoke("echo", "barrier"), "barrier");
    assert.deepEqual(tags(x), Array.from({ length: 20 }, (_, i) => `s${i}`), "in order, none lost, none twice");
    assert.equal(reconnected, false, "resumed without the reconnecting state");
    assert.equal((await x.connection.invoke("whoami"))[0], x.id, "the same connection");
}, { combos: WEBSOCKETS, skip: STATEFUL_DIRECT_ONLY });

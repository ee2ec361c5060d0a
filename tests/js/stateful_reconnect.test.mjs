// Stateful reconnect over WebSockets: a dropped socket is resumed without losing or
// repeating messages in either direction, and the connection never leaves Connected.
import assert from "node:assert/strict";
import { WEBSOCKETS, connect, delay, eventually, matrixTest, recorder, signalR, withTimeout } from "./harness.mjs";

/** A stateful connection that records state changes it must never see. */
async function statefulConnection(t, combo, extra = {}) {
    const c = await connect(t, "/testhub", combo, { stateful: true, ...extra });
    const seen = { reconnecting: 0, reconnected: 0, closed: 0, states: new Set() };
    c.onreconnecting(() => seen.reconnecting++);
    c.onreconnected(() => seen.reconnected++);
    c.onclose(() => seen.closed++);
    const watcher = setInterval(() => seen.states.add(c.state), 5);
    t.after(() => clearInterval(watcher));
    return { c, seen };
}

function assertNeverLeftConnected(c, seen) {
    assert.equal(seen.reconnecting, 0, "onreconnecting never fired");
    assert.equal(seen.reconnected, 0, "onreconnected never fired");
    assert.equal(seen.closed, 0, "onclose never fired");
    assert.deepEqual([...seen.states], [signalR.HubConnectionState.Connected]);
    assert.equal(c.state, signalR.HubConnectionState.Connected);
}

matrixTest("messages sent while the socket is down arrive once, in order", async (t, combo) => {
    const { c, seen } = await statefulConnection(t, combo);
    const id = await c.invoke("get_connection_id");
    const sequenced = recorder(c, "Sequenced");
    // the method's own completion is sent while the socket is down, too
    const done = await withTimeout(c.invoke("drop_and_send", 20), 10_000, "drop_and_send completion");
    assert.equal(done, undefined);
    await sequenced.until(20);
    // a round trip: anything sent before its Completion (a duplicate replay too) has arrived
    assert.equal(await c.invoke("echo", "barrier"), "barrier");
    assert.deepEqual(
        sequenced.calls.map((args) => args[0]),
        Array.from({ length: 20 }, (_, i) => i),
    );
    assertNeverLeftConnected(c, seen);
    assert.equal(await c.invoke("get_connection_id"), id, "the same connection resumed");
    assert.equal(await c.invoke("echo", "after"), "after");
}, { combos: WEBSOCKETS });

matrixTest("client sends made right after the drop arrive once, in order", async (t, combo) => {
    const { c, seen } = await statefulConnection(t, combo);
    const recorded = recorder(c, "Recorded");
    const dropped = c.invoke("drop_transport");
    const sends = [];
    for (let i = 0; i < 5; i++) {
        sends.push(c.send("record", i));
    }
    await delay(50);
    for (let i = 5; i < 10; i++) {
        sends.push(c.send("record", i));
    }
    await withTimeout(Promise.all(sends), 10_000, "sends");
    assert.equal(await withTimeout(dropped, 10_000, "drop_transport completion"), undefined);
    await recorded.until(10);
    // a round trip: anything sent before its Completion (a duplicate replay too) has arrived
    assert.equal(await c.invoke("echo", "barrier"), "barrier");
    assert.deepEqual(
        recorded.calls.map((args) => args[0]),
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    assertNeverLeftConnected(c, seen);
}, { combos: WEBSOCKETS });

matrixTest("invocations in flight across a drop complete", async (t, combo) => {
    const { c, seen } = await statefulConnection(t, combo);
    const slow = c.invoke("slow", "across", 0.3);
    await delay(20);
    const dropped = c.invoke("drop_transport");
    const echoes = [c.invoke("echo", 1), c.invoke("add", 2, 3)];
    assert.equal(await withTimeout(slow, 10_000, "slow"), "across");
    await withTimeout(dropped, 10_000, "drop_transport");
    assert.deepEqual(await withTimeout(Promise.all(echoes), 10_000, "echoes"), [1, 5]);
    assertNeverLeftConnected(c, seen);
}, { combos: WEBSOCKETS });

matrixTest("a stream continues across a drop", async (t, combo) => {
    const { c, seen } = await statefulConnection(t, combo);
    const items = [];
    const finished = new Promise((resolve, reject) => {
        c.stream("counter", 10, 0.03).subscribe({ next: (i) => items.push(i), complete: resolve, error: reject });
    });
    await eventually(() => items.length > 0, 5_000, "the stream to start");
    c.invoke("drop_transport").catch(() => {});
    await withTimeout(finished, 10_000, "stream completion");
    assert.deepEqual(items, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assertNeverLeftConnected(c, seen);
}, { combos: WEBSOCKETS });

matrixTest("several drops in a row", async (t, combo) => {
    const { c, seen } = await statefulConnection(t, combo);
    const sequenced = recorder(c, "Sequenced");
    for (let round = 0; round < 3; round++) {
        await withTimeout(c.invoke("drop_and_send", 5), 10_000, `round ${round}`);
    }
    await sequenced.until(15);
    // a round trip: anything sent before its Completion (a duplicate replay too) has arrived
    assert.equal(await c.invoke("echo", "barrier"), "barrier");
    assert.deepEqual(
        sequenced.calls.map((args) => args[0]),
        [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4],
    );
    assertNeverLeftConnected(c, seen);
}, { combos: WEBSOCKETS });

matrixTest("stateful reconnect is only used when the client asks", async (t, combo) => {
    // without withStatefulReconnect() a drop ends the connection (no automatic reconnect here)
    const c = await connect(t, "/testhub", combo);
    const closed = new Promise((resolve) => c.onclose(resolve));
    c.invoke("drop_transport").catch(() => {});
    await withTimeout(closed, 5_000, "onclose");
    assert.equal(c.state, signalR.HubConnectionState.Disconnected);
}, { combos: WEBSOCKETS });

matrixTest("stateful reconnect negotiated on other transports is harmless", async (t, combo) => {
    const c = await connect(t, "/testhub", combo, { stateful: true });
    assert.equal(await c.invoke("echo", "fine"), "fine");
    const s = recorder(c, "Recorded");
    await c.send("record", 1);
    await s.until(1);
}, { combos: [{ transport: "ServerSentEvents", protocol: "json" }, { transport: "LongPolling", protocol: "json" }, { transport: "LongPolling", protocol: "messagepack" }] });

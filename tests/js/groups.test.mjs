// Groups, users, others and direct addressing with authenticated connections.
import assert from "node:assert/strict";
import { connect, matrixTest, recorder, uniqueKey } from "./harness.mjs";

function as(user) {
    return { options: { accessTokenFactory: () => `token-${user}` } };
}

/** Waits until every message already queued for `c` has arrived (one connection is ordered). */
async function drain(c) {
    assert.equal(await c.invoke("echo", "sync"), "sync");
}

/** alice, bob, and a second connection of bob, each with a recorder for `method`. */
async function trio(t, combo, method) {
    const alice = await connect(t, "/testhub", combo, as("alice"));
    const bob = await connect(t, "/testhub", combo, as("bob"));
    const bob2 = await connect(t, "/testhub", combo, as("bob"));
    return {
        alice,
        bob,
        bob2,
        got: { alice: recorder(alice, method), bob: recorder(bob, method), bob2: recorder(bob2, method) },
    };
}

matrixTest("send_to_group reaches members only", async (t, combo) => {
    const { alice, bob, bob2, got } = await trio(t, combo, "Group");
    const group = uniqueKey("g");
    await alice.invoke("join_group", group);
    await bob.invoke("join_group", group);
    await alice.invoke("send_to_group", group, { text: "hello group" });
    await got.alice.until(1);
    await got.bob.until(1);
    assert.deepEqual(got.alice.calls, [[group, { text: "hello group" }]]);
    assert.deepEqual(got.bob.calls, [[group, { text: "hello group" }]]);
    await drain(bob2);
    assert.deepEqual(got.bob2.calls, [], "a connection not in the group gets nothing");
});

matrixTest("a non-member may send to a group", async (t, combo) => {
    const { alice, bob, got } = await trio(t, combo, "Group");
    const group = uniqueKey("g");
    await bob.invoke("join_group", group);
    await alice.invoke("send_to_group", group, "from outside");
    assert.deepEqual((await got.bob.until(1))[0], [group, "from outside"]);
    await drain(alice);
    assert.deepEqual(got.alice.calls, []);
});

matrixTest("leave_group stops delivery", async (t, combo) => {
    const { alice, bob, got } = await trio(t, combo, "Group");
    const group = uniqueKey("g");
    await alice.invoke("join_group", group);
    await bob.invoke("join_group", group);
    await bob.invoke("leave_group", group);
    await alice.invoke("send_to_group", group, "after leave");
    await got.alice.until(1);
    await drain(bob);
    assert.deepEqual(got.bob.calls, []);
});

matrixTest("joining twice delivers once; leaving a group never joined is harmless", async (t, combo) => {
    const { alice, got } = await trio(t, combo, "Group");
    const group = uniqueKey("g");
    await alice.invoke("join_group", group);
    await alice.invoke("join_group", group);
    await alice.invoke("leave_group", uniqueKey("never-joined"));
    await alice.invoke("send_to_group", group, "once");
    await got.alice.until(1);
    await drain(alice);
    assert.deepEqual(got.alice.calls, [[group, "once"]]);
});

matrixTest("others_in_group excludes the caller", async (t, combo) => {
    const { alice, bob, bob2, got } = await trio(t, combo, "Group");
    const group = uniqueKey("g");
    for (const c of [alice, bob, bob2]) {
        await c.invoke("join_group", group);
    }
    await alice.invoke("send_to_others_in_group", group, "not for alice");
    await got.bob.until(1);
    await got.bob2.until(1);
    await drain(alice);
    assert.deepEqual(got.alice.calls, []);
    assert.deepEqual(got.bob.calls, [[group, "not for alice"]]);
    assert.deepEqual(got.bob2.calls, [[group, "not for alice"]]);
});

matrixTest("send_to_others reaches everyone but the caller", async (t, combo) => {
    const { alice, bob, bob2, got } = await trio(t, combo, "Others");
    const message = uniqueKey("others");
    await alice.invoke("send_to_others", message);
    await got.bob.until(1);
    await got.bob2.until(1);
    await drain(alice);
    assert.deepEqual(got.alice.calls, []);
    assert.deepEqual(got.bob.calls, [[message]]);
    assert.deepEqual(got.bob2.calls, [[message]]);
});

matrixTest("send_to_user reaches every connection of that user", async (t, combo) => {
    const { alice, bob, bob2, got } = await trio(t, combo, "User");
    await alice.invoke("send_to_user", "bob", "for bob");
    await got.bob.until(1);
    await got.bob2.until(1);
    assert.deepEqual(got.bob.calls, [["for bob"]]);
    assert.deepEqual(got.bob2.calls, [["for bob"]]);
    await drain(alice);
    assert.deepEqual(got.alice.calls, []);
    await bob.invoke("send_to_user", "alice", "for alice");
    assert.deepEqual((await got.alice.until(1))[0], ["for alice"]);
    await alice.invoke("send_to_user", "nobody", "lost");
    await drain(bob);
    assert.equal(got.bob.calls.length, 1);
});

matrixTest("send_to_connection reaches only that connection", async (t, combo) => {
    const { alice, bob, bob2, got } = await trio(t, combo, "Direct");
    const id = await bob2.invoke("get_connection_id");
    await alice.invoke("send_to_connection", id, "just you");
    assert.deepEqual((await got.bob2.until(1))[0], ["just you"]);
    await drain(bob);
    assert.deepEqual(got.bob.calls, []);
});

matrixTest("group membership belongs to the connection, not the client object", async (t, combo) => {
    const { alice, bob, got } = await trio(t, combo, "Group");
    const group = uniqueKey("g");
    await alice.invoke("join_group", group);
    await bob.invoke("join_group", group);
    // a restarted HubConnection is a new connection, outside the group
    await bob.stop();
    await bob.start();
    await alice.invoke("send_to_group", group, "bob restarted");
    await got.alice.until(1);
    await drain(bob);
    assert.deepEqual(got.bob.calls, []);
});

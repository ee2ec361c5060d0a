// Redis killed, restarted empty, and hung (SIGSTOP) under two instances and the stock client.
// Every message is accounted for: delivered to everyone it was for, or its sender was told it
// failed; none arrives after its sender was told it failed; the relay to a local connection
// never stops. REDIS_CONTROL is the test's control of redis-server (POST /kill, /start, /pause, /resume).
import assert from "node:assert/strict";
import { test } from "node:test";
import { eventually, WEBSOCKETS, MATRIX, withTimeout } from "../harness.mjs";
import { member, tags } from "../scale_out/instances.mjs";

const CONTROL = process.env.REDIS_CONTROL;

async function redis(action) {
    const response = await fetch(`${CONTROL}/${action}`, { method: "POST" });
    assert.equal(response.status, 200, `redis ${action}`);
}

async function backplane(m, up) {
    await eventually(async () => (await m.connection.invoke("backplane_connected")) === up, 15_000, `backplane ${up ? "up" : "down"}`);
}

const FAILED = "An unexpected error occurred invoking 'route' on the server.";

/** Sends `tag` via `kind`; true if the server took it, false if the sender was told it failed. */
async function send(m, kind, target, tag) {
    try {
        await withTimeout(m.connection.invoke("route", kind, target, tag), 10_000, `route ${tag}`);
        return true;
    } catch (err) {
        assert.equal(err.message, FAILED);
        return false;
    }
}

for (const combo of [WEBSOCKETS[0], MATRIX.find((c) => c.transport === "LongPolling")]) {
    test(`kill, restart and hang Redis under two instances [${combo.transport}/${combo.protocol}]`, { timeout: 90_000 }, async (t) => {
        const a = await member(t, 0, combo);
        const local = await member(t, 0, combo); // served by A, like the sender
        const b = await member(t, 1, combo);
        const room = `room-${combo.transport}`;
        await a.connection.invoke("add_to_group", b.id, room);
        const taken = [];
        const refused = [];
        async function fanOut(tag) {
            (await send(a, "all", null, tag) ? taken : refused).push(tag);
            (await send(a, "group", room, `${tag}-g`) ? taken : refused).push(`${tag}-g`);
            (await send(a, "connection", b.id, `${tag}-b`) ? taken : refused).push(`${tag}-b`);
        }

        for (let i = 0; i < 5; i++) await fanOut(`before${i}`);

        await redis("kill");
        await backplane(a, false);
        await backplane(b, false);
        for (let i = 0; i < 5; i++) await fanOut(`down${i}`);
        // the token relay: a connection on the same instance never needs Redis
        for (let i = 0; i < 5; i++) assert.ok(await send(a, "connection", local.id, `relay${i}`));

        await redis("start"); // empty: every channel must be subscribed again
        await backplane(a, true);
        await backplane(b, true);
        for (let i = 0; i < 5; i++) await fanOut(`after${i}`);

        await redis("pause"); // answers nothing, connections stay open
        for (let i = 0; i < 2; i++) await fanOut(`hung${i}`);
        await redis("resume");
        await backplane(a, true);
        await backplane(b, true);
        for (let i = 0; i < 5; i++) await fanOut(`resumed${i}`);

        // everything taken has arrived: a last marker to b, then b's view is final
        assert.ok(await send(a, "connection", b.id, "end"));
        await eventually(() => tags(b).includes("end"), 10_000, "the end marker");
        await eventually(() => tags(local).includes("relay4") && tags(a).includes("resumed4"), 10_000, "a's and local's");

        const forB = taken.filter((tag) => tag !== "end");
        const gotB = tags(b).filter((tag) => tag !== "end");
        const lost = forB.filter((tag) => !gotB.includes(tag));
        const ghosts = gotB.filter((tag) => refused.includes(tag));
        const figures = { taken: taken.length, refused: refused.length, lost: lost.length, ghosts: ghosts.length };
        t.diagnostic(JSON.stringify(figures));
        assert.deepEqual(lost, [], "every send the server took reached b");
        assert.deepEqual(ghosts, [], "nothing the sender was told failed arrived");
        assert.deepEqual(new Set(gotB).size, gotB.length, "nothing twice");
        // before/after/resumed: 15 sends each way; down: all 15 refused; hung: refused, not hanging
        for (const phase of ["before", "after", "resumed"]) {
            assert.equal(taken.filter((tag) => tag.startsWith(phase)).length, 15, phase);
        }
        assert.equal(refused.filter((tag) => tag.startsWith("down")).length, 15, "down: every fan-out refused");
        assert.equal(refused.filter((tag) => tag.startsWith("hung")).length + taken.filter((tag) => tag.startsWith("hung")).length, 6);
        assert.deepEqual(tags(local), ["before0", "before1", "before2", "before3", "before4", "relay0", "relay1", "relay2", "relay3", "relay4", ...taken.filter((tag) => /^(after|hung|resumed)\d+$/.test(tag))]);
    });
}

// Issue 22 through the stock client: visitors from one address (every client here is
// 127.0.0.1) cannot mint their way past the limits. The capped server allows 3 messages per
// visitor, 9 per address across visitors, and 5 new guests per address.
import { test } from "node:test";
import { assert, ChatClient, nonce, SERVERS } from "./chat_harness.mjs";

const RATE_LIMITED = /^You are sending messages too quickly\. Please wait \d+ seconds?\.$/;

test("a fresh guest per message: refused after the address's limit, with the usual text", { timeout: 60_000 }, async (t) => {
    const guests = [];
    const outcomes = [];
    for (let i = 0; i < 12; i++) {
        const c = await ChatClient.open(t, SERVERS.capped, "/chatHub");
        try {
            guests.push(await c.invoke("UseGuestSession", null));
        } catch (err) {
            assert.match(err.message, /HubException: Too many new guest sessions from your network\. Please wait \d+ minutes?, or sign in\.$/);
            guests.push(null);
        }
        const events = await c.send(`[[tokens:1]] ${nonce("mint")}`);
        const error = events.find(([name]) => name === "ReceiveError");
        outcomes.push(error ? error[1] : "answered");
        await c.connection.stop();
    }
    assert.equal(guests.slice(0, 5).filter((g) => /^[A-Za-z0-9_-]{32}$/.test(g)).length, 5);
    assert.deepEqual(guests.slice(5), Array(7).fill(null), "no more than 5 new guests per address");
    assert.deepEqual(outcomes.slice(0, 9), Array(9).fill("answered"));
    for (const outcome of outcomes.slice(9)) {
        assert.match(outcome, RATE_LIMITED);
    }
    // a live guest coming back is no new guest: the cap never touches it
    const back = await ChatClient.open(t, SERVERS.capped, "/chatHub");
    assert.equal(await back.invoke("UseGuestSession", guests[0]), guests[0]);
});

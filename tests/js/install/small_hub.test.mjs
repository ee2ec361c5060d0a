// The README's "A small hub", served from a core install (no chat extras), through the stock
// client on every transport and protocol: an invocation, a broadcast, a stream.
// Run by tests/support/install_check.py with the hub's address in SIGNALR_BASE_URL.
import assert from "node:assert/strict";
import { collect, connect, matrixTest, recorder } from "../harness.mjs";

matrixTest("Add returns the sum (a plain def)", async (t, combo) => {
    const c = await connect(t, "/chatHub", combo);
    assert.equal(await c.invoke("Add", 2, 3), 5);
});

matrixTest("SendMessage reaches every connection", async (t, combo) => {
    const sender = await connect(t, "/chatHub", combo);
    const other = await connect(t, "/chatHub", combo);
    const toSender = recorder(sender, "ReceiveMessage");
    const toOther = recorder(other, "ReceiveMessage");
    const text = `hello ${combo.transport}/${combo.protocol}`;
    await sender.invoke("SendMessage", "ada", text);
    // other tests' connections broadcast too: wait for this test's message
    const mine = (calls) => calls.some(([user, body]) => user === "ada" && body === text);
    for (const r of [toSender, toOther]) {
        for (let n = 1; !mine(r.calls); n = r.calls.length + 1) {
            await r.until(n);
        }
    }
});

matrixTest("Countdown streams n down to 1", async (t, combo) => {
    const c = await connect(t, "/chatHub", combo);
    const { items } = await collect(c.stream("Countdown", 3));
    assert.deepEqual(items, [3, 2, 1]);
});

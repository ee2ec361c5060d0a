// A client result awaited from a connection whose instance dies (SIGKILL) mid-call: the caller
// gets a clear error within the backplane's timeout, where ASP.NET Core would wait forever.
import assert from "node:assert/strict";
import { test } from "node:test";
import { connect, rejectsWith, signalR, withTimeout } from "../harness.mjs";
import { HUB, INSTANCES } from "./instances.mjs";

const [killableBase, killablePid] = (process.env.SIGNALR_KILLABLE ?? "").split(",");
const combo = { transport: "WebSockets", protocol: "json" };

test("the owner instance is killed while a client result is awaited", { timeout: 30_000 }, async (t) => {
    assert.ok(killablePid, "SIGNALR_KILLABLE names an instance this test may kill");
    const asker = await connect(t, INSTANCES[0] + HUB, combo);
    const victim = await connect(t, killableBase + HUB, combo);
    const [victimId] = await victim.invoke("whoami");
    const asked = new Promise((resolve) => victim.on("never", () => {
        resolve();
        return new Promise(() => {}); // never answers
    }));
    const result = asker.invoke("ask", victimId, "never", 0);
    await withTimeout(asked, 10_000, "the question to reach the victim");
    process.kill(Number(killablePid), "SIGKILL");
    const started = Date.now();
    await rejectsWith(
        result,
        `An unexpected error occurred invoking 'ask' on the server. HubException: Connection '${victimId}' disconnected.`,
    );
    assert.ok(Date.now() - started < 10_000, "well before the 20 s client result timeout");
    assert.equal(await asker.invoke("echo", "still serving"), "still serving");
    victim.stop().catch(() => {});
});

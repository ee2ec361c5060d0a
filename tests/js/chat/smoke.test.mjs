// The seed-1 sequence once, to prove the wiring; the helper's suite covers the rest.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as signalR from "@microsoft/signalr";

test("SendMessage streams the fake's echo", async () => {
    const c = new signalR.HubConnectionBuilder().withUrl(process.env.CHAT_URL + "/chatHub").configureLogging(signalR.LogLevel.None).build();
    const events = [];
    for (const name of ["ReceiveStatusUpdate", "ReceiveStreamStart", "ReceiveStreamToken", "ReceiveStreamEnd", "ReceiveError"]) {
        c.on(name, (...args) => { events.push([name, ...args]); });
    }
    await c.start();
    try {
        await c.invoke("SendMessage", "hello smoke");
        const text = events.filter((e) => e[0] === "ReceiveStreamToken").map((e) => e[1]).join("");
        assert.equal(text, "Echo: hello smoke (history: 2 messages)");
        assert.deepEqual(events[0], ["ReceiveStatusUpdate", "thinking"]);
        assert.deepEqual(events[1], ["ReceiveStreamStart"]);
        assert.deepEqual(events.at(-1), ["ReceiveStreamEnd"]);
    } finally {
        await c.stop();
    }
});

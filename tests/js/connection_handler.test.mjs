// Raw connections (map_connection_handler): the stock HttpConnection, no hub protocol, every transport.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { test } from "node:test";
import { signalR, url, deferred, withTimeout } from "./harness.mjs";

// HttpConnection is not re-exported by the package index; the client ships it in dist/cjs.
const { HttpConnection } = createRequire(import.meta.url)("@microsoft/signalr/dist/cjs/HttpConnection");

for (const transport of ["WebSockets", "ServerSentEvents", "LongPolling"]) {
    test(`an echo connection handler over ${transport}`, { timeout: 20_000 }, async (t) => {
        const connection = new HttpConnection(url("/echo"), {
            transport: signalR.HttpTransportType[transport],
            logger: signalR.LogLevel.None,
        });
        const received = [];
        let waiting = deferred();
        connection.onreceive = (data) => {
            received.push(data);
            waiting.resolve();
        };
        const closed = deferred();
        connection.onclose = (error) => closed.resolve(error);
        t.after(() => connection.stop().catch(() => {}));
        await withTimeout(connection.start(signalR.TransferFormat.Text), 10_000, "start");

        const next = async () => {
            while (received.length === 0) {
                await withTimeout(waiting.promise, 5_000, "data from the handler");
                waiting = deferred();
            }
            return received.shift();
        };
        assert.equal(await next(), `hello ${transport}`, "on_connected ran and knows the transport");
        for (const text of ["one", "two ✓", "three\nlines"]) {
            await connection.send(text);
            assert.equal(await next(), text);
        }
        await connection.stop();
        assert.equal(await withTimeout(closed.promise, 5_000, "close"), undefined, "a clean close");
    });
}

// Stock @microsoft/signalr clients chatting through a URL (tests/scale_out/test_scale_out_proxy.py).
// argv: the hub URL, then a JSON list of { transport, protocol, message }. Each client is
// its own HubConnection (its own cookie jar, as separate browsers are), all at once; each
// sends its message and waits for the whole reply. Prints one JSON list of outcomes.
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const [url, specs] = process.argv.slice(2);

async function chat({ transport, protocol, message }) {
    const connection = new signalR.HubConnectionBuilder()
        .withUrl(url, { transport: signalR.HttpTransportType[transport] })
        .withHubProtocol(protocol === "messagepack" ? new MessagePackHubProtocol() : new signalR.JsonHubProtocol())
        .configureLogging(signalR.LogLevel.None)
        .build();
    const tokens = [];
    let ended;
    const done = new Promise((resolve, reject) => {
        ended = resolve;
        setTimeout(() => reject(new Error("no ReceiveStreamEnd within 30 s")), 30_000).unref();
    });
    connection.on("ReceiveStreamToken", (token) => tokens.push(token));
    connection.on("ReceiveStreamEnd", () => ended());
    connection.on("ReceiveError", (error) => tokens.push(`[error: ${error}]`));
    try {
        await connection.start();
        const transportUsed = connection.connection.transport.constructor.name;
        await connection.invoke("SendMessage", message);
        await done;
        return { transport, protocol, transportUsed, connectionId: connection.connectionId, reply: tokens.join("") };
    } catch (error) {
        return { transport, protocol, error: String(error) };
    } finally {
        await connection.stop().catch(() => {});
    }
}

console.log(JSON.stringify(await Promise.all(JSON.parse(specs).map(chat))));

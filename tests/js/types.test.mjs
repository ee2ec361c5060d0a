// Value types across the protocols: binary data, dates, numbers, text.
import assert from "node:assert/strict";
import { MATRIX, connect, matrixTest } from "./harness.mjs";

const MSGPACK = MATRIX.filter((c) => c.protocol === "messagepack");
const JSON_COMBOS = MATRIX.filter((c) => c.protocol === "json");
const FIXED = Date.UTC(2020, 0, 2, 3, 4, 5);

matrixTest("bytes round trip as Uint8Array and arrive as bytes", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const data = new Uint8Array([0, 1, 2, 127, 128, 255]);
    const answer = await c.invoke("echo_bytes", data);
    assert.equal(answer.type, "bytes");
    assert.ok(answer.data instanceof Uint8Array, "bytes come back as a Uint8Array");
    assert.deepEqual(Array.from(answer.data), Array.from(data));
}, { combos: MSGPACK });

matrixTest("bytes from the server are a Uint8Array", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const data = await c.invoke("get_bytes");
    assert.ok(data instanceof Uint8Array, "bytes come back as a Uint8Array");
    assert.deepEqual(Array.from(data), [0, 1, 2, 255]);
}, { combos: MSGPACK });

matrixTest("bytes from the server are base64 in JSON", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    assert.equal(await c.invoke("get_bytes"), "AAEC/w==");
}, { combos: JSON_COMBOS });

matrixTest("a datetime from the server is a Date", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const value = await c.invoke("get_date");
    assert.ok(value instanceof Date, "a msgpack timestamp decodes to a Date");
    assert.equal(value.getTime(), FIXED);
}, { combos: MSGPACK });

matrixTest("a datetime from the server is an ISO 8601 string in JSON", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const value = await c.invoke("get_date");
    assert.equal(typeof value, "string");
    assert.match(value, /^2020-01-02T03:04:05/);
    assert.equal(Date.parse(value), FIXED);
}, { combos: JSON_COMBOS });

matrixTest("a Date sent to the server arrives as a datetime", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const sent = new Date(Date.UTC(2021, 5, 7, 8, 9, 10, 123));
    const answer = await c.invoke("echo_date", sent);
    assert.equal(answer.type, "datetime");
    assert.ok(answer.value instanceof Date);
    assert.equal(answer.value.getTime(), sent.getTime());
}, { combos: MSGPACK });

matrixTest("a Date sent as JSON is its ISO string", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const sent = new Date(Date.UTC(2021, 5, 7, 8, 9, 10, 123));
    const answer = await c.invoke("echo_date", sent);
    assert.equal(answer.type, "str");
    assert.equal(answer.value, sent.toISOString());
}, { combos: JSON_COMBOS });

matrixTest("numbers keep their values", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const values = [0, -1, 1.5, -2.25, 255, 65536, 2 ** 31, -(2 ** 31) - 1, Number.MAX_SAFE_INTEGER, 1e-7, 1e300];
    assert.deepEqual(await c.invoke("echo", values), values);
    assert.equal(await c.invoke("add", 2 ** 40, 1), 2 ** 40 + 1);
});

matrixTest("booleans and nested empties", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const value = { t: true, f: false, empty: {}, list: [], deep: [[[]], [{}]] };
    assert.deepEqual(await c.invoke("echo", value), value);
});

matrixTest("unicode text and record-separator-like characters survive", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const text = "héllo ✓ 😀 日本語 \u001e \u0000 line\nbreak \"quoted\" \\ back";
    assert.equal(await c.invoke("echo", text), text);
    const key = { "clé ✓": text };
    assert.deepEqual(await c.invoke("echo", key), key);
});

matrixTest("a large payload round trips", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const big = "x".repeat(20_000);
    assert.equal(await c.invoke("echo", big), big);
    const list = Array.from({ length: 1000 }, (_, i) => i);
    assert.deepEqual(await c.invoke("echo", list), list);
});

// The value model (signalr_chat/signalr/protocol/values.py): the same Python types work in both protocols.
matrixTest("uuid, enums, dataclasses and pydantic models arrive as .NET would send them", async (t, combo) => {
    const c = await connect(t, "/testhub", combo);
    const values = await c.invoke("get_values");
    assert.equal(values.uuid, "12345678-1234-5678-1234-567812345678");
    assert.equal(values.colour, "red");
    assert.equal(values.size, 3);
    assert.deepEqual(values.tuple, [1, 2]);
    assert.deepEqual(values.person, { name: "Ada", id: "12345678-1234-5678-1234-567812345678" });
    assert.equal(values.point.x, 1);
    assert.equal(values.point.label, "a");
    if (combo.protocol === "messagepack") {
        assert.ok(values.point.when instanceof Date && values.naive instanceof Date);
        assert.equal(values.point.when.getTime(), FIXED);
        assert.equal(values.naive.getTime(), FIXED, "a naive datetime is UTC");
    } else {
        assert.equal(values.point.when, "2020-01-02T03:04:05Z", "UTC is written with Z, as System.Text.Json does");
        assert.equal(values.naive, "2020-01-02T03:04:05Z", "a naive datetime is UTC");
    }
});

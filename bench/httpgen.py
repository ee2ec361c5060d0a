"""Echo over Server-Sent Events and long polling: the HTTP transports, from raw sockets.

Each client holds two keep-alive HTTP/1.1 connections, as browsers do: one sends (POST
/hub?id=...), the other receives (one endless `text/event-stream` GET, or a poll GET
re-issued as soon as the previous one answers). The closed loop is the same as over
WebSockets: each Completion sends the next invocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import cast

import orjson

from . import wire
from .loadgen import Result, Spec, Tally, closed_loop, latencies_us

Handler = Callable[[int, dict[str, str], bytes], None]


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection; every response (or streamed chunk) goes to `handler`, in order."""

    def __init__(self, handler: Handler, streaming: bool = False) -> None:
        self.handler = handler
        self.responses = wire.HttpResponses()
        self.responses.streaming = streaming
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        for status, headers, body in self.responses.feed(data):
            self.handler(status, headers, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class HttpEchoClient:
    def __init__(self, spec: Spec, tally: Tally, payload: str) -> None:
        self.port = spec["port"]
        self.path = spec["path"]
        self.polling = spec["mode"] == "lp-echo"
        self.tally = tally
        self.payload = payload
        self.token = ""
        self.handshaken = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sender = HttpConnection(self._sent)
        self.receiver = HttpConnection(self._received, streaming=not self.polling)
        self.events = bytearray()
        self.invoke = b""
        self.poll = b""
        self.sent_at = 0
        self.checked = False

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self.sender, "127.0.0.1", self.port)
        await loop.create_connection(lambda: self.receiver, "127.0.0.1", self.port)
        negotiated: asyncio.Future[bytes] = loop.create_future()
        self.sender.handler = lambda status, _h, body: negotiated.set_result(body)
        self.sender.write(wire.http_request("POST", f"{self.path}/negotiate?negotiateVersion=1", self.port))
        document = orjson.loads(await negotiated)
        self.token = document.get("connectionToken") or document["connectionId"]
        self.sender.handler = self._sent
        target = f"{self.path}?id={self.token}"
        self.invoke = wire.http_request(
            "POST",
            target,
            self.port,
            {"Content-Type": "text/plain"},
            wire.invocation("json", "Echo", [self.payload], "1"),
        )
        if self.polling:
            self.poll = wire.http_request("GET", target, self.port)
            self.receiver.write(self.poll)
        else:
            opened: asyncio.Future[None] = loop.create_future()

            def on_open(status: int, _headers: dict[str, str], _body: bytes) -> None:
                if not opened.done():
                    opened.set_result(None)

            self.receiver.handler = on_open
            self.receiver.write(wire.http_request("GET", target, self.port, {"Accept": "text/event-stream"}))
            await opened
            self.receiver.handler = self._received
        self.sender.write(wire.http_request("POST", target, self.port, {}, wire.handshake("json")))
        await self.ready

    def start(self) -> None:
        self.sent_at = time.perf_counter_ns()
        self.sender.write(self.invoke)

    # -- callbacks ------------------------------------------------------------------------
    def _sent(self, status: int, _headers: dict[str, str], _body: bytes) -> None:
        if status != 200:
            self.tally.error(f"POST answered {status}")

    def _received(self, status: int, _headers: dict[str, str], body: bytes) -> None:
        if self.polling:
            if status == 204:
                self.tally.error("poll ended the connection")
                return
            self.receiver.write(self.poll)
            if body:
                self._payload(body)
            return
        if status == 0:  # a streamed chunk: one or more events
            events = self.events
            events += body
            while True:
                end = events.find(b"\r\n\r\n")
                if end < 0:
                    break
                event = bytes(events[:end])
                del events[: end + 4]
                data = b"\n".join(line[6:] for line in event.split(b"\r\n") if line.startswith(b"data: "))
                if data:
                    self._payload(data)

    def _payload(self, payload: bytes) -> None:
        if not self.handshaken:
            end = payload.find(wire.RS)
            self.handshaken = True
            if b"error" in payload[:end]:
                self.ready.set_exception(ConnectionError(payload.decode(errors="replace")))
                return
            self.ready.set_result(None)
            payload = payload[end + 1 :]
        if b'"type":3' not in payload:
            return
        now = time.perf_counter_ns()
        tally = self.tally
        if not self.checked:
            self.checked = True
            results = [orjson.loads(r) for r in wire.split_records("json", payload)]
            if not any(r.get("type") == 3 and r.get("result") == self.payload for r in results):
                tally.error(f"echo mismatch: {payload[:120]!r}")
        if tally.recording:
            tally.latencies.append(now - self.sent_at)
            tally.count += 1
        if tally.running:
            self.sent_at = now
            self.sender.write(self.invoke)

    def close(self) -> None:
        self.sender.close()
        self.receiver.close()


async def run_echo(spec: Spec) -> Result:
    tally = Tally()
    payload = "x" * spec["payload"]
    gate = asyncio.Semaphore(32)
    clients: list[HttpEchoClient] = []

    async def one() -> None:
        async with gate:
            client = HttpEchoClient(spec, tally, payload)
            try:
                await asyncio.wait_for(client.open(), 30)
            except (OSError, TimeoutError, ConnectionError) as exc:
                tally.error(f"open failed: {exc!r}")
                client.close()
                return
            clients.append(client)

    await asyncio.gather(*(one() for _ in range(spec["connections"])))
    result = await closed_loop(tally, clients, spec)
    for client in clients:
        with contextlib.suppress(Exception):
            client.close()
    result.update(latency_us=latencies_us(tally.latencies), errors=tally.errors, connected=len(clients))
    return result

"""A fake OpenAI-compatible upstream: `POST /v1/chat/completions` streaming 50 tokens/s per chat.

Each token's text is `t<time.time_ns()>` taken when it is written, so the client can tell
emit-to-receive latency through any relay. The reply length comes from the last user
message, `tokens:N` (default 50). The first token goes out at once (time to first token
measures the relay, not a model), then one every 20 ms.

It is a bare asyncio.Protocol (keep-alive, chunked SSE) driven by one 1 ms ticker: chats
are spread over 20 phases so a thousand of them do not all emit in the same millisecond,
and no chat owns a timer. It shares core 1 with the load generator, so it must be cheap.

Run as `python -m bench.fake_upstream --port 0`; prints `listening on http://HOST:PORT`.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from typing import cast

import orjson

from . import procfs

TOKEN_INTERVAL = 0.020
TICK = 0.001
PHASES = round(TOKEN_INTERVAL / TICK)
HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
CHUNK_PREFIX = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench",'
    b'"choices":[{"index":0,"delta":{"content":"'
)
CHUNK_SUFFIX = b'"},"finish_reason":null}]}\n\n'
FINAL = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)
TOKENS = re.compile(r"tokens:(\d+)")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


FINAL_CHUNKS = chunk(FINAL) + b"0\r\n\r\n"


class Stream:
    __slots__ = ("protocol", "remaining")

    def __init__(self, protocol: UpstreamProtocol, remaining: int) -> None:
        self.protocol = protocol
        self.remaining = remaining


class Upstream:
    def __init__(self) -> None:
        self.phases: list[set[Stream]] = [set() for _ in range(PHASES)]
        self.next_phase = itertools.cycle(range(PHASES))
        self.tokens = 0

    def start(self, stream: Stream) -> None:
        stream.protocol.write(HEAD)
        self.emit(stream)
        if stream.remaining > 0:
            self.phases[next(self.next_phase)].add(stream)

    def emit(self, stream: Stream) -> None:
        stream.remaining -= 1
        self.tokens += 1
        data = CHUNK_PREFIX + b"t%d " % time.time_ns() + CHUNK_SUFFIX
        if stream.remaining > 0:
            stream.protocol.write(chunk(data))
        else:
            stream.protocol.write(chunk(data) + FINAL_CHUNKS)
            stream.protocol.finished()

    async def tick(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n in itertools.count(1):
            phase = self.phases[n % PHASES]
            for stream in list(phase):
                if stream.protocol.closed:
                    phase.discard(stream)
                    continue
                self.emit(stream)
                if stream.remaining <= 0:
                    phase.discard(stream)
            delay = start + n * TICK - loop.time()
            await asyncio.sleep(max(0.0, delay))


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.stream: Stream | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def finished(self) -> None:
        self.stream = None
        if self.buffer:  # a pipelined next request
            self.data_received(b"")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.stream is not None:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        if not head.startswith("POST") or "/chat/completions" not in head.split("\r\n", 1)[0]:
            self.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return
        messages = orjson.loads(body).get("messages") or [{}]
        found = TOKENS.search(str(messages[-1].get("content", "")))
        self.stream = Stream(self, int(found.group(1)) if found else 50)
        self.upstream.start(self.stream)


async def serve(port: int) -> None:
    upstream = Upstream()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: UpstreamProtocol(upstream), "127.0.0.1", port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{bound}", flush=True)
    await upstream.tick()


def main() -> None:
    procfs.serve_main(serve)


if __name__ == "__main__":
    main()

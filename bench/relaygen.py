"""The load side of the token relay: N chats receiving tokens, and paired time-to-first-token.

Tokens carry their upstream emit time (`t<time_ns>`), so a chat's receipt gives the emit-to-
receive latency, and consecutive receipts the inter-token gap the reader sees. Only the
stamp is parsed (one regex over the frame), whatever else the frame batches.
"""

from __future__ import annotations

import asyncio
import re
import time

from . import procfs, stats, wire
from .loadgen import Result, Runner, Spec, Tally, Window, latencies_us
from .wsclient import SignalRSocket, close_all, open_many

STAMP = re.compile(rb'"ReceiveStreamToken","arguments":\["t(\d+)')
NOMINAL_GAP_MS = 20.0


class ChatSocket(SignalRSocket):
    """One chat: `SendMessage("tokens:N")`, then every ReceiveStreamToken timed."""

    def __init__(self, port: int, path: str, tally: Tally, gaps: list[int]) -> None:
        super().__init__(port, path, "json")
        self.tally = tally
        self.gaps = gaps
        self.last = 0
        self.tokens_in_window = 0
        self.tokens = 0  # over the whole run
        self.failed = 0
        self.first_token: asyncio.Future[int] | None = None
        self.done: asyncio.Future[None] | None = None

    def ask(self, tokens: int) -> None:
        record = wire.invocation("json", "SendMessage", [f"tokens:{tokens}"], "1")
        self.send(wire.client_frame(record, wire.OP_TEXT))

    def on_message(self, payload: bytes) -> None:
        now = time.time_ns()
        stamps = STAMP.findall(payload)
        tally = self.tally
        if stamps:
            self.tokens += len(stamps)
            first = self.first_token
            if first is not None and not first.done():
                first.set_result(now)
            if tally.recording:
                self.tokens_in_window += len(stamps)
                tally.count += len(stamps)
                for stamp in stamps:
                    tally.latencies.append(now - int(stamp))
                    if self.last:
                        self.gaps.append(now - self.last)
                    self.last = now
            else:
                self.last = now
        if b"ReceiveError" in payload:
            self.failed += 1
            tally.error(f"chat error: {payload[:200]!r}")
        if b'"type":3' in payload and self.done is not None and not self.done.done():
            self.done.set_result(None)


def _core1_window(spec: Spec) -> tuple[Window, float]:
    """The server's window (and the azure run's service double, which shares core 1); the upstream's CPU so far."""
    double = spec.get("double_pid")
    window = Window(spec["server_pid"], {"double": double} if double else None, bool(spec.get("precise_cpu")))
    return window, procfs.cpu_seconds(spec["upstream_pid"])


async def run_relay(spec: Spec) -> Result:
    """`chats` concurrent chats, started over `ramp` seconds, long enough to cover the window."""
    tally = Tally()
    gaps: list[int] = []
    chats = spec["chats"]
    sockets, failed = await open_many(
        lambda _: ChatSocket(spec["port"], spec["path"], tally, gaps), chats, concurrency=64
    )
    tokens = round((spec["ramp"] + spec["warmup"] + spec["window"] + 2) / (NOMINAL_GAP_MS / 1000))
    pause = spec["ramp"] / max(1, len(sockets))
    for socket in sockets:
        socket.ask(tokens)
        await asyncio.sleep(pause)
    await asyncio.sleep(spec["warmup"])
    window, upstream_cpu = _core1_window(spec)
    tally.recording = True
    await asyncio.sleep(spec["window"])
    tally.recording = False
    result = window.stop()
    upstream_used = procfs.cpu_seconds(spec["upstream_pid"]) - upstream_cpu
    close_all(sockets)
    elapsed = result["elapsed_s"]
    gap = stats.latency_summary([g / 1e6 for g in gaps])  # milliseconds
    streaming = sum(1 for s in sockets if s.tokens_in_window)
    core1 = result["client_cpu_pct"] + 100 * upstream_used / elapsed
    double = result.get("processes", {}).get("double")
    if double is not None:  # behind Azure SignalR Service: the double carries every token too
        core1 += double["cpu_pct"]
        result["double_cpu_pct"] = double["cpu_pct"]
        result["double_us_per_msg"] = round(1e6 * double["cpu_s"] / tally.count, 2) if tally.count else None
    if "server_run_s" in result and tally.count:
        result["server_run_us_per_msg"] = round(1e6 * result["server_run_s"] / tally.count, 4)
    result.update(
        chats=chats,
        connected=len(sockets),
        chats_streaming=streaming,
        tokens=tally.count,
        tokens_total=sum(s.tokens for s in sockets),
        throughput=round(tally.count / elapsed, 1),
        expected_tokens_per_s=round(chats * 1000 / NOMINAL_GAP_MS, 1),
        server_us_per_msg=round(1e6 * result["server_cpu_s"] / tally.count, 2) if tally.count else None,
        upstream_cpu_pct=round(100 * upstream_used / elapsed, 1),
        core1_cpu_pct=round(core1, 1),
        latency_us=latencies_us(tally.latencies),
        gap_ms=gap,
        keeps_pace=bool(gap["p99"] <= 2 * NOMINAL_GAP_MS and streaming == chats),
        errors=tally.errors + failed + (chats - len(sockets)),
    )
    return result


async def _direct_first_token(port: int, tokens: int) -> tuple[int, int]:
    """One request straight to the upstream: (ns to the first token, ns to the end)."""
    loop = asyncio.get_running_loop()
    first: asyncio.Future[int] = loop.create_future()
    end: asyncio.Future[int] = loop.create_future()
    responses = wire.HttpResponses()
    responses.streaming = True

    class Reader(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            for status, _headers, body in responses.feed(data):
                now = time.perf_counter_ns()
                if status == 0 and b'"content":"' in body and not first.done():
                    first.set_result(now)
                if status == 0 and b"[DONE]" in body and not end.done():
                    end.set_result(now)

    body = f'{{"model":"bench","stream":true,"messages":[{{"role":"user","content":"tokens:{tokens}"}}]}}'.encode()
    request = wire.http_request(
        "POST", "/v1/chat/completions", port, {"Content-Type": "application/json", "Authorization": "Bearer x"}, body
    )
    transport, _ = await loop.create_connection(Reader, "127.0.0.1", port)
    try:
        started = time.perf_counter_ns()
        transport.write(request)
        got_first = await asyncio.wait_for(first, 10)
        got_end = await asyncio.wait_for(end, 10)
        return got_first - started, got_end - started
    finally:
        transport.close()


async def run_ttft(spec: Spec) -> Result:
    """Pairs, in alternating order: the upstream directly, then through the server (or back).

    `fresh`: every hub request on a new connection (an empty conversation); otherwise one
    connection whose conversation grows to the server's history limit, as a long chat does.
    """
    tally = Tally()
    failed = 0
    loop = asyncio.get_running_loop()

    async def connect() -> ChatSocket:
        nonlocal failed
        opened, failures = await open_many(
            lambda _: ChatSocket(spec["port"], spec["path"], tally, []), 1, concurrency=1
        )
        failed += failures
        if not opened:
            raise ConnectionError("could not connect to the hub")
        return opened[0]

    chat = await connect()
    sockets = [chat]

    async def through_hub() -> int:
        nonlocal chat
        if spec.get("fresh"):
            chat.close()
            chat = await connect()
            sockets.append(chat)
        chat.first_token = loop.create_future()
        chat.done = loop.create_future()
        started = time.time_ns()
        chat.ask(spec["tokens"])
        first = await asyncio.wait_for(chat.first_token, 10)
        await asyncio.wait_for(chat.done, 10)
        return first - started

    direct: list[float] = []
    hub: list[float] = []
    overhead: list[float] = []
    for _ in range(spec["warmup_pairs"]):
        await _direct_first_token(spec["upstream_port"], spec["tokens"])
        await through_hub()
    window = Window(spec["server_pid"])
    for i in range(spec["pairs"]):
        if i % 2:
            h = await through_hub()
            d, _ = await _direct_first_token(spec["upstream_port"], spec["tokens"])
        else:
            d, _ = await _direct_first_token(spec["upstream_port"], spec["tokens"])
            h = await through_hub()
        direct.append(d / 1000)
        hub.append(h / 1000)
        overhead.append((h - d) / 1000)
    result = window.stop()
    close_all(sockets)
    result.update(
        pairs=spec["pairs"],
        direct_us=stats.latency_summary(direct),
        hub_us=stats.latency_summary(hub),
        overhead_us=stats.latency_summary(overhead),
        added_ms=round(stats.latency_summary(overhead)["p50"] / 1000, 3),
        errors=tally.errors + failed,
    )
    return result


MODES: dict[str, Runner] = {"relay": run_relay, "ttft": run_ttft}

"""The load generator process (pinned to core 1): runs one scenario against one server.

`python -m tests.bench.loadgen '<spec json>'` prints one JSON result line. It measures the
window itself (server and own CPU from /proc, before and after), so the figures cover
exactly the traffic they are divided by.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from . import procfs, stats, wire
from .wsclient import SignalRSocket, close_all, open_many

Spec = dict[str, Any]
Result = dict[str, Any]


class Tally:
    """Counters shared by every socket of a run; sockets update it from their callbacks."""

    __slots__ = ("count", "errors", "expected", "latencies", "received", "recording", "running", "waiter")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.received = 0
        self.expected = 0
        self.latencies: list[int] = []  # nanoseconds
        self.recording = False
        self.running = False
        self.waiter: asyncio.Future[None] | None = None

    def error(self, text: str) -> None:
        self.errors += 1
        if self.errors <= 3:
            print(f"error: {text}", file=sys.stderr, flush=True)


class Window:
    """Wall time, server CPU and wake-ups, and our own CPU, over one measured window."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.started = time.perf_counter()
        self.server = procfs.sample(server_pid)
        self.client = procfs.cpu_seconds(os.getpid())

    def stop(self) -> Result:
        elapsed = time.perf_counter() - self.started
        server = procfs.sample(self.server_pid)
        client = procfs.cpu_seconds(os.getpid())
        server_cpu = server.cpu_s - self.server.cpu_s
        client_cpu = client - self.client
        return {
            "elapsed_s": round(elapsed, 3),
            "server_cpu_s": round(server_cpu, 3),
            "server_cpu_pct": round(100 * server_cpu / elapsed, 1),
            "client_cpu_s": round(client_cpu, 3),
            "client_cpu_pct": round(100 * client_cpu / elapsed, 1),
            "server_wakeups_per_s": round((server.wakeups - self.server.wakeups) / elapsed, 1),
            "server_rss_kb": procfs.rss_kb(self.server_pid),
        }


def per_message(window: Result, messages: int) -> Result:
    window["messages"] = messages
    window["throughput"] = round(messages / window["elapsed_s"], 1)
    window["server_us_per_msg"] = round(1e6 * window["server_cpu_s"] / messages, 2) if messages else None
    window["client_us_per_msg"] = round(1e6 * window["client_cpu_s"] / messages, 2) if messages else None
    return window


def latencies_us(samples_ns: list[int]) -> dict[str, float]:
    return stats.latency_summary([s / 1000 for s in samples_ns])


class ClosedLoopClient(Protocol):
    def start(self) -> None:
        """Send the first request; each answer then sends the next while `tally.running`."""


async def closed_loop(tally: Tally, clients: Sequence[ClosedLoopClient], spec: Spec) -> Result:
    """Connected clients each keep one request in flight: the window after the warm-up is measured."""
    tally.running = True
    for client in clients:
        client.start()
    await asyncio.sleep(spec["warmup"])
    window = Window(spec["server_pid"])
    tally.recording = True
    await asyncio.sleep(spec["window"])
    tally.recording = False
    result = per_message(window.stop(), tally.count)
    tally.running = False
    await asyncio.sleep(0.1)  # answers in flight land before the sockets close
    return result


# -- echo ---------------------------------------------------------------------------------


class EchoSocket(SignalRSocket):
    """One invocation in flight: each Completion sends the next, pre-built, invocation."""

    def __init__(self, port: int, path: str, protocol: str, tally: Tally, payload: str, target: str) -> None:
        super().__init__(port, path, protocol)
        self.tally = tally
        self.payload = payload
        record = wire.invocation(protocol, target, [payload], "1")
        self.frame = wire.client_frame(record, self.opcode)
        self.marker = b'"type":3' if protocol == "json" else b"\x95\x03"
        self.sent_at = 0
        self.checked = False

    def start(self) -> None:
        self.sent_at = time.perf_counter_ns()
        self.send(self.frame)

    def on_message(self, payload: bytes) -> None:
        if self.marker not in payload:
            return  # a Ping
        now = time.perf_counter_ns()
        tally = self.tally
        if not self.checked:
            self.checked = True
            self._check(payload)
        if tally.recording:
            tally.latencies.append(now - self.sent_at)
            tally.count += 1
        if tally.running:
            self.sent_at = now
            self.transport.write(self.frame)  # type: ignore[union-attr]

    def _check(self, payload: bytes) -> None:
        """The first Completion is decoded in full: the right id and the payload echoed."""
        for record in wire.split_records(self.protocol, payload):
            decoded = wire.decode(self.protocol, record)
            if wire.message_type(self.protocol, decoded) == 3:
                if wire.completion_result(self.protocol, decoded) != self.payload:
                    self.tally.error(f"echo mismatch: {record[:120]!r}")
                return
        self.tally.error(f"no completion in {payload[:120]!r}")


async def run_echo(spec: Spec) -> Result:
    tally = Tally()
    payload = "x" * spec["payload"]
    sockets, failed = await open_many(
        lambda _: EchoSocket(spec["port"], spec["path"], spec["protocol"], tally, payload, spec.get("target", "Echo")),
        spec["connections"],
        spec["port"],
    )
    result = await closed_loop(tally, sockets, spec)
    close_all(sockets)
    result.update(latency_us=latencies_us(tally.latencies), errors=tally.errors + failed, connected=len(sockets))
    return result


# -- broadcast and groups -----------------------------------------------------------------


class FanOutSocket(SignalRSocket):
    """Counts the records of `target` it receives; samplers also decode their send stamps."""

    def __init__(self, port: int, path: str, protocol: str, tally: Tally, target: bytes, sampling: bool) -> None:
        super().__init__(port, path, protocol)
        self.tally = tally
        self.target = target
        self.sampling = sampling
        self.answered: asyncio.Future[None] | None = None

    def on_message(self, payload: bytes) -> None:
        count = payload.count(self.target)
        tally = self.tally
        if count:
            tally.received += count
            if self.sampling and tally.recording:
                now = time.time_ns()
                for record in wire.split_records(self.protocol, payload):
                    decoded = wire.decode(self.protocol, record)
                    if wire.message_type(self.protocol, decoded) == 1:
                        tally.latencies.append(now - wire.invocation_arguments(self.protocol, decoded)[0])
            waiter = tally.waiter
            if tally.received >= tally.expected and waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif self.answered is not None and not self.answered.done():
            self.answered.set_result(None)  # the JoinGroup Completion

    async def call(self, target: str, arguments: list[Any]) -> None:
        self.answered = asyncio.get_running_loop().create_future()
        self.send(wire.client_frame(wire.invocation(self.protocol, target, arguments, "j"), self.opcode))
        await asyncio.wait_for(self.answered, 30)


def group_of(index: int, spec: Spec) -> str | None:
    pattern = spec["pattern"]
    if pattern == "groups-small":
        return f"g{index // spec['group_size']}"
    if pattern == "groups-big":
        return f"g{index % spec['group_count']}"
    return None


async def run_fanout(spec: Spec) -> Result:
    """Broadcast or group sends from one extra connection to N receivers.

    burst: each round sends `burst` messages (per group) in one write and waits until every
    receiver has them all; deliveries/s over whole rounds. steady: `rate` messages/s to all.
    """
    tally = Tally()
    protocol, n = spec["protocol"], spec["connections"]
    grouped = spec["pattern"] != "all"
    target = b"Group" if grouped else b"Broadcast"
    step = max(1, n // spec.get("samplers", 50)) if spec["style"] == "burst" else 1
    sockets, failed = await open_many(
        lambda i: FanOutSocket(spec["port"], spec["path"], protocol, tally, target, i % step == 0 and i < n),
        n + 1,
        spec["port"],
    )
    sender, receivers = sockets[-1], sockets[:-1]
    groups: list[str] = []
    if grouped:
        names = [group_of(i, spec) or "" for i in range(len(receivers))]
        await asyncio.gather(*(s.call("JoinGroup", [g]) for s, g in zip(receivers, names, strict=True)))
        groups = sorted(set(names))
    payload = "x" * spec["payload"]
    # a broadcast reaches every socket, the sender too; a group send, its members
    per_send = len(receivers) if grouped else len(sockets)

    def frames(count: int) -> bytes:
        stamp = time.time_ns()
        if grouped:
            records = [wire.invocation(protocol, "SendToGroup", [g, stamp, payload]) for g in groups] * count
        else:
            records = [wire.invocation(protocol, "Broadcast", [stamp, payload])] * count
        return b"".join(wire.client_frame(r, sender.opcode) for r in records)

    result: Result
    if spec["style"] == "burst":
        burst = spec["burst"]

        async def round_trip() -> None:
            tally.expected = tally.received + per_send * burst
            tally.waiter = asyncio.get_running_loop().create_future()
            sender.send(frames(burst))
            await asyncio.wait_for(tally.waiter, 60)

        deadline = time.perf_counter() + spec["warmup"]
        while time.perf_counter() < deadline:
            await round_trip()
        window = Window(spec["server_pid"])
        tally.recording = True
        start = tally.received
        deadline = time.perf_counter() + spec["window"]
        while time.perf_counter() < deadline:
            await round_trip()
        tally.recording = False
        result = per_message(window.stop(), tally.received - start)
    else:
        interval = 1 / spec["rate"]

        async def delivered(sends: int) -> None:
            """Wait (up to 10 s) until every send so far has reached every receiver."""
            tally.expected = sends * per_send
            tally.waiter = asyncio.get_running_loop().create_future()
            if tally.received < tally.expected:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(tally.waiter, 10)

        warm = max(1, round(spec["warmup"] * spec["rate"]))
        for _ in range(warm):
            sender.send(frames(1))
            await asyncio.sleep(interval)
        await delivered(warm)
        window = Window(spec["server_pid"])
        tally.recording = True
        start = tally.received
        sends = max(1, round(spec["window"] * spec["rate"]))
        next_send = time.perf_counter()
        for _ in range(sends):
            sender.send(frames(1))
            next_send += interval
            await asyncio.sleep(max(0.0, next_send - time.perf_counter()))
        await delivered(warm + sends)
        tally.recording = False
        result = per_message(window.stop(), tally.received - start)
        missing = sends * per_send - (tally.received - start)
        if missing > 0:
            tally.error(f"{missing} deliveries missing")
    close_all(sockets)
    result.update(
        latency_us=latencies_us(tally.latencies),
        errors=tally.errors + failed,
        connected=len(sockets),
        frames_per_delivery=round(sum(s.frames_in for s in sockets) / max(1, tally.received), 3),
    )
    return result


# -- idle connections ---------------------------------------------------------------------


class IdleSocket(SignalRSocket):
    def keep_alive(self) -> None:
        self.send(wire.client_frame(wire.ping(self.protocol), self.opcode))


async def run_idle(spec: Spec) -> Result:
    """Ramp N connections (negotiate + upgrade + handshake), then hold them silent.

    While ramping the clients ping every 10 s, as SignalR clients do (the server drops a
    client silent for 30 s); the measured idle window itself carries no client traffic.
    """
    pid, n = spec["server_pid"], spec["connections"]
    base_rss = procfs.rss_kb(pid)
    opened: list[IdleSocket] = []

    def make(_: int) -> IdleSocket:
        socket = IdleSocket(spec["port"], spec["path"], spec["protocol"])
        opened.append(socket)
        return socket

    async def keep_alive() -> None:
        while True:
            await asyncio.sleep(10)
            for socket in opened:
                socket.keep_alive()

    pinger = asyncio.create_task(keep_alive())
    ramp = Window(pid)
    sockets, failed = await open_many(make, n, spec["port"], concurrency=spec.get("concurrency", 64))
    ramp_result = ramp.stop()
    pinger.cancel()
    for socket in sockets:
        socket.keep_alive()
    await asyncio.sleep(spec["settle"])
    frames_before = sum(s.frames_in for s in sockets)
    idle = Window(pid)
    await asyncio.sleep(spec["window"])
    result = idle.stop()
    result.update(
        connected=len(sockets),
        errors=failed,
        base_rss_kb=base_rss,
        rss_per_connection_kb=round((result["server_rss_kb"] - base_rss) / max(1, len(sockets)), 2),
        ramp_s=ramp_result["elapsed_s"],
        ramp_per_s=round(len(sockets) / ramp_result["elapsed_s"], 1),
        ramp_server_us_per_connection=round(1e6 * ramp_result["server_cpu_s"] / max(1, len(sockets)), 1),
        ramp_client_cpu_pct=ramp_result["client_cpu_pct"],
        ramp_server_cpu_pct=ramp_result["server_cpu_pct"],
        idle_frames_received=sum(s.frames_in for s in sockets) - frames_before,
    )
    # the window's own CPU figures describe the idle phase; the ramp's are prefixed
    return result


Runner = Callable[[Spec], Coroutine[Any, Any, Result]]
MODES: dict[str, Runner] = {
    "echo": run_echo,
    "fanout": run_fanout,
    "idle": run_idle,
}


def main() -> None:
    spec: Spec = json.loads(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read())
    procfs.raise_nofile()
    procfs.install_uvloop()
    # a short-lived process: cyclic GC over 50,000 sockets' objects would only slow the client
    gc.disable()
    mode = spec["mode"]
    SignalRSocket.deflate = bool(spec.get("deflate"))
    runner: Runner
    if mode in ("sse-echo", "lp-echo"):
        from . import httpgen

        runner = httpgen.run_echo
    elif mode in ("relay", "ttft"):
        from . import relaygen

        runner = relaygen.MODES[mode]
    else:
        runner = MODES[mode]
    result = asyncio.run(runner(spec))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

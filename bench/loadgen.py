"""The load generator process (pinned to core 1): runs one scenario against one server.

`python -m bench.loadgen '<spec json>'` prints one JSON result line. It measures the
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
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol

from . import procfs, stats, wire
from .wsclient import SignalRSocket, close_all, open_many

Spec = dict[str, Any]
Result = dict[str, Any]


class Tally:
    """Counters shared by every socket of a run; sockets update it from their callbacks."""

    __slots__ = (
        "by_instance",
        "count",
        "errors",
        "expected",
        "latencies",
        "received",
        "recording",
        "running",
        "waiter",
    )

    def __init__(self, instances: int = 1) -> None:
        self.count = 0
        self.errors = 0
        self.received = 0
        #: deliveries by the server instance that made them (a scaled-out run has several)
        self.by_instance = [0] * instances
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
    """Wall time, server CPU and wake-ups, and our own CPU, over one measured window.

    `watched` names more processes (a scale-out run's instances and redis-server, the azure
    run's service double) whose CPU and RSS the window reports under `processes`. `precise`
    adds the server's CPU time to the nanosecond (`server_run_s`), for a server whose CPU in
    the window is a few clock ticks, and how busy each core was, whoever kept it busy.
    """

    def __init__(self, server_pid: int, watched: Mapping[str, int] | None = None, precise: bool = False) -> None:
        self.server_pid = server_pid
        self.watched = dict(watched or {})
        self.started = time.perf_counter()
        self.server_run = procfs.run_seconds(server_pid) if precise else None
        self.cores = procfs.core_ticks() if precise else None
        self.server = procfs.sample(server_pid)
        self.others = {name: procfs.cpu_seconds(pid) for name, pid in self.watched.items()}
        self.client = procfs.cpu_seconds(os.getpid())

    def stop(self) -> Result:
        elapsed = time.perf_counter() - self.started
        server = procfs.sample(self.server_pid)
        others = {name: procfs.cpu_seconds(pid) for name, pid in self.watched.items()}
        client = procfs.cpu_seconds(os.getpid())
        server_cpu = server.cpu_s - self.server.cpu_s
        client_cpu = client - self.client
        result: Result = {
            "elapsed_s": round(elapsed, 3),
            "server_cpu_s": round(server_cpu, 3),
            "server_cpu_pct": round(100 * server_cpu / elapsed, 1),
            "client_cpu_s": round(client_cpu, 3),
            "client_cpu_pct": round(100 * client_cpu / elapsed, 1),
            "server_wakeups_per_s": round((server.wakeups - self.server.wakeups) / elapsed, 1),
            "server_rss_kb": procfs.rss_kb(self.server_pid),
        }
        if self.server_run is not None:
            result["server_run_s"] = round(procfs.run_seconds(self.server_pid) - self.server_run, 6)
        if self.cores is not None:
            now = procfs.core_ticks()
            result["cores_busy_pct"] = {
                core: round(100 * (busy - self.cores[core][0]) / max(1, total - self.cores[core][1]), 1)
                for core, (busy, total) in now.items()
                if core in self.cores
            }
        if self.watched:
            result["processes"] = {
                name: {
                    "cpu_s": round(others[name] - self.others[name], 3),
                    "cpu_pct": round(100 * (others[name] - self.others[name]) / elapsed, 1),
                    "rss_kb": procfs.rss_kb(pid),
                }
                for name, pid in self.watched.items()
            }
        return result


def per_message(window: Result, messages: int) -> Result:
    window["messages"] = messages
    window["throughput"] = round(messages / window["elapsed_s"], 1)
    window["server_us_per_msg"] = round(1e6 * window["server_cpu_s"] / messages, 2) if messages else None
    window["client_us_per_msg"] = round(1e6 * window["client_cpu_s"] / messages, 2) if messages else None
    if "server_run_s" in window:
        window["server_run_us_per_msg"] = round(1e6 * window["server_run_s"] / messages, 4) if messages else None
    return window


def latencies_us(samples_ns: list[int]) -> dict[str, float]:
    return stats.latency_summary([s / 1000 for s in samples_ns])


# -- scale-out: connections spread over server instances -----------------------------------


def instances(spec: Spec) -> list[dict[str, int]]:
    """The server instances of a run (`port`, `pid`): one, unless a scale-out run lists several."""
    listed: list[dict[str, int]] = spec.get("instances") or []
    return listed or [{"port": spec["port"], "pid": spec["server_pid"]}]


def instance_of(index: int, count: int, spec: Spec) -> int:
    """Contiguous blocks, not round robin: every instance then gets its share of the latency
    samplers (every n-th socket), whatever n is."""
    return index * len(instances(spec)) // count


#: The processes that play the service on core 1: redis-server (scale-out), the double of Azure
#: SignalR Service (azure). Each run has at most one.
SERVICES = ("redis", "double")


def watched(spec: Spec) -> dict[str, int]:
    """The processes a scale-out or azure window reports: instances `1`, `2`, ... and the
    service (`redis` or `double`)."""
    if "instances" not in spec:
        return {}
    named = {str(i + 1): instance["pid"] for i, instance in enumerate(spec["instances"])}
    for service in SERVICES:
        if spec.get(f"{service}_pid"):
            named[service] = spec[f"{service}_pid"]
    return named


def fleet_figures(result: Result, deliveries: Sequence[int], connections: Sequence[int]) -> Result:
    """Per instance: its CPU over the deliveries its connections received. The run's server
    figures become the whole fleet's (all instances summed); core 1's adds the service's
    (redis-server, or the double of Azure SignalR Service)."""
    processes: dict[str, dict[str, float]] = result["processes"]
    names = [str(i + 1) for i in range(len(deliveries))]
    result["instance_deliveries"] = dict(zip(names, deliveries, strict=True))
    result["instance_connections"] = dict(zip(names, connections, strict=True))
    result["instance_cpu_pct"] = {name: processes[name]["cpu_pct"] for name in names}
    result["instance_us_per_msg"] = {
        name: round(1e6 * processes[name]["cpu_s"] / count, 2) if count else None
        for name, count in zip(names, deliveries, strict=True)
    }
    cpu = sum(processes[name]["cpu_s"] for name in names)
    result["server_cpu_s"] = round(cpu, 3)
    result["server_cpu_pct"] = round(sum(processes[name]["cpu_pct"] for name in names), 1)
    messages = sum(deliveries)
    result["server_us_per_msg"] = round(1e6 * cpu / messages, 2) if messages else None
    core1 = result["client_cpu_pct"]
    for name in SERVICES:
        service = processes.get(name)
        if service is not None:
            result[f"{name}_cpu_pct"] = service["cpu_pct"]
            result[f"{name}_us_per_msg"] = round(1e6 * service["cpu_s"] / messages, 3) if messages else None
            core1 += service["cpu_pct"]
    result["core1_cpu_pct"] = round(core1, 1)
    return result


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
    )
    result = await closed_loop(tally, sockets, spec)
    close_all(sockets)
    result.update(latency_us=latencies_us(tally.latencies), errors=tally.errors + failed, connected=len(sockets))
    return result


# -- broadcast and groups -----------------------------------------------------------------


class FanOutSocket(SignalRSocket):
    """Counts the records of `target` it receives; samplers also decode their send stamps."""

    def __init__(
        self, port: int, path: str, protocol: str, tally: Tally, target: bytes, sampling: bool, instance: int = 0
    ) -> None:
        super().__init__(port, path, protocol)
        self.tally = tally
        self.target = target
        self.sampling = sampling
        self.instance = instance
        self.answered: asyncio.Future[None] | None = None

    def on_message(self, payload: bytes) -> None:
        count = payload.count(self.target)
        tally = self.tally
        if count:
            tally.received += count
            tally.by_instance[self.instance] += count
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
    With several `instances` (scale-out), the connections are spread over them in blocks, the
    sender on the last, and each instance's CPU is reported over its own deliveries.
    """
    fleet = instances(spec)
    tally = Tally(len(fleet))
    protocol, n = spec["protocol"], spec["connections"]
    grouped = spec["pattern"] != "all"
    target = b"Group" if grouped else b"Broadcast"
    step = max(1, n // spec.get("samplers", 50)) if spec["style"] == "burst" else 1

    def make(i: int) -> FanOutSocket:
        instance = instance_of(i, n + 1, spec)
        port = fleet[instance]["port"]
        return FanOutSocket(port, spec["path"], protocol, tally, target, i % step == 0 and i < n, instance)

    sockets, failed = await open_many(make, n + 1)
    sender, receivers = sockets[-1], sockets[:-1]
    groups: list[str] = []
    if grouped:
        names = [group_of(i, spec) or "" for i in range(len(receivers))]
        await asyncio.gather(*(s.call("JoinGroup", [g]) for s, g in zip(receivers, names, strict=True)))
        groups = sorted(set(names))
    payload = "x" * spec["payload"]
    # a broadcast reaches every socket, the sender too; a group send, its members
    per_send = len(receivers) if grouped else len(sockets)
    sent = 0  # invocations, warm-up included

    def frames(count: int) -> bytes:
        nonlocal sent
        sent += count * (len(groups) if grouped else 1)
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
        window = Window(spec["server_pid"], watched(spec), bool(spec.get("precise_cpu")))
        tally.recording = True
        start, start_by = tally.received, list(tally.by_instance)
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
        window = Window(spec["server_pid"], watched(spec), bool(spec.get("precise_cpu")))
        tally.recording = True
        start, start_by = tally.received, list(tally.by_instance)
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
    if "processes" in result:
        deliveries = [now - before for now, before in zip(tally.by_instance, start_by, strict=True)]
        held = [sum(1 for s in sockets if s.instance == i) for i in range(len(fleet))]
        fleet_figures(result, deliveries, held)
    result.update(
        latency_us=latencies_us(tally.latencies),
        errors=tally.errors + failed,
        connected=len(sockets),
        frames_per_delivery=round(sum(s.frames_in for s in sockets) / max(1, tally.received), 3),
        invocations_sent=sent,
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
    With several `instances` the connections are spread over them, and with `redis_url`
    what Redis holds for them is read before the ramp and after the idle window.
    """
    pid, n = spec["server_pid"], spec["connections"]
    fleet = instances(spec)
    base_rss = procfs.rss_kb(pid)
    fleet_rss = [procfs.rss_kb(instance["pid"]) for instance in fleet]
    redis_before = _redis_figures(spec)
    opened: list[IdleSocket] = []
    setup: list[int] = []

    def make(i: int) -> IdleSocket:
        socket = IdleSocket(fleet[instance_of(i, n, spec)]["port"], spec["path"], spec["protocol"])
        opened.append(socket)
        return socket

    async def keep_alive() -> None:
        while True:
            await asyncio.sleep(10)
            for socket in opened:
                socket.keep_alive()

    pinger = asyncio.create_task(keep_alive())
    ramp = Window(pid, watched(spec))
    sockets, failed = await open_many(make, n, concurrency=spec.get("concurrency", 64), setup_ns=setup)
    ramp_result = ramp.stop()
    pinger.cancel()
    for socket in sockets:
        socket.keep_alive()
    await asyncio.sleep(spec["settle"])
    frames_before = sum(s.frames_in for s in sockets)
    idle = Window(pid, watched(spec))
    await asyncio.sleep(spec["window"])
    result = idle.stop()
    redis_after = _redis_figures(spec)
    ramp_redis = ramp_result.get("processes", {}).get("redis", {}).get("cpu_pct", 0.0)
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
        ramp_core1_cpu_pct=round(ramp_result["client_cpu_pct"] + ramp_redis, 1),
        connect_us=latencies_us(setup),
    )
    if "instances" in spec:
        held = [0] * len(fleet)
        for socket in sockets:
            held[next(i for i, instance in enumerate(fleet) if instance["port"] == socket.port)] += 1
        result.update(_fleet_idle(result, ramp_result, fleet, fleet_rss, held))
    if redis_before is not None and redis_after is not None:
        result.update(_redis_idle(ramp_result, redis_before, redis_after, len(sockets)))
    # the window's own CPU figures describe the idle phase; the ramp's are prefixed
    return result


def _redis_figures(spec: Spec) -> dict[str, Any] | None:
    if not spec.get("redis_url"):
        return None
    from . import redis_process

    channel = spec.get("redis_channel")
    return redis_process.figures(spec["redis_url"], channel.encode() if channel else None)


def _fleet_idle(
    idle: Result, ramp: Result, fleet: list[dict[str, int]], base_rss: list[int], held: list[int]
) -> Result:
    """Per instance, and summed over the fleet: RSS growth per connection, ramp CPU per connection."""
    names = [str(i + 1) for i in range(len(fleet))]
    growth = {name: idle["processes"][name]["rss_kb"] - base for name, base in zip(names, base_rss, strict=True)}
    ramp_cpu = {name: ramp["processes"][name]["cpu_s"] for name in names}
    total = max(1, sum(held))
    return {
        "instance_connections": dict(zip(names, held, strict=True)),
        "instance_rss_per_connection_kb": {
            name: round(growth[name] / max(1, count), 2) for name, count in zip(names, held, strict=True)
        },
        "instance_ramp_us_per_connection": {
            name: round(1e6 * ramp_cpu[name] / max(1, count), 1) for name, count in zip(names, held, strict=True)
        },
        "rss_per_connection_kb": round(sum(growth.values()) / total, 2),
        "ramp_server_us_per_connection": round(1e6 * sum(ramp_cpu.values()) / total, 1),
        "ramp_server_cpu_pct": round(sum(ramp["processes"][name]["cpu_pct"] for name in names), 1),
        "server_cpu_pct": round(sum(idle["processes"][name]["cpu_pct"] for name in names), 2),
    }


def _redis_idle(ramp: Result, before: dict[str, Any], after: dict[str, Any], connections: int) -> Result:
    """What the connections cost Redis: memory and CPU per connection, channels held."""
    redis_ramp = ramp.get("processes", {}).get("redis", {"cpu_s": 0.0})
    return {
        "redis_bytes_per_connection": round((after["used_memory"] - before["used_memory"]) / max(1, connections)),
        "redis_used_memory_kb": round(after["used_memory"] / 1024),
        "redis_channels": after["pubsub_channels"],
        "redis_channels_before": before["pubsub_channels"],
        "redis_all_subscribers": after.get("channel_subscribers"),
        "redis_ramp_us_per_connection": round(1e6 * redis_ramp["cpu_s"] / max(1, connections), 1),
        "redis_publish_calls": after["publish_calls"] - before["publish_calls"],
    }


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
    elif mode == "soak":
        from . import soakgen

        runner = soakgen.run_soak
    else:
        runner = MODES[mode]
    result = asyncio.run(runner(spec))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

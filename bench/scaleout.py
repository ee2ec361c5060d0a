"""Scale-out through Redis: the same loads on instances sharing a redis-server, against one process in memory.

Every case runs twice per repetition: `project` (one process, the in-memory lifetime
manager, as in the other scenarios) and `project-redis` (the Redis backplane on). Pinning:
the instances share core 0, where the single process runs alone, so the project never
gets more CPU than in memory; redis-server runs on core 1 beside the load generator (and
the fake upstream), like a Redis on another machine. CPU is read per process from /proc,
so each instance's figure is its own whatever shares its core.

- broadcast: `Broadcast` to all, 1,000 and 5,000 connections spread over two instances;
  each instance's CPU over the deliveries to its own connections.
- relay: the chat app's token relay with REDIS_URL set (one instance): tokens go to the
  calling connection, which must never touch Redis (PUBLISH calls counted by Redis itself).
- idle: 10,000 connections per instance: RSS per connection, connect time, and what the
  per-connection channels cost Redis. Two instances when the load generator's descriptor
  limit holds 2 x 10,000 sockets, else one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import procfs, redis_process, relay, servers
from .report import Cells, table
from .scenarios import Case, Timing, broadcast_cases, load_under_profile, run_standard

IN_MEMORY = "project"
SCALED = "project-redis"
KINDS = (IN_MEMORY, SCALED)
#: Server CPU per delivery through Redis, on each instance, against in memory: bursts
#: (issue 21) and steady broadcasts; and a burst's frames per delivery through Redis.
BURST_TARGET = 2.0
STEADY_TARGET = 1.3
FRAMES_TARGET = 0.2
#: Relay cost per token with the backplane, against without.
RELAY_TARGET = 1.05
IDLE_PER_INSTANCE = 10_000


def cases(t: Timing) -> Iterator[Case]:
    # burst: records sent in one loop turn share a frame in memory; steady: one frame per delivery either way
    for style in ("burst", "steady 2/s"):
        for connections in (1000, 5000):
            same = next(c for c in broadcast_cases(t) if c.name == f"all {style} json {connections}c")
            params = {**same.params, "instance_count": 2}
            yield Case("scaleout", f"broadcast {same.name}", params, KINDS, client_cpu_key="core1_cpu_pct")
    for chats in (250,) if t.reps == 1 else (250, 500):
        params = {"mode": "relay", "chats": chats, "ramp": 1.0, "warmup": t.warmup, "window": max(t.window, 3.0)}
        yield Case("scaleout", f"relay {chats} chats", params, KINDS, client_cpu_key="core1_cpu_pct")
    limit = procfs.raise_nofile()
    capacity = (limit - 500) // 1000 * 1000
    per_instance = min(IDLE_PER_INSTANCE, capacity)
    count = 2 if capacity >= 2 * per_instance else 1
    params = {
        "mode": "idle",
        "protocol": "json",
        "connections": per_instance,  # per instance: the in-memory process holds as many
        "per_instance": True,
        "instance_count": count,
        "nofile_limit": limit,
        "settle": 2.0,
        "window": t.idle_window,
        "concurrency": 64,
    }
    yield Case("scaleout", f"idle {per_instance} ws per instance", params, KINDS, "ramp_core1_cpu_pct")


def run(case: Case, kind: str, profile_to: Path | None = None) -> dict[str, Any]:
    if case.params["mode"] == "relay":
        return _relay(case, kind, profile_to)
    if kind == IN_MEMORY:
        result = run_standard(case, "project", profile_to)
        result.setdefault("core1_cpu_pct", result.get("client_cpu_pct"))
        return result
    return _fleet(case, profile_to)


def _fleet(case: Case, profile_to: Path | None) -> dict[str, Any]:
    """Instances of the bench hub on one Redis, the load spread over them (py-spy on the first)."""
    from signalr_chat.signalr.redis import RedisChannels

    from .project_server import BENCH_HUB

    count = int(case.params["instance_count"])
    all_channel = RedisChannels(BENCH_HUB, "-").all
    redis = redis_process.start()
    fleet: list[servers.Server] = []
    try:
        for _ in range(count):
            fleet.append(servers.start("project", env={"BENCH_REDIS_URL": redis.url}))
        subscribed = redis_process.figures(redis.url, all_channel)["channel_subscribers"]
        if subscribed != count:
            raise RuntimeError(f"{subscribed} of {count} instances subscribed to {all_channel.decode()}")
        connections = int(case.params["connections"]) * (count if case.params.get("per_instance") else 1)
        spec = {
            **case.params,
            "connections": connections,
            "port": fleet[0].port,
            "server_pid": fleet[0].pid,
            "path": "/hub",
            "instances": [{"port": server.port, "pid": server.pid} for server in fleet],
            "redis_pid": redis.pid,
            "redis_url": redis.url,
            "redis_channel": all_channel.decode(),
        }
        budget = 120 + 4 * float(case.params.get("window", 5)) + connections / 200
        result = load_under_profile(spec, budget, profile_to)
        for server in fleet:
            server.check_alive(result)
        return result
    finally:
        for server in fleet:
            server.stop()
        redis.close()


def _relay(case: Case, kind: str, profile_to: Path | None) -> dict[str, Any]:
    """The chat app's relay, without or with REDIS_URL; Redis counts the PUBLISH calls it made."""
    if kind == IN_MEMORY:
        with relay.relay_stack("project") as (upstream, server, path):
            return relay.load(case, upstream, server, path, profile_to)
    redis = redis_process.start()
    try:
        with relay.relay_stack("project", env={"REDIS_URL": redis.url}) as (upstream, server, path):
            before, redis_cpu = redis_process.figures(redis.url), procfs.cpu_seconds(redis.pid)
            result = relay.load(case, upstream, server, path, profile_to)
            after = redis_process.figures(redis.url)
            result.update(
                # the chat subscribed its hub's channels: the backplane is on (REDIS_URL understood)
                backplane_on=before["pubsub_channels"] > 0,
                redis_channels=before["pubsub_channels"],
                redis_publish_calls=after["publish_calls"] - before["publish_calls"],
                redis_cpu_s=round(procfs.cpu_seconds(redis.pid) - redis_cpu, 3),
            )
            return result
    finally:
        redis.close()


# -- report ------------------------------------------------------------------------------------


def report_section(cells: Cells) -> tuple[list[str], list[str]]:
    if not cells.cases:
        return [], []
    lines = [
        "## Scale-out through Redis",
        "",
        "Each case twice per repetition: **in memory**, one project process (as in the sections",
        "above), and **Redis**, project instances sharing one `redis-server` through",
        "`RedisHubLifetimeManager`. The instances share core 0, where the single process runs",
        "alone, so together they never get more CPU than it; redis-server runs on core 1 beside",
        "the load generator (and the fake upstream), as a Redis on another machine would. Every",
        "process's CPU is read from /proc on its own, so each instance's figure is its own.",
        "Needs `redis-server` (the Debian package `make test` installs); Redis runs empty, without",
        "persistence, on a free loopback port.",
        "",
    ]
    targets: list[str] = []
    for section in (_broadcast, _relay_report, _idle):
        more, checks = section(cells)
        lines += more
        targets += checks
    return lines, targets


def _broadcast(cells: Cells) -> tuple[list[str], list[str]]:
    names = [c for c in cells.cases if c.startswith("broadcast ")]
    if not names:
        return [], []
    header = [
        "case",
        "deliveries/s memory / Redis",
        "us/delivery memory",
        "us/delivery Redis instance 1 / 2",
        "Redis/memory instance 1 / 2",
        "redis-server us/delivery",
        "p50 ms memory / Redis",
        "p99 ms memory / Redis",
        "frames/delivery memory / Redis",
        "core-1 CPU % memory / Redis",
    ]
    rows: list[list[str]] = []
    measured: dict[bool, list[str]] = {True: [], False: []}
    worst = {True: 0.0, False: 0.0}
    frames: list[str] = []
    frames_worst = 0.0
    for case in names:
        bursty = " burst " in case
        base = cells.median(case, IN_MEMORY, "server_us_per_msg")
        per = [cells.median(case, SCALED, f"instance_us_per_msg.{i}") for i in ("1", "2")]
        ratios = [None if v is None or not base else v / base for v in per]
        known = [r for r in ratios if r is not None]
        label = case.removeprefix("broadcast all ").replace(" json", "")
        if known:
            worst[bursty] = max(worst[bursty], *known)
            measured[bursty].append(f"{label}: " + " / ".join(f"{r:.2f}x" for r in known))
        shared = cells.median(case, SCALED, "frames_per_delivery")
        if bursty and shared is not None:
            frames_worst = max(frames_worst, shared)
            frames.append(f"{label}: {shared:.2f}")
        rows.append(
            [
                case.removeprefix("broadcast "),
                _pair(cells, case, "throughput", digits=0),
                cells.cell(case, IN_MEMORY, "server_us_per_msg", digits=2),
                " / ".join(_opt(v, 2) for v in per),
                " / ".join("-" if r is None else f"{r:.2f}x" for r in ratios),
                _opt(cells.median(case, SCALED, "redis_us_per_msg"), 3),
                _pair(cells, case, "latency_us.p50", scale=1e-3),
                _pair(cells, case, "latency_us.p99", scale=1e-3),
                _pair(cells, case, "frames_per_delivery", digits=2),
                _pair(cells, case, "core1_cpu_pct", digits=0),
            ]
        )
    lines = [
        "### Broadcast to all, over two instances",
        "",
        "The broadcast section's `all burst json` cases: one sender (on instance 2) calls",
        "`Broadcast`, which instance 2 publishes once to the hub's `all` channel; both instances",
        "receive it and write it to their own connections (half each). us/delivery on an instance",
        "is its CPU over the deliveries to its connections; the sender's instance also decodes the",
        "invocation and publishes. redis-server's CPU is over all deliveries. In a burst, the",
        "records one connection gets in one loop turn share a WebSocket frame; through Redis, the",
        "deliveries of a burst are spaced (`REDIS_COALESCE_WINDOW_MS`, 20 ms), each taking every",
        "message that came meanwhile. The steady cases (2 broadcasts/s) send one frame per delivery in both.",
        "",
        *table(header, rows),
    ]
    targets = []
    for bursty, target, kind in ((True, BURST_TARGET, "bursts"), (False, STEADY_TARGET, "steady broadcasts")):
        if measured[bursty]:
            ok = worst[bursty] <= target
            targets.append(
                f"| {kind.capitalize()} through Redis: server CPU per delivery <= {target}x in memory, on each "
                f"instance | {'; '.join(measured[bursty])} (instance 1 / 2) | {'met' if ok else '**missed**'} |"
            )
    if frames:
        ok = frames_worst <= FRAMES_TARGET
        targets.append(
            f"| Bursts through Redis: frames per delivery <= {FRAMES_TARGET} | {'; '.join(frames)} | "
            f"{'met' if ok else '**missed**'} |"
        )
    return lines, targets


def _relay_report(cells: Cells) -> tuple[list[str], list[str]]:
    names = [c for c in cells.cases if c.startswith("relay ")]
    if not names:
        return [], []
    header = [
        "chats",
        "tokens/s memory / Redis",
        "server us/token memory",
        "server us/token Redis",
        "Redis/memory",
        "gap p99 ms memory / Redis",
        "Redis channels held",
        "PUBLISH calls during the run",
    ]
    rows, ratios, publishes, off = [], [], [], False
    for case in names:
        mine = cells.median(case, SCALED, "server_us_per_msg")
        base = cells.median(case, IN_MEMORY, "server_us_per_msg")
        runs = cells.runs(case, SCALED)
        on = [r.get("backplane_on") for r in runs if "backplane_on" in r]
        off = off or (bool(on) and not all(on))
        ratio = mine / base if mine is not None and base else None
        if ratio is not None:
            ratios.append((case, ratio))
        calls = [int(r["redis_publish_calls"]) for r in runs if "redis_publish_calls" in r]
        publishes += calls
        rows.append(
            [
                case.split()[1],
                _pair(cells, case, "throughput", digits=0),
                cells.cell(case, IN_MEMORY, "server_us_per_msg", digits=2),
                cells.cell(case, SCALED, "server_us_per_msg", digits=2),
                "-" if ratio is None else f"{ratio:.3f}x",
                _pair(cells, case, "gap_ms.p99"),
                _opt(cells.median(case, SCALED, "redis_channels"), 0),
                ", ".join(str(c) for c in calls) or "-",
            ]
        )
    lines = [
        "### Token relay with the backplane on",
        "",
        "The relay section's load on the chat app, without and with `REDIS_URL` (one instance;",
        "`HISTORY_STORE=memory` in both, so the backplane is the only difference). Tokens go to the",
        "calling connection, which the Redis manager serves locally; Redis' own `INFO commandstats`",
        "counts the PUBLISH calls from the server's start to the end of the run.",
        "",
        *table(header, rows),
    ]
    targets = []
    if off:
        targets.append(
            "| Token relay with the backplane: cost per token within 5% of without | not measured: the chat app "
            "ignored REDIS_URL (it subscribed no channel in Redis) | not measured |"
        )
    elif ratios:
        text = ", ".join(f"{c.split()[1]} chats: {r:.3f}x" for c, r in ratios)
        ok = max(r for _, r in ratios) <= RELAY_TARGET
        targets.append(
            f"| Token relay with the backplane: cost per token within 5% of without | {text} | "
            f"{'met' if ok else '**missed**'} |"
        )
    if publishes and not off:
        ok = not any(publishes)
        targets.append(
            f"| Single-connection sends (the relay) do not touch Redis | {sum(publishes)} PUBLISH calls over "
            f"{len(publishes)} relay runs | {'met' if ok else '**missed**'} |"
        )
    return lines, targets


def _idle(cells: Cells) -> tuple[list[str], list[str]]:
    names = [c for c in cells.cases if c.startswith("idle ")]
    if not names:
        return [], []
    header = [
        "case",
        "instances x connections",
        "KB/conn memory",
        "KB/conn Redis (per instance)",
        "Redis/memory KB",
        "connect p50 / p99 ms memory",
        "connect p50 / p99 ms Redis",
        "conn/s memory / Redis",
        "ramp server us/conn memory / Redis",
        "redis-server bytes/conn",
        "redis-server ramp us/conn",
        "Redis channels (all's subscribers)",
    ]
    rows, measured = [], []
    for case in names:
        count = next((r["params"]["instance_count"] for r in cells.runs(case, SCALED)), None)
        per_instance = int(case.split()[1])
        base = cells.median(case, IN_MEMORY, "rss_per_connection_kb")
        per = [cells.median(case, SCALED, f"instance_rss_per_connection_kb.{i}") for i in ("1", "2")]
        per_known = [v for v in per if v is not None]
        mine = cells.median(case, SCALED, "rss_per_connection_kb")
        ratio = mine / base if mine is not None and base else None
        connect = {k: _p50_p99(cells, case, k, "connect_us") for k in KINDS}
        channels = cells.median(case, SCALED, "redis_channels")
        subscribers = cells.median(case, SCALED, "redis_all_subscribers")
        redis_bytes = cells.median(case, SCALED, "redis_bytes_per_connection")
        rows.append(
            [
                case,
                "-" if count is None else f"{count} x {per_instance:,}",
                cells.cell(case, IN_MEMORY, "rss_per_connection_kb"),
                " / ".join(_opt(v, 1) for v in per_known) or "-",
                "-" if ratio is None else f"{ratio:.2f}x",
                connect[IN_MEMORY],
                connect[SCALED],
                _pair(cells, case, "ramp_per_s", digits=0),
                _pair(cells, case, "ramp_server_us_per_connection", digits=0),
                _opt(redis_bytes, 0),
                _opt(cells.median(case, SCALED, "redis_ramp_us_per_connection"), 1),
                f"{_opt(channels, 0)} ({_opt(subscribers, 0)})",
            ]
        )
        if mine is not None and base is not None:
            measured.append(
                f"{per_instance:,} per instance: {base:.1f} -> {mine:.1f} KB/conn ({ratio:.2f}x), connect p50 / p99 "
                f"{connect[IN_MEMORY]} -> {connect[SCALED]} ms, Redis {_opt(redis_bytes, 0)} B and one channel "
                f"per connection ({_opt(channels, 0)} channels)"
            )
    lines = [
        "### Idle connections with the backplane on",
        "",
        "The idle section's load at 10,000 connections per instance (two instances when the load",
        "generator's descriptor limit holds both, else one; the column says which). With Redis each",
        "connection subscribes its own channel (`{hub}:connection:{id}`), confirmed before the",
        "handshake completes: connect is negotiate to handshake response, per connection, 64 in",
        "setup at once. redis-server bytes/conn is its `used_memory` growth over the connections;",
        "the channels are `INFO stats` pubsub_channels with the connections held, the subscribers",
        "those of the hub's `all` channel (one per instance).",
        "",
        *table(header, rows),
    ]
    targets = []
    if measured:
        targets.append(
            "| Idle connections with the backplane: memory per connection and subscription cost at "
            f"10,000 per instance | {'; '.join(measured)} | measured (no target) |"
        )
    return lines, targets


def _pair(cells: Cells, case: str, key: str, scale: float = 1.0, digits: int = 1) -> str:
    return " / ".join(_opt(None if (v := cells.median(case, k, key)) is None else v * scale, digits) for k in KINDS)


def _p50_p99(cells: Cells, case: str, kind: str, key: str) -> str:
    p50, p99 = cells.median(case, kind, f"{key}.p50"), cells.median(case, kind, f"{key}.p99")
    return "-" if p50 is None or p99 is None else f"{p50 / 1000:.2f} / {p99 / 1000:.2f}"


def _opt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"

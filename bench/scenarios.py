"""What is measured: the cases of each scenario, and running one case on one server.

Each case runs on every server that can serve it, interleaved (floor, aiosignalr,
project, floor, aiosignalr, project, ...), each run on a fresh server process on core 0
with the load generator on core 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import procfs, servers

#: A run whose load generator used this share of its core measured the client, not the server.
SATURATED_PCT = 90.0
#: What `python -m bench` runs by default.
SCENARIOS = ("echo", "broadcast", "idle", "relay", "ttft", "deflate", "scaleout", "azure", "telemetry")
#: Run only when named: the soak takes 10 minutes of load on its own (`--scenario soak`).
OPT_IN = ("soak",)


@dataclass(frozen=True)
class Timing:
    reps: int
    warmup: float
    window: float
    idle_window: float


FULL = Timing(reps=3, warmup=1.0, window=5.0, idle_window=10.0)
QUICK = Timing(reps=1, warmup=0.5, window=2.0, idle_window=5.0)


@dataclass(frozen=True)
class Case:
    scenario: str
    name: str
    params: dict[str, Any]
    kinds: tuple[str, ...] = servers.KINDS
    #: The client-side figure that decides saturation (the idle ramp has its own).
    client_cpu_key: str = "client_cpu_pct"
    extra: dict[str, Any] = field(default_factory=dict)
    #: Repetitions whatever the timing says (the soak's one long run), unless --reps is given.
    reps: int | None = None


def echo_cases(t: Timing) -> Iterator[Case]:
    base = {"mode": "echo", "warmup": t.warmup, "window": t.window}
    for protocol in ("json", "messagepack"):
        for connections in (1, 100, 1000):
            for size in (32, 2048):
                name = f"ws {protocol} {connections}c {_size(size)}"
                params = {**base, "protocol": protocol, "connections": connections, "payload": size}
                yield Case("echo", name, params)
    # the same Echo written as an `async def`: what a task per invocation costs
    params = {**base, "protocol": "json", "connections": 100, "payload": 32, "target": "EchoAsync"}
    yield Case("echo", "ws json 100c 32B async def", params)
    for mode, label in (("sse-echo", "sse"), ("lp-echo", "longpolling")):
        params = {**base, "mode": mode, "protocol": "json", "connections": 100, "payload": 32}
        yield Case("echo", f"{label} json 100c 32B", params)


def broadcast_cases(t: Timing) -> Iterator[Case]:
    base = {"mode": "fanout", "warmup": t.warmup, "window": t.window, "payload": 32}
    for connections in (1000, 5000):
        burst = 20 if connections == 1000 else 8
        for protocol in ("json", "messagepack"):
            yield Case(
                "broadcast",
                f"all burst {protocol} {connections}c",
                {
                    **base,
                    "protocol": protocol,
                    "connections": connections,
                    "pattern": "all",
                    "style": "burst",
                    "burst": burst,
                },
            )
        yield Case(
            "broadcast",
            f"all steady 2/s json {connections}c",
            {
                **base,
                "protocol": "json",
                "connections": connections,
                "pattern": "all",
                "style": "steady",
                "rate": 2,
                "window": max(t.window, 3.0),
            },
        )
        yield Case(
            "broadcast",
            f"groups of 10 burst json {connections}c",
            {
                **base,
                "protocol": "json",
                "connections": connections,
                "pattern": "groups-small",
                "group_size": 10,
                "style": "burst",
                "burst": 4 if connections == 1000 else 2,
            },
        )
        yield Case(
            "broadcast",
            f"10 big groups burst json {connections}c",
            {
                **base,
                "protocol": "json",
                "connections": connections,
                "pattern": "groups-big",
                "group_count": 10,
                "style": "burst",
                "burst": burst,
            },
        )


def idle_cases(t: Timing, sizes: tuple[int, ...]) -> Iterator[Case]:
    """A size beyond this machine's descriptor limit runs at the largest size that fits, and says so.

    Both processes raise RLIMIT_NOFILE, but only up to the hard limit unless they hold
    CAP_SYS_RESOURCE (containers often drop it); past ~28,000 the load generator also
    spreads its sockets over source addresses 127.0.0.x to get more ports.
    """
    limit = procfs.raise_nofile()
    capacity = (limit - 500) // 1000 * 1000
    for requested in sizes:
        connections = min(requested, capacity)
        params = {
            "mode": "idle",
            "protocol": "json",
            "connections": connections,
            "requested": requested,
            "nofile_limit": limit,
            "settle": 2.0,
            "window": t.idle_window,
            "concurrency": 64,
        }
        yield Case("idle", f"{connections} idle ws", params, client_cpu_key="ramp_client_cpu_pct")


def deflate_cases(t: Timing) -> Iterator[Case]:
    """The idle and broadcast cases at 1,000 connections again, with permessage-deflate on.

    Clients offer the extension as browsers do; floor and project turn it on with
    BENCH_DEFLATE=1 (the project through `HubOptions.websocket_compression`).
    """
    kinds = ("floor", "project")
    idle = next(idle_cases(t, (1000,)))
    yield Case("deflate", f"{idle.name}, deflate", {**idle.params, "deflate": True}, kinds, idle.client_cpu_key)
    burst = next(c for c in broadcast_cases(t) if c.name == "all burst json 1000c")
    yield Case("deflate", f"{burst.name}, deflate", {**burst.params, "deflate": True}, kinds)


def all_cases(t: Timing, scenarios: tuple[str, ...], idle_sizes: tuple[int, ...]) -> list[Case]:
    cases: list[Case] = []
    if "echo" in scenarios:
        cases += echo_cases(t)
    if "broadcast" in scenarios:
        cases += broadcast_cases(t)
    if "idle" in scenarios:
        cases += idle_cases(t, idle_sizes)
    if "deflate" in scenarios:
        cases += deflate_cases(t)
    if "relay" in scenarios or "ttft" in scenarios:
        from . import relay

        if "relay" in scenarios:
            cases += relay.relay_cases(t)
        if "ttft" in scenarios:
            cases += relay.ttft_cases(t)
    if "scaleout" in scenarios:
        from . import scaleout

        cases += scaleout.cases(t)
    if "azure" in scenarios:
        from . import azure

        cases += azure.cases(t)
    if "telemetry" in scenarios:
        from . import telemetry

        cases += telemetry.cases(t)
    if "soak" in scenarios:
        from . import soak

        cases += soak.cases(t)
    return cases


def netdev_max_backlog() -> int:
    """Loopback packets queued per CPU before the kernel drops them: a 5,000-socket fan-out
    sends more than the default 1,000 at once, and each drop costs a 200+ ms retransmit."""
    with open("/proc/sys/net/core/netdev_max_backlog") as value:
        return int(value.read())


def _size(size: int) -> str:
    return f"{size // 1024}KB" if size >= 1024 else f"{size}B"


# -- running ---------------------------------------------------------------------------------


def loadgen(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run the load generator on core 1; its last stdout line is the result."""
    argv = servers.pinned(servers.CLIENT_CORE, [sys.executable, "-m", "bench.loadgen", json.dumps(spec)])
    done = subprocess.run(argv, cwd=servers.ROOT, capture_output=True, text=True, timeout=timeout)
    if done.stderr.strip():
        print("    " + done.stderr.strip().replace("\n", "\n    ")[-1500:], file=sys.stderr, flush=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


Runner = Callable[[Case, str, "Path | None"], dict[str, Any]]


def run_case(
    case: Case, kind: str, rep: int, run_id: str, quick: bool, profile_to: Path | None = None
) -> dict[str, Any]:
    """One run: a fresh server, the load, the record (errors included, never raised).

    With `profile_to`, py-spy samples the server during the load and writes its stacks there.
    """
    record: dict[str, Any] = {
        "run_id": run_id,
        "scenario": case.scenario,
        "case": case.name,
        "server": kind,
        "rep": rep,
        "quick": quick,
        "params": case.params,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "netdev_max_backlog": netdev_max_backlog(),
    }
    runner: Runner = _custom_runner(case) or run_standard
    try:
        result = runner(case, kind, profile_to)
        if profile_to is not None:
            record["profile"] = str(profile_to)
        record.update(result)
        client_cpu = result.get(case.client_cpu_key)
        record["saturated"] = client_cpu is not None and client_cpu >= SATURATED_PCT
        record["ok"] = not result.get("errors")
    except Exception as exc:
        record.update(ok=False, error=f"{type(exc).__name__}: {exc}", saturated=False)
    return record


def _custom_runner(case: Case) -> Runner | None:
    if case.scenario in ("relay", "ttft"):
        from . import relay

        return relay.run
    if case.scenario == "scaleout":
        from . import scaleout

        return scaleout.run
    if case.scenario == "azure":
        from . import azure

        return azure.run
    if case.scenario == "telemetry":
        from . import telemetry

        return telemetry.run
    if case.scenario == "soak":
        from . import soak

        return soak.run
    return None


def measured_seconds(params: dict[str, Any]) -> float:
    return float(params.get("warmup", 0)) + float(params.get("window", 5))


def load_under_profile(
    spec: dict[str, Any], budget: float, profile_to: Path | None, delay: float = 0.5
) -> dict[str, Any]:
    """The load generator's run; with `profile_to`, py-spy on the server from `delay` s in (past
    the connections' setup) for the warm-up and the window."""
    if profile_to is None:
        return loadgen(spec, budget)
    from . import profile

    with profile.sampling(spec["server_pid"], measured_seconds(spec), profile_to, delay):
        return loadgen(spec, budget)


def run_standard(case: Case, kind: str, profile_to: Path | None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """A fresh `kind` server (with `env` added to its environment) under the case's load."""
    if case.params.get("deflate"):
        env = {**(env or {}), "BENCH_DEFLATE": "1"}
    server = servers.start(kind, env=env)
    try:
        spec = {**case.params, "port": server.port, "server_pid": server.pid, "path": "/hub"}
        budget = 120 + 4 * float(case.params.get("window", 5)) + case.params.get("connections", 0) / 200
        return server.check_alive(load_under_profile(spec, budget, profile_to))
    finally:
        server.stop()

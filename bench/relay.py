"""Token relay and time to first token: the chat app against a raw relay, over a fake upstream.

The fake upstream runs on core 1 beside the load generator; the server under test (the
real chat app with `AI_PROVIDER=openai`, or `relay_floor`) runs on core 0. aiosignalr has
no chat to serve, so these scenarios compare the project with the floor only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import servers

if TYPE_CHECKING:
    from .report import Cells
    from .scenarios import Case, Timing

KINDS = ("relay-floor", "project")
FULL_LEVELS = (50, 100, 250, 500, 750, 1000, 1500, 2000)
QUICK_LEVELS = (50, 100, 250, 500, 1000, 2000)
#: The chat app as an operator would run it against an OpenAI-compatible server, minus the limits.
CHAT_ENV = {
    "AI_PROVIDER": "openai",
    "OPENAI_API_KEY": "x",
    "OPENAI_MODEL": "bench",
    "RATE_LIMIT_MESSAGES": "0",
    "HISTORY_STORE": "memory",
    "LOG_LEVEL": "WARNING",
    "AI_MAX_RETRIES": "0",
    "AI_TIMEOUT_SECONDS": "120",
}


def relay_cases(t: Timing) -> Iterator[Case]:
    from .scenarios import Case

    levels = QUICK_LEVELS if t.reps == 1 else FULL_LEVELS
    for chats in levels:
        params = {"mode": "relay", "chats": chats, "ramp": 1.0, "warmup": t.warmup, "window": max(t.window, 3.0)}
        yield Case("relay", f"{chats} chats", params, kinds=KINDS, client_cpu_key="core1_cpu_pct")


def ttft_cases(t: Timing) -> Iterator[Case]:
    from .scenarios import Case

    params = {"mode": "ttft", "pairs": 30 if t.reps == 1 else 100, "warmup_pairs": 5, "tokens": 1}
    # one request at a time: the client's CPU share says nothing about saturation here
    yield Case("ttft", "new conversation", {**params, "fresh": True}, kinds=KINDS, client_cpu_key="-")
    yield Case("ttft", "conversation at the history limit", params, kinds=KINDS, client_cpu_key="-")


@contextmanager
def relay_stack(
    kind: str, env: Mapping[str, str] | None = None, log: Path | None = None
) -> Iterator[tuple[servers.Server, servers.Server, str]]:
    """The fake upstream on core 1 and the server under test on core 0: (upstream, server, hub path).

    `env` adds to the chat app's environment (the scale-out scenario's REDIS_URL, the azure
    scenario's AZURE_SIGNALR_CONNECTION_STRING, the soak's SQLite history and sign-in); `log`
    receives the chat app's log.
    """
    upstream = servers.start("upstream", core=servers.CLIENT_CORE)
    try:
        url = f"http://127.0.0.1:{upstream.port}/v1"
        if kind == "project":
            chat_env = {**CHAT_ENV, "OPENAI_BASE_URL": url, **(env or {})}
            server = servers.start("project", app="chat", env=chat_env, log=log)
            path = "/chatHub"
        else:
            server = servers.start(kind, args=("--upstream", url))
            path = "/hub"
        try:
            yield upstream, server, path
        finally:
            server.stop()
    finally:
        upstream.stop()


def load(
    case: Case,
    upstream: servers.Server,
    server: servers.Server,
    path: str,
    profile_to: Path | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The relay's load generator against a started stack; `extra` adds to its spec (the azure
    scenario's `double_pid`)."""
    from .scenarios import load_under_profile

    spec = {
        **case.params,
        "port": server.port,
        "server_pid": server.pid,
        "path": path,
        "upstream_pid": upstream.pid,
        "upstream_port": upstream.port,
        **(extra or {}),
    }
    return server.check_alive(load_under_profile(spec, 180 + case.params.get("chats", 0) / 20, profile_to))


def run(case: Case, kind: str, profile_to: Path | None = None) -> dict[str, Any]:
    with relay_stack(kind) as (upstream, server, path):
        return load(case, upstream, server, path, profile_to)


# -- report ------------------------------------------------------------------------------------


def knee(cells: Cells, kind: str) -> tuple[int | None, bool]:
    """The most chats a server relayed at pace (gap p99 <= 2x 20 ms, every chat streaming),
    and whether the knee may lie beyond it: the largest level kept pace too, or the first
    level that did not had core 1 (load generator + upstream) saturated, not the server."""
    levels = sorted((int(c.split()[0]), c) for c in cells.cases)
    best: int | None = None
    for chats, case in levels:
        runs = cells.runs(case, kind)
        if not runs:
            continue
        paced = sum(1 for r in runs if r.get("keeps_pace")) * 2 > len(runs)
        if paced:
            best = chats
        else:
            return best, all(r.get("saturated") for r in runs)
    return best, True


def report_section(relay: Cells, ttft: Cells) -> tuple[list[str], list[str]]:
    lines: list[str] = []
    targets: list[str] = []
    if relay.cases:
        header = ["chats"] + [f"{k} tokens/s" for k in KINDS]
        header += [f"{k} latency p50 / p99 / p99.9 ms" for k in KINDS]
        header += [f"{k} gap p99 ms" for k in KINDS]
        header += ["streaming chats f/p", "server us/token f/p", "core-1 CPU % f/p"]
        rows = []
        for case in relay.cases:
            row = [case.split()[0]]
            row += [relay.cell(case, k, "throughput", digits=0) for k in KINDS]
            for k in KINDS:
                parts = [relay.median(case, k, f"latency_us.{p}") for p in ("p50", "p99", "p99.9")]
                row.append(" / ".join("-" if v is None else f"{v / 1000:.1f}" for v in parts))
            row += [relay.cell(case, k, "gap_ms.p99") for k in KINDS]
            row.append(" / ".join(_opt(relay.median(case, k, "chats_streaming")) for k in KINDS))
            row.append(" / ".join(_opt(relay.median(case, k, "server_us_per_msg"), 1) for k in KINDS))
            row.append(" / ".join(_opt(relay.median(case, k, "core1_cpu_pct")) for k in KINDS))
            rows.append(row)
        knees = {k: knee(relay, k) for k in KINDS}
        knee_text = ", ".join(f"{k}: {_knee(*knees[k])}" for k in KINDS)
        lines += [
            "## Token relay",
            "",
            "N chats each call `SendMessage`; the fake upstream streams 50 tokens/s per chat, each token",
            "stamped with its emit time; latency is emit to receipt at the client, the gap is between a",
            "chat's consecutive tokens (nominal 20 ms). The knee is the most chats relayed with gap p99 <=",
            f"40 ms and every chat streaming: {knee_text}. Core 1 carries the load generator and the",
            "fake upstream: a level where it nears 100% is limited by them, not by the server.",
            "",
        ]
        from .report import table

        lines += table(header, rows)
        (project_knee, project_open), (floor_knee, floor_open) = knees["project"], knees["relay-floor"]
        if project_knee is not None and floor_knee is not None:
            ratio = project_knee / floor_knee
            bound = " (the floor's knee lies beyond, past what core 1 can load: an upper bound)" if floor_open else ""
            targets.append(
                f"| Token relay knee >= 0.8x floor | project {_knee(project_knee, project_open)} chats, "
                f"floor {_knee(floor_knee, floor_open)}: {ratio:.2f}x{bound} | "
                f"{'met' if ratio >= 0.8 and not (floor_open and not project_open) else '**missed**'} |"
            )
        at_1000 = next((c for c in relay.cases if c.startswith("1000 ")), None)
        if at_1000 is not None:
            mine = relay.median(at_1000, "project", "latency_us.p99")
            floor = relay.median(at_1000, "relay-floor", "latency_us.p99")
            if mine is not None and floor is not None:
                added = (mine - floor) / 1000
                targets.append(
                    f"| < 1 ms added p99 latency at 1,000 chats | p99 {mine / 1000:.1f} ms vs floor "
                    f"{floor / 1000:.1f} ms: {added:+.1f} ms | {'met' if added < 1 else '**missed**'} |"
                )
    if ttft.cases:
        header = ["case", "server", "direct p50 / p99 ms", "through the server p50 / p99 ms", "added p50 / p99 ms"]
        rows = []
        for case in ttft.cases:
            for k in KINDS:
                row = [case, k]
                for key in ("direct_us", "hub_us", "overhead_us"):
                    p50, p99 = ttft.median(case, k, f"{key}.p50"), ttft.median(case, k, f"{key}.p99")
                    row.append("-" if p50 is None or p99 is None else f"{p50 / 1000:.2f} / {p99 / 1000:.2f}")
                rows.append(row)
        from .report import table

        lines += [
            "## Time to first token",
            "",
            "One chat at a time, paired: a request straight to the fake upstream, then `SendMessage`",
            "through the server (order alternating), time from sending to the first token. A new",
            "conversation has no history; the other has reached the server's history limit",
            "(`MAX_HISTORY_MESSAGES`, 50), so every request carries 50 earlier messages.",
            "",
            *table(header, rows),
        ]
    return lines, targets


def _knee(chats: int | None, beyond: bool) -> str:
    if chats is None:
        return "below the smallest level"
    return f">= {chats}" if beyond else str(chats)


def _opt(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"

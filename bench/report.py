"""docs/benchmarks.md and .png from the JSONL records: medians, ranges, ratios, targets.

Numbers are medians over the repetitions with (min-max) beside them; a run whose load
generator was saturated, or that had errors, is shown but marked, and kept out of the
medians when clean runs of the same cell exist.
"""

from __future__ import annotations

import json
import math
import platform
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import servers, stats

Record = dict[str, Any]
KINDS = servers.KINDS
FINDINGS = Path(__file__).resolve().parent / "findings.md"


def load(path: Path) -> list[Record]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def value(record: Record, key: str) -> Any:
    current: Any = record
    for part in key.split(".", 1):  # "latency_us.p99.9": one level of nesting
        if not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
    return current


class Cells:
    """The records of one scenario, by case and server, in the order they were run."""

    def __init__(self, records: Iterable[Record], scenario: str) -> None:
        self.records = [r for r in records if r["scenario"] == scenario]
        self.cases = list(dict.fromkeys(r["case"] for r in self.records))

    def runs(self, case: str, kind: str) -> list[Record]:
        runs = [r for r in self.records if r["case"] == case and r["server"] == kind]
        clean = [r for r in runs if r.get("ok") and not r.get("saturated")]
        return clean or [r for r in runs if "error" not in r or r.get("ok")]

    def values(self, case: str, kind: str, key: str) -> list[float]:
        out = []
        for record in self.runs(case, kind):
            v = value(record, key)
            if isinstance(v, (int, float)) and not math.isnan(v):
                out.append(float(v))
        return out

    def median(self, case: str, kind: str, key: str) -> float | None:
        values = self.values(case, kind, key)
        return stats.spread(values)[0] if values else None

    def cell(self, case: str, kind: str, key: str, scale: float = 1.0, digits: int = 1) -> str:
        values = [v * scale for v in self.values(case, kind, key)]
        runs = [r for r in self.records if r["case"] == case and r["server"] == kind]
        if not runs:
            return "n/a"
        if not values:
            errors = {str(r.get("error", "errors")) for r in runs}
            return "failed" if errors else "-"
        median, low, high = stats.spread(values)
        text = _num(median, digits)
        if len(values) > 1:
            text += f" ({_num(low, digits)}-{_num(high, digits)})"
        if any(r.get("saturated") for r in runs):
            text += " sat"
        if any(not r.get("ok") for r in runs):
            text += " err"
        return text

    def ratio(self, case: str, key: str, other: str, invert: bool = False) -> float | None:
        mine, theirs = self.median(case, "project", key), self.median(case, other, key)
        if mine is None or theirs is None or theirs == 0 or mine == 0:
            return None
        return theirs / mine if invert else mine / theirs


def _num(v: float, digits: int) -> str:
    if abs(v) >= 10_000:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


# -- sections --------------------------------------------------------------------------------


def echo_section(records: list[Record]) -> tuple[list[str], list[str]]:
    cells = Cells(records, "echo")
    if not cells.cases:
        return [], []
    header = ["case"] + [f"{k} msg/s" for k in KINDS] + [f"{k} us/msg" for k in KINDS]
    header += ["project/floor us", "project/aiosignalr msg/s", "p99 ms f/a/p", "client CPU % f/a/p"]
    rows = []
    for case in cells.cases:
        row = [case]
        row += [cells.cell(case, k, "throughput", digits=0) for k in KINDS]
        row += [cells.cell(case, k, "server_us_per_msg") for k in KINDS]
        row.append(_ratio(cells.ratio(case, "server_us_per_msg", "floor")))
        row.append(_ratio(cells.ratio(case, "throughput", "aiosignalr")))
        row.append(" / ".join(_opt(cells.median(case, k, "latency_us.p99"), 1e-3) for k in KINDS))
        row.append(" / ".join(_opt(cells.median(case, k, "client_cpu_pct"), 1, 0) for k in KINDS))
        rows.append(row)
    lines = [
        "## Echo: invocation round trip",
        "",
        "Each connection keeps one `Echo(payload)` invocation in flight and sends the next as its",
        "Completion arrives; throughput over the window, server CPU per invocation from /proc.",
        "`Echo` is a plain `def` in both SignalR servers' hubs: the project calls it without a task",
        "(as ASP.NET Core calls a synchronous hub method), aiosignalr starts a task per invocation",
        "either way. The `async def` row calls `EchoAsync`, the same method as a coroutine, which",
        "both run as a task per invocation.",
        "",
        *table(header, rows),
    ]
    targets = []
    per_msg = [cells.ratio(c, "server_us_per_msg", "floor") for c in cells.cases if c.startswith("ws ")]
    per_msg_known = [r for r in per_msg if r is not None]
    if per_msg_known:
        worst = max(per_msg_known)
        median = stats.spread(per_msg_known)[0]
        targets.append(
            f"| Echo server CPU per invocation <= 1.25x floor | median {median:.2f}x, worst {worst:.2f}x "
            f"over {len(per_msg_known)} WebSocket cases | {_verdict(worst <= 1.25, median <= 1.25)} |"
        )
    at_100 = [c for c in cells.cases if c.startswith("ws ") and " 100c " in c]
    tput = [cells.ratio(c, "throughput", "aiosignalr") for c in at_100]
    tput_known = [r for r in tput if r is not None]
    if tput_known:
        low = min(tput_known)
        targets.append(
            f"| Echo throughput >= 2.5x aiosignalr at 100 connections | {', '.join(f'{r:.2f}x' for r in tput_known)} "
            f"| {_verdict(low >= 2.5, stats.spread(tput_known)[0] >= 2.5)} |"
        )
    return lines, targets


def broadcast_section(records: list[Record]) -> tuple[list[str], list[str]]:
    cells = Cells(records, "broadcast")
    if not cells.cases:
        return [], []
    header = ["case"] + [f"{k} deliveries/s" for k in KINDS] + [f"{k} us/delivery" for k in KINDS]
    header += ["project/floor deliveries", "project/aiosignalr", "p50 ms f/a/p", "p99 ms f/a/p"]
    header += ["frames/delivery f/a/p"]
    rows = []
    for case in cells.cases:
        row = [case]
        row += [cells.cell(case, k, "throughput", digits=0) for k in KINDS]
        row += [cells.cell(case, k, "server_us_per_msg", digits=2) for k in KINDS]
        row.append(_ratio(cells.ratio(case, "throughput", "floor")))
        row.append(_ratio(cells.ratio(case, "throughput", "aiosignalr")))
        row.append(" / ".join(_opt(cells.median(case, k, "latency_us.p50"), 1e-3) for k in KINDS))
        row.append(" / ".join(_opt(cells.median(case, k, "latency_us.p99"), 1e-3) for k in KINDS))
        row.append(" / ".join(_opt(cells.median(case, k, "frames_per_delivery"), 1, 2) for k in KINDS))
        rows.append(row)
    lines = [
        "## Broadcast fan-out",
        "",
        "One extra connection sends `Broadcast(stamp, payload)` (to all) or `SendToGroup(group, stamp, payload)`;",
        "`burst` rounds send several messages (per group) in one write and wait until every receiver has",
        "them all (deliveries/s over whole rounds); `steady` sends 2 messages/s to all. Latency is send stamp",
        "to receipt (wall clock, both processes), sampled on 50 receivers in bursts and on all when steady.",
        "`frames/delivery` below 1 means several records shared one WebSocket frame.",
        "",
        *table(header, rows),
    ]
    burst_cases = [c for c in cells.cases if " burst " in c]
    ratios = [cells.ratio(c, "throughput", "floor") for c in burst_cases]
    known = [r for r in ratios if r is not None]
    targets = []
    if known:
        targets.append(
            f"| Broadcast deliveries/s >= 0.8x floor (frame-once) | median {stats.spread(known)[0]:.2f}x, "
            f"worst {min(known):.2f}x over {len(known)} burst cases | "
            f"{_verdict(min(known) >= 0.8, stats.spread(known)[0] >= 0.8)} |"
        )
    frames = [cells.median(c, "project", "frames_per_delivery") for c in burst_cases]
    frames_known = [f for f in frames if f is not None]
    if frames_known:
        targets.append(
            f"| Several pending records for one connection go out in one frame | project frames/delivery "
            f"{min(frames_known):.2f}-{max(frames_known):.2f} in bursts | "
            f"{_verdict(max(frames_known) < 0.9, min(frames_known) < 0.9)} |"
        )
    return lines, targets


def idle_section(records: list[Record]) -> tuple[list[str], list[str]]:
    cells = Cells(records, "idle")
    if not cells.cases:
        return [], []
    header = ["case"] + [f"{k} KB/conn" for k in KINDS] + [f"{k} idle CPU %" for k in KINDS]
    header += [f"{k} wake-ups/s" for k in KINDS] + [f"{k} conn/s" for k in KINDS]
    header += ["ramp server us/conn f/a/p", "ramp client CPU % f/a/p", "frames sent while idle f/a/p", "held f/a/p"]
    rows = []
    for case in cells.cases:
        row = [case]
        row += [cells.cell(case, k, "rss_per_connection_kb") for k in KINDS]
        row += [cells.cell(case, k, "server_cpu_pct", digits=2) for k in KINDS]
        row += [cells.cell(case, k, "server_wakeups_per_s", digits=0) for k in KINDS]
        row += [cells.cell(case, k, "ramp_per_s", digits=0) for k in KINDS]
        row.append(" / ".join(_opt(cells.median(case, k, "ramp_server_us_per_connection"), 1, 0) for k in KINDS))
        row.append(" / ".join(_opt(cells.median(case, k, "ramp_client_cpu_pct"), 1, 0) for k in KINDS))
        row.append(" / ".join(_opt(cells.median(case, k, "idle_frames_received"), 1, 0) for k in KINDS))
        row.append(" / ".join(_opt(cells.median(case, k, "connected"), 1, 0) for k in KINDS))
        rows.append(row)
    lines = [
        "## Idle connections",
        "",
        "N WebSocket connections opened (negotiate + upgrade + handshake, 64 in setup at once), then",
        "silent: KB/conn is the server's RSS growth over N, idle CPU and wake-ups (voluntary context",
        "switches; meaningful only while the process mostly sleeps) over the silent window, during which",
        "the clients send nothing; `frames sent while idle` are the server's own keep-alive pings (every",
        "15 s per connection once it has sent nothing else). `conn/s` is the ramp rate.",
        "",
        *table(header, rows),
    ]
    targets = []
    kb = [(c, cells.median(c, "project", "rss_per_connection_kb")) for c in cells.cases]
    kb_known = [(c, v) for c, v in kb if v is not None]
    if kb_known:
        worst = max(v for _, v in kb_known)
        measured = ", ".join(f"{c.split()[0]}: {v:.1f} KB" for c, v in kb_known)
        verdict = _verdict(worst <= 20, min(v for _, v in kb_known) <= 20)
        targets.append(f"| Idle <= 20 KB per WebSocket connection | {measured} | {verdict} |")
    ratios = [
        (case.split()[0], r)
        for case in cells.cases
        if (r := cells.ratio(case, "rss_per_connection_kb", "floor")) is not None
    ]
    if ratios:
        worst = max(r for _, r in ratios)
        measured = ", ".join(f"{n}: {r:.2f}x" for n, r in ratios)
        verdict = _verdict(worst <= 1.15, worst <= 1.15)
        targets.append(f"| Idle memory per WebSocket <= 1.15x the floor's | {measured} | {verdict} |")
    largest = max(cells.cases, key=lambda c: int(c.split()[0]))
    cpu = cells.median(largest, "project", "server_cpu_pct")
    if cpu is not None:
        ok = cpu <= 5
        targets.append(
            f"| Heartbeat CPU while idle <= 5% of a core | {largest.split()[0]}: {cpu:.1f}% | {_verdict(ok, ok)} |"
        )
    held = cells.median(largest, "project", "connected")
    capped = [r for r in cells.records if r["params"].get("requested", 0) > r["params"]["connections"]]
    if capped:
        limit = capped[0]["params"]["nofile_limit"]
        requested = max(r["params"]["requested"] for r in capped)
        targets.append(
            f"| {requested:,} connections held by one process | not measurable on this machine: RLIMIT_NOFILE hard "
            f"limit {limit:,} (raising it needs CAP_SYS_RESOURCE); largest run held {_opt(held, 1, 0)} | "
            "not measured |"
        )
    else:
        count = int(largest.split()[0])
        ok = held is not None and held >= count
        targets.append(f"| {count:,} connections held by one process | {_opt(held, 1, 0)} held | {_verdict(ok, ok)} |")
    wake = [cells.median(c, "project", "server_wakeups_per_s") for c in cells.cases]
    wake_known = [w for w in wake if w is not None]
    if wake_known:
        ok = max(wake_known) <= 5
        measured = ", ".join(f"{w:.1f}" for w in wake_known)
        targets.append(
            f"| No per-connection timers waking the loop | project wake-ups/s {measured} "
            f"(1/s heartbeat expected) | {_verdict(ok, ok)} |"
        )
    return lines, targets


def deflate_section(records: list[Record]) -> tuple[list[str], list[str]]:
    """Each deflate case beside the same case without it, from the idle and broadcast runs."""
    cells = Cells(records, "deflate")
    if not cells.cases:
        return [], []
    plain = {"idle": Cells(records, "idle"), "broadcast": Cells(records, "broadcast")}
    header = ["case", "figure"]
    for k in ("floor", "project"):
        header += [f"{k} off", f"{k} on", f"{k} on/off"]
    rows, costs = [], []
    for case in cells.cases:
        base = case.removesuffix(", deflate")
        idle = " idle " in f" {base} "
        off_cells = plain["idle" if idle else "broadcast"]
        key, label = ("rss_per_connection_kb", "KB/conn") if idle else ("server_us_per_msg", "server us/delivery")
        row = [case, label]
        for k in ("floor", "project"):
            off, on = off_cells.median(base, k, key), cells.median(case, k, key)
            row += [_opt(off, 1, 1), cells.cell(case, k, key), _ratio(None if not off or on is None else on / off)]
            if k == "project" and off and on is not None:
                costs.append(f"{on / off:.1f}x {label}")
        rows.append(row)
    lines = [
        "## Permessage-deflate",
        "",
        "The idle and broadcast cases at 1,000 connections again, with the clients offering",
        "permessage-deflate as browsers do and the servers accepting it (the project with",
        "`WEBSOCKET_COMPRESSION=true`, i.e. `HubOptions.websocket_compression`); `off` is the same",
        "case from the sections above. aiohttp keeps a compressor per connection and compresses",
        "each delivery on its own, so neither cost can be shared.",
        "",
        *table(header, rows),
    ]
    measured = ", ".join(costs) if costs else "not measured"
    targets = [f"| Permessage-deflate off by default, an option turns it on | on costs the project {measured} | met |"]
    return lines, targets


def relay_section(records: list[Record]) -> tuple[list[str], list[str]]:
    from . import relay

    return relay.report_section(Cells(records, "relay"), Cells(records, "ttft"))


def scaleout_section(records: list[Record]) -> tuple[list[str], list[str]]:
    from . import scaleout

    return scaleout.report_section(Cells(records, "scaleout"))


def azure_section(records: list[Record]) -> tuple[list[str], list[str]]:
    from . import azure

    return azure.report_section(Cells(records, "azure"))


def telemetry_section(records: list[Record]) -> tuple[list[str], list[str]]:
    from . import telemetry

    return telemetry.report_section(Cells(records, "telemetry"))


def soak_section(records: list[Record]) -> tuple[list[str], list[str]]:
    from . import soak

    return soak.report_section(Cells(records, "soak"))


def _opt(v: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if v is None else _num(v * scale, digits)


def _verdict(all_met: bool, median_met: bool) -> str:
    if all_met:
        return "met"
    return "partly (median met)" if median_met else "**missed**"


# -- the document ------------------------------------------------------------------------------

SECTIONS: tuple[Callable[[list[Record]], tuple[list[str], list[str]]], ...] = (
    echo_section,
    broadcast_section,
    idle_section,
    deflate_section,
    relay_section,
    scaleout_section,
    azure_section,
    telemetry_section,
    soak_section,
)


def environment(records: list[Record]) -> list[str]:
    from importlib import metadata

    from . import benchvenv

    quick = any(r.get("quick") for r in records)
    reps = max((r.get("rep", 0) for r in records), default=0) + 1
    versions = ", ".join(f"{n} {metadata.version(n)}" for n in ("aiohttp", "orjson", "msgpack", "uvloop"))
    try:
        peer = benchvenv.installed()
        peer_text = f"aiosignalr {peer['aiosignalr']} (websockets {peer['websockets']})"
    except Exception:
        peer_text = "aiosignalr (version unknown)"
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    by_run: dict[str, list[str]] = {}
    for r in records:
        scenarios = by_run.setdefault(r["run_id"], [])
        if r["scenario"] not in scenarios:
            scenarios.append(r["scenario"])
    runs = ", ".join(f"{run} ({', '.join(s)})" if len(by_run) > 1 else run for run, s in sorted(by_run.items()))
    backlog = "/".join(sorted({str(r.get("netdev_max_backlog", "?")) for r in records}))
    mode = "QUICK mode (1 repetition, short windows): indicative only" if quick else f"{reps} repetitions"
    return [
        f"Runs {runs}: {mode}.",
        f"{cpu}; Python {platform.python_version()}; {versions}; {peer_text}.",
        "Server pinned to core 0, load generator (and fake upstream) to core 1 (`taskset`), uvloop everywhere;",
        f"net.core.netdev_max_backlog {backlog} (below ~10,000, 5,000-socket fan-outs lose loopback packets).",
        "`sat`: the load generator used >= 90% of its core (the figure measures the client, not the server);",
        "`err`: the run had errors (dropped connections, missing deliveries);",
        "medians skip saturated or failed runs when clean ones of the same cell exist.",
        "",
    ]


def write(records: list[Record], target: Path) -> None:
    """Write `target`.md and `target`.png."""
    target.parent.mkdir(parents=True, exist_ok=True)
    body: list[str] = []
    targets: list[str] = []
    for section in SECTIONS:
        lines, checks = section(records)
        body += lines
        targets += checks
    doc = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench` (`make bench`) from "
        "[benchmarks.jsonl](benchmarks.jsonl); the harness is in `bench/`.",
        "The three servers: **floor**, a raw aiohttp WebSocket server written for the benchmark (decode each",
        "record, encode each answer, nothing else); **aiosignalr**, the PyPI package (the Python peer);",
        "**project**, this server.",
        "",
        "Run: `python -m bench` (every scenario but the soak, 3 repetitions, publishes these files) or",
        "`python -m bench --quick --scenario echo,broadcast --match 100c` (1 repetition, short",
        "windows, results in bench/results/); `python -m bench --scenario soak` runs the soak (10",
        "minutes of load, one run; a published run replaces only its own scenarios' records here);",
        "`--profile` adds a py-spy profile of the server",
        "to every run; `--report FILE.jsonl [--publish]` rebuilds the tables. Needs `taskset`, two",
        "cores, matplotlib (plot) and py-spy (`--profile`); aiosignalr runs from `.venv-bench/`, which",
        "the harness creates.",
        "",
        *environment(records),
        "## Targets",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
        *targets,
        "",
        f"![benchmarks]({target.name}.png)",
        "",
        *body,
    ]
    if FINDINGS.is_file():
        doc += [FINDINGS.read_text().rstrip(), ""]
    target.with_suffix(".md").write_text("\n".join(doc))
    try:
        plot(records, target.with_suffix(".png"))
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)


def relay_panel(axis: Any, cells: Cells, colors: dict[str, str]) -> None:
    """Inter-token gap p99 by chats, log scale, with the knee's 40 ms line."""
    axis.set_title("Token relay: inter-token gap p99 (ms) by concurrent chats; knee at 40 ms", fontsize=10, loc="left")
    if not cells.cases:
        axis.text(0.5, 0.5, "not run", ha="center", va="center", transform=axis.transAxes)
        axis.set_axis_off()
        return
    levels = sorted(cells.cases, key=lambda c: int(c.split()[0]))
    for kind in ("relay-floor", "project"):
        points = [(int(c.split()[0]), cells.median(c, kind, "gap_ms.p99")) for c in levels]
        xs = [x for x, y in points if y is not None]
        ys = [y for _, y in points if y is not None]
        if xs:
            axis.plot(xs, ys, marker="o", label=kind, color=colors.get(kind))
    axis.axhline(40, linestyle="--", color="#c03030", linewidth=1)
    axis.set_yscale("log")
    axis.set_xlabel("concurrent chats", fontsize=8)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)


def plot(records: list[Record], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, str, str, str]] = [
        ("echo", "server_us_per_msg", "Echo: server CPU per invocation (us, lower is better)", "ws "),
        ("broadcast", "throughput", "Broadcast bursts: deliveries/s (higher is better)", " burst "),
        ("idle", "rss_per_connection_kb", "Idle: RSS per connection (KB, lower is better)", ""),
    ]
    figure, axes = plt.subplots(len(panels) + 1, 1, figsize=(13, 4.2 * (len(panels) + 1)))
    colors = {"floor": "#9e9e9e", "relay-floor": "#9e9e9e", "aiosignalr": "#e08a2c", "project": "#2c6fe0"}
    for axis, (scenario, key, title, part) in zip(axes, panels, strict=False):
        cells = Cells(records, scenario)
        cases = [c for c in cells.cases if part in c or (part == "ws " and c.startswith(part))]
        axis.set_title(title, fontsize=10, loc="left")
        if not cases:
            axis.text(0.5, 0.5, "not run", ha="center", va="center", transform=axis.transAxes)
            axis.set_axis_off()
            continue
        kinds = sorted({r["server"] for r in cells.records}, key=lambda k: list(colors).index(k))
        width = 0.8 / len(kinds)
        for i, kind in enumerate(kinds):
            heights = [cells.median(c, kind, key) or 0.0 for c in cases]
            positions = [x + (i - (len(kinds) - 1) / 2) * width for x in range(len(cases))]
            axis.bar(positions, heights, width, label=kind, color=colors.get(kind))
        axis.set_xticks(range(len(cases)))
        axis.set_xticklabels(cases, rotation=30, ha="right", fontsize=7)
        axis.legend(fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    relay_panel(axes[-1], Cells(records, "relay"), colors)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)

"""What the OpenTelemetry SDK costs the server: echo and the chat's token relay, each run
with telemetry off (`project`) and with the SDK on (`project-otel`), back to back.

`project-otel` is the same server with `BENCH_OTEL=1`: a tracer provider with the SDK's
default sampler (every span recorded) and a BatchSpanProcessor, and a meter provider with a
reader, as a deployment with an exporter has (bench/project_server.py); the hub invocations
are not traced, the default (`TRACE_HUB_INVOCATIONS`). `project-otel-spans` traces them too.
Issue 21's targets: echo's CPU per invocation at most 1.15x, the relay's CPU per token at
most 1.05x, the same run with telemetry off (`project-otel`; the spans' figure is published
beside it, as what opting in costs).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import relay

if TYPE_CHECKING:
    from .report import Cells
    from .scenarios import Case, Timing

OFF, ON, SPANS = "project", "project-otel", "project-otel-spans"
KINDS = (OFF, ON, SPANS)
ECHO_TARGET, RELAY_TARGET = 1.15, 1.05


def cases(t: Timing) -> Iterator[Case]:
    from .scenarios import Case

    base = {"mode": "echo", "warmup": t.warmup, "window": t.window, "protocol": "json", "payload": 32}
    for connections in (1, 100, 1000):
        yield Case("telemetry", f"echo ws json {connections}c 32B", {**base, "connections": connections}, KINDS)
    params = {**base, "connections": 100, "target": "EchoAsync"}
    yield Case("telemetry", "echo ws json 100c 32B async def", params, KINDS)
    for chats in (100, 250):
        params = {"mode": "relay", "chats": chats, "ramp": 1.0, "warmup": t.warmup, "window": max(t.window, 3.0)}
        yield Case("telemetry", f"relay {chats} chats", params, KINDS, client_cpu_key="core1_cpu_pct")


def run(case: Case, kind: str, profile_to: Path | None = None) -> dict[str, Any]:
    from .scenarios import run_standard

    env = {ON: {"BENCH_OTEL": "1"}, SPANS: {"BENCH_OTEL": "spans", "TRACE_HUB_INVOCATIONS": "true"}}.get(kind)
    if case.params["mode"] == "relay":
        with relay.relay_stack("project", env=env) as (upstream, server, path):
            return relay.load(case, upstream, server, path, profile_to)
    return run_standard(case, "project", profile_to, env)


def report_section(cells: Cells) -> tuple[list[str], list[str]]:
    from .report import _opt, _ratio, table

    if not cells.cases:
        return [], []
    lines = [
        "## Telemetry on",
        "",
        "Each case three times per repetition, on the same server: telemetry **off** (no SDK:",
        "nothing built), **on** (`BENCH_OTEL=1`: the OpenTelemetry SDK with its default sampler,",
        "spans through a BatchSpanProcessor to an exporter that drops them, every metric recorded",
        "by a reader; the hub invocations untraced, the default) and **on, hub spans** (also",
        "`TRACE_HUB_INVOCATIONS=true`: a span per invocation). Server CPU per invocation (echo) or",
        "per relayed token (relay), µs.",
        "",
    ]
    rows, echo, relayed = [], [], []
    key = "server_us_per_msg"
    for case in cells.cases:
        off, on, spans = (cells.median(case, kind, key) for kind in KINDS)
        ratio = on / off if off and on else None
        (relayed if case.startswith("relay") else echo).append(ratio)
        cpu = [cells.cell(case, kind, key, digits=2) for kind in KINDS]
        rows.append([case, *cpu, _ratio(ratio), _ratio(spans / off if off and spans else None)])
    lines += table(["case", "off", "on", "on, hub spans", "on/off", "hub spans/off"], rows)
    targets = []
    for label, ratios, target in (("echo", echo, ECHO_TARGET), ("relay", relayed, RELAY_TARGET)):
        measured = [r for r in ratios if r is not None]
        if measured:
            worst = max(measured)
            verdict = "met" if worst <= target else "**missed**"
            measured_text = f"{_opt(worst, digits=2)}x at worst"
            targets.append(f"| telemetry on, {label}: CPU at most {target:.2f}x off | {measured_text} | {verdict} |")
    return lines, targets

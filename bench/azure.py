"""Behind Azure SignalR Service: the same loads through the service double, against in memory.

Every case runs twice per repetition: `project` (one process, clients connected to it, the
in-memory lifetime manager, as in the other scenarios) and `project-azure` (the same app
served through `AzureSignalR(...).map_hub`, its clients redirected by its negotiate to the
service double, tests/support/azure_service.py, which carries their traffic over the app's five
server connections per hub). The real service cannot be reached from here; the double
plays it, on core 1 beside the load generator (and the fake upstream), as redis-server does
in the scale-out scenario. The app server runs alone on core 0 in both, and only its CPU
(from /proc) is compared: the service's work is another machine's.

- broadcast: `Broadcast` to all from one of 1,000 connections (burst and steady 2/s, as in
  the broadcast section). Through the service the app encodes the invocation once per
  protocol and sends one BroadcastData; the double fans it out, a frame per delivery.
- relay: the chat app's token relay (`AZURE_SIGNALR_CONNECTION_STRING` set): each token goes
  to the calling connection as ConnectionData over its server connection.

The double is Python: where it (with the load generator) fills core 1, deliveries/s and
latency measure the double, not a service; such runs are marked double-bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import azure_double, relay, servers
from .project_server import BENCH_HUB
from .report import Cells, table
from .scenarios import SATURATED_PCT, Case, Timing, broadcast_cases, load_under_profile, run_standard

IN_MEMORY = "project"
SERVICE = "project-azure"
KINDS = (IN_MEMORY, SERVICE)
#: App-server CPU per delivery of a broadcast through the service, against in memory.
BROADCAST_TARGET = 1.3
#: App-server CPU per relayed token through the service, against in memory.
RELAY_TARGET = 1.2
#: The hubs' names on the service: the bench hub's, and the chat's two paths' (signalr_chat.app.azure_signalr).
BENCH_SERVICE_HUB = BENCH_HUB.lower()
CHAT_SERVICE_HUBS = ("chathub", "chat")
#: Chats in the relay cases: few enough that the double, the fake upstream and the load
#: generator together leave core 1 room (the double handles every token once more).
QUICK_CHATS = (100,)
FULL_CHATS = (100, 200)
#: The app's CPU per delivery or token, read to the nanosecond (schedstat): through the service
#: the app spends a few clock ticks in a window, which /proc/PID/stat cannot tell apart.
APP_US = "server_run_us_per_msg"


def cases(t: Timing) -> Iterator[Case]:
    for style in ("burst", "steady 2/s"):
        same = next(c for c in broadcast_cases(t) if c.name == f"all {style} json 1000c")
        params = {**same.params, "precise_cpu": True}
        yield Case("azure", f"broadcast {same.name}", params, KINDS, client_cpu_key="core1_load_pct")
    for chats in QUICK_CHATS if t.reps == 1 else FULL_CHATS:
        params = {"mode": "relay", "chats": chats, "ramp": 1.0, "warmup": t.warmup, "window": max(t.window, 3.0)}
        params["precise_cpu"] = True
        yield Case("azure", f"relay {chats} chats", params, KINDS, client_cpu_key="core1_load_pct")


def run(case: Case, kind: str, profile_to: Path | None = None) -> dict[str, Any]:
    return _core1_load(_run(case, kind, profile_to))


def _core1_load(result: dict[str, Any]) -> dict[str, Any]:
    """How full core 1 was: our processes there (load generator, double, upstream), or every
    process, whichever is more; the box is shared, and a core others fill paces the double too."""
    ours = result.get("core1_cpu_pct") or 0.0
    every = (result.get("cores_busy_pct") or {}).get(servers.CLIENT_CORE) or 0.0
    result["core1_load_pct"] = max(ours, every)
    return result


def _run(case: Case, kind: str, profile_to: Path | None) -> dict[str, Any]:
    relayed = case.params["mode"] == "relay"
    if kind == IN_MEMORY:
        if relayed:
            with relay.relay_stack("project") as (upstream, server, path):
                return relay.load(case, upstream, server, path, profile_to)
        result = run_standard(case, "project", profile_to)
        result.setdefault("core1_cpu_pct", result.get("client_cpu_pct"))
        return result
    double = azure_double.start()
    try:
        env = {"AZURE_SIGNALR_CONNECTION_STRING": azure_double.connection_string(double)}
        if relayed:
            with relay.relay_stack("project", env=env) as (upstream, server, path):
                azure_double.wait_servers(double, CHAT_SERVICE_HUBS)
                before = azure_double.figures(double)
                result = relay.load(case, upstream, server, path, profile_to, {"double_pid": double.pid})
                return _service_figures(result, double, before, result.get("tokens_total"))
        return _broadcast(case, double, profile_to)
    finally:
        double.stop()


def _broadcast(case: Case, double: servers.Server, profile_to: Path | None) -> dict[str, Any]:
    """The bench hub through the double (BENCH_AZURE_SIGNALR); py-spy, if asked, on the app server."""
    env = {"BENCH_AZURE_SIGNALR": azure_double.connection_string(double)}
    server = servers.start("project", env=env)
    try:
        azure_double.wait_servers(double, (BENCH_SERVICE_HUB,))
        before = azure_double.figures(double)
        spec = {
            **case.params,
            "port": server.port,
            "server_pid": server.pid,
            "path": "/hub",
            # one instance, reported as a fleet of one, so that the window also reads the double
            "instances": [{"port": server.port, "pid": server.pid}],
            "double_pid": double.pid,
        }
        budget = 120 + 4 * float(case.params.get("window", 5)) + case.params.get("connections", 0) / 50
        # each connection negotiates twice and the double opens it on the app: ~400 a second here
        delay = 0.5 + case.params.get("connections", 0) / 400
        result = server.check_alive(load_under_profile(spec, budget, profile_to, delay))
        return _service_figures(result, double, before, result.get("invocations_sent"))
    finally:
        server.stop()


def _service_figures(
    result: dict[str, Any], double: servers.Server, before: dict[str, Any], sent: int | None
) -> dict[str, Any]:
    """What the app sent the double during the run, per broadcast (or token), and whether the
    double, not the app, set the pace (`double_bound`): core 1, where it runs, full (by our
    processes or anyone's), deliveries missing at the end of a steady run, or the relay's tokens
    falling behind the upstream while the app still had room."""
    if double.process.poll() is not None:
        result["errors"] = result.get("errors", 0) + 1
        result["error"] = f"the service double exited with {double.process.returncode}"
        return result
    after = azure_double.figures(double)
    received = azure_double.received_during(before, after)
    result["service_messages"] = received
    result["double_problems"] = after["problems"] - before["problems"]
    if sent:
        result["service_messages_per_send"] = {name: round(count / sent, 3) for name, count in received.items()}
    _core1_load(result)
    expected = result.get("expected_tokens_per_s")
    behind = bool(
        expected
        and result.get("throughput", 0) < 0.9 * expected
        and (result.get("server_cpu_pct") or 0) < SATURATED_PCT
    )
    result["double_bound"] = bool(result["core1_load_pct"] >= SATURATED_PCT or behind or result.get("errors"))
    return result


# -- report ------------------------------------------------------------------------------------


def report_section(cells: Cells) -> tuple[list[str], list[str]]:
    if not cells.cases:
        return [], []
    lines = [
        "## Behind Azure SignalR Service (the service double)",
        "",
        "Each case twice per repetition: **in memory**, one project process its clients connect",
        "to (as in the sections above), and **Azure**, the same app served through",
        "`AzureSignalR(...).map_hub` with five server connections per hub to the service double",
        "(`tests/support/azure_service.py`), the clients following the app's negotiate redirect to the",
        "double as the stock clients do. The app runs alone on core 0 in both; the double runs on",
        "core 1 beside the load generator (and the fake upstream), as a service on other machines",
        "would, and only the app server's CPU is compared. The double is Python and does a",
        "service's work (a frame per delivery): a run where core 1 is full (by our processes, or",
        "by others': the box is shared), with deliveries missing, or whose tokens fall behind",
        "the upstream while the app has room, is **double-bound**: its deliveries/s and latency",
        "are the double's, and it is marked `sat`. A broadcast's app CPU per delivery still holds",
        "there as an upper bound (the app's work per broadcast does not depend on the double's",
        "pace; its background work, spread over fewer deliveries, if anything overstates it); a",
        "relay's does not (tokens that wait are read and relayed in larger batches), and does not",
        "count for its target. The app's CPU is read to the nanosecond from",
        "`/proc/PID/task/*/schedstat`: through the service it spends a few 10 ms clock ticks in a",
        "window, which `/proc/PID/stat` rounds away. Cores busy counts every process on the box.",
        "",
    ]
    targets: list[str] = []
    for section in (_broadcast_report, _relay_report):
        more, checks = section(cells)
        lines += more
        targets += checks
    return lines, targets


def _bound(cells: Cells, case: str) -> bool:
    runs = cells.runs(case, SERVICE)
    return bool(runs) and all(r.get("double_bound") for r in runs)


def _per_send(cells: Cells, case: str, name: str) -> str:
    return _opt(cells.median(case, SERVICE, f"service_messages_per_send.{name}"), 2)


def _verdict(ratios: list[tuple[str, float, bool]], target: float, *, bound_counts: bool) -> str:
    """`bound_counts`: a double-bound run's app figure is an upper bound (a broadcast: the app's
    work per broadcast is the same at any pace, its background spread over fewer deliveries), so
    it can meet the target though not miss it. Otherwise (the relay, where a late double makes
    the app read, and so relay, in larger batches) a double-bound run does not count."""
    if all(r <= target for _, r, bound in ratios if bound_counts or not bound) and (
        bound_counts or not all(bound for _, _, bound in ratios)
    ):
        return "met"
    if all(bound for _, r, bound in ratios if r > target):
        return "not measured (double-bound)"
    return "**missed**"


def _measured(
    ratios: list[tuple[str, float, bool]], base: dict[str, float], mine: dict[str, float], *, bound_counts: bool
) -> str:
    note = " (double-bound: an upper bound)" if bound_counts else " (double-bound: not counted)"
    return "; ".join(
        f"{label}: {base[label]:.2f} -> {mine[label]:.2f} us, {r:.2f}x" + (note if bound else "")
        for label, r, bound in ratios
    )


def _broadcast_report(cells: Cells) -> tuple[list[str], list[str]]:
    names = [c for c in cells.cases if c.startswith("broadcast ")]
    if not names:
        return [], []
    header = [
        "case",
        "deliveries/s memory / Azure",
        "app us/delivery memory",
        "app us/delivery Azure",
        "Azure/memory",
        "BroadcastData per broadcast",
        "double us/delivery",
        "double CPU %",
        "core-1 CPU % ours, memory / Azure",
        "cores 0, 1 busy % memory; Azure",
        "p50 ms memory / Azure",
        "p99 ms memory / Azure",
        "double-bound",
    ]
    rows, ratios, base, mine = [], [], {}, {}
    for case in names:
        memory = cells.median(case, IN_MEMORY, APP_US)
        service = cells.median(case, SERVICE, APP_US)
        ratio = service / memory if service is not None and memory else None
        bound = _bound(cells, case)
        label = case.removeprefix("broadcast all ").replace(" json", "")
        if ratio is not None and memory is not None and service is not None:
            ratios.append((label, ratio, bound))
            base[label], mine[label] = memory, service
        rows.append(
            [
                case.removeprefix("broadcast "),
                _pair(cells, case, "throughput", digits=0),
                cells.cell(case, IN_MEMORY, APP_US, digits=2),
                cells.cell(case, SERVICE, APP_US, digits=3),
                "-" if ratio is None else f"{ratio:.3f}x",
                _per_send(cells, case, "BroadcastData"),
                _opt(cells.median(case, SERVICE, "double_us_per_msg"), 2),
                _opt(cells.median(case, SERVICE, "double_cpu_pct"), 0),
                _pair(cells, case, "core1_cpu_pct", digits=0),
                _cores(cells, case),
                _pair(cells, case, "latency_us.p50", scale=1e-3),
                _pair(cells, case, "latency_us.p99", scale=1e-3),
                "yes" if bound else "no",
            ]
        )
    lines = [
        "### Broadcast to all, 1,000 connections",
        "",
        "The broadcast section's `all ... json 1000c` cases. In memory the app writes every",
        "delivery itself (records of a burst sharing a frame per connection); through the service",
        "it decodes the sender's invocation from a ConnectionData, encodes the broadcast once per",
        "protocol and sends one BroadcastData (the column counts what the double received per",
        "`Broadcast` sent), and the double writes a frame per delivery. us/delivery is the app",
        "server's CPU over every delivery the clients received.",
        "",
        *table(header, rows),
    ]
    targets = []
    if ratios:
        targets.append(
            f"| Broadcast to 1,000 through Azure SignalR Service (the double): app server CPU per delivery "
            f"<= {BROADCAST_TARGET}x in memory | {_measured(ratios, base, mine, bound_counts=True)} | "
            f"{_verdict(ratios, BROADCAST_TARGET, bound_counts=True)} |"
        )
    return lines, targets


def _relay_report(cells: Cells) -> tuple[list[str], list[str]]:
    names = [c for c in cells.cases if c.startswith("relay ")]
    if not names:
        return [], []
    header = [
        "chats",
        "tokens/s memory / Azure",
        "app us/token memory",
        "app us/token Azure",
        "Azure/memory",
        "service messages per token",
        "double us/token",
        "core-1 CPU % ours, memory / Azure",
        "cores 0, 1 busy % memory; Azure",
        "gap p99 ms memory / Azure",
        "latency p99 ms memory / Azure",
        "double-bound",
    ]
    rows, ratios, base, mine = [], [], {}, {}
    for case in names:
        memory = cells.median(case, IN_MEMORY, APP_US)
        service = cells.median(case, SERVICE, APP_US)
        ratio = service / memory if service is not None and memory else None
        bound = _bound(cells, case)
        label = f"{case.split()[1]} chats"
        if ratio is not None and memory is not None and service is not None:
            ratios.append((label, ratio, bound))
            base[label], mine[label] = memory, service
        kinds = sorted({k for r in cells.runs(case, SERVICE) for k in r.get("service_messages_per_send", {})})
        per_token = ", ".join(f"{k} {_per_send(cells, case, k)}" for k in kinds if k != "Ping") or "-"
        rows.append(
            [
                case.split()[1],
                _pair(cells, case, "throughput", digits=0),
                cells.cell(case, IN_MEMORY, APP_US, digits=2),
                cells.cell(case, SERVICE, APP_US, digits=2),
                "-" if ratio is None else f"{ratio:.3f}x",
                per_token,
                _opt(cells.median(case, SERVICE, "double_us_per_msg"), 2),
                _pair(cells, case, "core1_cpu_pct", digits=0),
                _cores(cells, case),
                _pair(cells, case, "gap_ms.p99"),
                _pair(cells, case, "latency_us.p99", scale=1e-3),
                "yes" if bound else "no",
            ]
        )
    lines = [
        "### Token relay to the calling connection",
        "",
        "The relay section's load on the chat app, without and with `AZURE_SIGNALR_CONNECTION_STRING`",
        "(hubs `chathub` and `chat` on the service; `HISTORY_STORE=memory` in both). Through the",
        "service each token goes to the caller as a ConnectionData (or MultiConnectionData) on its",
        "server connection, the frames of one loop turn in one WebSocket message; service messages",
        "per token are what the double received from the app over the whole run per token the",
        "chats received (the odd other message included). Fewer chats than the relay section:",
        "the double handles every token on core 1 too.",
        "",
        *table(header, rows),
    ]
    targets = []
    if ratios:
        targets.append(
            f"| Token relay through Azure SignalR Service (the double): app server CPU per token <= "
            f"{RELAY_TARGET}x in memory | {_measured(ratios, base, mine, bound_counts=False)} | "
            f"{_verdict(ratios, RELAY_TARGET, bound_counts=False)} |"
        )
    return lines, targets


def _cores(cells: Cells, case: str) -> str:
    """Each core's busy share in the window, every process counted (others' load included)."""
    return "; ".join(
        ", ".join(_opt(cells.median(case, k, f"cores_busy_pct.{core}"), 0) for core in ("0", "1")) for k in KINDS
    )


def _pair(cells: Cells, case: str, key: str, scale: float = 1.0, digits: int = 1) -> str:
    return " / ".join(_opt(None if (v := cells.median(case, k, key)) is None else v * scale, digits) for k in KINDS)


def _opt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"

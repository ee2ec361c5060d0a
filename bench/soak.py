"""The soak (issue 22): hundreds of signed-in chats for minutes, a tenth reconnecting every minute.

The chat app (`--app chat`, as the relay scenario starts it) on core 0 with signed-in users'
history in SQLite (AUTH_JWT_SECRET, HISTORY_STORE=sqlite, a fresh file per run) against the
fake upstream on core 1, beside the load generator (bench/soakgen.py). BENCH_DIAG=1 gives the
load generator the server's asyncio tasks and objects (bench/project_server.py); its RSS and
open descriptors come from /proc. After the load the server is stopped (SIGTERM, as in a
deployment), then the SQLite file is compared with the turns the chats completed and the
server's log (LOG_LEVEL=INFO, kept in bench/results/) is scanned for errors.

Not in the default scenario list: the full soak takes 10 minutes of load, plus the wait after
the last client leaves. `python -m bench --scenario soak [--quick]`; always one repetition
unless `--reps` says otherwise.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import relay
from .report import Cells, table
from .scenarios import Case, Timing, load_under_profile

KIND = "project"
RESULTS = Path(__file__).resolve().parent / "results"
#: RSS may grow this much from the end of the warm-up to the end of the run.
RSS_GROWTH_TARGET = 0.10
#: The chats' pace: reply lengths (tokens, at 50/s from the fake upstream) and pauses between turns
#: (s), a reader's. A turn cost the server ~18 ms of CPU in the quick runs, its ~50 tokens included
#: (SQLite on aiosqlite's thread, the SDK's request, the relay); at this pace 500 chats take ~24
#: turns/s, under half of core 0: the soak watches a server that keeps up, not one falling behind.
PACE = {"tokens_min": 20, "tokens_max": 80, "pause_min": 10.0, "pause_max": 30.0}


def _after_wait() -> float:
    """Long enough for the chunks of the last replies (kept KEPT_AFTER_END s for late resumes)
    to be let go, so the objects after can be compared with the cold server's."""
    return _kept_after_end() + 10.0


def cases(t: Timing) -> Iterator[Case]:
    quick = t.reps == 1
    params: dict[str, Any] = {
        "mode": "soak",
        "chats": 50 if quick else 500,
        "ramp": 2.0 if quick else 10.0,
        # the chats start over their first pause (up to 30 s), and the finished replies' chunks
        # are held KEPT_AFTER_END (60 s) for late resumes: the full run's warm-up covers both, so
        # RSS "start" is read once their amount is steady
        "warmup": 15.0 if quick else 120.0,
        "window": 45.0 if quick else 480.0,
        "churn_every": 15.0 if quick else 60.0,
        "churn_fraction": 0.1,
        "reconnect_delay": [0.0, 2.0],
        "sample_every": 5.0 if quick else 15.0,
        "after_wait": _after_wait(),
        "per_conversation": 20,
        "seed_share": 0.2,
        **PACE,
    }
    minutes = (params["warmup"] + params["window"]) / 60
    name = f"{params['chats']} chats, {minutes:g} min"
    yield Case("soak", name, params, kinds=(KIND,), client_cpu_key="core1_cpu_pct", reps=1)


def run(case: Case, kind: str, profile_to: Path | None = None) -> dict[str, Any]:
    params = case.params
    RESULTS.mkdir(exist_ok=True)
    log = RESULTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.log"
    secret = secrets.token_hex(32)
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as folder:
        db = Path(folder) / "history.sqlite3"
        env = {
            "HISTORY_STORE": "sqlite",
            "HISTORY_DB": str(db),
            "AUTH_JWT_SECRET": secret,
            "LOG_LEVEL": "INFO",
            "BENCH_DIAG": "1",
        }
        with relay.relay_stack(kind, env, log) as (upstream, server, path):
            spec = {
                **params,
                "port": server.port,
                "server_pid": server.pid,
                "path": path,
                "upstream_pid": upstream.pid,
                "upstream_port": upstream.port,
                "secret": secret,
            }
            budget = params["ramp"] + params["warmup"] + params["window"] + params["after_wait"] + 300
            result = server.check_alive(load_under_profile(spec, budget, profile_to))
        # stopped with SIGTERM, as a deployment stops it: the drain and the cleanup are in the log too
        result["server_exit"] = server.process.returncode
        if server.process.returncode != 0:
            result["errors"] = result.get("errors", 0) + 1
            result.setdefault("error_kinds", {})["server exit"] = 1
        expected = result.pop("expected_history")
        result["history"] = history_check(db, expected)
    result["log"] = scan_log(log)
    result["log_file"] = str(log)
    return result


# -- the checks after the run --------------------------------------------------------------


def history_check(db: Path, expected: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The SQLite file against the turns the chats completed.

    A resumable conversation must hold exactly user, assistant, user, assistant... two rows
    per completed turn. A SendMessage chat's default conversation holds the turns since its
    last ClearHistory: the completed ones, and those a churn cut mid-reply, which the server
    stores as far as they got (two rows) or, if nothing was generated yet, not at all; so
    between 2 x completed and 2 x (completed + cut) rows, in pairs. Rows in conversations no
    chat counted are reported too. Conversations a dropped connection made uncertain (already
    counted as errors) are left out.
    """
    from signalr_chat.chat.history import conversation_key

    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        stored: dict[str, list[str]] = {}
        for conversation, role in connection.execute("SELECT conversation, role FROM messages ORDER BY id"):
            stored.setdefault(conversation, []).append(role)
        listed = connection.execute("SELECT COUNT(*) FROM conversations").fetchone()[0]
    finally:
        connection.close()
    rows_total = sum(len(roles) for roles in stored.values())
    turns = rows = seed_completed = seed_cut = seed_rows = uncertain = 0
    mismatched: list[str] = []
    for user, counted in sorted(expected.items()):
        owner = f"user:{user}"
        if "seed" in counted:
            completed, cut = counted["seed"]
            roles = stored.pop(conversation_key(owner, "default"), [])
            if counted["uncertain"]:
                uncertain += 1
                continue
            seed_completed += completed
            seed_cut += cut
            seed_rows += len(roles)
            paired = roles == ["user", "assistant"] * (len(roles) // 2)
            if not (paired and 2 * completed <= len(roles) <= 2 * (completed + cut)):
                mismatched.append(f"{owner} (SendMessage): {len(roles)} rows for {completed} turns + {cut} cut")
            continue
        for conversation_id, completed in counted["turns"].items():
            roles = stored.pop(conversation_key(owner, conversation_id), [])
            if conversation_id in counted["uncertain"]:
                uncertain += 1
                continue
            turns += completed
            rows += len(roles)
            if roles != ["user", "assistant"] * completed:
                mismatched.append(f"{owner}/{conversation_id}: {len(roles)} rows for {completed} turns")
    unexpected = {key: len(roles) for key, roles in stored.items()}
    return {
        "rows": rows_total,
        "conversations_listed": listed,
        "resumable_turns": turns,
        "resumable_rows": rows,
        "seed_turns": seed_completed,
        "seed_cut": seed_cut,
        "seed_rows": seed_rows,
        "uncertain_conversations": uncertain,
        "mismatched": len(mismatched),
        "mismatched_examples": mismatched[:10],
        "unexpected_rows": sum(unexpected.values()),
        "unexpected_examples": dict(list(unexpected.items())[:10]),
        "ok": not mismatched and not unexpected,
    }


#: `configure_logging`'s text format: "2026-12-07 19:21:37,123 INFO aiohttp.access: ...".
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (?P<level>[A-Z]+) (?P<logger>\S+?): ")


def scan_log(path: Path) -> dict[str, Any]:
    """Lines by level and logger; every ERROR, CRITICAL or traceback is a failure, and the
    first WARNING and unformatted lines (a traceback's, a Python warning's) are kept to read."""
    levels: Counter[str] = Counter()
    loggers: Counter[str] = Counter()
    problems: list[str] = []
    unformatted: list[str] = []
    tracebacks = lines = 0
    for line in path.read_text(errors="replace").splitlines():
        lines += 1
        if "Traceback (most recent call last)" in line:
            tracebacks += 1
        match = LOG_LINE.match(line)
        if match is None:
            if len(unformatted) < 10:
                unformatted.append(line[:300])
            continue
        level = match["level"]
        levels[level] += 1
        loggers[f"{level} {match['logger']}"] += 1
        if level in ("WARNING", "ERROR", "CRITICAL") and len(problems) < 10:
            problems.append(line[:300])
    errors = levels["ERROR"] + levels["CRITICAL"]
    return {
        "lines": lines,
        "levels": dict(levels),
        "by_logger": dict(loggers.most_common(15)),
        "errors": errors,
        "tracebacks": tracebacks,
        "problems": problems,
        "unformatted": unformatted,
        "clean": errors == 0 and tracebacks == 0,
    }


# -- report --------------------------------------------------------------------------------------


def _mb(kb: float | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.1f}"


def _mark(value: float | None) -> str:
    return "not back" if value is None else f"{value:g} s"


def _point(record: dict[str, Any], name: str, key: str) -> Any:
    point = record.get("landmarks", {}).get(name) or {}
    value: Any = point
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def rss_growth(record: dict[str, Any]) -> float | None:
    start, end = _point(record, "start", "rss_kb"), _point(record, "end", "rss_kb")
    return None if not start or end is None else (end - start) / start


def growing_types(record: dict[str, Any], first: str = "start", last: str = "end", top: int = 6) -> str:
    """The object types that grew most between two landmarks (of the 40 most frequent at each)."""
    before = _point(record, first, "objects_by_type") or {}
    after = _point(record, last, "objects_by_type") or {}
    grown = sorted(((after.get(t, 0) - before.get(t, 0), t) for t in set(before) | set(after)), reverse=True)
    return ", ".join(f"{name} {delta:+,}" for delta, name in grown[:top] if delta > 0) or "none"


def _pct(before: float | None, after: float | None) -> str:
    return "-" if not before or after is None else f"{100 * (after - before) / before:+.1f}%"


def leak_evidence(case: str, record: dict[str, Any]) -> str:
    """What grew, in words: RSS by halves, the objects the collector tracks and their types."""
    rss = {n: _point(record, n, "rss_kb") for n in ("start", "middle", "end")}
    objects = {n: _point(record, n, "objects") for n in ("primed", "start", "end", "after")}
    turns = record.get("turns_completed") or 0
    text = (
        f"- {case}{' (quick)' if record.get('quick') else ''}: RSS {_pct(rss['start'], rss['middle'])} from start "
        f"to middle, {_pct(rss['middle'], rss['end'])} from middle to end. Objects tracked by the collector, "
        f"start to end: {(objects['end'] or 0) - (objects['start'] or 0):+,} ({growing_types(record)})."
    )
    warmup = record.get("params", {}).get("warmup", 0)
    kept = _kept_after_end()
    if warmup < kept:
        text += (
            f" The chunks of finished replies are kept {kept:g} s for late resumes, longer than this run's "
            f"{warmup:g} s warm-up: they were still accumulating after it."
        )
    if objects["after"] is not None and objects["primed"] is not None:
        left = objects["after"] - objects["primed"]
        text += (
            f" After the last client left: {objects['after']:,} objects, {left:+,} against the server after one "
            f"turn of each kind of chat (`primed`), after {turns:,} turns over {record.get('connects', 0):,} "
            f"connections: {growing_types(record, 'primed', 'after')}."
        )
    return text


def _kept_after_end() -> float:
    from signalr_chat.chat.conversations import KEPT_AFTER_END

    return KEPT_AFTER_END


def report_section(cells: Cells) -> tuple[list[str], list[str]]:
    if not cells.cases:
        return [], []
    header = [
        "case",
        "RSS MB cold / start / middle / end / after",
        "growth start to end",
        "fds cold / end / after (back in)",
        "tasks cold / end / after (back in)",
        "objects cold / primed / start / end / after",
        "turns completed (resumed)",
        "churned mid-reply / between turns",
        "load errors",
        "history rows / turns",
        "log ERROR / WARNING",
        "core-1 CPU %",
    ]
    rows: list[list[str]] = []
    targets: list[str] = []
    evidence: list[str] = []
    for case in cells.cases:
        for record in cells.runs(case, KIND):
            if "landmarks" not in record:
                rows.append([case, f"failed: {record.get('error', '?')}"] + ["-"] * (len(header) - 2))
                continue
            rows.append(_row(case, record))
            evidence.append(leak_evidence(case, record))
        runs = [r for r in cells.runs(case, KIND) if "landmarks" in r]
        if runs:
            targets += _targets(case, runs[-1])
    lines = [
        "## Soak",
        "",
        "Signed-in chats (one JWT user each) on the chat app with SQLite history, against the fake",
        "upstream, for minutes: each sends a message, reads the streamed reply, pauses 10-30 s, sends",
        "again (replies of 20-80 tokens at 50/s). 80% use the resumable replies (`StartReply`, then",
        "`ResumeReply`; a new conversation every 20 turns), 20% the seed's `SendMessage` (`ClearHistory`",
        "every 20 turns). Every minute (15 s with `--quick`) a tenth of the connections close and",
        "reconnect after 0-2 s, about half while a reply streams: a resumable chat then resumes by",
        "chunk number (checked: no gap, no duplicate, the same reply to its end, every token; `load",
        "errors` counts what failed these checks, and connections that dropped), a `SendMessage`",
        "chat's reply is cut (stored as far as it got). RSS and open descriptors from /proc, asyncio",
        "tasks and the collector's objects (after a full collection) from the bench server's",
        "diagnostic route (`BENCH_DIAG=1`): cold before any client, primed (after one turn of each",
        "kind of chat, which sets up what the server makes on first use), start (after the warm-up), middle,",
        "end, then after the last client leaves (`back in`: seconds until the figure was at its cold",
        "value; `after`: once the last replies' chunks, kept 60 s for late resumes, are let go).",
        "History rows are counted in the SQLite file after the server stopped (SIGTERM), the log",
        "(LOG_LEVEL=INFO) scanned for ERROR, CRITICAL and tracebacks. What stays after the clients left",
        "includes bounded caches, such as yarl's of the last 128 parsed request URLs (each WebSocket's",
        "carries its connection token: a URL, its query's MultiDict and proxy, a list and a dict each).",
        "",
        *table(header, rows),
        *evidence,
        "",
    ]
    return lines, targets


def _row(case: str, record: dict[str, Any]) -> list[str]:
    rss = " / ".join(_mb(_point(record, n, "rss_kb")) for n in ("cold", "start", "middle", "end", "after"))
    growth = rss_growth(record)
    settled = record.get("settled_s", {})
    fds = (
        f"{_point(record, 'cold', 'fds.total')} / {_point(record, 'end', 'fds.total')} / "
        f"{_point(record, 'after', 'fds.total')} ({_mark(settled.get('fds'))})"
    )
    tasks = (
        f"{_point(record, 'cold', 'tasks')} / {_point(record, 'end', 'tasks')} / "
        f"{_point(record, 'after', 'tasks')} ({_mark(settled.get('tasks'))})"
    )
    objects = " / ".join(f"{_point(record, n, 'objects') or 0:,}" for n in ("cold", "primed", "start", "end", "after"))
    churns = record.get("churns", {})
    mid = churns.get("mid-reply", 0) + churns.get("mid-reply seed", 0)
    history = record.get("history", {})
    history_text = (
        f"{history.get('resumable_rows', 0):,} / 2 x {history.get('resumable_turns', 0):,}; "
        f"seed {history.get('seed_rows', 0):,} / 2 x {history.get('seed_turns', 0):,} "
        f"+ {history.get('seed_cut', 0)} cut"
    )
    if history.get("mismatched") or history.get("unexpected_rows"):
        history_text += f" (**{history.get('mismatched')} mismatched, {history.get('unexpected_rows')} unexpected**)"
    log = record.get("log", {})
    levels = log.get("levels", {})
    errors = f"{levels.get('ERROR', 0) + levels.get('CRITICAL', 0)} / {levels.get('WARNING', 0)}"
    if log.get("tracebacks"):
        errors += f", {log['tracebacks']} tracebacks"
    return [
        case + (" (quick)" if record.get("quick") else ""),
        rss,
        "-" if growth is None else f"{100 * growth:+.1f}%",
        fds,
        tasks,
        objects,
        f"{record.get('turns_completed', 0):,} ({record.get('turns_resumed', 0)})",
        f"{mid} / {churns.get('between turns', 0)}",
        ", ".join(f"{kind} {n}" for kind, n in (record.get("error_kinds") or {}).items()) or "0",
        history_text,
        errors,
        f"{record.get('core1_cpu_pct', '-')}",
    ]


def _targets(case: str, record: dict[str, Any]) -> list[str]:
    label = f"Soak ({case}{', quick: indicative' if record.get('quick') else ''})"
    targets = []
    growth = rss_growth(record)
    if growth is not None:
        rss = ", ".join(f"{n} {_mb(_point(record, n, 'rss_kb'))} MB" for n in ("start", "middle", "end"))
        targets.append(
            f"| {label}: RSS growth <= 10% after warm-up | {rss}: {100 * growth:+.1f}% | "
            f"{'met' if growth <= RSS_GROWTH_TARGET else '**missed**'} |"
        )
    settled = record.get("settled_s", {})
    back = settled.get("fds") is not None and settled.get("tasks") is not None
    targets.append(
        f"| {label}: open fds and asyncio tasks back to baseline after the last client leaves | "
        f"fds {_point(record, 'cold', 'fds.total')} cold, {_point(record, 'end', 'fds.total')} under load, "
        f"{_point(record, 'after', 'fds.total')} after (back in {_mark(settled.get('fds'))}); tasks "
        f"{_point(record, 'cold', 'tasks')}, {_point(record, 'end', 'tasks')}, {_point(record, 'after', 'tasks')} "
        f"(back in {_mark(settled.get('tasks'))}) | {'met' if back else '**missed**'} |"
    )
    history = record.get("history", {})
    if history:
        targets.append(
            f"| {label}: history rows equal to the turns completed | {history.get('resumable_rows', 0):,} rows for "
            f"{history.get('resumable_turns', 0):,} resumable turns, {history.get('seed_rows', 0):,} for "
            f"{history.get('seed_turns', 0):,} SendMessage turns + {history.get('seed_cut', 0)} cut; "
            f"{history.get('mismatched', 0)} conversations off, {history.get('unexpected_rows', 0)} rows uncounted | "
            f"{'met' if history.get('ok') else '**missed**'} |"
        )
    log = record.get("log", {})
    if log:
        levels = log.get("levels", {})
        targets.append(
            f"| {label}: no error in the log | {log.get('errors', 0)} ERROR/CRITICAL, {log.get('tracebacks', 0)} "
            f"tracebacks, {levels.get('WARNING', 0)} WARNING in {log.get('lines', 0):,} lines | "
            f"{'met' if log.get('clean') else '**missed**'} |"
        )
    return targets


def summary(record: dict[str, Any]) -> str:
    """The console line after a soak run."""
    growth = rss_growth(record)
    settled = record.get("settled_s", {})
    history = record.get("history", {})
    log = record.get("log", {})
    parts = [
        f"{record.get('turns_completed', 0):,} turns ({record.get('turns_resumed', 0)} resumed)",
        "RSS " + " / ".join(_mb(_point(record, n, "rss_kb")) for n in ("cold", "start", "middle", "end", "after")),
        "growth -" if growth is None else f"growth {100 * growth:+.1f}%",
        f"fds {_point(record, 'cold', 'fds.total')}/{_point(record, 'end', 'fds.total')}/"
        f"{_point(record, 'after', 'fds.total')} back in {_mark(settled.get('fds'))}",
        f"tasks {_point(record, 'cold', 'tasks')}/{_point(record, 'end', 'tasks')}/"
        f"{_point(record, 'after', 'tasks')} back in {_mark(settled.get('tasks'))}",
        "objects " + "/".join(f"{_point(record, n, 'objects') or 0:,}" for n in ("primed", "start", "end", "after")),
        f"history {'ok' if history.get('ok') else 'MISMATCH'} ({history.get('rows', 0):,} rows)",
        f"log {log.get('errors', 0)} errors {log.get('levels', {}).get('WARNING', 0)} warnings",
        f"core 1 {record.get('core1_cpu_pct')}%",
    ]
    if record.get("errors"):
        parts.append(f"{record['errors']} errors {record.get('error_kinds')}")
    return ", ".join(parts)

"""The soak benchmark's checks and report, on files and records shaped like a run's (no servers).

The soak itself runs in `make bench` (`--scenario soak`); these check what it concludes from
what it measured: the SQLite file against the turns the chats completed, the log scan, and
the targets' verdicts in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bench import __main__ as bench_main
from bench import report, scenarios, soak
from signalr_chat.chat.history import conversation_key

Record = dict[str, Any]
PAIR = ["user", "assistant"]


def history_file(tmp_path: Path, conversations: dict[str, list[str]]) -> Path:
    db = tmp_path / "history.sqlite3"
    connection = sqlite3.connect(db)
    connection.executescript(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, conversation TEXT, role TEXT, "
        "content TEXT, created REAL);"
        "CREATE TABLE conversations (owner TEXT, id TEXT, title TEXT, created REAL, updated REAL);"
    )
    for key, roles in conversations.items():
        connection.executemany(
            "INSERT INTO messages (conversation, role, content, created) VALUES (?, ?, 'x', 0)",
            [(key, role) for role in roles],
        )
    connection.commit()
    connection.close()
    return db


def test_history_rows_match_the_turns(tmp_path: Path) -> None:
    db = history_file(
        tmp_path,
        {
            conversation_key("user:a", "c1"): PAIR * 3,
            conversation_key("user:a", "c2"): PAIR,
            # a SendMessage chat: 4 turns completed, 1 cut with text (stored) and 1 cut before any (not)
            conversation_key("user:s", "default"): PAIR * 5,
        },
    )
    expected = {
        "a": {"turns": {"c1": 3, "c2": 1}, "uncertain": []},
        "s": {"seed": [4, 2], "uncertain": False},
    }
    checked = soak.history_check(db, expected)
    assert checked["ok"]
    assert (checked["rows"], checked["resumable_turns"], checked["resumable_rows"]) == (18, 4, 8)
    assert (checked["seed_turns"], checked["seed_cut"], checked["seed_rows"]) == (4, 2, 10)


def test_history_off_by_a_row_or_uncounted_is_reported(tmp_path: Path) -> None:
    db = history_file(
        tmp_path,
        {
            conversation_key("user:a", "c1"): [*PAIR, "user"],  # a reply that was never stored
            conversation_key("user:a", "lost"): PAIR,  # a dropped connection made it uncertain
            conversation_key("user:s", "default"): ["user", "user"],  # not in pairs
            conversation_key("user:z", "c9"): PAIR,  # nobody counted it
        },
    )
    expected = {
        "a": {"turns": {"c1": 1, "lost": 0}, "uncertain": ["lost"]},
        "s": {"seed": [1, 0], "uncertain": False},
    }
    checked = soak.history_check(db, expected)
    assert not checked["ok"]
    assert checked["mismatched"] == 2
    assert checked["uncertain_conversations"] == 1
    assert checked["unexpected_examples"] == {conversation_key("user:z", "c9"): 2}


def test_the_log_scan_counts_levels_and_tracebacks(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "2026-12-07 19:21:37,123 INFO aiohttp.access: 127.0.0.1 GET /chatHub 101\n"
        "2026-12-07 19:21:39,000 WARNING signalr_chat.chat.conversations: reply not stored\n"
    )
    clean = soak.scan_log(log)
    assert clean["clean"]
    assert clean["levels"] == {"INFO": 1, "WARNING": 1}
    with log.open("a") as more:
        more.write("2026-12-07 19:21:40,000 ERROR signalr_chat.chat.hub: reply failed\n")
        more.write("Traceback (most recent call last):\n  File 'x', line 1\nValueError: y\n")
    failed = soak.scan_log(log)
    assert not failed["clean"]
    assert (failed["errors"], failed["tracebacks"]) == (1, 1)
    assert failed["unformatted"][0].startswith("Traceback")


def soak_record(start_kb: int, end_kb: int, **figures: Any) -> Record:
    def point(rss: int, fds: int, tasks: int, objects: int) -> dict[str, Any]:
        return {"rss_kb": rss, "fds": {"total": fds}, "tasks": tasks, "objects": objects}

    record: Record = {
        "scenario": "soak",
        "case": "500 chats, 10 min",
        "server": "project",
        "rep": 0,
        "ok": True,
        "params": {"warmup": 90.0},
        "landmarks": {
            "cold": point(80_000, 17, 2, 300),
            "primed": point(82_000, 17, 2, 4_000),
            "start": point(start_kb, 600, 900, 60_000),
            "middle": point((start_kb + end_kb) // 2, 600, 900, 61_000),
            "end": point(end_kb, 600, 900, 62_000),
            "after": point(end_kb, 17, 2, 4_300),
        },
        "settled_s": {"tasks": 0.5, "fds": 7.0},
        "turns_completed": 14_000,
        "connects": 1_000,
        "history": {"ok": True, "resumable_turns": 11_000, "resumable_rows": 22_000, "mismatched": 0},
        "log": {"clean": True, "errors": 0, "tracebacks": 0, "levels": {"INFO": 20_000}, "lines": 20_000},
    }
    record.update(figures)
    return record


def targets(records: list[Record]) -> dict[str, str]:
    _, lines = soak.report_section(report.Cells(records, "soak"))
    return {line.split(" | ")[0].split(": ", 1)[1]: line.removesuffix(" |").rsplit(" | ", 1)[1] for line in lines}


def test_the_targets_verdicts() -> None:
    met = targets([soak_record(100_000, 108_000)])
    assert met == {
        "RSS growth <= 10% after warm-up": "met",
        "open fds and asyncio tasks back to baseline after the last client leaves": "met",
        "history rows equal to the turns completed": "met",
        "no error in the log": "met",
    }
    missed = targets(
        [
            soak_record(
                100_000,
                111_000,
                settled_s={"tasks": 0.5, "fds": None},
                history={"ok": False, "mismatched": 3},
                log={"clean": False, "errors": 2, "tracebacks": 2, "levels": {"ERROR": 2}, "lines": 9},
            )
        ]
    )
    assert set(missed.values()) == {"**missed**"}


def test_the_section_names_what_grew() -> None:
    record = soak_record(100_000, 104_000)
    record["landmarks"]["start"]["objects_by_type"] = {"ReplyRun": 100, "dict": 500}
    record["landmarks"]["end"]["objects_by_type"] = {"ReplyRun": 900, "dict": 520}
    lines, _ = soak.report_section(report.Cells([record], "soak"))
    evidence = next(line for line in lines if line.startswith("- 500 chats"))
    assert "RSS +2.0% from start to middle" in evidence
    assert "ReplyRun +800, dict +20" in evidence
    assert "after 14,000 turns over 1,000 connections" in evidence


def test_the_soak_runs_only_when_named_and_once() -> None:
    assert "soak" not in scenarios.SCENARIOS
    (full,) = scenarios.all_cases(scenarios.FULL, ("soak",), ())
    assert (full.name, full.reps, full.params["chats"], full.params["churn_every"]) == ("500 chats, 10 min", 1, 500, 60)
    (quick,) = scenarios.all_cases(scenarios.QUICK, ("soak",), ())
    assert (quick.name, quick.params["chats"], quick.params["churn_every"]) == ("50 chats, 1 min", 50, 15)


def test_publishing_a_scenario_keeps_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_main, "DOCS", tmp_path)
    published = [{"scenario": "echo", "case": "a"}, {"scenario": "soak", "case": "old"}]
    (tmp_path / "benchmarks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in published))
    merged = bench_main.published_with([{"scenario": "soak", "case": "new"}])
    assert merged == [{"scenario": "echo", "case": "a"}, {"scenario": "soak", "case": "new"}]

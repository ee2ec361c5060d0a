"""`python -m bench.compare`: each run judged against its own baseline, then the two ratios side by side."""

from __future__ import annotations

from typing import Any

from bench import compare

Record = dict[str, Any]


def record(scenario: str, case: str, kind: str, us: float) -> Record:
    return {"scenario": scenario, "case": case, "server": kind, "rep": 0, "ok": True, "server_us_per_msg": us}


def test_echo_is_judged_against_the_floor_of_the_same_run() -> None:
    # The machine is twice as slow in the second run: the ratio to the floor does not move.
    before = [record("echo", "ws json 1c", "floor", 10.0), record("echo", "ws json 1c", "project", 12.0)]
    after = [record("echo", "ws json 1c", "floor", 20.0), record("echo", "ws json 1c", "project", 24.0)]
    lines = compare.compare(before, after)
    assert "| ws json 1c | 1.20x | 1.20x | +0.0% |" in lines
    assert "Median change of the ratio over 1 cases: +0.0%." in lines


def test_scale_out_is_judged_through_redis_against_in_memory() -> None:
    case = "broadcast all burst json 1000c"
    before = [record("scaleout", case, "project", 1.0), record("scaleout", case, "project-redis", 5.0)]
    after = [record("scaleout", case, "project", 1.0), record("scaleout", case, "project-redis", 4.0)]
    lines = compare.compare(before, after)
    assert "### scaleout: server CPU/delivery, Redis vs in memory (lower is better)" in lines
    assert f"| {case} | 5.00x | 4.00x | -20.0% |" in lines

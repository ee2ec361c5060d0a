"""Two runs of the same scenarios side by side: the project/floor ratios before and after.

`python -m bench.compare BEFORE.jsonl AFTER.jsonl` prints Markdown. Each run is
judged against the floor measured in that same run, so the two runs' ratios compare even
when the machine's speed differs between them: echo by server CPU per message (lower is
better), broadcast by deliveries/s (higher is better), idle by memory per connection, the
relay by server CPU per token against the relay floor (both lower is better), and the
scale-out through Redis by server CPU per delivery against the same run in memory (there is
no floor for it: the in-memory project is its baseline).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from .report import Cells, Record, load, table

#: Per scenario: the metric, its label, whether a higher ratio is better, the server judged
#: and its baseline.
METRICS = {
    "echo": ("server_us_per_msg", "server CPU/msg vs floor", False, "project", "floor"),
    "broadcast": ("throughput", "deliveries/s vs floor", True, "project", "floor"),
    "idle": ("rss_per_connection_kb", "memory/connection vs floor", False, "project", "floor"),
    "relay": ("server_us_per_msg", "server CPU/token vs relay floor", False, "project", "relay-floor"),
    "scaleout": ("server_us_per_msg", "server CPU/delivery, Redis vs in memory", False, "project-redis", "project"),
}


def compare(before: list[Record], after: list[Record]) -> list[str]:
    lines: list[str] = []
    for scenario, (key, label, higher_is_better, judged, floor) in METRICS.items():
        old, new = Cells(before, scenario), Cells(after, scenario)
        cases = [c for c in new.cases if c in old.cases]
        if not cases:
            continue
        rows, changes = [], []
        for case in cases:
            was, now = _ratio(old, case, key, judged, floor), _ratio(new, case, key, judged, floor)
            change = "-"
            if was and now:
                changes.append(now / was)
                change = f"{(now / was - 1) * 100:+.1f}%"
            rows.append([case, _text(was), _text(now), change])
        lines += [f"### {scenario}: {label} ({'higher' if higher_is_better else 'lower'} is better)", ""]
        lines += table(["case", "before", "after", "change"], rows)
        if changes:
            median = statistics.median(changes)
            lines += [f"Median change of the ratio over {len(changes)} cases: {(median - 1) * 100:+.1f}%.", ""]
    return lines


def _ratio(cells: Cells, case: str, key: str, judged: str, baseline: str) -> float | None:
    mine, theirs = cells.median(case, judged, key), cells.median(case, baseline, key)
    return mine / theirs if mine and theirs else None


def _text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    print("\n".join(compare(load(args.before), load(args.after))))


if __name__ == "__main__":
    main()

"""Percentiles and the median/min-max summary of repeated runs."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def latency_summary(samples_us: list[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max in microseconds, and the sample count."""
    ordered = sorted(samples_us)
    summary = {f"p{q:g}": round(percentile(ordered, q), 1) for q in PERCENTILES}
    summary["max"] = round(ordered[-1], 1) if ordered else float("nan")
    summary["n"] = len(ordered)
    return summary


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """Median, min and max of repeated runs."""
    return statistics.median(values), min(values), max(values)

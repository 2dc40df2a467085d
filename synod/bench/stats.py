"""Latency statistics: nearest-rank percentiles over the latencies of one phase."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

PERCENTILES = (0.50, 0.99, 0.999)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ascending `sorted_values` (NaN when empty): the
    smallest value such that at least `fraction` of all values are <= it."""
    assert 0.0 < fraction <= 1.0, fraction
    count = len(sorted_values)
    if count == 0:
        return math.nan
    rank = math.ceil(fraction * count)
    index = min(count - 1, max(0, rank - 1))
    return sorted_values[index]


@dataclass(frozen=True)
class LatencySummary:
    count: int
    p50_s: float
    p99_s: float
    p999_s: float
    max_s: float


def summarize(latencies_s: Sequence[float]) -> LatencySummary:
    ordered = sorted(latencies_s)
    assert all(value >= 0 for value in ordered[:1]), "latencies are never negative"
    return LatencySummary(
        count=len(ordered),
        p50_s=percentile(ordered, 0.50),
        p99_s=percentile(ordered, 0.99),
        p999_s=percentile(ordered, 0.999),
        max_s=ordered[-1] if ordered else math.nan,
    )

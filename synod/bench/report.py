"""The figures as a table (stdout) and as JSON, with the ratios Synod/etcd and Synod's gRPC
door against the null gRPC server."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from synod.bench.runner import PhaseResult

FIGURES = (
    ("throughput", "ops/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("p999_ms", "p99.9 ms"),
    ("server_cpu_us_per_op", "srv us/op"),
    ("client_cpu_us_per_op", "cli us/op"),
)


def _number(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _percent(values: Sequence[float]) -> str:
    return f"{100 * max(values):.0f}%" if values else "-"


def format_table(rows: Sequence[Sequence[str]]) -> str:
    assert rows
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for number, row in enumerate(rows):
        cells = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def results_table(results: Sequence[PhaseResult]) -> str:
    header = [
        "target",
        "phase",
        *(label for _, label in FIGURES),
        "cli max",
        "srv max",
        "machine",
        "saturated",
        "errors",
    ]
    rows = [header]
    for result in results:
        rows.append(
            [
                label(result),
                result.phase,
                *(_number(getattr(result, name)) for name, _ in FIGURES),
                _percent(result.client_util),
                _percent(result.server_util),
                _percent([result.machine_util]),
                result.saturated,
                str(result.errors),
            ]
        )
    return format_table(rows)


def label(result: PhaseResult) -> str:
    return f"{result.target}-{result.door}"


def ratios(results: Sequence[PhaseResult]) -> list[dict[str, Any]]:
    """Synod/etcd per phase and figure, and Synod's gRPC door / the null gRPC server for
    the put phases (the issue's target: >= 0.8 at 256 clients)."""
    by_key = {(result.target, result.door, result.phase): result for result in results}
    found: list[dict[str, Any]] = []
    for result in results:
        if result.target != "synod":
            continue
        baselines = [("etcd", by_key.get(("etcd", "grpc", result.phase)))]
        if result.door == "grpc" and result.workload == "put":
            baselines.append(("null-grpc", by_key.get(("null-grpc", "grpc", result.phase))))
        for baseline_name, baseline in baselines:
            if baseline is None:
                continue
            figures = {}
            for name, _ in FIGURES:
                mine, theirs = getattr(result, name), getattr(baseline, name)
                figures[name] = mine / theirs if theirs and not math.isnan(theirs) else math.nan
            found.append(
                {"synod": label(result), "versus": baseline_name, "phase": result.phase, **figures}
            )
    return found


def ratios_table(found: Sequence[dict[str, Any]]) -> str:
    header = ["synod / baseline", "phase", *(label for _, label in FIGURES)]
    rows = [header]
    for entry in found:
        rows.append(
            [
                f"{entry['synod']} / {entry['versus']}",
                entry["phase"],
                *(_number(entry[name]) for name, _ in FIGURES),
            ]
        )
    return format_table(rows)


def _clean(value: Any) -> Any:
    """JSON has no NaN: missing figures become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value


def to_json(results: Sequence[PhaseResult], meta: dict[str, Any]) -> str:
    document = {
        **meta,
        "results": [{**asdict(result), "phase": result.phase} for result in results],
        "ratios": ratios(results),
    }
    return json.dumps(_clean(document), indent=2, sort_keys=False)

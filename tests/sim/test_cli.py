"""`synod sim` and `synod demo` print what the operator needs (DESIGN.md layout: `cli.py`)."""

from __future__ import annotations

import pytest

from synod.cli import main


def test_sim_prints_knobs_and_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--seed", "4", "--runs", "1", "--nodes", "3", "--seconds", "0.2"]) == 0
    output = capsys.readouterr().out
    assert output.startswith("seed 4, 3 members:")
    assert "config heartbeat_ticks=" in output
    for word in (
        "runs 1, failed 0",
        "events",
        "simulated",
        "operations checked",
        "faults injected",
        "wall time",
    ):
        assert word in output


def test_sim_runs_a_range_of_seeds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--seed", "20", "--runs", "3", "--nodes", "1", "--seconds", "0.1"]) == 0
    output = capsys.readouterr().out
    assert "seed 20: ok" in output
    assert "seed 22: ok" in output
    assert "runs 3, failed 0" in output


def test_demo_runs_a_simulated_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--members", "3"]) == 0
    output = capsys.readouterr().out
    assert "SIMULATION" in output
    assert "elected leader" in output
    assert "crashed" in output
    assert "restarted" in output
    assert "final state is equal on all members" in output

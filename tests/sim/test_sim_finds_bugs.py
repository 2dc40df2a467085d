"""The simulator earns its keep: a persistence bug is caught as a safety violation.

Goal: show that the durability checks can fail (a checker that never fails proves nothing).
Method: swap every member's storage for one that acknowledges saves without making them
durable, which is what a core that replies before persisting looks like from outside, and
expect a safety violation within a few seeds of the crash profile.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

import synod.sim.world
from synod.paxos.ready import SnapshotInstall
from synod.paxos.types import Entry, HardState
from synod.sim.storage import MemoryStorage
from synod.sim.world import RunOptions, run

SEEDS_MAX = 40


class ForgetfulStorage(MemoryStorage):
    """Says every save is durable; keeps it only in volatile memory, lost on a crash."""

    def save(
        self,
        snapshot: SnapshotInstall | None,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        sync: bool,
    ) -> None:
        super().save(snapshot, entries, hard_state, sync=False)


def test_storage_that_lies_about_durability_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synod.sim.world, "MemoryStorage", ForgetfulStorage)
    monkeypatch.setattr(synod.sim.world, "WalStorage", ForgetfulStorage)
    violations = []
    for seed in range(SEEDS_MAX):
        result = run(RunOptions(seed, 3, "crash", 1_000_000, liveness_us_max=500_000))
        if result.violation is not None and result.violation.startswith("safety"):
            violations.append(result.violation)
            break
    assert violations, "no seed caught a storage that forgets acknowledged writes"


def test_a_failure_prints_the_property_the_trace_and_the_reproduce_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(synod.sim.world, "MemoryStorage", ForgetfulStorage)
    monkeypatch.setattr(synod.sim.world, "WalStorage", ForgetfulStorage)
    from synod.cli import main

    for seed in range(SEEDS_MAX):
        if main(["sim", "--seed", str(seed), "--nodes", "3", "--faults", "crash"]) != 0:
            break
    else:
        pytest.fail("no seed failed")
    output = capsys.readouterr().out
    assert f"seed {seed}: " in output
    assert "violation" in output or "crash:" in output
    assert "last events:" in output
    assert f"reproduce: synod sim --seed {seed} --runs 1 --nodes 3 --faults crash" in output
    assert "runs 1, failed 1" in output

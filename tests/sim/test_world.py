"""Whole simulated runs: the real core under every fault model stays safe, live and
linearizable, and a seed reproduces its run exactly.

Goal: STYLE.md's simulation section and DESIGN.md's "sim" layer. Method: run the simulator
over a fixed spread of seeds (1, 3 and 5 members, every fault profile; the swarm profile
draws the mix per seed) with a short safety phase, and fail with the simulator's report
(violated property, last events, reproduce command) if any run fails.
"""

from __future__ import annotations

import pytest

from synod.sim.faults import PROFILES
from synod.sim.world import RunOptions, World, run

SAFETY_US = 600_000
SEEDS = 315


def _cases() -> list[tuple[int, int, str]]:
    """(seed, members, profile): members cycle 3, 5, 1, 3, 5, 3, ...; profiles cycle all."""
    members_cycle = (3, 5, 1, 3, 5, 3, 1)
    return [
        (seed, members_cycle[seed % len(members_cycle)], PROFILES[(seed // 7) % len(PROFILES)])
        for seed in range(SEEDS)
    ]


@pytest.mark.parametrize(("seed", "members", "profile"), _cases())
def test_run_is_safe_live_and_linearizable(seed: int, members: int, profile: str) -> None:
    result = run(RunOptions(seed, members, profile, SAFETY_US))
    assert result.ok, "\n" + result.report()
    assert result.events > 0


RECONFIG_SEEDS = 60
RECONFIG_PROFILES = ("swarm", "crash", "partition", "disk")


@pytest.mark.parametrize("seed", range(1000, 1000 + RECONFIG_SEEDS))
def test_run_with_membership_changes_is_safe_live_and_linearizable(seed: int) -> None:
    """Members are added, promoted, demoted and removed (the leader too) during the faults."""
    members = (1, 3, 5)[seed % 3]
    profile = RECONFIG_PROFILES[(seed // 3) % len(RECONFIG_PROFILES)]
    result = run(RunOptions(seed, members, profile, SAFETY_US, reconfig=True))
    assert result.ok, "\n" + result.report()


def test_reconfiguration_runs_make_every_kind_of_change() -> None:
    """The runs above are not vacuous: the simulator really changes the membership."""
    kinds: set[str] = set()
    names = ("add learner", "add voter", "promote", "demote", "remove voter", "remove learner")
    expected = {f"reconfig {name}" for name in names}
    for seed in range(1, 9):
        result = run(RunOptions(seed, 3, "swarm", reconfig=True))
        assert result.ok, "\n" + result.report()
        kinds |= {kind for kind in result.faults if kind.startswith("reconfig")}
        if kinds == expected:
            break
    assert kinds == expected


@pytest.mark.parametrize("members", [1, 3, 5])
def test_same_seed_same_run(members: int) -> None:
    """Two runs of one seed fire the same events at the same virtual times."""
    first = run(RunOptions(11, members, "swarm", 200_000))
    second = run(RunOptions(11, members, "swarm", 200_000))
    assert first.digest == second.digest
    assert first.events == second.events
    assert first.trace == second.trace


def test_different_seeds_differ() -> None:
    assert (
        run(RunOptions(1, 3, "swarm", 100_000)).digest
        != run(RunOptions(2, 3, "swarm", 100_000)).digest
    )


def test_knobs_are_printed_from_the_seed_alone() -> None:
    assert World(RunOptions(9, 3)).knobs.describe() == World(RunOptions(9, 3)).knobs.describe()

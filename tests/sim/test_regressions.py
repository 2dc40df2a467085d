"""Seeds that once broke the core, kept as regression tests (STYLE.md: a failing seed becomes
a regression test). Each names the bug it caught."""

from __future__ import annotations

import pytest

from synod.sim.world import RunOptions, run

REGRESSIONS = [
    # A leader resent slots chosen before its leadership with their old ballot; the follower
    # asserted that every accepted entry carries the leader's ballot.
    pytest.param(28, 3, id="seed28-old-ballot-in-accept"),
    # A follower reported slots it knew chosen as matched, crashed before that commit slot
    # was durable, and came back reporting less: the leader never resent, liveness was lost.
    pytest.param(11, 3, id="seed11-match-regressed-after-restart"),
]


@pytest.mark.parametrize(("seed", "nodes"), REGRESSIONS)
def test_seed_that_once_failed_now_passes(seed: int, nodes: int) -> None:
    result = run(RunOptions(seed=seed, nodes=nodes))
    assert result.ok, result.report()

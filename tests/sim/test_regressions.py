"""Seeds that once broke the core, kept as regression tests (STYLE.md: a failing seed becomes
a regression test). Each names the bug it caught."""

from __future__ import annotations

import pytest

from synod.sim.world import RunOptions, run

REGRESSIONS = [
    # A leader resent slots chosen before its leadership with their old ballot; the follower
    # asserted that every accepted entry carries the leader's ballot.
    pytest.param(28, 3, False, id="seed28-old-ballot-in-accept"),
    # A follower reported slots it knew chosen as matched, crashed before that commit slot
    # was durable, and came back reporting less: the leader never resent, liveness was lost.
    pytest.param(11, 3, False, id="seed11-match-regressed-after-restart"),
    # With membership changes: a save torn after a new ballot's entry but before its hard
    # state; after the restart a lower ballot overwrote the entry ("accepted ballots only grow").
    pytest.param(523, 5, True, id="seed523-reconfig-torn-promise"),
    # With membership changes: a member demoted to learner kept resetting its election timer,
    # so it stayed in the departed leader's lease and refused every pre-vote: no leader again.
    pytest.param(131, 3, True, id="seed131-reconfig-learner-stuck-in-lease"),
    # With membership changes: a leader proposed its own removal, lost leadership before it
    # was chosen, and as a non-voter of its newest configuration never stood again, while its
    # peer needed slots it had compacted: no leader.
    pytest.param(2004, 3, True, id="seed2004-reconfig-removed-leader-must-finish"),
    # With membership changes: followers learned that the leader's removal of a member was
    # chosen before the leader's own commit hint was durable; the leader restarted needing
    # the removed member's vote, which had compacted the slot: no leader.
    pytest.param(4002, 3, True, id="seed4002-reconfig-leader-forgot-config-commit"),
    # With membership changes: the only voter's commit hint was one slot short of the change
    # that made it the only voter; the demoted member that knew more had compacted that slot
    # and, as a learner, never stood: no leader. Learners may now stand and hand over.
    pytest.param(6147, 3, True, id="seed6147-reconfig-learner-must-stand"),
    # With membership changes: followers saved a learned commit slot without a sync; crashes
    # took it back below what the others had compacted, so they refused those members' bids,
    # and the members that could still win were gone: no leader.
    pytest.param(24062, 3, True, id="seed24062-reconfig-forgotten-commit"),
]


@pytest.mark.parametrize(("seed", "nodes", "reconfig"), REGRESSIONS)
def test_seed_that_once_failed_now_passes(seed: int, nodes: int, reconfig: bool) -> None:
    result = run(RunOptions(seed=seed, nodes=nodes, reconfig=reconfig))
    assert result.ok, result.report()


def test_out_of_order_replies_do_not_rewind_the_pipeline_again_and_again() -> None:
    """Seed 20089 with --faults crash: random delays reorder AcceptReplies. A leader that took
    a lower match for a restarted follower rewound on every late reply and resent its window:
    the run never ended (53,521 events once fixed; it was past millions)."""
    result = run(RunOptions(seed=20089, nodes=3, profile="crash"))
    assert result.ok, result.report()
    assert result.events < 200_000, result.events

"""Online membership changes in the core: what an operator relies on when adding, promoting
and removing members, and the safety rule that keeps a stale member from undoing them.
"""

from __future__ import annotations

import pytest

from synod.paxos.errors import MembershipChangeRefused, NotLeader
from synod.paxos.node import Role
from synod.paxos.types import EntryKind, Membership, NodeId, Slot

from .harness import TEST_CONFIG, Cluster


def ids(*values: int) -> tuple[NodeId, ...]:
    return tuple(NodeId(v) for v in values)


def change(
    cluster: Cluster, leader: int, voters: tuple[int, ...], learners: tuple[int, ...] = ()
) -> Slot:
    slot = cluster.node(leader).change_membership(Membership(ids(*voters), ids(*learners)))
    cluster.deliver()
    return slot


def test_learner_receives_the_log_and_counts_only_after_promotion() -> None:
    cluster = Cluster(1, spares=1)
    cluster.elect(1)
    cluster.propose(1, b"before")
    slot = change(cluster, 1, (1,), (2,))
    cluster.propose(1, b"after")
    cluster.tick_all(2)
    assert cluster.node(1).commit_slot > slot, "a learner is not needed for a quorum"
    assert cluster.applied(2) == [b"before", b"after"], "the learner got the whole log"
    assert cluster.node(2).role is Role.FOLLOWER
    change(cluster, 1, (1, 2))
    cluster.tick_all(2)
    assert cluster.node(2).membership.voters == ids(1, 2)
    cluster.isolate(2)
    cluster.propose(1, b"needs two now")
    cluster.tick([1], 2)
    assert cluster.applied(1) == [b"before", b"after"], "two voters: the promoted one counts"
    cluster.heal()
    cluster.tick_all(3)
    assert cluster.applied(1)[-1] == b"needs two now"


def test_change_of_two_voters_at_once_is_refused_and_changes_nothing() -> None:
    cluster = Cluster(3, spares=1)
    cluster.elect(1)
    with pytest.raises(MembershipChangeRefused, match="one voter at a time"):
        cluster.node(1).change_membership(Membership(ids(1, 2, 4)))
    assert cluster.node(1).membership == Membership(ids(1, 2, 3))
    assert cluster.node(1).last_slot == 0


def test_second_change_waits_for_the_first_to_commit() -> None:
    cluster = Cluster(3, spares=2)
    cluster.elect(1)
    cluster.isolate(1)
    cluster.node(1).change_membership(Membership(ids(1, 2, 3), ids(4)))
    with pytest.raises(MembershipChangeRefused, match="not committed yet"):
        cluster.node(1).change_membership(Membership(ids(1, 2, 3), ids(4, 5)))
    cluster.heal()
    cluster.tick_all(2)
    change(cluster, 1, (1, 2, 3), (4, 5))
    assert cluster.node(1).committed_membership == Membership(ids(1, 2, 3), ids(4, 5))


def test_only_the_leader_changes_membership() -> None:
    cluster = Cluster(3)
    cluster.elect(1)
    cluster.tick_all()
    with pytest.raises(NotLeader):
        cluster.node(2).change_membership(Membership(ids(1, 2)))


def test_removed_leader_hands_over_and_never_campaigns_again() -> None:
    cluster = Cluster(3)
    cluster.elect(1)
    cluster.propose(1, b"x")
    change(cluster, 1, (2, 3))
    cluster.tick_all(3 * TEST_CONFIG.election_ticks)
    leaders = cluster.leaders()
    assert len(leaders) == 1 and leaders[0] in (2, 3)
    assert cluster.node(1).role is Role.FOLLOWER
    cluster.propose(leaders[0], b"y")
    cluster.tick_all(2)
    assert cluster.applied(leaders[0]) == [b"x", b"y"]
    cluster.isolate(leaders[0])
    cluster.tick([1], 5 * TEST_CONFIG.election_ticks)
    assert cluster.node(1).role is Role.FOLLOWER, "a removed member never stands for election"


def test_stale_member_cannot_win_with_a_quorum_of_an_old_configuration() -> None:
    """5 voters shrink to 3, one voter at a time; then the two removed members and a voter
    that never heard any commit try to elect one of the removed ones. Their three promises
    are a quorum of the old five, but the promises reveal the next configuration, of which
    they are no quorum: without that rule the stale leader would overwrite chosen slots."""
    cluster = Cluster(5)
    cluster.elect(1)
    for removed in (4, 5):
        cluster.isolate(removed)
    cluster.node(1).change_membership(Membership(ids(1, 2, 3, 4)))
    cluster.deliver_once()  # the accept reaches 2 and 3, their replies are in flight
    cluster.cut.add((1, 3))  # 3 will never hear that anything was chosen
    cluster.deliver()
    assert cluster.node(1).commit_slot == 1 and cluster.node(3).commit_slot == 0
    change(cluster, 1, (1, 2, 3))
    cluster.propose(1, b"chosen")
    assert cluster.node(1).commit_slot == 3
    assert cluster.node(3).last_slot == 1
    for member in (1, 2):
        cluster.crash(member)
    cluster.heal()
    for _ in range(10):
        cluster.tick([3, 4, 5], TEST_CONFIG.election_ticks)
        assert cluster.leaders() == [], "a stale quorum elected a leader"
    cluster.restart(2)
    cluster.tick_all(6 * TEST_CONFIG.election_ticks)
    leaders = cluster.leaders()
    assert len(leaders) == 1 and leaders[0] in (2, 3)
    assert cluster.applied(leaders[0]) == [b"chosen"]
    entry = cluster.node(leaders[0]).entry(Slot(2))
    assert entry is not None and entry.kind is EntryKind.MEMBERSHIP
    assert entry.membership == Membership(ids(1, 2, 3))

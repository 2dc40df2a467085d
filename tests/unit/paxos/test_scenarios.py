"""Scenario tests of the Multi-Paxos core, each readable as a script.

Every test drives real cores under the real driver through a hand-delivered network (see
harness.py) and asserts what a user of the replicated log relies on (DESIGN.md, Consensus).
"""

from __future__ import annotations

import pytest

from synod.paxos.config import Config
from synod.paxos.errors import NotLeader, ProposalDropped
from synod.paxos.messages import Accept
from synod.paxos.node import Role, TransferRefused
from synod.paxos.types import Entry, EntryKind, HardState, NodeId, Slot, SnapshotMeta

from .harness import TEST_CONFIG, Cluster


def test_single_member_elects_itself_and_commits() -> None:
    cluster = Cluster(1)
    cluster.elect(1)
    cluster.propose(1, b"a", b"b")
    assert cluster.applied(1) == [b"a", b"b"]


def test_three_members_elect_one_leader_and_replicate() -> None:
    """Goal: a write proposed at the leader is applied everywhere, in one slot (batching)."""
    cluster = Cluster(3)
    cluster.elect(1)
    assert cluster.leaders() == [1]
    cluster.propose(1, b"x", b"y")
    cluster.tick_all(2)  # heartbeats carry the commit slot to followers
    for node_id in (1, 2, 3):
        assert cluster.applied(node_id) == [b"x", b"y"]
    assert cluster.node(1).last_slot == 1, "two commands proposed together share a slot"


def test_follower_refuses_proposals_and_names_the_leader() -> None:
    cluster = Cluster(3)
    cluster.elect(1)
    cluster.tick_all()
    with pytest.raises(NotLeader) as refused:
        cluster.node(2).propose([b"x"])
    assert refused.value.leader_hint == 1


def test_minority_leader_cannot_commit() -> None:
    """A leader cut off from every follower keeps its proposal uncommitted."""
    cluster = Cluster(3)
    cluster.elect(1)
    cluster.isolate(1)
    cluster.propose(1, b"lost?")
    cluster.tick([1], 3)
    assert cluster.node(1).commit_slot == 0
    assert cluster.applied(1) == []


def test_accepted_value_is_reproposed_after_leader_change() -> None:
    """Paxos' core rule: a value accepted by a quorum survives its proposer's crash.

    Member 1 gets its proposal accepted by member 2 only, then crashes before anyone learns it
    is chosen. The new leader must find it in phase 1 and re-propose it, not a new value.
    """
    cluster = Cluster(3)
    cluster.elect(1)
    cluster.cut.update({(1, 3)})
    cluster.cut.update({(2, 1)})  # replies from 2 never reach 1: nobody knows it is chosen
    cluster.propose(1, b"accepted-by-2")
    assert cluster.node(2).entry(Slot(1)) is not None
    assert cluster.node(1).commit_slot == 0
    cluster.crash(1)
    cluster.heal()
    cluster.elect(3)
    cluster.propose(3, b"later")
    cluster.tick([2, 3], 2)
    assert cluster.applied(3) == [b"accepted-by-2", b"later"]
    assert cluster.applied(2) == [b"accepted-by-2", b"later"]


def test_holes_are_filled_with_noops() -> None:
    cluster = Cluster(3)
    cluster.elect(1)
    leader = cluster.node(1)
    ballot = leader.ballot
    # Slot 2 accepted on member 2 with nothing in slot 1 anywhere: a hole at slot 1.
    hole_entry = Entry(Slot(2), ballot, EntryKind.COMMANDS, (b"after-hole",))
    cluster.crash(1)
    member2 = cluster.node(2)
    member2._log.store(Entry(Slot(1), ballot, EntryKind.COMMANDS, (b"placeholder",)))
    member2._log.store(hole_entry)
    member2._log._entries[0] = Entry(Slot(1), ballot, EntryKind.NOOP)
    cluster.elect(2)
    cluster.tick([2, 3], 2)
    assert cluster.node(2).entry(Slot(1)).kind is EntryKind.NOOP  # type: ignore[union-attr]
    assert cluster.applied(3) == [b"after-hole"]


def test_deposed_leader_proposals_are_rejected() -> None:
    """After a new leader is elected, the old one's accepts are refused and it steps down."""
    cluster = Cluster(3)
    cluster.elect(1)
    cluster.isolate(1)
    cluster.tick([2, 3], 3 * TEST_CONFIG.election_ticks)
    new_leaders = [i for i in cluster.leaders() if i != 1]
    assert len(new_leaders) == 1
    old = cluster.node(1)
    if old.role is Role.LEADER:
        old.propose([b"stale"])
    cluster.heal()
    cluster.tick_all(3)
    assert old.role is Role.FOLLOWER
    for node_id in (1, 2, 3):
        assert b"stale" not in cluster.applied(node_id)
    assert len(cluster.leaders()) == 1


def test_pre_vote_keeps_a_returning_member_from_deposing_the_leader() -> None:
    cluster = Cluster(3)
    cluster.elect(1)
    leader_ballot = cluster.node(1).ballot
    cluster.isolate(3)
    cluster.tick([1, 2], 5 * TEST_CONFIG.election_ticks)
    cluster.tick([3], 5 * TEST_CONFIG.election_ticks)  # 3 times out alone, again and again
    cluster.heal()
    cluster.tick_all(3)
    assert cluster.leaders() == [1]
    assert cluster.node(1).ballot == leader_ballot, "no phase 1 was forced on the cluster"


def test_without_pre_vote_a_returning_member_bumps_the_ballot() -> None:
    """The negative space of the previous test: the mechanism is what protects the leader."""
    config = Config(heartbeat_ticks=1, election_ticks=10, pre_vote=False)
    cluster = Cluster(3, config)
    cluster.elect(1)
    cluster.isolate(3)
    cluster.tick([3], 5 * config.election_ticks)
    assert cluster.node(3).ballot > cluster.node(1).ballot


def test_check_quorum_makes_an_isolated_leader_step_down() -> None:
    cluster = Cluster(3)
    cluster.elect(1)
    cluster.isolate(1)
    cluster.tick([1], 2 * TEST_CONFIG.election_ticks)
    assert cluster.node(1).role is not Role.LEADER
    with pytest.raises(NotLeader):
        cluster.node(1).read_index(7)


def test_lagging_member_catches_up() -> None:
    cluster = Cluster(3)
    cluster.elect(1)
    cluster.crash(3)
    for number in range(20):
        cluster.propose(1, f"w{number}".encode())
    cluster.restart(3)
    cluster.tick_all(6)
    assert cluster.applied(3) == cluster.applied(1)
    assert len(cluster.applied(3)) == 20


def test_lagging_member_catches_up_from_a_snapshot() -> None:
    cluster = Cluster(3)
    cluster.elect(1)
    cluster.crash(3)
    for number in range(10):
        cluster.propose(1, f"w{number}".encode())
    cluster.tick([1, 2], 2)
    leader = cluster.member(1)
    meta, data = leader.machine.snapshot()
    leader.storage.keep_snapshot(meta, data)
    leader.node.compact(meta)
    assert leader.node.entry(Slot(1)) is None
    cluster.restart(3)
    cluster.tick_all(6)
    assert cluster.applied(3) == cluster.applied(1)
    assert cluster.member(3).storage.snapshot_meta == meta


def test_read_index_waits_for_a_quorum_round() -> None:
    cluster = Cluster(3)
    cluster.elect(1)
    cluster.propose(1, b"v1")
    cluster.isolate(1)
    cluster.node(1).read_index(42)
    cluster.tick([1], 1)
    assert cluster.member(1).reads_served == [], "no quorum confirmed the leadership"
    cluster.heal()
    cluster.tick([1], 1)
    assert cluster.member(1).reads_served == [(42, [b"v1"])]


def test_read_index_on_partitioned_old_leader_never_serves_stale_data() -> None:
    """The old leader, cut off, must not answer a read after the majority moved on."""
    cluster = Cluster(3)
    cluster.elect(1)
    cluster.propose(1, b"old")
    cluster.isolate(1)
    cluster.tick([2, 3], 3 * TEST_CONFIG.election_ticks)
    new_leader = next(i for i in cluster.leaders() if i != 1)
    cluster.propose(new_leader, b"new")
    old = cluster.node(1)
    if old.role is Role.LEADER:
        old.read_index(9)
    cluster.tick([1], 2 * TEST_CONFIG.election_ticks)
    assert cluster.member(1).reads_served == []
    cluster.heal()
    cluster.tick_all(3)
    assert cluster.member(1).reads_served == []


def test_leader_transfer_hands_over_to_the_named_member() -> None:
    cluster = Cluster(3)
    cluster.elect(1)
    cluster.propose(1, b"before")
    cluster.node(1).transfer_leadership(NodeId(3))
    with pytest.raises(ProposalDropped):
        cluster.node(1).propose([b"during"])
    cluster.tick_all(2)
    assert cluster.leaders() == [3]
    cluster.propose(3, b"after")
    cluster.tick_all(2)
    assert cluster.applied(2) == [b"before", b"after"]


def test_leader_transfer_to_a_non_member_is_refused() -> None:
    cluster = Cluster(3)
    cluster.elect(1)
    with pytest.raises(TransferRefused):
        cluster.node(1).transfer_leadership(NodeId(9))


def test_promise_is_durable_before_it_is_revealed() -> None:
    """The persistence contract: a Promise never travels in the immediate messages."""
    cluster = Cluster(3)
    cluster.node(1)._start_campaign(transfer=False)
    cluster.run_drivers()
    prepares = list(cluster.in_flight)
    cluster.in_flight.clear()
    node2 = cluster.node(2)
    node2.step(prepares[0])
    ready = node2.ready()
    assert not ready.messages
    assert ready.persisted_messages
    assert ready.hard_state is not None and ready.hard_state.promised == prepares[0].ballot
    assert ready.must_sync


def _first_accepts(cluster: Cluster) -> list[Accept]:
    """Member 1 leads and proposes one value: the Accepts carrying it, taken off the wire."""
    cluster.elect(1)
    cluster.node(1).propose([b"x"])
    cluster.member(1).driver.run()
    accepts = [m for m in cluster.in_flight if isinstance(m, Accept) and m.entries]
    cluster.in_flight.clear()
    return accepts


def test_follower_accept_reply_waits_for_persist() -> None:
    cluster = Cluster(3)
    accepts = _first_accepts(cluster)
    node2 = cluster.node(NodeId(accepts[0].dst))
    node2.step(accepts[0])
    ready = node2.ready()
    assert ready.entries and ready.must_sync
    assert not ready.messages and ready.persisted_messages


def test_restarted_member_remembers_its_promise() -> None:
    cluster = Cluster(3)
    cluster.elect(1)
    promised = cluster.node(2).ballot
    cluster.crash(2)
    cluster.restart(2)
    assert cluster.node(2).ballot == promised


def test_compaction_keeps_later_accepted_entries() -> None:
    cluster = Cluster(1)
    cluster.elect(1)
    for number in range(5):
        cluster.propose(1, f"w{number}".encode())
    member = cluster.member(1)
    meta = SnapshotMeta(Slot(3), member.node.membership)
    member.node.compact(meta)
    assert member.node.entry(Slot(3)) is None
    assert member.node.entry(Slot(4)) is not None


def test_batching_respects_the_command_limit() -> None:
    config = Config(heartbeat_ticks=1, election_ticks=10, batch_commands_max=2)
    cluster = Cluster(3, config)
    cluster.elect(1)
    cluster.propose(1, b"a", b"b", b"c", b"d", b"e")
    assert cluster.node(1).last_slot == 3
    cluster.tick_all(2)
    assert cluster.applied(2) == [b"a", b"b", b"c", b"d", b"e"]


def test_pipelining_window_bounds_accepts_in_flight() -> None:
    config = Config(
        heartbeat_ticks=1,
        election_ticks=10,
        batch_commands_max=1,
        window_messages_max=2,
        accept_entries_max=1,
    )
    cluster = Cluster(3, config)
    cluster.elect(1)
    leader = cluster.node(1)
    cluster.deliver()
    leader.propose([b"a"])
    cluster.deliver()  # first reply ends probing
    leader.propose([bytes([n]) for n in range(10)])
    cluster.member(1).driver.run()
    to_two = [m for m in cluster.in_flight if m.dst == 2 and isinstance(m, Accept) and m.entries]
    assert len(to_two) == 2
    cluster.deliver()
    cluster.tick_all(3)
    assert len(cluster.applied(2)) == 11


def test_new_leader_catches_up_a_member_with_slots_chosen_before_its_ballot() -> None:
    """Regression (simulator seed 28): slots chosen under an earlier leader keep their old
    ballot in the new leader's log; sending them as they are broke the follower, which only
    counts entries of the current ballot. They are resent in the current ballot."""
    cluster = Cluster(3)
    cluster.elect(1)
    cluster.crash(3)
    for number in range(5):
        cluster.propose(1, f"old{number}".encode())
    cluster.tick([1, 2], 2)
    cluster.crash(1)
    cluster.restart(3)  # empty-handed: it needs every slot from 1 on
    cluster.elect(2)
    old_entry = cluster.node(2).entry(Slot(1))
    assert old_entry is not None and cluster.node(2).ballot > old_entry.ballot
    cluster.propose(2, b"new")
    cluster.tick([2, 3], 6)
    assert cluster.applied(3) == [f"old{n}".encode() for n in range(5)] + [b"new"]


def test_restarted_follower_never_reports_less_than_before() -> None:
    """Regression (simulator seed 11): a follower counts slots it knows chosen in its match.
    A restart used to trust only the snapshot, so the follower came back reporting less, and
    the leader, which trusted matches to grow, never resent. Restart now trusts the durable
    commit hint; the commit a match starts from in a leadership was made durable by the
    promise (or the restart) that preceded it."""
    cluster = Cluster(3)
    cluster.elect(1)
    cluster.propose(1, b"a", b"b")
    cluster.tick_all(2)  # followers learn the commit slot from a heartbeat
    cluster.crash(1)
    cluster.elect(3)  # member 2's match in the new ballot starts at its commit slot
    assert cluster.node(3).leader == 3
    cluster.crash(2)
    cluster.restart(2)
    cluster.propose(3, b"c")
    cluster.tick([2, 3], 6)
    assert cluster.applied(3) == [b"a", b"b", b"c"]
    assert cluster.applied(2) == [b"a", b"b", b"c"]


def test_a_follower_syncs_a_commit_it_learns_before_replying() -> None:
    """Regression (simulator seed 24062 with --reconfig): followers saved a learned commit
    slot without a sync; crashes took it back below what the others had compacted, and the
    only members that could still win an election were gone. A learned commit is durable
    before the reply that follows it."""
    cluster = Cluster(3)
    accepts = _first_accepts(cluster)
    follower = cluster.member(accepts[0].dst)
    follower.node.step(accepts[0])
    follower.driver.run()
    replies = list(cluster.in_flight)
    cluster.in_flight.clear()
    for reply in replies:
        cluster.node(1).step(reply)
    commits = [m for m in cluster.node(1).ready().messages if m.dst == follower.node.node_id]
    assert commits and all(isinstance(m, Accept) and not m.entries for m in commits)
    follower.node.step(commits[0])
    ready = follower.node.ready()
    slot = accepts[0].entries[0].slot
    assert ready.hard_state is not None and ready.hard_state.commit_slot == slot
    assert ready.must_sync
    assert not ready.messages and ready.persisted_messages


def test_followers_learn_the_commit_slot_without_waiting_for_a_heartbeat() -> None:
    """A follower answers a write it forwarded once it applies it: the leader tells the
    followers a slot is chosen as soon as it knows, not one heartbeat interval later."""
    cluster = Cluster(3)
    cluster.elect(1)
    cluster.propose(1, b"x")  # delivers messages until quiet, with no tick at all
    assert cluster.applied(2) == [b"x"]
    assert cluster.applied(3) == [b"x"]


def test_torn_save_that_kept_entries_but_lost_the_promise_keeps_the_promise() -> None:
    """Regression (simulator seed 523 with --reconfig, 5 members): a save wrote a new ballot's
    entry but was torn before its hard state. Accepting implies promising: after the restart
    the member must refuse a deposed leader's lower ballot rather than overwrite the entry."""
    cluster = Cluster(3)
    cluster.elect(1)
    cluster.propose(1, b"x")
    cluster.tick_all(2)
    old_ballot = cluster.node(1).ballot
    cluster.isolate(1)  # 1 still believes it leads
    cluster.elect(2)
    cluster.propose(2, b"y")
    held = cluster.node(3).entry(Slot(2))
    assert held is not None and held.ballot == cluster.node(2).ballot
    storage = cluster.member(3).storage
    storage.hard_state = storage.synced_hard_state = HardState(old_ballot, Slot(1))
    cluster.crash(3)
    cluster.restart(3)
    cluster.cut -= {(1, 3), (3, 1)}
    cluster.propose(1, b"z")
    cluster.tick([1, 3], 2)
    kept = cluster.node(3).entry(Slot(2))
    assert kept is not None and kept.commands == (b"y",)
    assert cluster.node(3).ballot >= held.ballot
    assert cluster.node(1).commit_slot == 1, "the deposed leader never committed z"

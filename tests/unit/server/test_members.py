"""The replicated member table: its encodings, and the planning of changes that refuses
what etcd refuses (strict reconfiguration check, learner promotion) with etcd's reasons."""

from __future__ import annotations

import pytest

from synod.kv.messages import Command, PutRequest
from synod.kv.store import KVStore
from synod.paxos.types import Membership, NodeId
from synod.server.kv_service import KvService
from synod.server.members import (
    SNAPSHOT_MAGIC,
    MemberChangeError,
    MemberInfo,
    MemberTable,
    PeerHealth,
    Refusal,
    TableError,
    decode_context,
    decode_machine_snapshot,
    encode_context,
    encode_machine_snapshot,
    machine_snapshot_view,
    new_member_id,
    plan_add,
    plan_promote,
    plan_publish,
    plan_remove,
    plan_update,
)


def _table(voters: int = 3, learner: bool = False) -> MemberTable:
    members = [
        MemberInfo(i, f"m{i}", (f"http://127.0.0.1:{2380 + i}",), (f"http://127.0.0.1:{2379}",))
        for i in range(1, voters + 1)
    ]
    if learner:
        members.append(MemberInfo(99, "l", ("http://127.0.0.1:3999",), (), True))
    return MemberTable.of(members)


def _all_active(table: MemberTable) -> PeerHealth:
    return PeerHealth(1, frozenset(m.member_id for m in table.members))


def _refusal(call: object) -> Refusal:
    assert callable(call)
    with pytest.raises(MemberChangeError) as caught:
        call()
    return caught.value.refusal


def test_table_survives_encoding_and_names_its_configuration() -> None:
    table = _table(learner=True).without(2)
    decoded = MemberTable.decode(table.encode())
    assert decoded == table
    assert decoded.membership() == Membership((NodeId(1), NodeId(3)), (NodeId(99),))
    assert decoded.removed == (2,)


def test_context_and_machine_snapshot_carry_the_table() -> None:
    table = _table()
    change_id, decoded = decode_context(encode_context(7, table))
    assert (change_id, decoded) == (7, table)
    data = encode_machine_snapshot(table, b"service-bytes")
    assert decode_machine_snapshot(data) == (table, b"service-bytes")


def test_snapshot_without_table_is_all_service_bytes() -> None:
    """A snapshot written before the table existed still restores the service."""
    assert decode_machine_snapshot(b"\x93old-kv") == (None, b"\x93old-kv")
    assert machine_snapshot_view(b"\x93old-kv") == (None, b"\x93old-kv")


def test_machine_snapshot_view_reads_the_service_part_in_place() -> None:
    """The view holds the same bytes as the decoded copy, without a copy (issue 8: a
    restart's peak memory), and a KV service restores from it."""
    store = KVStore()
    store.apply(Command(PutRequest(b"k", b"v"), 0))
    data = encode_machine_snapshot(_table(), store.snapshot())
    table, view = machine_snapshot_view(data)
    assert (table, view) == decode_machine_snapshot(data)
    assert view.obj is data
    service = KvService()
    service.restore(view)
    assert service.store.snapshot() == store.snapshot()
    with pytest.raises(TableError):
        machine_snapshot_view(data[: len(SNAPSHOT_MAGIC) + 6])


def test_corrupt_table_is_refused_not_half_read() -> None:
    with pytest.raises(TableError):
        MemberTable.decode(b"\xc1garbage")
    data = encode_machine_snapshot(_table(), b"")
    with pytest.raises(TableError):
        decode_machine_snapshot(data[:-3])


def test_add_voter_refused_while_a_voter_is_unheard() -> None:
    table = _table()
    health = PeerHealth(1, frozenset({1, 2}))
    assert _refusal(lambda: plan_add(table, 10, ("http://h:1",), False, health)) is (
        Refusal.UNHEALTHY
    )


def test_add_voter_refused_when_started_voters_miss_the_new_quorum() -> None:
    """Two of three voters never started: a fourth voter would need three started."""
    table = MemberTable.of(
        [
            MemberInfo(1, "a", ("http://h:1",)),
            MemberInfo(2, "", ("http://h:2",)),
            MemberInfo(3, "", ("http://h:3",)),
        ]
    )
    refusal = _refusal(lambda: plan_add(table, 10, ("http://h:9",), False, _all_active(table)))
    assert refusal is Refusal.NOT_ENOUGH_STARTED


def test_add_refuses_taken_or_bad_peer_urls_and_second_learner() -> None:
    table = _table(learner=True)
    health = _all_active(table)
    taken = table.members[0].peer_urls
    assert _refusal(lambda: plan_add(table, 10, taken, False, health)) is Refusal.PEER_URLS_EXIST
    assert _refusal(lambda: plan_add(table, 10, ("h:1",), False, health)) is Refusal.BAD_URLS
    second = _refusal(lambda: plan_add(table, 10, ("http://h:9",), True, health))
    assert second is Refusal.TOO_MANY_LEARNERS


def test_added_member_is_unstarted_until_it_publishes() -> None:
    table = _table()
    added = plan_add(table, 10, ("http://h:9",), False, _all_active(table))
    assert added.get(10) == MemberInfo(10, "", ("http://h:9",), (), False)
    published = plan_publish(added, 10, "new", ("http://h:8",))
    assert published is not None
    assert published.get(10) == MemberInfo(10, "new", ("http://h:9",), ("http://h:8",), False)
    assert plan_publish(published, 10, "new", ("http://h:8",)) is None


def test_remove_down_voter_allowed_but_not_a_live_one_that_breaks_quorum() -> None:
    table = _table()
    two_down = PeerHealth(1, frozenset({1}))
    # member 2 is down: removing it leaves {1, 3} with only 1 active: refused
    assert _refusal(lambda: plan_remove(table, 3, PeerHealth(1, frozenset({1, 3})))) is (
        Refusal.UNHEALTHY
    )
    assert plan_remove(table, 2, PeerHealth(1, frozenset({1, 3}))).get(2) is None
    assert _refusal(lambda: plan_remove(table, 1, two_down)) is Refusal.UNHEALTHY
    assert _refusal(lambda: plan_remove(table, 42, two_down)) is Refusal.MEMBER_NOT_FOUND


def test_removed_id_is_never_reused() -> None:
    table = _table().without(2)
    assert new_member_id(table, 2) != 2
    assert new_member_id(table, 1) not in (0, 1, 2, 3)
    assert _refusal(lambda: plan_add(table, 2, ("http://h:9",), True, _all_active(table))) is (
        Refusal.MEMBER_EXISTS
    )


def test_promote_only_a_learner_in_sync() -> None:
    table = _table(learner=True)
    health = _all_active(table)
    assert _refusal(lambda: plan_promote(table, 2, health, 100, 100)) is Refusal.NOT_LEARNER
    lagging = _refusal(lambda: plan_promote(table, 99, health, 50, 100))
    assert lagging is Refusal.LEARNER_NOT_READY
    unknown = _refusal(lambda: plan_promote(table, 99, health, None, 100))
    assert unknown is Refusal.LEARNER_NOT_READY
    promoted = plan_promote(table, 99, health, 95, 100)
    assert promoted.membership().voters == (1, 2, 3, 99)


def test_update_changes_peer_urls_only() -> None:
    table = _table()
    updated = plan_update(table, 2, ("http://h:7",))
    assert updated.get(2) == MemberInfo(2, "m2", ("http://h:7",), ("http://127.0.0.1:2379",))
    assert _refusal(lambda: plan_update(table, 5, ("http://h:7",))) is Refusal.MEMBER_NOT_FOUND
    clash = table.members[2].peer_urls
    assert _refusal(lambda: plan_update(table, 2, clash)) is Refusal.PEER_URLS_EXIST


def test_conform_follows_a_configuration_that_came_without_a_table() -> None:
    table = _table()
    conformed = table.conform(Membership((NodeId(1), NodeId(2)), (NodeId(7),)))
    assert [m.member_id for m in conformed.members] == [1, 2, 7]
    assert conformed.get(7) == MemberInfo(7, "", (), (), True)
    assert conformed.removed == (3,)


def test_conform_brings_back_an_id_an_older_configuration_still_has() -> None:
    """A member that joined later starts from a newer table and replays older entries: an
    id its table counts as removed is a member again in those entries."""
    newer = _table().without(3)
    older = newer.conform(Membership((NodeId(1), NodeId(2), NodeId(3))))
    assert [m.member_id for m in older.members] == [1, 2, 3]
    assert older.removed == ()

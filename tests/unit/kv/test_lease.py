"""Leases: grant, keep-alive, revoke, leader-decided expiry, promotion, and lookups.

Protects DESIGN.md "leases with TTL and keep-alive; keys attached to a lease vanish with it"
and "Time-based behaviour (lease expiry) is decided by the leader and written into the log",
and ETCD_COMPAT.md "Lease expiry deletes all keys of the lease in one revision". Numbers
marked "etcd" were observed on etcd 3.4.23 (minimum TTL 2 s with default timing; unknown
lease: TimeToLive TTL -1, revoke NOT_FOUND).
"""

from __future__ import annotations

import pytest

from synod.kv import errors
from synod.kv.messages import (
    EventType,
    LeaseExpireRequest,
    LeaseExpireResponse,
    LeaseGrantRequest,
    LeaseKeepAliveRequest,
    LeaseKeepAliveResponse,
    LeasePromoteRequest,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    LeaseTimeToLiveRequest,
    PutRequest,
)
from synod.kv.store import KVStore
from tests.unit.kv.helpers import Store


def test_grant_raises_ttl_to_the_minimum_and_keeps_larger_ones() -> None:
    """Goal: etcd's minimum TTL (2 s by default: TTL 1, 0 and -5 all become 2)."""
    store = Store()
    for ttl_s in (1, 0, -5):
        lease_id = store.grant(ttl_s)
        response = store.kv.time_to_live(LeaseTimeToLiveRequest(lease_id), now_ms=0)
        assert response.grantedTTL == 2
    lease_id = store.grant(60)
    assert store.kv.time_to_live(LeaseTimeToLiveRequest(lease_id), 0).grantedTTL == 60


def test_generated_lease_ids_are_deterministic_positive_and_distinct() -> None:
    """Goal: no randomness: two stores fed the same grants choose the same ids. Method:
    grant 50 on each, compare, and check positivity and uniqueness."""
    first, second = Store(), Store()
    ids_first = [first.grant(10) for _ in range(50)]
    ids_second = [second.grant(10) for _ in range(50)]
    assert ids_first == ids_second
    assert len(set(ids_first)) == 50
    assert all(0 < lease_id < 2**63 for lease_id in ids_first)


def test_generated_id_skips_an_id_a_client_chose() -> None:
    """Goal: generated ids never collide with client-chosen ones. Method: take the id a
    fresh store would generate first, grant it explicitly, then grant with ID 0."""
    predicted = Store().grant(10)
    store = Store()
    assert store.grant(10, lease_id=predicted) == predicted
    assert store.grant(10) != predicted


def test_grant_with_an_existing_id_or_huge_ttl_is_refused() -> None:
    """Goal: "lease already exists" (FAILED_PRECONDITION) and "too large lease TTL"
    (OUT_OF_RANGE), as etcd; negative client ids are accepted like etcd's."""
    store = Store()
    store.grant(100, lease_id=7)
    with pytest.raises(errors.LeaseExists):
        store.grant(100, lease_id=7)
    with pytest.raises(errors.LeaseTTLTooLarge):
        store.grant(9_000_000_001)
    assert store.grant(100, lease_id=-3) == -3


def test_revoke_deletes_every_key_of_the_lease_in_one_revision() -> None:
    """Goal: lease keys vanish together, one revision, one DELETE event each with prev_kv.
    Method: two keys on a lease and one without; revoke; check revision and events."""
    store = Store()
    lease_id = store.grant(100)
    store.put(b"L1", b"1", lease=lease_id)
    store.put(b"L2", b"2", lease=lease_id)
    store.put(b"other")
    response = store.do(LeaseRevokeRequest(lease_id))
    assert isinstance(response, LeaseRevokeResponse)
    assert response.header.revision == 5 == store.kv.revision
    assert [(event.type, event.kv.key, event.kv.mod_revision) for event in store.events] == [
        (EventType.DELETE, b"L1", 5),
        (EventType.DELETE, b"L2", 5),
    ]
    assert all(event.prev_kv is not None for event in store.events)
    assert store.keys(b"\0", b"\0") == [b"other"]
    assert store.kv.lease_leases().leases == ()


def test_revoke_of_a_lease_without_keys_does_not_bump_the_revision() -> None:
    """Goal: etcd leaves the revision alone when a revoke deletes nothing."""
    store = Store()
    lease_id = store.grant(100)
    store.do(LeaseRevokeRequest(lease_id))
    assert store.kv.revision == 1


def test_revoke_or_keep_alive_of_an_unknown_lease_is_not_found() -> None:
    """Goal: "etcdserver: requested lease not found" (NOT_FOUND); the api layer answers a
    keep-alive of an unknown lease with no TTL, as Patroni expects."""
    store = Store()
    with pytest.raises(errors.LeaseNotFound):
        store.do(LeaseRevokeRequest(12345))
    with pytest.raises(errors.LeaseNotFound):
        store.do(LeaseKeepAliveRequest(12345))


def test_moving_a_key_to_another_lease_detaches_it_from_the_first() -> None:
    """Goal: a key belongs to the lease of its latest put; a put without lease detaches it;
    ignore_lease keeps the current one. Method: revoke the first lease; the key survives."""
    store = Store()
    first, second = store.grant(100), store.grant(100)
    store.put(b"k", b"1", lease=first)
    store.put(b"k", b"2", lease=second)
    store.do(PutRequest(b"k", b"3", ignore_lease=True))
    store.do(LeaseRevokeRequest(first))
    kv = store.get(b"k")
    assert kv is not None
    assert kv.lease == second
    keys = store.kv.time_to_live(LeaseTimeToLiveRequest(second, keys=True), 0).keys
    assert keys == (b"k",)
    store.put(b"k", b"4")
    store.do(LeaseRevokeRequest(second))
    assert store.get(b"k") is not None


def test_keep_alive_moves_the_deadline_and_answers_the_granted_ttl() -> None:
    """Goal: keep-alive refreshes on the leader's clock. Method: grant 10 s at t=0, keep
    alive at t=8 s: not due at 17.9 s, due at 18 s."""
    store = Store()
    lease_id = store.grant(10, now_ms=0)
    response = store.do(LeaseKeepAliveRequest(lease_id), now_ms=8_000)
    assert isinstance(response, LeaseKeepAliveResponse)
    assert (lease_id, 10) == (response.ID, response.TTL)
    assert store.kv.leases_due(17_999) == ()
    assert store.kv.leases_due(18_000) == (lease_id,)


def test_a_leader_renewal_moves_the_expiry_and_leaves_the_replicated_state_alone() -> None:
    """Goal: the leader's own keep-alive (no log entry) keeps the lease past its granted
    deadline on this member, and nothing replicated changes, so members stay identical.
    Method: grant 10 s at t=0, renew at t=8 s: not due before 18 s, TimeToLive counts from
    the renewal, and the snapshot is byte for byte that of a store that never renewed."""
    store, untouched = Store(), Store()
    lease_id = store.grant(10, now_ms=0)
    untouched.grant(10, now_ms=0)
    assert store.kv.lease_renew(lease_id, now_ms=8_000) == 10
    assert store.kv.leases_due(17_999) == ()
    assert store.kv.leases_due(18_000) == (lease_id,)
    assert store.kv.time_to_live(LeaseTimeToLiveRequest(lease_id), 8_500).TTL == 9
    assert untouched.kv.time_to_live(LeaseTimeToLiveRequest(lease_id), 8_500).TTL == 1
    assert store.kv.snapshot() == untouched.kv.snapshot()
    store.kv.check_invariants()


def test_a_lease_past_its_expiry_or_unknown_is_not_renewed() -> None:
    """Goal: once the leader may have proposed a lease's expiry, a keep-alive cannot
    promise it more time (the expiry in flight would undo the promise): it answers 0 and
    the lease stays due. An unknown lease answers 0 too."""
    store = Store()
    lease_id = store.grant(10, now_ms=0)
    assert store.kv.lease_renew(lease_id, now_ms=10_000) == 0
    assert store.kv.leases_due(10_000) == (lease_id,)
    assert store.kv.lease_renew(12345, now_ms=0) == 0
    expired = store.do(LeaseExpireRequest(lease_id), now_ms=10_000)
    assert isinstance(expired, LeaseExpireResponse) and expired.expired


def test_an_expiry_applies_by_the_replicated_deadline_on_every_member() -> None:
    """Goal: applying the leader's expiry gives the same result on the leader (which
    renewed the lease locally and later saw it due) and on followers (which never saw the
    renewals). Method: renew on one store only; the expiry at 19 s drops it on both."""
    leader, follower = Store(), Store()
    lease_id = leader.grant(10, now_ms=0)
    follower.grant(10, now_ms=0)
    assert leader.kv.lease_renew(lease_id, now_ms=9_000) == 10
    assert leader.kv.leases_due(18_999) == ()
    assert leader.kv.leases_due(19_000) == (lease_id,)
    outcomes = [s.do(LeaseExpireRequest(lease_id), now_ms=19_000) for s in (leader, follower)]
    assert outcomes[0] == outcomes[1]
    assert isinstance(outcomes[0], LeaseExpireResponse) and outcomes[0].expired
    assert leader.kv.snapshot() == follower.kv.snapshot()


def test_promotion_outlasts_a_former_renewal_and_keeps_a_later_one() -> None:
    """Goal: a promotion restarts countdowns past what an earlier leader renewed, and
    never cuts short a renewal this member made after the promotion was proposed."""
    store = Store()
    lease_id = store.grant(10, now_ms=0)
    assert store.kv.lease_renew(lease_id, now_ms=8_000) == 10  # expiry 18 s
    store.do(LeasePromoteRequest(extend_ms=1_000), now_ms=9_000)  # deadline 20 s
    assert store.kv.leases_due(19_999) == ()
    assert store.kv.leases_due(20_000) == (lease_id,)
    assert store.kv.lease_renew(lease_id, now_ms=15_000) == 10  # expiry 25 s
    store.do(LeasePromoteRequest(extend_ms=0), now_ms=12_000)  # deadline 22 s
    assert store.kv.leases_due(24_999) == ()
    assert store.kv.leases_due(25_000) == (lease_id,)
    store.kv.check_invariants()


def test_leases_due_lists_earliest_deadline_first_up_to_the_limit() -> None:
    """Goal: the leader's expiry query is ordered and bounded."""
    store = Store()
    late = store.grant(30)
    early = store.grant(10)
    assert store.kv.leases_due(100_000) == (early, late)
    assert store.kv.leases_due(100_000, limit=1) == (early,)
    assert store.kv.leases_due(9_999) == ()


def test_expire_deletes_a_due_lease_and_is_a_no_op_after_a_keep_alive() -> None:
    """Goal: a keep-alive ordered before the leader's expire command wins. Method: the
    leader sees lease A due at 10 s, but a keep-alive at 9.5 s lands first in the log: the
    expire at 10 s does nothing. Lease B is expired for real, with its key."""
    store = Store()
    a = store.grant(10)
    b = store.grant(10)
    store.put(b"kb", lease=b)
    store.do(LeaseKeepAliveRequest(a), now_ms=9_500)
    stale = store.do(LeaseExpireRequest(a), now_ms=10_000)
    assert isinstance(stale, LeaseExpireResponse)
    assert not stale.expired
    real = store.do(LeaseExpireRequest(b), now_ms=10_000)
    assert isinstance(real, LeaseExpireResponse)
    assert real.expired
    assert real.header.revision == 3
    assert [lease.ID for lease in store.kv.lease_leases().leases] == [a]
    assert store.get(b"kb") is None
    assert store.do(LeaseExpireRequest(b), now_ms=99_000) == LeaseExpireResponse(
        real.header, expired=False
    )


def test_promote_restarts_every_countdown_on_the_new_leaders_clock() -> None:
    """Goal: a new leader extends rather than expires everything at once (etcd's Promote).
    Method: leases granted at old-leader time 0; the new leader's clock reads 5,000,000 ms,
    so all are "due" by raw deadline; after LeasePromote(extend 1 s) none is due before
    now + 1 s + TTL."""
    store = Store()
    short, long = store.grant(10), store.grant(60)
    new_now_ms = 5_000_000
    assert store.kv.leases_due(new_now_ms) == (short, long)
    store.do(LeasePromoteRequest(extend_ms=1_000), now_ms=new_now_ms)
    assert store.kv.leases_due(new_now_ms + 10_999) == ()
    assert store.kv.leases_due(new_now_ms + 11_000) == (short,)
    assert store.kv.leases_due(new_now_ms + 61_000) == (short, long)


def test_time_to_live_reports_remaining_whole_seconds_and_keys() -> None:
    """Goal: TimeToLive as etcd: remaining seconds truncated (etcd showed 99 of 100), the
    granted TTL, keys on request; TTL -1 for an unknown lease (etcdctl: "already expired")."""
    store = Store()
    lease_id = store.grant(100, now_ms=0)
    store.put(b"b", lease=lease_id)
    store.put(b"a", lease=lease_id)
    response = store.kv.time_to_live(LeaseTimeToLiveRequest(lease_id, keys=True), 500)
    assert (response.TTL, response.grantedTTL, response.keys) == (99, 100, (b"a", b"b"))
    assert store.kv.time_to_live(LeaseTimeToLiveRequest(lease_id), 200_000).TTL == 0
    unknown = store.kv.time_to_live(LeaseTimeToLiveRequest(4242), 0)
    assert (unknown.ID, unknown.TTL) == (4242, -1)


def test_extend_all_on_the_store_matches_the_promote_command() -> None:
    """Goal: the direct `extend_all` and the logged command agree. Method: same grants,
    one store promoted by command, the other by method; snapshots are equal."""
    by_command, by_method = Store(), Store()
    for store in (by_command, by_method):
        store.grant(10)
        store.grant(20)
    by_command.do(LeasePromoteRequest(500), now_ms=7_000)
    by_method.kv.extend_all(7_000, 500)
    assert by_command.kv.snapshot() == by_method.kv.snapshot()


def test_lease_grant_does_not_change_the_revision() -> None:
    """Goal: lease commands other than revoke/expire write no key (etcd keeps revision 2)."""
    store = Store()
    store.do(LeaseGrantRequest(10))
    assert store.kv.revision == 1
    assert isinstance(store.kv, KVStore)

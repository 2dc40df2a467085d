"""Watches: replay from a revision, live delivery, prev_kv, filters, compaction, progress.

Protects DESIGN.md "watches resumable from a revision" and ETCD_COMPAT.md's Patroni watch
(from a range's header revision; a lease expiry arrives as one message of DELETE events).
Message shapes marked "etcd" were observed on etcd 3.4.23's watch stream.
"""

from __future__ import annotations

from synod.kv.messages import (
    CompactionRequest,
    EventType,
    LeaseRevokeRequest,
    PutRequest,
    ResponseHeader,
    TxnRequest,
    WatchCreateRequest,
    WatchFilter,
    WatchResponse,
)
from synod.kv.store import KVStore
from synod.kv.watch import DUPLICATE_WATCH_ID, EMPTY_WATCH_RANGE, WatchHub
from tests.unit.kv.helpers import Store


def _summary(response: WatchResponse) -> list[tuple[str, bytes, int]]:
    return [(event.type.name, event.kv.key, event.kv.mod_revision) for event in response.events]


def _live(hub: WatchHub, store: Store) -> tuple[WatchResponse, ...]:
    return hub.on_applied(store.events)


def test_watch_from_now_gets_created_then_only_new_events() -> None:
    """Goal: start_revision 0 = from now. Method: write, watch, write; only the second write
    is delivered, with the header at its revision."""
    store = Store()
    store.put(b"k", b"old")
    hub = WatchHub(store.kv)
    (created,) = hub.create(WatchCreateRequest(b"k"))
    assert (created.created, created.watch_id, created.header.revision) == (True, 0, 2)
    store.put(b"k", b"new")
    (message,) = _live(hub, store)
    assert _summary(message) == [("PUT", b"k", 3)]
    assert message.header.revision == 3
    assert message.events[0].prev_kv is None


def test_replay_from_a_revision_then_live_events_without_gaps_or_repeats() -> None:
    """Goal: resumable watches: history from start_revision, then live, each revision
    once and in order. Method: four writes, watch from revision 3 over a prefix, two more."""
    store = Store()
    for key in (b"p/a", b"p/b", b"q", b"p/c"):
        store.put(key)
    hub = WatchHub(store.kv)
    created, replay = hub.create(WatchCreateRequest(b"p/", b"p0", start_revision=3))
    assert created.created
    assert _summary(replay) == [("PUT", b"p/b", 3), ("PUT", b"p/c", 5)]  # one batch, as etcd
    assert replay.header.revision == 5
    store.delete(b"p/a")
    (live,) = _live(hub, store)
    assert _summary(live) == [("DELETE", b"p/a", 6)]
    assert _live(hub, store) == ()  # the same events again are not delivered twice


def test_prev_kv_is_sent_only_to_watchers_that_ask() -> None:
    """Goal: WatchCreateRequest.prev_kv. Method: two watchers, one with prev_kv."""
    store = Store()
    store.put(b"k", b"1")
    hub = WatchHub(store.kv)
    hub.create(WatchCreateRequest(b"k", watch_id=1))
    hub.create(WatchCreateRequest(b"k", watch_id=2, prev_kv=True))
    store.put(b"k", b"2")
    plain, with_prev = _live(hub, store)
    assert plain.events[0].prev_kv is None
    prev = with_prev.events[0].prev_kv
    assert prev is not None
    assert prev.value == b"1"


def test_filters_drop_puts_or_deletes() -> None:
    """Goal: NOPUT / NODELETE filters; a revision with nothing left sends no message."""
    store = Store()
    hub = WatchHub(store.kv)
    hub.create(WatchCreateRequest(b"k", watch_id=1, filters=(WatchFilter.NOPUT,)))
    hub.create(WatchCreateRequest(b"k", watch_id=2, filters=(WatchFilter.NODELETE,)))
    store.put(b"k")
    (only_puts,) = _live(hub, store)
    assert only_puts.watch_id == 2
    store.delete(b"k")
    (only_deletes,) = _live(hub, store)
    assert only_deletes.watch_id == 1
    assert only_deletes.events[0].type == EventType.DELETE


def test_events_of_one_revision_come_in_one_message() -> None:
    """Goal: a lease revocation (Patroni's expiry) and a txn each arrive as one message
    carrying all their events (etcd). Method: watch the prefix, revoke, run a txn."""
    store = Store()
    lease_id = store.grant(100)
    store.put(b"L1", lease=lease_id)
    store.put(b"L2", lease=lease_id)
    hub = WatchHub(store.kv)
    hub.create(WatchCreateRequest(b"L", b"M", prev_kv=True))
    store.do(LeaseRevokeRequest(lease_id))
    (revoked,) = _live(hub, store)
    assert _summary(revoked) == [("DELETE", b"L1", 4), ("DELETE", b"L2", 4)]
    assert all(event.prev_kv is not None for event in revoked.events)
    store.txn(TxnRequest(success=(PutRequest(b"L3"), PutRequest(b"L4"))))
    (txn,) = _live(hub, store)
    assert _summary(txn) == [("PUT", b"L3", 5), ("PUT", b"L4", 5)]


def test_watch_below_the_compact_revision_is_canceled_with_it() -> None:
    """Goal: a compacted start gets etcd's answer: created, then canceled with
    compact_revision and an empty header; no watcher remains. A start equal to the compact
    revision still replays."""
    store = Store()
    for value in (b"1", b"2", b"3", b"4"):
        store.put(b"k", value)
    store.do(CompactionRequest(4))
    hub = WatchHub(store.kv)
    created, compacted = hub.create(WatchCreateRequest(b"k", start_revision=3))
    assert created.created
    assert compacted == WatchResponse(
        ResponseHeader(), watch_id=0, canceled=True, compact_revision=4
    )
    assert len(hub) == 0
    _, replay = hub.create(WatchCreateRequest(b"k", start_revision=4, prev_kv=True))
    assert _summary(replay) == [("PUT", b"k", 4), ("PUT", b"k", 5)]
    first_prev = replay.events[0].prev_kv
    assert first_prev is not None
    assert first_prev.value == b"2"


def test_future_start_revision_waits_for_that_revision() -> None:
    """Goal: a watch from a revision not yet reached delivers from it on, nothing before."""
    store = Store()
    hub = WatchHub(store.kv)
    created, *replay = hub.create(WatchCreateRequest(b"k", start_revision=3))
    assert created.created
    assert replay == []
    store.put(b"k", b"at 2")
    assert _live(hub, store) == ()
    store.put(b"k", b"at 3")
    (message,) = _live(hub, store)
    assert _summary(message) == [("PUT", b"k", 3)]


def test_watch_ids_auto_assign_from_zero_and_refuse_duplicates() -> None:
    """Goal: etcd's ids per stream: 0 asks for the lowest free id; a duplicate or an empty
    range is answered created+canceled with id -1 and etcd's reason."""
    hub = WatchHub(Store().kv)
    assert hub.create(WatchCreateRequest(b"a"))[0].watch_id == 0
    assert hub.create(WatchCreateRequest(b"a", watch_id=5))[0].watch_id == 5
    assert hub.create(WatchCreateRequest(b"a"))[0].watch_id == 1
    (duplicate,) = hub.create(WatchCreateRequest(b"a", watch_id=5))
    assert (duplicate.watch_id, duplicate.canceled, duplicate.cancel_reason) == (
        -1,
        True,
        DUPLICATE_WATCH_ID,
    )
    (empty,) = hub.create(WatchCreateRequest(b"b", b"a"))
    assert empty.cancel_reason == EMPTY_WATCH_RANGE == "mvcc: watcher range is empty"
    assert len(hub) == 3


def test_cancel_stops_delivery_and_unknown_ids_get_no_answer() -> None:
    """Goal: cancel answers canceled once; later events skip the watcher."""
    store = Store()
    hub = WatchHub(store.kv)
    hub.create(WatchCreateRequest(b"k"))
    canceled = hub.cancel(0)
    assert canceled is not None
    assert canceled.canceled
    assert hub.cancel(0) is None
    store.put(b"k")
    assert _live(hub, store) == ()


def test_progress_notify_goes_to_idle_watchers_that_asked() -> None:
    """Goal: progress notification: the current revision for watchers with
    progress_notify and no events since the last tick; request_progress answers id -1."""
    store = Store()
    hub = WatchHub(store.kv)
    hub.create(WatchCreateRequest(b"busy", watch_id=1, progress_notify=True))
    hub.create(WatchCreateRequest(b"idle", watch_id=2, progress_notify=True))
    hub.create(WatchCreateRequest(b"quiet", watch_id=3))
    store.put(b"busy")
    _live(hub, store)
    (notice,) = hub.progress_notify()
    assert (notice.watch_id, notice.header.revision, notice.events) == (2, 2, ())
    assert [response.watch_id for response in hub.progress_notify()] == [1, 2]
    assert hub.request_progress() == WatchResponse(ResponseHeader(revision=2), watch_id=-1)


def test_watch_all_keys_with_nul_range_end() -> None:
    """Goal: key "\\0" range_end "\\0" watches everything (as ranges do)."""
    store = Store()
    hub = WatchHub(store.kv)
    hub.create(WatchCreateRequest(b"\0", b"\0"))
    store.put(b"anything")
    store.put(b"\xff")
    assert len(_live(hub, store)) == 1


def test_resync_after_a_snapshot_install_replays_what_the_watcher_missed() -> None:
    """Goal: a member that installs a snapshot keeps its watchers gap-free. Method: a
    watcher at revision 2; another member moves on by two writes; this member restores
    that member's snapshot; resync replays both writes, then live delivery continues."""
    lagging, leader = Store(), Store()
    hub = WatchHub(lagging.kv)
    hub.create(WatchCreateRequest(b"k"))
    for value in (b"1", b"2"):
        leader.put(b"k", value)
    restored = Store(KVStore.restore(leader.kv.snapshot()))
    (replay,) = hub.resync(restored.kv)
    assert _summary(replay) == [("PUT", b"k", 2), ("PUT", b"k", 3)]
    restored.put(b"k", b"3")
    (live,) = hub.on_applied(restored.events)
    assert _summary(live) == [("PUT", b"k", 4)]


def test_resync_cancels_watchers_whose_next_revision_was_compacted() -> None:
    """Goal: a gap that history cannot fill ends the watch with compact_revision."""
    lagging, leader = Store(), Store()
    hub = WatchHub(lagging.kv)
    hub.create(WatchCreateRequest(b"k"))
    for value in (b"1", b"2", b"3"):
        leader.put(b"k", value)
    leader.do(CompactionRequest(4))
    (canceled,) = hub.resync(KVStore.restore(leader.kv.snapshot()))
    assert (canceled.canceled, canceled.compact_revision) == (True, 4)
    assert len(hub) == 0

"""Determinism: the store is a pure function of the commands applied, and snapshots are exact.

Protects DESIGN.md "state machines: pure functions of the committed log - same entries in
the same order give the same state and the same responses on every member" and the
snapshot path of catch-up. Method: hypothesis draws command sequences mixing every command
kind (including ones the store refuses); stores fed the same payloads must agree on every
response, error, event and snapshot byte, also across a snapshot/restore in the middle.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.kv import codec
from synod.kv.errors import KVError, MalformedCommand
from synod.kv.messages import (
    Command,
    CompactionRequest,
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    Event,
    LeaseExpireRequest,
    LeaseGrantRequest,
    LeaseKeepAliveRequest,
    LeasePromoteRequest,
    LeaseRevokeRequest,
    PutRequest,
    RangeRequest,
    TxnRequest,
    WatchCreateRequest,
    WriteRequest,
)
from synod.kv.store import KVStore
from synod.kv.watch import WatchHub

_KEYS = st.sampled_from([b"a", b"b", b"b/1", b"b/2", b"c"])
_LEASES = st.sampled_from([0, 1, 2, 3])
_NOW_MS = st.integers(min_value=0, max_value=60_000)


def _puts() -> st.SearchStrategy[PutRequest]:
    return st.builds(
        PutRequest, key=_KEYS, value=st.binary(max_size=3), lease=_LEASES, prev_kv=st.booleans()
    )


def _deletes() -> st.SearchStrategy[DeleteRangeRequest]:
    return st.builds(
        DeleteRangeRequest, key=_KEYS, range_end=st.sampled_from([b"", b"\0", b"b0", b"c"])
    )


def _txns() -> st.SearchStrategy[TxnRequest]:
    compare = st.builds(
        Compare,
        result=st.sampled_from(CompareResult),
        target=st.sampled_from(CompareTarget),
        key=_KEYS,
        version=st.integers(0, 3),
        value=st.binary(max_size=2),
    )
    ops = st.lists(st.one_of(_puts(), _deletes(), st.builds(RangeRequest, key=_KEYS)), max_size=3)
    return st.builds(
        TxnRequest,
        compare=st.lists(compare, max_size=2).map(tuple),
        success=ops.map(tuple),
        failure=ops.map(tuple),
    )


_COMMANDS = st.lists(
    st.tuples(
        st.one_of(
            _puts(),
            _puts(),
            _deletes(),
            _txns(),
            st.builds(CompactionRequest, revision=st.integers(0, 30)),
            st.builds(LeaseGrantRequest, TTL=st.integers(1, 20), ID=_LEASES),
            st.builds(LeaseRevokeRequest, ID=_LEASES),
            st.builds(LeaseKeepAliveRequest, ID=_LEASES),
            st.builds(LeaseExpireRequest, ID=_LEASES),
            st.builds(LeasePromoteRequest, extend_ms=st.integers(0, 2_000)),
        ),
        _NOW_MS,
    ),
    max_size=40,
)


def _run(store: KVStore, payloads: list[bytes]) -> list[object]:
    """Apply payloads; record each response or error and the events, as a server would."""
    outcomes: list[object] = []
    for payload in payloads:
        try:
            applied = store.apply(codec.decode_command(payload))
        except KVError as error:
            outcomes.append((type(error).__name__, error.code, error.message))
        else:
            outcomes.append((applied.response, applied.events))
        store.check_invariants()
    return outcomes


def _payloads(commands: list[tuple[WriteRequest, int]]) -> list[bytes]:
    return [codec.encode_command(Command(request, now_ms)) for request, now_ms in commands]


@settings(max_examples=60, deadline=None)
@given(commands=_COMMANDS)
def test_two_stores_fed_the_same_commands_agree_on_everything(
    commands: list[tuple[WriteRequest, int]],
) -> None:
    """Two members applying the same log give identical responses, errors and events, and
    end byte-identical (snapshot) with the same HashKV."""
    payloads = _payloads(commands)
    first, second = KVStore(), KVStore()
    assert _run(first, payloads) == _run(second, payloads)
    assert first.snapshot() == second.snapshot()
    assert first.hash_kv() == second.hash_kv()


@settings(max_examples=60, deadline=None)
@given(commands=_COMMANDS, later=_COMMANDS)
def test_restored_snapshot_equals_the_original_and_behaves_the_same(
    commands: list[tuple[WriteRequest, int]], later: list[tuple[WriteRequest, int]]
) -> None:
    """restore(snapshot()) is the same store: same bytes, and the same future answers,
    lease ids, due leases and watch replays as the original."""
    original = KVStore()
    _run(original, _payloads(commands))
    restored = KVStore.restore(original.snapshot())
    assert restored.snapshot() == original.snapshot()
    assert _run(restored, _payloads(later)) == _run(original, _payloads(later))
    assert restored.snapshot() == original.snapshot()
    assert restored.leases_due(10**9) == original.leases_due(10**9)
    start = original.compact_revision
    assert list(restored.events_from(start)) == list(original.events_from(start))


@settings(max_examples=60, deadline=None)
@given(commands=_COMMANDS)
def test_watch_replay_equals_the_live_events_of_the_same_revisions(
    commands: list[tuple[WriteRequest, int]],
) -> None:
    """A watcher created before the writes (live delivery) and one created afterwards from
    the same start (replay) see the same events in the same order, unless compacted."""
    store = KVStore()
    live_hub = WatchHub(store)
    live_hub.create(WatchCreateRequest(b"\0", b"\0", prev_kv=True))
    live: list[Event] = []
    for payload in _payloads(commands):
        try:
            applied = store.apply(codec.decode_command(payload))
        except KVError:
            continue
        for response in live_hub.on_applied(applied.events):
            live.extend(response.events)
    replay_hub = WatchHub(store)
    _, *replayed = replay_hub.create(
        WatchCreateRequest(b"\0", b"\0", start_revision=2, prev_kv=True)
    )
    if store.compact_revision > 2:
        assert replayed[0].compact_revision == store.compact_revision
        return
    assert [event for response in replayed for event in response.events] == live


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not msgpack at all",
        msgpack.packb([1, 1, 0, 2, 0, [], [], []]) + b"x",
        msgpack.packb([9, 1, 0, 2, 0, [], [], []]),
        msgpack.packb([1, 0, 0, 2, 0, [], [], []]),  # revision 0
        msgpack.packb([1, 5, 0, 2, 0, [[b"b", [[2, None]]], [b"a", [[3, None]]]], [], []]),
        msgpack.packb([1, 5, 0, 2, 0, [[b"a", [[2, [2, 1, b"v", 9]]]]], [], []]),  # no lease 9
        msgpack.packb([1, 5, 0, 2, 0, [[b"a", [[2, [2, 1, b"v", 0]]]]], [[3, [b"a"]]], []]),
        msgpack.packb([1, 5, 0, 2, 0, [[b"a", [[2, [2, 1, b"v", 0]]]]], [], []])[:-3],  # cut
    ],
)
def test_restore_refuses_bytes_that_are_not_a_snapshot(data: bytes) -> None:
    """A corrupt or foreign snapshot raises MalformedCommand rather than building a store
    that breaks its invariants later."""
    with pytest.raises(MalformedCommand):
        KVStore.restore(data)

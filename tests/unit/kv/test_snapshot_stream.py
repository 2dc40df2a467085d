"""The incremental snapshot: pieces produced while commands keep being applied join to the
exact bytes `snapshot()` gave when the stream opened (issue 3: "the snapshot written
atomically while the member keeps applying"). Method: open a stream, apply puts, deletes,
new keys, lease grants and revocations between every two pieces, and compare the joined
pieces with the one-shot snapshot taken at the opening; then restore from the pieces."""

from __future__ import annotations

import random

import pytest

from synod.kv.messages import CompactionRequest, LeaseRevokeRequest
from synod.kv.snapshot_columns import CHUNK_KEYS
from synod.kv.store import SNAPSHOT_STREAMS_MAX, KVStore, SnapshotCancelled
from tests.unit.kv.helpers import Store


def _filled(keys: int) -> Store:
    store = Store()
    lease = store.grant(60, 7)
    for index in range(keys):
        store.put(b"k%04d" % index, b"v%d" % index, lease=lease if index % 10 == 0 else 0)
    for index in range(0, keys, 7):
        store.put(b"k%04d" % index, b"again")
    for index in range(3, keys, 11):
        store.delete(b"k%04d" % index)
    return store


def _churn(store: Store, rng: random.Random, keys: int) -> None:
    """A mix of writes before, inside and after the part of the key space already written."""
    for _ in range(5):
        index = rng.randrange(keys + 50)
        action = rng.random()
        if action < 0.6:
            store.put(b"k%04d" % index, b"new%d" % rng.randrange(1000))
        elif action < 0.8:
            store.delete(b"k%04d" % index)
        else:
            store.put(b"a-new-%d" % index, b"fresh")
    if rng.random() < 0.2:
        store.grant(30)


def test_pieces_join_to_the_snapshot_of_the_moment_the_stream_opened() -> None:
    store = _filled(400)
    expected = store.kv.snapshot()
    stream = store.kv.snapshot_stream(slice_keys=16)
    rng = random.Random(3)
    pieces = []
    for piece in stream:
        pieces.append(piece)
        _churn(store, rng, 400)
    assert len(pieces) > 10, "the stream came in many slices"
    assert b"".join(pieces) == expected
    assert store.kv.snapshot() != expected, "the store moved on meanwhile"
    restored = KVStore.restore(b"".join(pieces))
    assert restored.snapshot() == expected


def test_a_lease_revoked_during_the_stream_is_still_in_it() -> None:
    store = _filled(100)
    expected = store.kv.snapshot()
    stream = store.kv.snapshot_stream(slice_keys=8)
    pieces = [next(stream)]
    store.do(LeaseRevokeRequest(7))
    pieces.extend(stream)
    assert b"".join(pieces) == expected


def test_a_compaction_voids_an_open_stream() -> None:
    store = _filled(100)
    stream = store.kv.snapshot_stream(slice_keys=8)
    next(stream)
    store.do(CompactionRequest(store.kv.revision))
    with pytest.raises(SnapshotCancelled):
        list(stream)
    assert b"".join(store.kv.snapshot_stream()) == store.kv.snapshot()


def test_streams_opened_at_different_moments_each_give_their_own_snapshot() -> None:
    """The member's own snapshot and a backup may run at once; neither voids the other."""
    store = _filled(200)
    first_expected = store.kv.snapshot()
    first = store.kv.snapshot_stream(slice_keys=8)
    first_pieces = [next(first)]
    rng = random.Random(5)
    _churn(store, rng, 200)
    second_expected = store.kv.snapshot()
    second = store.kv.snapshot_stream(slice_keys=8)
    second_pieces: list[bytes] = []
    for piece_of_first, piece_of_second in zip(first, second, strict=False):
        first_pieces.append(piece_of_first)
        second_pieces.append(piece_of_second)
        _churn(store, rng, 200)
    first_pieces.extend(first)
    second_pieces.extend(second)
    assert first_expected != second_expected
    assert b"".join(first_pieces) == first_expected
    assert b"".join(second_pieces) == second_expected


def test_opening_more_streams_than_the_bound_voids_the_oldest() -> None:
    store = _filled(50)
    streams = [store.kv.snapshot_stream(slice_keys=8) for _ in range(SNAPSHOT_STREAMS_MAX + 1)]
    for stream in streams:
        next(stream)
    with pytest.raises(SnapshotCancelled):
        list(streams[0])
    for stream in streams[1:]:
        assert len(b"".join(stream)) > 0


def test_an_empty_store_streams_its_snapshot() -> None:
    store = KVStore()
    assert b"".join(store.snapshot_stream()) == store.snapshot()


def test_keys_gathered_for_a_chunk_not_yet_written_keep_their_value_of_the_moment() -> None:
    """Format 2 writes a chunk once CHUNK_KEYS keys are gathered, so a key the stream has
    passed may still wait in memory when it changes: what is written is its value when the
    stream opened. Method: several chunks; between pieces change keys just behind the
    stream's position (gathered, unwritten) and ahead of it, add and delete keys."""
    keys = CHUNK_KEYS * 2 + 500
    store = Store()
    for index in range(keys):
        store.put(b"k%05d" % index, b"v%d" % index)
    expected = store.kv.snapshot()
    stream = store.kv.snapshot_stream(slice_keys=100)
    pieces = [next(stream)]
    behind = 0
    for piece in stream:
        pieces.append(piece)
        behind = min(behind + 100, keys - 1)
        store.put(b"k%05d" % behind, b"changed behind")
        store.put(b"k%05d" % max(0, behind - 50), b"changed further behind")
        store.put(b"k%05d" % min(keys - 1, behind + 150), b"changed ahead")
        store.delete(b"k%05d" % max(0, behind - 10))
        store.put(b"k%05d-new" % behind, b"created after the opening")
    assert b"".join(pieces) == expected
    assert KVStore.restore(expected).snapshot() == expected

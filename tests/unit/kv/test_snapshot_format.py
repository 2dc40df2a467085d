"""The snapshot's encodings: format 2 (column chunks, issue 8) round-trips every shape of
history, loads a format-1 snapshot written by an earlier Synod into the same store, and
refuses bytes that break its rules. Method: build a store that has every kind of record
(overwrites, deletes, a multi-key transaction written out of key order, leased keys, a
compaction), then compare restored stores by their canonical bytes, HashKV and answers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from synod.kv.errors import MalformedCommand
from synod.kv.messages import (
    CompactionRequest,
    KeyValue,
    LeaseTimeToLiveRequest,
    PutRequest,
    RangeRequest,
    TxnRequest,
)
from synod.kv.snapshot_columns import CHUNK_KEYS, PIECE_BYTES, PIECE_ITEMS, key_values
from synod.kv.store import (
    SNAPSHOT_FORMAT,
    SNAPSHOT_FORMAT_ROWS,
    SNAPSHOT_SLICE_RECORDS,
    KVStore,
)
from tests.unit.kv.helpers import Store

FORMAT_1_FIXTURE = Path(__file__).parent / "data" / "snapshot-format-1.msgpack"


def history_store() -> Store:
    """Every kind of record a snapshot holds; deterministic, so a fixture can pin it."""
    store = Store()
    lease = store.grant(60, 7)
    for index in range(40):
        store.put(b"k%03d" % index, b"v%d" % index, lease=lease if index % 9 == 0 else 0)
    for index in range(0, 40, 3):
        store.put(b"k%03d" % index, b"again%d" % index)
    store.delete(b"k010", b"k015")
    store.do(CompactionRequest(store.kv.revision - 5))
    store.txn(
        TxnRequest(
            success=(PutRequest(b"k039", b"txn"), PutRequest(b"k001", b"txn")),
        )
    )
    store.delete(b"k020")
    store.put(b"k020", b"back")
    store.grant(30, 8)
    return store


def _same_store(restored: KVStore, original: KVStore) -> None:
    """Equal canonical bytes, HashKV, old-revision reads, watch replay and lease keys."""
    restored.check_invariants()
    assert restored.snapshot() == original.snapshot()
    assert restored.hash_kv() == original.hash_kv()
    for at in range(original.compact_revision, original.revision + 1):
        request = RangeRequest(b"\0", b"\0", revision=at)
        assert restored.range(request) == original.range(request)
    start = original.compact_revision
    assert list(restored.events_from(start)) == list(original.events_from(start))
    for lease_id in original.leases.ids():
        ask = LeaseTimeToLiveRequest(lease_id, keys=True)
        assert restored.time_to_live(ask, 0) == original.time_to_live(ask, 0)


def test_a_format_1_snapshot_of_an_earlier_synod_restores_to_the_same_store() -> None:
    """The fixture was written by the format-1 writer from `history_store()`; members
    restarting after an upgrade read such snapshots from their data directories."""
    old = FORMAT_1_FIXTURE.read_bytes()
    assert msgpack.unpackb(old)[0] == SNAPSHOT_FORMAT_ROWS
    restored = KVStore.restore(old)
    _same_store(restored, history_store().kv)
    assert msgpack.unpackb(restored.snapshot())[0] == SNAPSHOT_FORMAT == 2


def test_format_2_round_trips_every_kind_of_record() -> None:
    original = history_store().kv
    data = original.snapshot()
    assert msgpack.unpackb(data)[0] == SNAPSHOT_FORMAT
    _same_store(KVStore.restore(data), original)
    _same_store(KVStore.restore(memoryview(data)), original)


def test_format_2_round_trips_across_many_chunks_whatever_the_stream_slices() -> None:
    """Keys and changes spanning several chunks, keys with several records on a chunk's
    edge, a transaction and a range delete of many keys: the chunking is the format's,
    not the stream's."""
    store = Store()
    keys = CHUNK_KEYS * 2 + 100
    for index in range(keys):
        store.put(b"k%05d" % index, b"v%d" % index)
    for index in range(CHUNK_KEYS - 5, CHUNK_KEYS + 5):
        store.put(b"k%05d" % index, b"again")
        store.delete(b"k%05d" % index)
    store.txn(TxnRequest(success=tuple(PutRequest(b"t%03d" % n, b"x") for n in range(100))))
    store.delete(b"k00000", b"k00300")
    data = store.kv.snapshot()
    assert len(msgpack.unpackb(data)[5]) == 3, "three index chunks"
    for slice_keys in (1, 7, CHUNK_KEYS, 5000):
        assert b"".join(store.kv.snapshot_stream(slice_keys=slice_keys)) == data
    _same_store(KVStore.restore(data), store.kv)


def test_key_values_made_in_bulk_equal_constructed_ones() -> None:
    columns = ([b"a", b"b"], [2, 3], [4, 3], [2, 1], [b"x", b""], [0, 7])
    made = key_values(columns)
    expected = [KeyValue(*fields) for fields in zip(*columns, strict=True)]
    assert made == expected
    assert [hash(kv) for kv in made] == [hash(kv) for kv in expected]
    with pytest.raises(dataclasses.FrozenInstanceError):
        made[0].value = b"changed"  # type: ignore[misc]


Layout = list[Any]


def _index_column(layout: Layout, column: int) -> list[Any]:
    column_values: list[Any] = layout[5][0][column]
    return column_values


def _set(column: int, position: int, value: Any) -> Callable[[Layout], None]:
    def mutate(layout: Layout) -> None:
        _index_column(layout, column)[position] = value

    return mutate


KEYS, COUNTS, REVISIONS, POSITIONS, CREATES, VERSIONS, VALUES, LEASES = range(8)


def _record_of(layout: Layout, key: bytes, which: int) -> int:
    """Where in the record columns the `which`th record of `key` is (-1: its last)."""
    keys, counts = _index_column(layout, KEYS), _index_column(layout, COUNTS)
    at = keys.index(key)
    return sum(counts[:at]) + (which if which >= 0 else counts[at] + which)


def _set_record(key: bytes, which: int, column: int, value: Any) -> Callable[[Layout], None]:
    def mutate(layout: Layout) -> None:
        _index_column(layout, column)[_record_of(layout, key, which)] = value

    return mutate


def _swap_first_keys(layout: Layout) -> None:
    keys = _index_column(layout, 0)
    keys[0], keys[1] = keys[1], keys[0]


def _tombstone_with_a_version(layout: Layout) -> None:
    values = _index_column(layout, VALUES)
    _index_column(layout, VERSIONS)[values.index(None)] = 3


def _records_out_of_order(layout: Layout) -> None:
    counts = _index_column(layout, COUNTS)
    revisions = _index_column(layout, REVISIONS)
    start = sum(counts[: next(i for i, n in enumerate(counts) if n > 1)])
    revisions[start], revisions[start + 1] = revisions[start + 1], revisions[start]


def _live_key_on_a_missing_lease(layout: Layout) -> None:
    counts = _index_column(layout, COUNTS)
    last_record = sum(counts) - 1
    assert _index_column(layout, VALUES)[last_record] is not None, "the last key is live"
    _index_column(layout, LEASES)[last_record] = 99


def _drop_a_column(layout: Layout) -> None:
    layout[5][0].pop()


def _chunk_too_large(layout: Layout) -> None:
    chunk = layout[5][0]
    for column in chunk:
        column.extend(column[-1:] * CHUNK_KEYS)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(_swap_first_keys, id="keys-unsorted"),
        pytest.param(_set(KEYS, 0, b""), id="empty-key"),
        pytest.param(_set(KEYS, 0, "k000"), id="key-not-bytes"),
        pytest.param(_set(COUNTS, 0, 0), id="key-without-records"),
        pytest.param(_set(COUNTS, 0, 5), id="counts-disagree-with-records"),
        pytest.param(_set(REVISIONS, 0, 10**6), id="record-above-revision"),
        pytest.param(_set(REVISIONS, 0, 0), id="record-at-revision-0"),
        pytest.param(_set(REVISIONS, 0, True), id="bool-for-int"),
        pytest.param(_records_out_of_order, id="records-out-of-order"),
        pytest.param(_set(CREATES, 0, 10**6), id="created-after-modified"),
        pytest.param(_set(VERSIONS, 0, 0), id="live-record-version-0"),
        pytest.param(_set(VALUES, 0, 7), id="value-not-bytes"),
        pytest.param(_tombstone_with_a_version, id="tombstone-with-fields"),
        pytest.param(_live_key_on_a_missing_lease, id="lease-not-in-the-snapshot"),
        pytest.param(_set(LEASES, 0, 2**63), id="lease-out-of-int64"),
        pytest.param(_drop_a_column, id="index-chunk-shape"),
        pytest.param(_chunk_too_large, id="index-chunk-too-large"),
        pytest.param(_set(POSITIONS, 0, -1), id="negative-position"),
        pytest.param(_set_record(b"k000", 0, POSITIONS, 1), id="position-below-compact"),
        pytest.param(_set_record(b"k020", -1, POSITIONS, 1), id="change-without-first-key"),
        pytest.param(_set_record(b"k001", -1, POSITIONS, 0), id="two-firsts-at-a-revision"),
        pytest.param(_set_record(b"k001", -1, POSITIONS, 2), id="position-gap"),
    ],
)
def test_restore_refuses_a_format_2_snapshot_that_breaks_the_rules(
    mutate: Callable[[Layout], None],
) -> None:
    """Each case breaks one rule of synod.kv.snapshot_columns in an otherwise valid
    snapshot; restore raises MalformedCommand rather than building a broken store."""
    layout = msgpack.unpackb(history_store().kv.snapshot())
    mutate(layout)
    with pytest.raises(MalformedCommand):
        KVStore.restore(msgpack.packb(layout))


@pytest.mark.parametrize("cut", [1, 100, 500])
def test_restore_refuses_a_truncated_format_2_snapshot(cut: int) -> None:
    data = history_store().kv.snapshot()
    with pytest.raises(MalformedCommand):
        KVStore.restore(data[:-cut])


def _large_values() -> Store:
    store = Store()
    for index in range(40):
        store.put(b"big%03d" % index, bytes([index]) * 100_000)
    return store


def test_a_chunk_of_large_values_leaves_in_pieces_of_about_piece_bytes() -> None:
    """40 values of 100 kB share one chunk (4 MB); the stream cuts it near PIECE_BYTES so
    the member's loop never packs the whole chunk in one turn, and the bytes stay equal."""
    store = _large_values()
    pieces = list(store.kv.snapshot_stream(slice_keys=8))
    assert len(msgpack.unpackb(b"".join(pieces))[5]) == 1, "one chunk"
    assert max(map(len, pieces)) <= PIECE_BYTES + 100_000 + 1_000
    assert b"".join(pieces) == store.kv.snapshot()
    _same_store(KVStore.restore(b"".join(pieces)), store.kv)


def test_long_histories_stream_in_pieces_bounded_by_records() -> None:
    """Keys rewritten many times (no compaction) are gathered fewer keys per piece, and a
    chunk's long columns of numbers leave as pieces of their own: a piece costs the event
    loop about the same whatever the histories' lengths (one piece took 18 ms on a store of
    10,000 keys written 20 times each, before). The pieces still join to the snapshot."""
    store = Store()
    keys, rewrites = CHUNK_KEYS + 10, 8
    for round_ in range(rewrites):
        for index in range(keys):
            store.put(b"k%05d" % index, b"v%d" % round_)
    records = keys * rewrites
    assert store.kv._slice_keys() == max(1, SNAPSHOT_SLICE_RECORDS // (rewrites + 1))
    pieces = list(store.kv.snapshot_stream())
    assert b"".join(pieces) == store.kv.snapshot()
    # The chunk's five number columns (8,192 records each, up to 3 bytes a number here)
    # leave one per piece: the biggest piece is the keys with the first column (~41 KB),
    # not every column together (~82 KB, before).
    numbers = CHUNK_KEYS * rewrites
    assert numbers >= PIECE_ITEMS
    biggest = max(len(piece) for piece in pieces)
    assert biggest < numbers * 6, biggest
    assert len(pieces) > records // SNAPSHOT_SLICE_RECORDS

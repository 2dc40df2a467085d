"""Snapshot format 2: the key space as chunks of columns, which a restore builds in bulk.

Format 1 wrote one msgpack object per key, `[key, [[revision, record], ...]]`, and a restore
decoded, checked and built it one key at a time: about 7 µs of CPU per key, 7 s for the
million keys of issue 8 ("restart of a member holding 1,000,000 keys: serving again in under
10 s"). Format 2 holds the same facts in columns, so msgpack decodes whole lists in C and the
checks and the objects are made by builtins running over columns (`map`, `min`, `set`), not
by a Python loop per record.

An index chunk holds up to CHUNK_KEYS keys, ascending across chunks:
`[keys, counts, revisions, positions, create_revisions, versions, values, leases]`. The
`counts[i]` records of `keys[i]` come next in the flat record columns, oldest first; a
tombstone has value nil and 0 as create_revision, version and lease.

The store's change list (which keys each revision wrote, in write order) is not written out:
it is exactly the records at or above the compact revision, grouped by revision (every
write of a key appends one record to its history and names the key in that revision's
change; a compaction drops both below the compact revision). Only the write order within
a revision that wrote several keys is not in the histories: `positions` holds, per record,
its key's place in its revision's change (0 for the first key, and for every record below
the compact revision).

The chunk size is a constant of the format, not of the stream that writes it, so equal
stores give equal bytes however the writing was sliced. The columns of keys and values are
written item by item when large, so no piece holds a whole chunk of large values. (msgpack's
streaming unpacker decodes a chunk as its bytes arrive: the reader never holds a chunk's
bytes either.) A reader refuses (MalformedCommand) any chunk that breaks these rules
rather than building a store that breaks its invariants.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterator, Mapping
from itertools import accumulate, chain, compress, islice, repeat
from operator import le, lt
from typing import Any

import msgpack

from synod.kv.errors import MalformedCommand
from synod.kv.fast import slot_setter
from synod.kv.keyspace import History
from synod.kv.messages import INT64_MAX, INT64_MIN, KeyValue

CHUNK_KEYS = 1024
INDEX_COLUMNS = 8
KEYS_COLUMN, VALUES_COLUMN = 0, 6  # the columns of bytes, written item by item when large
PIECE_BYTES = 1 << 18  # a chunk of large values leaves in pieces of about this size
PIECE_ITEMS = 4096  # and a column of this many numbers (long histories) ends a piece

_FIELDS = ("key", "create_revision", "mod_revision", "version", "value", "lease")
assert tuple(field.name for field in dataclasses.fields(KeyValue)) == _FIELDS
_SETTERS = tuple(slot_setter(KeyValue, name) for name in _FIELDS)
_HISTORY_SETTERS = (slot_setter(History, "revisions"), slot_setter(History, "records"))


def key_values(columns: tuple[list[Any], ...]) -> list[KeyValue]:
    """KeyValues from equal-length columns in field order, made without `__init__`.

    A frozen dataclass's `__init__` sets each field through `object.__setattr__`: 1.4 µs per
    KeyValue, most of a restore. Setting the slots through their descriptors from `map`
    makes the same objects (equal, hashable, immutable afterwards) in 0.4 µs."""
    assert len(columns) == len(_FIELDS)
    made: list[KeyValue] = _made(KeyValue, _SETTERS, columns)
    return made


def _histories(revisions: list[list[int]], records: list[list[KeyValue | None]]) -> list[History]:
    made: list[History] = _made(History, _HISTORY_SETTERS, (revisions, records))
    return made


def _made(cls: type, setters: tuple[Any, ...], columns: tuple[list[Any], ...]) -> list[Any]:
    objects: list[Any] = list(map(object.__new__, repeat(cls, len(columns[0]))))
    for setter, column in zip(setters, columns, strict=True):
        assert len(column) == len(objects)
        deque(map(setter, objects, column), maxlen=0)
    return objects


# --------------------------------------------------------------------------- writing


class IndexColumns:
    """Keys with their records, gathered as columns until they fill a chunk (writer side).

    Values are copied out of the History when a key is added, so a key changed later (its
    History appended to) does not change what was gathered. `changes` and `compact` are the
    store's change list and compact revision, for the positions."""

    __slots__ = (
        "changes",
        "compact",
        "counts",
        "creates",
        "keys",
        "leases",
        "positions",
        "revisions",
        "values",
        "versions",
    )

    def __init__(self, changes: Mapping[int, tuple[bytes, ...]], compact: int) -> None:
        self.changes = changes
        self.compact = compact
        self.keys: list[bytes] = []
        self.counts: list[int] = []
        self.revisions: list[int] = []
        self.positions: list[int] = []
        self.creates: list[int] = []
        self.versions: list[int] = []
        self.values: list[bytes | None] = []
        self.leases: list[int] = []

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: bytes, history: History) -> None:
        assert not self.keys or self.keys[-1] < key, "keys are added in ascending order"
        assert history.revisions, "a key in the index has records"
        self.keys.append(key)
        self.counts.append(len(history.revisions))
        self.revisions.extend(history.revisions)
        for at in history.revisions:
            written = self.changes[at] if at >= self.compact else (key,)
            self.positions.append(0 if written[0] == key else written.index(key))
        for record in history.records:
            if record is None:
                self.creates.append(0)
                self.versions.append(0)
                self.values.append(None)
                self.leases.append(0)
            else:
                self.creates.append(record.create_revision)
                self.versions.append(record.version)
                self.values.append(record.value)
                self.leases.append(record.lease)

    def chunk_pieces(self) -> Iterator[bytes]:
        """The first CHUNK_KEYS keys (or all, if fewer) as one chunk, dropped from here, in
        pieces: the columns of bytes go item by item once they exceed PIECE_BYTES, so a
        chunk of large values (1,024 values of 1 MB) never sits in one piece."""
        assert self.keys
        keys_taken = min(CHUNK_KEYS, len(self.keys))
        records = sum(self.counts[:keys_taken])
        taken: list[list[Any]] = []
        for column, count in (
            (self.keys, keys_taken),
            (self.counts, keys_taken),
            (self.revisions, records),
            (self.positions, records),
            (self.creates, records),
            (self.versions, records),
            (self.values, records),
            (self.leases, records),
        ):
            taken.append(column[:count])
            del column[:count]
        packer = msgpack.Packer(use_bin_type=True, autoreset=False)
        packer.pack_array_header(INDEX_COLUMNS)
        for index, items in enumerate(taken):
            if index not in (KEYS_COLUMN, VALUES_COLUMN):
                packer.pack(items)
                if len(items) >= PIECE_ITEMS:  # a long column is a piece of its own
                    yield packer.bytes()
                    packer.reset()
                continue
            if sum(map(len, filter(None, items))) < PIECE_BYTES:
                packer.pack(items)
                continue
            packer.pack_array_header(len(items))
            pending = 0
            for item in items:
                packer.pack(item)
                pending += 0 if item is None else len(item)
                if pending >= PIECE_BYTES:
                    yield packer.bytes()
                    packer.reset()
                    pending = 0
        yield packer.bytes()


def chunks_for(items: int, chunk_items: int) -> int:
    return -(-items // chunk_items)


# --------------------------------------------------------------------------- reading


@dataclasses.dataclass(slots=True)
class RestoredIndex:
    """The index as read so far: every key with its History, the live keys, the changes."""

    compact: int
    keys: list[bytes] = dataclasses.field(default_factory=list)
    histories: list[History] = dataclasses.field(default_factory=list)
    live_keys: list[bytes] = dataclasses.field(default_factory=list)
    live: list[KeyValue] = dataclasses.field(default_factory=list)
    leased: list[KeyValue] = dataclasses.field(default_factory=list)
    # The first key of each change at or above `compact`, as a 1-tuple, by revision...
    change_revisions: list[int] = dataclasses.field(default_factory=list)
    change_firsts: list[tuple[bytes, ...]] = dataclasses.field(default_factory=list)
    # ... and the others: revision -> [(position, key), ...].
    change_others: dict[int, list[tuple[int, bytes]]] = dataclasses.field(default_factory=dict)


def read_index_chunk(chunk: Any, revision: int, into: RestoredIndex) -> None:
    """Check one index chunk against the format's rules and add its keys to `into`."""
    _need(type(chunk) is list and len(chunk) == INDEX_COLUMNS, "index chunk")
    _need(all(type(column) is list for column in chunk), "index chunk columns")
    keys, counts, revisions, positions, creates, versions, values, leases = chunk
    key_count, record_count = len(keys), len(revisions)
    _need(0 < key_count <= CHUNK_KEYS and len(counts) == key_count, "index chunk size")
    _need(_all(keys, bytes), "snapshot keys")
    previous = into.keys[-1] if into.keys else b""
    _need(previous < keys[0] and all(map(lt, keys, islice(keys, 1, None))), "keys sorted")
    _need(_all(counts, int) and min(counts) >= 1, "record counts")
    _need(sum(counts) == record_count, "record counts")
    for column in (positions, creates, versions, values, leases):
        _need(len(column) == record_count, "record columns")
    for column in (revisions, positions, creates, versions, leases):
        _need(_all(column, int), "record fields")
    _need(min(revisions) >= 1 and max(revisions) <= revision, "record revision")
    _need(min(positions) >= 0, "record position")
    _need(min(leases) >= INT64_MIN and max(leases) <= INT64_MAX, "record lease")
    _need(max(versions) <= INT64_MAX, "record version")
    # One int object for a create_revision equal to its mod_revision: less memory per key.
    pairs = zip(creates, revisions, strict=True)
    creates = [mod if create == mod else create for create, mod in pairs]
    record_keys = keys if key_count == record_count else _repeated(keys, counts)
    records = _records(record_keys, (creates, revisions, versions, values, leases))
    if key_count == record_count:
        into.histories.extend(_histories([[at] for at in revisions], [[r] for r in records]))
        last, last_values = records, values
    else:
        ends = list(accumulate(counts))
        starts = [0, *ends[:-1]]
        # A key's records ascend: any descent in the flat column is where a key starts.
        descents = [i + 1 for i, up in enumerate(map(lt, revisions, revisions[1:])) if not up]
        _need(set(descents) <= set(starts), "record revisions ascending")
        spans = list(zip(starts, ends, strict=True))
        revision_lists = [revisions[start:end] for start, end in spans]
        record_lists = [records[start:end] for start, end in spans]
        into.histories.extend(_histories(revision_lists, record_lists))
        last = [records[end - 1] for end in ends]
        last_values = [values[end - 1] for end in ends]
    into.keys.extend(keys)
    # `None in` a list of bytes compares in C; on KeyValues it would call their __eq__.
    if None in last_values:
        alive = [value is not None for value in last_values]
        into.live_keys.extend(compress(keys, alive))
        into.live.extend(compress(last, alive))  # type: ignore[arg-type]  # None filtered
    else:
        into.live_keys.extend(keys)
        into.live.extend(last)  # type: ignore[arg-type]  # no tombstone, just checked
    if any(leases):
        into.leased.extend(r for r in last if r is not None and r.lease != 0)
    _read_changes(record_keys, revisions, positions, into)


def _read_changes(
    keys: list[bytes], revisions: list[int], positions: list[int], into: RestoredIndex
) -> None:
    """The chunk's records at or above the compact revision, as (parts of) changes."""
    if min(revisions) < into.compact:
        kept = [at >= into.compact for at in revisions]
        _need(not any(compress(positions, [not flag for flag in kept])), "record position")
        keys = list(compress(keys, kept))
        revisions = list(compress(revisions, kept))
        positions = list(compress(positions, kept))
    if not any(positions):
        into.change_revisions.extend(revisions)
        into.change_firsts.extend(zip(keys))
        return
    for key, at, position in zip(keys, revisions, positions, strict=True):
        if position == 0:
            into.change_revisions.append(at)
            into.change_firsts.append((key,))
        else:
            into.change_others.setdefault(at, []).append((position, key))


def restored_changes(into: RestoredIndex) -> tuple[list[int], list[tuple[bytes, ...]]]:
    """(revisions, the keys written at each in write order), in no particular order, made
    from `into`'s lists in place; the caller checks that no revision appears twice."""
    revisions, changes = into.change_revisions, into.change_firsts
    others = into.change_others
    found = 0
    for index, at in enumerate(revisions if others else ()):
        rest = others.get(at)
        if rest is None:
            continue
        rest.sort()
        _need([position for position, _ in rest] == list(range(1, len(rest) + 1)), "positions")
        changes[index] = (changes[index][0], *(key for _, key in rest))
        found += 1
    _need(found == len(others), "a change without its first key")
    return revisions, changes


def _records(keys: list[bytes], columns: tuple[list[Any], ...]) -> list[KeyValue | None]:
    """The records of a chunk (None for a tombstone), their fields checked."""
    creates, revisions, versions, values, leases = columns
    if None not in values:
        _need(_all(values, bytes), "record value")
        _check_live_fields(creates, revisions, versions)
        return key_values((keys, creates, revisions, versions, values, leases))  # type: ignore[return-value]
    alive = [value is not None for value in values]
    dead = [not flag for flag in alive]
    for column in (creates, versions, leases):
        _need(not any(compress(column, dead)), "tombstone fields")
    picked = [list(compress(column, alive)) for column in (keys, *columns)]
    _need(_all(picked[4], bytes), "record value")
    _check_live_fields(picked[1], picked[2], picked[3])
    made = iter(key_values(tuple(picked)))
    return [next(made) if flag else None for flag in alive]


def _check_live_fields(creates: list[int], revisions: list[int], versions: list[int]) -> None:
    if not creates:
        return
    _need(min(creates) >= 1 and all(map(le, creates, revisions)), "record create revision")
    _need(min(versions) >= 1, "record version")


def _repeated(items: list[Any], counts: list[int]) -> list[Any]:
    return list(chain.from_iterable(map(repeat, items, counts)))


def _all(column: list[Any], kind: type) -> bool:
    """Every item is exactly of `kind` (a bool is not an int here)."""
    return not column or set(map(type, column)) == {kind}


def _need(condition: bool, what: str) -> None:
    if not condition:
        raise MalformedCommand(f"invalid snapshot: {what}")

"""Key intervals and per-key history: the two shapes every part of the store reads through.

etcd names a set of keys with `(key, range_end)`: an empty `range_end` is the single key,
`range_end == b"\\0"` is every key >= `key`, anything else is the half-open `[key,
range_end)` (empty when `range_end <= key`). `KeyInterval` is that rule, decided once.

`History` keeps every record of one key, oldest first, as `(revision, KeyValue | None)`; a
`None` is a tombstone (the key was deleted at that revision). A key changes at most once per
revision: the duplicate-key check of transactions guarantees it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from sortedcontainers import SortedDict

from synod.kv.messages import KeyValue

V = TypeVar("V")

ALL_FROM_KEY = b"\0"


@dataclass(frozen=True, slots=True)
class KeyInterval:
    """The keys `(key, range_end)` names; `end` None means unbounded above."""

    start: bytes
    end: bytes | None
    single: bool

    @classmethod
    def of(cls, key: bytes, range_end: bytes) -> KeyInterval:
        if not range_end:
            return cls(key, None, True)
        if range_end == ALL_FROM_KEY:
            return cls(key, None, False)
        return cls(key, range_end, False)

    def contains(self, key: bytes) -> bool:
        if self.single:
            return key == self.start
        if key < self.start:
            return False
        return self.end is None or key < self.end

    def is_empty(self) -> bool:
        return self.end is not None and self.end <= self.start

    def keys_in(self, mapping: SortedDict) -> Iterator[bytes]:
        """The keys of a SortedDict inside this interval, ascending."""
        if self.single:
            if self.start in mapping:
                yield self.start
            return
        if self.is_empty():
            return
        keys: Iterator[bytes] = mapping.irange(
            minimum=self.start, maximum=self.end, inclusive=(True, False)
        )
        yield from keys


@dataclass(slots=True)
class History:
    """Every record of one key, oldest first; `None` records are tombstones."""

    revisions: list[int] = field(default_factory=list)
    records: list[KeyValue | None] = field(default_factory=list)

    def append(self, revision: int, record: KeyValue | None) -> None:
        assert not self.revisions or self.revisions[-1] < revision, "one change per revision"
        assert record is None or record.mod_revision == revision
        self.revisions.append(revision)
        self.records.append(record)

    def at(self, revision: int) -> KeyValue | None:
        """The key as of `revision`: its latest record at or below it, None if absent."""
        index = bisect_right(self.revisions, revision) - 1
        return None if index < 0 else self.records[index]

    def exact(self, revision: int) -> KeyValue | None:
        """The record written at exactly `revision` (which must exist)."""
        index = bisect_left(self.revisions, revision)
        assert index < len(self.revisions)
        assert self.revisions[index] == revision
        return self.records[index]

    def compact(self, revision: int) -> None:
        """Drop what no read at or above `revision` needs.

        Keeps every record at or above `revision` and the latest one below it (the key's
        value as of `revision`, and the prev_kv of a change at exactly `revision`), unless
        that one is a tombstone.
        """
        index = bisect_left(self.revisions, revision) - 1
        if index < 0:
            return
        if self.records[index] is None:
            index += 1
        del self.revisions[:index]
        del self.records[:index]

    def is_empty(self) -> bool:
        return not self.revisions

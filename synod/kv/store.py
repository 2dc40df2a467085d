"""The MVCC key-value store: etcd v3's data model as a pure, deterministic state machine.

Theory of operation. The store holds one global `revision` (1 when empty; every command
that changes at least one key moves it up by exactly one, so all writes of a transaction or
of a lease revocation share one revision) and, per key, the list of its records over time
(`History`: a KeyValue with `create_revision`, `mod_revision`, `version`, `lease`, or a
tombstone). `_live` mirrors the newest non-tombstone record of every key for fast current
reads; `_changes` lists, per revision, the keys written there in order, which is what watch
replay and HashKV walk. A range at an older revision reads the histories; `compact(C)`
drops what no read at or above C needs (see `History.compact`).

`apply(command)` is a pure function of the commands applied before: no clock (lease time is
`Command.now_ms`, chosen by the proposing leader), no randomness (lease ids come from a
counter), and iteration only over sorted containers. A command is fully validated before
anything changes, so a raised `KVError` means "rejected, nothing happened" on every member.

Invariants (`check_invariants`): `_live` equals the last non-tombstone record of each
history; every revision in `_changes` lies in (compact_revision - 1, revision]; every live
key with a lease is in that lease's key set and in no other.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from itertools import islice, takewhile
from operator import itemgetter
from typing import Any

import msgpack
from sortedcontainers import SortedDict

from synod.kv import errors, fast
from synod.kv.codec import decode_command
from synod.kv.errors import MalformedCommand
from synod.kv.keyspace import History, KeyInterval
from synod.kv.lease import Lease, LeaseTable
from synod.kv.messages import (
    INT64_MAX,
    INT64_MIN,
    Command,
    CompactionRequest,
    CompactionResponse,
    DeleteRangeRequest,
    DeleteRangeResponse,
    Event,
    EventType,
    HashKVResponse,
    KeyValue,
    LeaseExpireRequest,
    LeaseExpireResponse,
    LeaseGrantRequest,
    LeaseGrantResponse,
    LeaseId,
    LeaseKeepAliveRequest,
    LeaseKeepAliveResponse,
    LeaseLeasesResponse,
    LeasePromoteRequest,
    LeasePromoteResponse,
    LeaseRevokeRequest,
    LeaseRevokeResponse,
    LeaseStatus,
    LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
    PutRequest,
    PutResponse,
    RangeRequest,
    RangeResponse,
    RequestOp,
    ResponseHeader,
    ResponseOp,
    Revision,
    SortOrder,
    SortTarget,
    TxnRequest,
    TxnResponse,
    WriteResponse,
)
from synod.kv.snapshot_columns import (
    CHUNK_KEYS,
    IndexColumns,
    RestoredIndex,
    chunks_for,
    read_index_chunk,
    restored_changes,
)
from synod.kv.txn import check_delete, check_put, check_range, check_txn, compare_holds

LEASE_TTL_S_MIN_DEFAULT = 2  # etcd's with its default 100 ms heartbeat, 1 s election
LEASES_DUE_MAX = 1000
SNAPSHOT_FORMAT = 2  # column chunks (synod.kv.snapshot_columns)
SNAPSHOT_FORMAT_ROWS = 1  # one object per key; still read
SNAPSHOT_FIELDS = 7
SNAPSHOT_FIELDS_ROWS = 8
# A piece of a snapshot stream gathers about this many records (a key's whole history is
# gathered at once): keys with long histories (no compaction, a hot key) make fewer keys
# per piece, so a piece costs the event loop ~1-2 ms whatever the histories' lengths.
SNAPSHOT_SLICE_RECORDS = 250
SNAPSHOT_STREAMS_MAX = 4


class SnapshotCancelled(Exception):
    """A compaction ran while a snapshot stream was open; the stream is void, start again."""


@dataclass(frozen=True, slots=True)
class Applied:
    """What one applied command produced: its response and the events at its revision."""

    response: WriteResponse
    events: tuple[Event, ...] = ()


_applied_response = fast.slot_setter(Applied, "response")
_applied_events = fast.slot_setter(Applied, "events")


def _applied(response: WriteResponse, events: tuple[Event, ...]) -> Applied:
    """`Applied(response, events)` for the put path (see synod.kv.fast)."""
    made: Applied = object.__new__(Applied)
    _applied_response(made, response)
    _applied_events(made, events)
    return made


@dataclass(slots=True)
class _Write:
    """The writes of one command in progress; all share `revision` (current + 1)."""

    revision: int
    events: list[Event] = field(default_factory=list)

    def view_revision(self) -> int:
        """The revision a read inside this command sees: pending if anything changed."""
        return self.revision if self.events else self.revision - 1


@dataclass(frozen=True, slots=True)
class _Plan:
    """A transaction with its compares already decided, nested plans aligned with `ops`."""

    succeeded: bool
    ops: tuple[RequestOp, ...]
    children: tuple[_Plan | None, ...]


class KVStore:
    """etcd's MVCC key space and lessor, driven by `apply` in log order."""

    def __init__(self, *, lease_ttl_s_min: int = LEASE_TTL_S_MIN_DEFAULT) -> None:
        self._revision = 1
        self._compact_revision = 0
        self._index: SortedDict = SortedDict()  # key -> History
        self._live: SortedDict = SortedDict()  # key -> KeyValue
        # revision -> tuple of keys in write order; a plain dict whose insertion order is
        # revision order (revisions only grow; compaction drops the oldest): a SortedDict
        # cost each put ~2 us on every member
        self._changes: dict[int, tuple[bytes, ...]] = {}
        self.leases = LeaseTable(lease_ttl_s_min)
        self._freezes: list[_Freeze] = []  # of the open snapshot streams, oldest first

    @property
    def revision(self) -> Revision:
        return Revision(self._revision)

    @property
    def compact_revision(self) -> Revision:
        return Revision(self._compact_revision)

    def _header(self, revision: int | None = None) -> ResponseHeader:
        return ResponseHeader(revision=self._revision if revision is None else revision)

    # --- applying commands ------------------------------------------------------------

    def apply(self, command: Command) -> Applied:
        """Apply one committed command; raise `KVError` (having changed nothing) to reject."""
        request = command.request
        if type(request) is PutRequest:  # most commands: skip the dispatch below
            return self._apply_put(request)
        revision_before = self._revision
        if isinstance(request, RangeRequest):
            check_range(request)
            self._check_read_revision(request.revision)
            return Applied(self._range(request, pending=False))
        if isinstance(request, CompactionRequest):
            return Applied(self._compact(request))
        if isinstance(request, LeaseGrantRequest):
            return Applied(self._lease_grant(request, command.now_ms))
        if isinstance(request, LeaseKeepAliveRequest):
            return Applied(self._lease_keep_alive(request, command.now_ms))
        if isinstance(request, LeasePromoteRequest):
            assert request.extend_ms >= 0
            self.leases.extend_all(command.now_ms, request.extend_ms)
            return Applied(LeasePromoteResponse(self._header()))
        write = _Write(self._revision + 1)
        response: WriteResponse
        if isinstance(request, PutRequest):
            check_put(request)
            self._check_put_state(request)
            response = self._put(request, write)
        elif isinstance(request, DeleteRangeRequest):
            check_delete(request)
            response = self._delete(request, write)
        elif isinstance(request, TxnRequest):
            response = self._txn(request, write)
        elif isinstance(request, LeaseRevokeRequest):
            response = self._lease_revoke(request, write)
        else:
            assert isinstance(request, LeaseExpireRequest)
            response = self._lease_expire(request, command.now_ms, write)
        self._commit(write)
        assert self._revision - revision_before == (1 if write.events else 0)
        return Applied(response, tuple(write.events))

    def _apply_put(self, request: PutRequest) -> Applied:
        """`apply` of a top-level put: what the general path does, without its dispatch."""
        check_put(request)
        self._check_put_state(request)
        write = _Write(self._revision + 1)
        response = self._put(request, write)
        self._commit(write)
        assert self._revision == write.revision
        return _applied(response, (write.events[0],))

    def apply_payload(self, payload: bytes) -> Applied:
        """Decode a log entry payload and apply it (`MalformedCommand` if it is not one)."""
        return self.apply(decode_command(payload))

    def _commit(self, write: _Write) -> None:
        if not write.events:
            return
        assert write.revision == self._revision + 1
        events = write.events
        if len(events) == 1:
            self._changes[write.revision] = (events[0].kv.key,)
        else:
            self._changes[write.revision] = tuple(event.kv.key for event in events)
        self._revision = write.revision

    def _check_read_revision(self, revision: int) -> None:
        """etcd's rule: <= 0 is current, above current is future, below compaction is gone."""
        if revision > self._revision:
            raise errors.FutureRevision()
        if 0 < revision < self._compact_revision:
            raise errors.Compacted()

    def _check_put_state(self, request: PutRequest) -> None:
        if request.lease != 0 and request.lease not in self.leases:
            raise errors.LeaseNotFound()
        if (request.ignore_value or request.ignore_lease) and request.key not in self._live:
            raise errors.KeyNotFound()

    # --- reads ------------------------------------------------------------------------

    def range(self, request: RangeRequest) -> RangeResponse:
        """A read served from this member's state (serializable, or after a read-index)."""
        check_range(request)
        self._check_read_revision(request.revision)
        return self._range(request, pending=False)

    def _range(self, request: RangeRequest, pending: bool) -> RangeResponse:
        """etcd's applyRange: count is every key in range; filters, sort, then limit."""
        interval = KeyInterval.of(request.key, request.range_end)
        at = request.revision
        kvs: list[KeyValue]
        if at <= 0 or (at == self._revision and not pending):
            kvs = [self._live[key] for key in interval.keys_in(self._live)]
        else:
            kvs = []
            for key in interval.keys_in(self._index):
                record = self._index[key].at(at)
                if record is not None:
                    kvs.append(record)
        header = self._header(self._revision + 1 if pending else self._revision)
        count = len(kvs)
        if request.count_only:
            return RangeResponse(header, count=count)
        kvs = _filter_revisions(request, kvs)
        kvs = _sort(request, kvs)
        more = False
        if 0 < request.limit < len(kvs):
            kvs = kvs[: request.limit]
            more = True
        if request.keys_only:
            kvs = [replace(kv, value=b"") for kv in kvs]
        return RangeResponse(header, kvs=tuple(kvs), more=more, count=count)

    def events_from(self, start_revision: int) -> Iterator[tuple[int, tuple[Event, ...]]]:
        """Every revision from `start_revision` on with its events, for watch replay."""
        if start_revision < self._compact_revision:
            raise errors.Compacted()
        changes = self._changes
        if not changes or start_revision > self._revision:
            return
        # Revisions since the compaction are consecutive except in stores restored from
        # format 1 (gaps at revisions without a change): step through the range.
        for revision in range(max(start_revision, next(iter(changes))), self._revision + 1):
            if revision in changes:
                yield revision, self._events_at(revision)

    def _events_at(self, revision: int) -> tuple[Event, ...]:
        events = []
        for key in self._changes[revision]:
            history: History = self._index[key]
            record = history.exact(revision)
            prev = history.at(revision - 1)
            if record is None:
                tombstone = KeyValue(key=key, mod_revision=revision)
                events.append(Event(EventType.DELETE, tombstone, prev))
            else:
                events.append(Event(EventType.PUT, record, prev))
        return tuple(events)

    # --- writes -----------------------------------------------------------------------

    def _record(self, key: bytes, revision: int, kv: KeyValue | None) -> KeyValue | None:
        """Write one change of `key` at `revision`; returns the value it replaced."""
        prev: KeyValue | None = self._live.get(key)
        history = self._index.get(key)
        for freeze in self._freezes:
            freeze.preserve(key, history)
        if history is None:
            history = self._index[key] = History()
        history.append(revision, kv)
        if prev is not None and prev.lease != 0:
            lease = self.leases.get(prev.lease)
            assert lease is not None, "a live key's lease exists"
            lease.keys.discard(key)
        if kv is None:
            del self._live[key]
            return prev
        self._live[key] = kv
        if kv.lease != 0:
            lease = self.leases.get(kv.lease)
            assert lease is not None, "validated before the write"
            lease.keys.add(key)
        return prev

    def _put(self, request: PutRequest, write: _Write) -> PutResponse:
        prev: KeyValue | None = self._live.get(request.key)
        value, lease = request.value, request.lease
        if request.ignore_value or request.ignore_lease:
            assert prev is not None, "validated before the write"
            value = prev.value if request.ignore_value else value
            lease = prev.lease if request.ignore_lease else lease
        revision = write.revision
        if prev is None:
            kv = fast.key_value(request.key, revision, revision, 1, value, lease)
        else:
            kv = fast.key_value(
                request.key, prev.create_revision, revision, prev.version + 1, value, lease
            )
        self._record(request.key, revision, kv)
        write.events.append(fast.event(EventType.PUT, kv, prev))
        return fast.put_response(fast.store_header(revision), prev if request.prev_kv else None)

    def _delete_keys(self, keys: list[bytes], write: _Write) -> list[KeyValue]:
        prevs = []
        for key in keys:
            prev = self._record(key, write.revision, None)
            assert prev is not None
            tombstone = KeyValue(key=key, mod_revision=write.revision)
            write.events.append(Event(EventType.DELETE, tombstone, prev))
            prevs.append(prev)
        return prevs

    def _delete(self, request: DeleteRangeRequest, write: _Write) -> DeleteRangeResponse:
        keys = list(KeyInterval.of(request.key, request.range_end).keys_in(self._live))
        prevs = self._delete_keys(keys, write)
        return DeleteRangeResponse(
            self._header(write.view_revision()),
            deleted=len(prevs),
            prev_kvs=tuple(prevs) if request.prev_kv else (),
        )

    def _txn(self, request: TxnRequest, write: _Write) -> TxnResponse:
        """etcd's applyTxn: check, decide every compare on the state before the txn,
        check the chosen path against the state, then write (nothing can fail now)."""
        check_txn(request)
        plan = self._plan(request)
        self._check_plan(plan)
        return self._run(plan, write)

    def _plan(self, request: TxnRequest) -> _Plan:
        succeeded = all(
            compare_holds(compare, self._current(compare.key, compare.range_end))
            for compare in request.compare
        )
        ops = request.success if succeeded else request.failure
        children = tuple(self._plan(op) if isinstance(op, TxnRequest) else None for op in ops)
        return _Plan(succeeded, ops, children)

    def _current(self, key: bytes, range_end: bytes) -> list[KeyValue]:
        return [self._live[k] for k in KeyInterval.of(key, range_end).keys_in(self._live)]

    def _check_plan(self, plan: _Plan) -> None:
        for op, child in zip(plan.ops, plan.children, strict=True):
            if isinstance(op, RangeRequest):
                self._check_read_revision(op.revision)
            elif isinstance(op, PutRequest):
                self._check_put_state(op)
            elif child is not None:
                self._check_plan(child)

    def _run(self, plan: _Plan, write: _Write, nested: bool = False) -> TxnResponse:
        responses: list[ResponseOp] = []
        for op, child in zip(plan.ops, plan.children, strict=True):
            if isinstance(op, RangeRequest):
                responses.append(self._range(op, pending=bool(write.events)))
            elif isinstance(op, PutRequest):
                responses.append(self._put(op, write))
            elif isinstance(op, DeleteRangeRequest):
                responses.append(self._delete(op, write))
            else:
                assert child is not None
                responses.append(self._run(child, write, nested=True))
        # etcd leaves a nested txn's header empty; its ops' headers carry revisions.
        header = ResponseHeader() if nested else self._header(write.view_revision())
        return TxnResponse(header, succeeded=plan.succeeded, responses=tuple(responses))

    def _compact(self, request: CompactionRequest) -> CompactionResponse:
        revision = request.revision
        if revision <= self._compact_revision:
            raise errors.Compacted()
        if revision > self._revision:
            raise errors.FutureRevision()
        for freeze in self._freezes:
            freeze.cancelled = True
        self._freezes = []
        for key in list(self._index.keys()):
            history: History = self._index[key]
            history.compact(revision)
            if history.is_empty():
                del self._index[key]
        changes = self._changes
        for old in list(takewhile(lambda at: at < revision, changes)):
            del changes[old]
        self._compact_revision = revision
        return CompactionResponse(self._header())

    # --- leases -----------------------------------------------------------------------

    def _lease_grant(self, request: LeaseGrantRequest, now_ms: int) -> LeaseGrantResponse:
        lease = self.leases.grant(request.TTL, request.ID, now_ms)
        return LeaseGrantResponse(self._header(), ID=lease.id, TTL=lease.ttl_s)

    def _lease_keep_alive(
        self, request: LeaseKeepAliveRequest, now_ms: int
    ) -> LeaseKeepAliveResponse:
        lease = self.leases.get(request.ID)
        if lease is None:
            raise errors.LeaseNotFound()
        self.leases.refresh(lease.id, now_ms + lease.ttl_s * 1000)
        return LeaseKeepAliveResponse(self._header(), ID=lease.id, TTL=lease.ttl_s)

    def _lease_revoke(self, request: LeaseRevokeRequest, write: _Write) -> LeaseRevokeResponse:
        if request.ID not in self.leases:
            raise errors.LeaseNotFound()
        self._drop_lease(request.ID, write)
        return LeaseRevokeResponse(self._header(write.view_revision()))

    def _lease_expire(
        self, request: LeaseExpireRequest, now_ms: int, write: _Write
    ) -> LeaseExpireResponse:
        """The leader's verdict, taken back if a keep-alive got into the log before it."""
        lease = self.leases.get(request.ID)
        if lease is None or lease.deadline_ms > now_ms:
            return LeaseExpireResponse(self._header(), expired=False)
        self._drop_lease(request.ID, write)
        return LeaseExpireResponse(self._header(write.view_revision()), expired=True)

    def _drop_lease(self, lease_id: int, write: _Write) -> None:
        """Delete every key of the lease in the one revision of `write`, then the lease."""
        lease = self.leases.get(lease_id)
        assert lease is not None
        self._delete_keys(list(lease.keys), write)
        assert not lease.keys
        self.leases.remove(lease_id)

    def lease_renew(self, lease_id: int, now_ms: int) -> int:
        """The leader's keep-alive, answered without a log entry (see LeaseTable.renew):
        the granted TTL, or 0 for a lease that is unknown or expired."""
        return self.leases.renew(lease_id, now_ms)

    def time_to_live(self, request: LeaseTimeToLiveRequest, now_ms: int) -> LeaseTimeToLiveResponse:
        """Remaining whole seconds on the leader's clock (its renewals included: ask the
        leader); TTL -1 for an unknown lease."""
        lease = self.leases.get(request.ID)
        if lease is None:
            return LeaseTimeToLiveResponse(self._header(), ID=request.ID, TTL=-1)
        remaining_s = max(0, (lease.expiry_ms - now_ms) // 1000)
        keys = tuple(lease.keys) if request.keys else ()
        return LeaseTimeToLiveResponse(
            self._header(), ID=lease.id, TTL=remaining_s, grantedTTL=lease.ttl_s, keys=keys
        )

    def lease_leases(self) -> LeaseLeasesResponse:
        statuses = tuple(LeaseStatus(ID=lease_id) for lease_id in self.leases.ids())
        return LeaseLeasesResponse(self._header(), leases=statuses)

    def leases_due(self, now_ms: int, limit: int = LEASES_DUE_MAX) -> tuple[LeaseId, ...]:
        """For the leader: leases whose deadline passed by `now_ms`, earliest first."""
        return self.leases.due(now_ms, limit)

    def extend_all(self, now_ms: int, extend_ms: int) -> None:
        """What `LeasePromoteRequest` does; exposed for a store no log drives (tests)."""
        self.leases.extend_all(now_ms, extend_ms)

    # --- integrity --------------------------------------------------------------------

    def hash_kv(self, revision: int = 0) -> HashKVResponse:
        """crc32 (IEEE) of the history visible at every revision in [compact, `revision`].

        Hashed, in key order: the compact revision; per key, the record live at the compact
        revision if older than it, then each record with compact <= mod_revision <=
        revision, as (key, mod_revision, tombstone flag, create_revision, version, lease,
        value). Members that applied the same commands and compactions agree on it.
        """
        revision = self._revision if revision <= 0 else revision
        if revision > self._revision:
            raise errors.FutureRevision()
        if revision < self._compact_revision:
            raise errors.Compacted()
        compact = self._compact_revision
        crc = zlib.crc32(struct.pack(">q", compact))
        for key, history in self._index.items():
            base = history.at(compact) if compact > 0 else None
            if base is not None and base.mod_revision < compact:
                crc = _hash_record(crc, key, base.mod_revision, base)
            for at, record in zip(history.revisions, history.records, strict=True):
                if at > revision:
                    break
                if at >= compact:
                    crc = _hash_record(crc, key, at, record)
        return HashKVResponse(self._header(), hash=crc, compact_revision=compact)

    # --- snapshots --------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole store as canonical msgpack: equal stores give equal bytes.

        `[FORMAT, revision, compact_revision, lease_ttl_s_min, lease_id_counter, index
        chunks, leases]`, leases `[[id, ttl_s, deadline_ms], ...]` by id; the chunks are
        format 2's columns, which also give the change list (see synod.kv.snapshot_columns).
        """
        return b"".join(self._open_snapshot(_Freeze(), self._slice_keys()))

    def _slice_keys(self) -> int:
        """Keys per piece for SNAPSHOT_SLICE_RECORDS records, from the mean history length
        (every revision since the compaction wrote at least one record, and every key
        keeps one below it)."""
        keys = max(1, len(self._index))
        records_per_key = max(1, (len(self._changes) + keys) // keys)
        return max(1, SNAPSHOT_SLICE_RECORDS // records_per_key)

    def snapshot_stream(self, slice_keys: int | None = None) -> Iterator[bytes]:
        """`snapshot()` as of this call, in pieces that each cost a bounded slice of work.

        Commands may be applied between two pieces: the store keeps, for every key the stream
        has not reached yet, its records as of the call (`_Freeze`), so the pieces joined are
        exactly the bytes `snapshot()` would have returned at the call. Several streams may be
        open at once (the member's own snapshot and a backup, say), each with its own moment;
        opening one more than SNAPSHOT_STREAMS_MAX voids the oldest, and a compaction voids
        them all (`SnapshotCancelled` at their next piece). Pieces are produced only while the
        caller asks for them; a piece may be empty (a slice that filled no chunk).
        """
        if slice_keys is None:
            slice_keys = self._slice_keys()
        assert slice_keys >= 1
        if len(self._freezes) >= SNAPSHOT_STREAMS_MAX:
            self._freezes.pop(0).cancelled = True
        freeze = _Freeze()
        self._freezes.append(freeze)
        return self._open_snapshot(freeze, slice_keys)

    def _open_snapshot(self, freeze: _Freeze, slice_keys: int) -> Iterator[bytes]:
        """The header and what the pieces need, taken now; the pieces follow when asked."""
        header = msgpack.Packer(use_bin_type=True, autoreset=False)
        header.pack_array_header(SNAPSHOT_FIELDS)
        for value in (
            SNAPSHOT_FORMAT,
            self._revision,
            self._compact_revision,
            self.leases.ttl_s_min,
            self.leases.id_counter,
        ):
            header.pack(value)
        header.pack_array_header(chunks_for(len(self._index), CHUNK_KEYS))
        leases = []
        for lease_id in self.leases.ids():
            lease = self.leases.get(lease_id)
            assert lease is not None
            leases.append([lease.id, lease.ttl_s, lease.deadline_ms])
        return self._snapshot_pieces(freeze, header.bytes(), len(self._index), slice_keys, leases)

    def _snapshot_pieces(
        self,
        freeze: _Freeze,
        header: bytes,
        key_count: int,
        slice_keys: int,
        leases: list[list[int]],
    ) -> Iterator[bytes]:
        try:
            yield header
            written = 0
            for piece, count in self._index_slices(freeze, slice_keys):
                written += count
                yield piece
            assert written == key_count, "every key of the frozen view is written once"
            yield msgpack.packb(leases, use_bin_type=True)
        finally:
            if freeze in self._freezes:
                self._freezes.remove(freeze)

    def _index_slices(self, freeze: _Freeze, slice_keys: int) -> Iterator[tuple[bytes, int]]:
        """(packed index chunks, how many keys) for the keys as frozen, a slice at a time.

        Each slice reads `slice_keys` keys of the index and packs the chunks they fill; the
        keys of a chunk not yet full wait in `gathered`, copied out of their histories."""
        gathered = IndexColumns(self._changes, self._compact_revision)
        while True:
            freeze.check()
            if freeze.position is None:
                span = self._index.irange()
            else:
                span = self._index.irange(minimum=freeze.position, inclusive=(False, True))
            keys = list(islice(span, slice_keys))
            count = 0
            for key in keys:
                kept = freeze.originals.pop(key, _UNCHANGED)
                if kept is None:
                    continue  # created after the stream opened
                history = self._index[key] if kept is _UNCHANGED else kept
                assert isinstance(history, History)
                gathered.add(key, history)
                count += 1
            if keys:
                freeze.position = keys[-1]
            while len(gathered) >= CHUNK_KEYS or (gathered and not keys):
                for piece in gathered.chunk_pieces():
                    yield piece, 0
            yield b"", count
            if not keys:
                return

    @classmethod
    def restore(cls, data: bytes | memoryview) -> KVStore:
        """The store `snapshot()` wrote, in format 2 or in format 1 (written by an earlier
        Synod); `MalformedCommand` if the bytes are not one.

        Decodes a chunk (format 2) or a key (format 1) at a time with msgpack's streaming
        unpacker and builds the sorted maps in bulk from the keys' sorted order: a large
        snapshot never exists as one nested list, which keeps restart time and peak memory
        down (issue 8). `data` is read in place, never copied whole.
        """
        unpacker = msgpack.Unpacker(
            _ViewReader(memoryview(data)),
            raw=False,
            use_list=True,
            strict_map_key=True,
            read_size=1 << 20,
            max_buffer_size=max(len(data), 1 << 20),
        )
        try:
            store = cls._restore_from(unpacker)
            try:
                unpacker.unpack()
            except msgpack.OutOfData:
                return store
            raise MalformedCommand("invalid snapshot: bytes after the end")
        except (ValueError, TypeError, msgpack.UnpackException) as error:
            raise MalformedCommand(f"snapshot is not msgpack: {error}") from error

    @classmethod
    def _restore_from(cls, unpacker: msgpack.Unpacker) -> KVStore:
        fields = unpacker.read_array_header()
        snapshot_format = unpacker.unpack()
        _need(type(snapshot_format) is int, "snapshot format")
        _need(snapshot_format in (SNAPSHOT_FORMAT, SNAPSHOT_FORMAT_ROWS), "snapshot format")
        _need(
            fields == (SNAPSHOT_FIELDS if snapshot_format == SNAPSHOT_FORMAT else 8),
            "snapshot shape",
        )
        revision, compact, ttl_s_min, id_counter = (_nat(unpacker.unpack()) for _ in range(4))
        _need(revision >= 1 and compact <= revision and ttl_s_min >= 1, "snapshot revisions")
        store = cls(lease_ttl_s_min=ttl_s_min)
        store._revision, store._compact_revision = revision, compact
        store.leases.id_counter = id_counter
        if snapshot_format == SNAPSHOT_FORMAT:
            leased = store._restore_index_chunks(unpacker)
        else:
            leased = store._restore_index(unpacker)
            store._restore_changes(unpacker)
        for item in _seq(unpacker.unpack()):
            _need(isinstance(item, list) and len(item) == 3, "snapshot lease")
            lease_id, ttl_s, deadline_ms = _int(item[0]), _nat(item[1]), _int(item[2])
            _need(lease_id != 0 and lease_id not in store.leases, "snapshot lease id")
            store.leases.insert(Lease(LeaseId(lease_id), ttl_s, deadline_ms))
        for key, lease_id in leased:
            lease = store.leases.get(lease_id)
            _need(lease is not None, "snapshot key names a missing lease")
            assert lease is not None
            lease.keys.add(key)
        if snapshot_format == SNAPSHOT_FORMAT_ROWS:
            store.check_invariants()
            return store
        # Format 2's reader built `_live` from the histories and checked every change, so
        # the full check (a Python walk of every key, a second at a million keys) is left
        # to the tests; what is cheap is asserted here.
        assert len(store._live) <= len(store._index)
        assert not store._changes or next(iter(store._changes)) >= store._compact_revision
        store.leases.check_invariants()
        return store

    def _restore_index_chunks(self, unpacker: msgpack.Unpacker) -> list[tuple[bytes, int]]:
        """Read format 2's index, which gives the changes too; returns the (key, lease) of
        live keys that have a lease."""
        restored = RestoredIndex(self._compact_revision)
        for _ in range(unpacker.read_array_header()):
            read_index_chunk(unpacker.unpack(), self._revision, restored)
        # Each list is dropped once its map is built: less memory at the restore's peak.
        self._index = SortedDict(zip(restored.keys, restored.histories, strict=True))
        restored.keys, restored.histories = [], []
        self._live = SortedDict(zip(restored.live_keys, restored.live, strict=True))
        restored.live_keys, restored.live = [], []
        revisions, changes = restored_changes(restored)
        restored.change_revisions, restored.change_firsts = [], []
        self._changes = _in_revision_order(revisions, changes)
        _need(len(self._changes) == len(revisions), "two changes at one revision")
        return [(kv.key, kv.lease) for kv in restored.leased]

    def _restore_index(self, unpacker: msgpack.Unpacker) -> list[tuple[bytes, int]]:
        """Read format 1's index; returns the (key, lease) of live keys that have a lease."""
        revision = self._revision
        keys: list[bytes] = []
        histories: list[History] = []
        live_keys: list[bytes] = []
        live: list[KeyValue] = []
        leased: list[tuple[bytes, int]] = []
        previous_key = b""
        for _ in range(unpacker.read_array_header()):
            item = unpacker.unpack()
            if type(item) is not list or len(item) != 2:
                raise MalformedCommand("invalid snapshot: snapshot key entry")
            key, pairs = item
            if type(key) is not bytes or key <= previous_key or type(pairs) is not list:
                raise MalformedCommand("invalid snapshot: snapshot keys sorted")
            previous_key = key
            history = _restore_history(key, pairs, revision)
            keys.append(key)
            histories.append(history)
            last = history.records[-1]
            if last is not None:
                live_keys.append(key)
                live.append(last)
                if last.lease != 0:
                    leased.append((key, last.lease))
        self._index = SortedDict(zip(keys, histories, strict=True))
        self._live = SortedDict(zip(live_keys, live, strict=True))
        return leased

    def _restore_changes(self, unpacker: msgpack.Unpacker) -> None:
        """Read format 1's change list; each change names keys whose history has that revision.
        The checks are inline: this runs once per revision of a restored store."""
        revisions: list[int] = []
        changes: list[tuple[bytes, ...]] = []
        history_of = self._index.get
        previous, top = self._compact_revision - 1, self._revision
        for _ in range(unpacker.read_array_header()):
            item = unpacker.unpack()
            if type(item) is not list or len(item) != 2:
                raise MalformedCommand("invalid snapshot: snapshot change")
            at, keys = item
            if type(at) is not int or not previous < at <= top or type(keys) is not list:
                raise MalformedCommand("invalid snapshot: snapshot change revision or order")
            previous = at
            for key in keys:
                history = history_of(key) if type(key) is bytes else None
                if history is None or at not in history.revisions:
                    raise MalformedCommand("invalid snapshot: snapshot change key")
            revisions.append(at)
            changes.append(tuple(keys))
        self._changes = dict(zip(revisions, changes, strict=True))

    def check_invariants(self) -> None:
        assert self._revision >= 1
        assert 0 <= self._compact_revision <= self._revision
        live_keys = [key for key, history in self._index.items() if history.records[-1]]
        assert live_keys == list(self._live.keys())
        for key in live_keys:
            assert self._index[key].records[-1] == self._live[key]
            kv: KeyValue = self._live[key]
            if kv.lease != 0:
                lease = self.leases.get(kv.lease)
                assert lease is not None
                assert key in lease.keys
        for lease_id in self.leases.ids():
            lease = self.leases.get(lease_id)
            assert lease is not None
            for key in lease.keys:
                assert self._live[key].lease == lease_id
        if self._changes:
            revisions = list(self._changes)
            assert revisions == sorted(revisions), "changes in revision order"
            assert revisions[-1] <= self._revision
            assert revisions[0] >= self._compact_revision
        self.leases.check_invariants()


def _in_revision_order(
    revisions: list[int], changes: list[tuple[bytes, ...]]
) -> dict[int, tuple[bytes, ...]]:
    """The changes by revision, in revision order. A format 2 snapshot has one change at
    each revision since the compaction, gathered key by key: placing each by its revision
    (0.8 s at a million in random order) beats a sort (1.0 s)."""
    if not revisions:
        return {}
    low = min(revisions)
    span = max(revisions) - low + 1
    if span > 2 * len(revisions):  # sparse: sort
        return dict(sorted(zip(revisions, changes, strict=True), key=itemgetter(0)))
    places: list[int] = [-1] * span
    for index, revision in enumerate(revisions):
        places[revision - low] = index
    return {revisions[index]: changes[index] for index in places if index >= 0}


_UNCHANGED = History()


class _ViewReader:
    """A file-like `read` over a buffer, for msgpack's streaming unpacker: unlike
    io.BytesIO, it reads a memoryview without copying it whole first."""

    __slots__ = ("_position", "_view")

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._position = 0

    def read(self, size: int) -> bytes:
        start = self._position
        self._position = min(len(self._view), start + size)
        return bytes(self._view[start : self._position])


class _Freeze:
    """The view an open snapshot stream writes: keys after `position` as they were when it
    opened. Before a key after `position` changes, its records as of then are kept in
    `originals` (None: the key did not exist yet); keys at or before it were written."""

    __slots__ = ("cancelled", "originals", "position")

    def __init__(self) -> None:
        self.position: bytes | None = None
        self.originals: dict[bytes, History | None] = {}
        self.cancelled = False

    def preserve(self, key: bytes, history: History | None) -> None:
        if self.position is not None and key <= self.position:
            return
        if key in self.originals:
            return
        if history is None:
            self.originals[key] = None
        else:
            self.originals[key] = History(list(history.revisions), list(history.records))

    def check(self) -> None:
        if self.cancelled:
            raise SnapshotCancelled("a compaction ran during the snapshot")


def _restore_history(key: bytes, pairs: list[Any], revision: int) -> History:
    """One key's records from a snapshot, checked: revisions ascending and at most `revision`.

    The checks are written inline: this runs once per record of a restored store."""
    revisions: list[int] = []
    records: list[KeyValue | None] = []
    previous = -1
    for pair in pairs:
        if type(pair) is not list or len(pair) != 2:
            raise MalformedCommand("invalid snapshot: snapshot record")
        at, packed = pair
        if type(at) is not int or not previous < at <= revision:
            raise MalformedCommand("invalid snapshot: snapshot record revision")
        previous = at
        revisions.append(at)
        records.append(None if packed is None else _unpack_record(key, at, packed))
    _need(bool(revisions), "snapshot key without records")
    return History(revisions, records)


def _unpack_record(key: bytes, revision: int, packed: Any) -> KeyValue:
    if type(packed) is not list or len(packed) != 4:
        raise MalformedCommand("invalid snapshot: snapshot record value")
    create_revision, version, value, lease = packed
    if not (
        type(value) is bytes
        and type(create_revision) is int
        and 0 < create_revision <= revision
        and type(version) is int
        and 1 <= version <= INT64_MAX
        and type(lease) is int
        and INT64_MIN <= lease <= INT64_MAX
    ):
        raise MalformedCommand("invalid snapshot: snapshot record fields")
    if create_revision == revision:
        create_revision = revision  # one int object for both fields: less memory per key
    return KeyValue(key, create_revision, revision, version, value, lease)


def _need(condition: bool, what: str) -> None:
    if not condition:
        raise MalformedCommand(f"invalid snapshot: {what}")


def _seq(value: Any) -> list[Any]:
    _need(isinstance(value, list), "expected an array")
    result: list[Any] = value
    return result


def _int(value: Any) -> int:
    _need(type(value) is int and INT64_MIN <= value <= INT64_MAX, "expected an int64")
    result: int = value
    return result


def _nat(value: Any) -> int:
    result = _int(value)
    _need(result >= 0, "expected a non-negative int")
    return result


def _hash_record(crc: int, key: bytes, revision: int, record: KeyValue | None) -> int:
    crc = zlib.crc32(struct.pack(">I", len(key)) + key, crc)
    if record is None:
        return zlib.crc32(struct.pack(">qB", revision, 1), crc)
    fixed = struct.pack(
        ">qBqqqI",
        revision,
        0,
        record.create_revision,
        record.version,
        record.lease,
        len(record.value),
    )
    return zlib.crc32(fixed + record.value, crc)


def _filter_revisions(request: RangeRequest, kvs: list[KeyValue]) -> list[KeyValue]:
    """etcd's pruning: each bound applies only when non-zero."""
    if request.min_mod_revision:
        kvs = [kv for kv in kvs if kv.mod_revision >= request.min_mod_revision]
    if request.max_mod_revision:
        kvs = [kv for kv in kvs if kv.mod_revision <= request.max_mod_revision]
    if request.min_create_revision:
        kvs = [kv for kv in kvs if kv.create_revision >= request.min_create_revision]
    if request.max_create_revision:
        kvs = [kv for kv in kvs if kv.create_revision <= request.max_create_revision]
    return kvs


def _sort(request: RangeRequest, kvs: list[KeyValue]) -> list[KeyValue]:
    """etcd sorts ascending by default when the target is not KEY (keys come sorted).

    Python's sort is stable, so ties keep key order, ascending or descending: the order is
    deterministic (etcd leaves ties unspecified).
    """
    order, target = request.sort_order, request.sort_target
    if order == SortOrder.NONE and target != SortTarget.KEY:
        order = SortOrder.ASCEND
    if order == SortOrder.NONE:
        return kvs
    descending = order == SortOrder.DESCEND
    if target == SortTarget.KEY:
        return list(reversed(kvs)) if descending else kvs
    if target == SortTarget.VALUE:
        return sorted(kvs, key=lambda kv: kv.value, reverse=descending)
    if target == SortTarget.VERSION:
        return sorted(kvs, key=lambda kv: kv.version, reverse=descending)
    if target == SortTarget.CREATE:
        return sorted(kvs, key=lambda kv: kv.create_revision, reverse=descending)
    assert target == SortTarget.MOD
    return sorted(kvs, key=lambda kv: kv.mod_revision, reverse=descending)

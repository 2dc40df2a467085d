"""Watchers of one watch stream: replay from a revision, then live events, in order.

A `WatchHub` is pure bookkeeping over a `KVStore`: the api layer feeds it the watch
requests of one client stream (watch ids are per stream, as in etcd) and the events of each
applied command (`on_applied`), and sends the `WatchResponse`s it returns. No I/O, no clock.

Rules kept (etcd v3 semantics):
- `create` answers `created` first (header revision = the store's), then replays every
  revision from `start_revision` (0 = from now on) up to the current one. A start below the
  compact revision gets, after `created`, one response with `compact_revision` set and
  `canceled`, and no watcher is kept.
- Each watcher remembers `next_revision`, the first revision it has not been given, so an
  event is delivered at most once and revisions arrive in increasing order.
- The events of one revision that a watcher wants go in one message (a lease expiry that
  deletes several keys is one message); replay batches up to REPLAY_REVISIONS_MAX revisions
  per message, like etcd; `prev_kv` is stripped unless asked for;
  NOPUT/NODELETE filters drop events, and a revision with nothing left sends nothing.
- Watch id 0 asks for the lowest free id (the first watch of a stream gets 0, as etcd).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from sortedcontainers import SortedDict

from synod.kv.keyspace import KeyInterval
from synod.kv.messages import (
    Event,
    EventType,
    ResponseHeader,
    WatchCreateRequest,
    WatchFilter,
    WatchResponse,
)
from synod.kv.store import KVStore

WATCHERS_MAX = 10_000
REPLAY_REVISIONS_MAX = 1000
DUPLICATE_WATCH_ID = "mvcc: duplicate watch ID provided on the WatchStream"
EMPTY_WATCH_RANGE = "mvcc: watcher range is empty"
TOO_MANY_WATCHERS = "synod: too many watchers on this stream"
PROGRESS_WATCH_ID = -1


@dataclass(slots=True)
class _Watcher:
    watch_id: int
    interval: KeyInterval
    prev_kv: bool
    no_put: bool
    no_delete: bool
    progress_notify: bool
    next_revision: int
    idle: bool = True  # no events sent since the last progress notification

    def wants(self, event: Event) -> bool:
        if event.type == EventType.PUT and self.no_put:
            return False
        if event.type == EventType.DELETE and self.no_delete:
            return False
        return self.interval.contains(event.kv.key)


def _without_prev(events: Sequence[Event]) -> list[Event]:
    return [event if event.prev_kv is None else replace(event, prev_kv=None) for event in events]


class WatchHub:
    """The watchers of one stream over one store."""

    def __init__(self, store: KVStore, *, watchers_max: int = WATCHERS_MAX) -> None:
        assert watchers_max >= 1
        self._store = store
        self._watchers: SortedDict = SortedDict()  # watch id -> _Watcher
        self._watchers_max = watchers_max

    def __len__(self) -> int:
        return len(self._watchers)

    def _header(self) -> ResponseHeader:
        return ResponseHeader(revision=self._store.revision)

    def create(self, request: WatchCreateRequest) -> tuple[WatchResponse, ...]:
        """Register a watcher: the `created` response, then its replay (or compaction)."""
        refusal = self._refusal(request)
        if refusal:
            return (self._refused(refusal),)
        watch_id = request.watch_id if request.watch_id != 0 else self._free_id()
        created = WatchResponse(self._header(), watch_id=watch_id, created=True)
        start = request.start_revision
        if 0 < start < self._store.compact_revision:
            # etcd 3.4's exact answer: no header revision, no cancel_reason; clients turn
            # compact_revision into their "required revision has been compacted" error.
            compacted = WatchResponse(
                ResponseHeader(),
                watch_id=watch_id,
                canceled=True,
                compact_revision=self._store.compact_revision,
            )
            return (created, compacted)
        watcher = _Watcher(
            watch_id=watch_id,
            interval=KeyInterval.of(request.key, request.range_end),
            prev_kv=request.prev_kv,
            no_put=WatchFilter.NOPUT in request.filters,
            no_delete=WatchFilter.NODELETE in request.filters,
            progress_notify=request.progress_notify,
            next_revision=start if start > 0 else self._store.revision + 1,
        )
        self._watchers[watch_id] = watcher
        replay = self._replay(watcher)
        watcher.next_revision = max(watcher.next_revision, self._store.revision + 1)
        return (created, *replay)

    def _replay(self, watcher: _Watcher) -> list[WatchResponse]:
        """History from `next_revision` on, up to REPLAY_REVISIONS_MAX revisions per
        message (etcd batches replay the same way; live events go one revision each)."""
        responses: list[WatchResponse] = []
        batch: list[Event] = []
        revisions = 0
        for revision, events in self._store.events_from(watcher.next_revision):
            batch.extend(self._wanted(watcher, events))
            watcher.next_revision = revision + 1
            revisions += 1
            if revisions >= REPLAY_REVISIONS_MAX:
                if batch:
                    responses.append(self._message(watcher, batch))
                batch, revisions = [], 0
        if batch:
            responses.append(self._message(watcher, batch))
        return responses

    def _wanted(
        self, watcher: _Watcher, events: Sequence[Event], bare: Sequence[Event] | None = None
    ) -> list[Event]:
        """The events `watcher` gets; `bare` (aligned with `events`, without prev_kv) lets
        every watcher of one revision share the same stripped Event objects."""
        if not watcher.prev_kv:
            events = bare if bare is not None else _without_prev(events)
        return [event for event in events if watcher.wants(event)]

    def _message(
        self, watcher: _Watcher, events: Sequence[Event], header: ResponseHeader | None = None
    ) -> WatchResponse:
        watcher.idle = False
        return WatchResponse(
            header or self._header(), watch_id=watcher.watch_id, events=tuple(events)
        )

    def _refusal(self, request: WatchCreateRequest) -> str:
        if request.watch_id != 0 and request.watch_id in self._watchers:
            return DUPLICATE_WATCH_ID
        if KeyInterval.of(request.key, request.range_end).is_empty():
            return EMPTY_WATCH_RANGE
        if len(self._watchers) >= self._watchers_max:
            return TOO_MANY_WATCHERS
        return ""

    def _refused(self, reason: str) -> WatchResponse:
        """etcd's answer to a watch it cannot create: created and canceled, id -1."""
        return WatchResponse(
            self._header(), watch_id=-1, created=True, canceled=True, cancel_reason=reason
        )

    def _free_id(self) -> int:
        watch_id = 0
        while watch_id in self._watchers:
            watch_id += 1
        return watch_id

    def resync(self, store: KVStore) -> tuple[WatchResponse, ...]:
        """Follow a store that replaced this one (a snapshot installed on this member):
        each watcher replays from its next revision, or is canceled if that is compacted."""
        self._store = store
        responses: list[WatchResponse] = []
        for watcher in list(self._watchers.values()):
            if watcher.next_revision < store.compact_revision:
                del self._watchers[watcher.watch_id]
                responses.append(
                    WatchResponse(
                        ResponseHeader(),
                        watch_id=watcher.watch_id,
                        canceled=True,
                        compact_revision=store.compact_revision,
                    )
                )
                continue
            responses.extend(self._replay(watcher))
            watcher.next_revision = max(watcher.next_revision, store.revision + 1)
        return tuple(responses)

    def cancel(self, watch_id: int) -> WatchResponse | None:
        """Remove a watcher; None (etcd sends nothing) when the id is unknown."""
        if self._watchers.pop(watch_id, None) is None:
            return None
        return WatchResponse(self._header(), watch_id=watch_id, canceled=True)

    def on_applied(self, events: Sequence[Event]) -> tuple[WatchResponse, ...]:
        """The messages for the events of one applied command (one revision)."""
        if not events:
            return ()
        revision = events[0].kv.mod_revision
        assert all(event.kv.mod_revision == revision for event in events)
        assert revision <= self._store.revision
        # Shared by every watcher of this revision (one stream may hold thousands), so the
        # door can convert each event once: the header and the events without prev_kv.
        header = self._header()
        bare = _without_prev(events)
        responses = []
        for watcher in self._watchers.values():
            if revision < watcher.next_revision:
                continue
            watcher.next_revision = revision + 1
            wanted = self._wanted(watcher, events, bare)
            if wanted:
                responses.append(self._message(watcher, wanted, header))
        return tuple(responses)

    def progress_notify(self) -> tuple[WatchResponse, ...]:
        """For the periodic tick: an empty message at the current revision to each watcher
        that asked for progress_notify and got no events since the last tick."""
        responses = []
        for watcher in self._watchers.values():
            if watcher.progress_notify and watcher.idle:
                responses.append(WatchResponse(self._header(), watch_id=watcher.watch_id))
            watcher.idle = True
        return tuple(responses)

    def request_progress(self) -> WatchResponse:
        """etcd's answer to a ProgressRequest: the current revision, watch id -1."""
        return WatchResponse(self._header(), watch_id=PROGRESS_WATCH_ID)

"""The KV store as the member's replicated service: apply, snapshot, leader duties, and
fan-out of applied events to the watch streams of this member.

The store (`synod.kv`) is pure; this adapter adds what needs a member: the watch streams
open on it, the leader's lease duties (extend every lease when leadership changes hands,
expire the leases whose time ran out), both proposed through the log like any command, and
the questions only the leader answers: a keep-alive, which renews a lease on the leader's
clock without a log entry (as etcd's lessor does: a keep-alive costs a read round, not a
replicated write), and a lease's remaining time, which only that clock knows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from synod.kv.codec import encode_command
from synod.kv.errors import KVError, MalformedCommand
from synod.kv.messages import (
    Command,
    LeaseExpireRequest,
    LeasePromoteRequest,
    LeaseTimeToLiveRequest,
    WatchResponse,
)
from synod.kv.store import KVStore
from synod.kv.watch import WatchHub

log = logging.getLogger(__name__)

EXPIRY_RETRY_MS = 1000
LEASE_RENEW = "lease-renew"  # argument: lease id; answer: the granted TTL, 0 if gone
LEASE_TIME_TO_LIVE = "lease-ttl"  # argument: [lease id, keys?]; answer: see leader_query
WATCH_STREAMS_MAX = 100_000

WatchSink = Callable[[tuple[WatchResponse, ...]], None]


class KvService:
    """Implements the member's ReplicatedService protocol over a KVStore."""

    def __init__(self, election_timeout_ms: int = 1000) -> None:
        self.store = KVStore()
        self.election_timeout_ms = election_timeout_ms
        self._streams: dict[int, tuple[WatchHub, WatchSink]] = {}
        self._next_stream = 1
        self._expiry_proposed_ms: dict[int, int] = {}

    # ------------------------------------------------------------------ replicated service

    def apply(self, payload: bytes, slot: int) -> object:
        try:
            applied = self.store.apply_payload(payload)
        except KVError as error:
            return error
        except MalformedCommand as error:
            log.error("slot %d holds a command that does not decode: %s", slot, error)
            return error
        if applied.events:
            for hub, sink in list(self._streams.values()):
                responses = hub.on_applied(applied.events)
                if responses:
                    sink(responses)
        return applied.response

    def snapshot(self) -> bytes:
        return self.store.snapshot()

    def snapshot_stream(self) -> Iterator[bytes]:
        """The snapshot as of now in bounded pieces (see KVStore.snapshot_stream)."""
        return self.store.snapshot_stream()

    def restore(self, data: bytes | memoryview) -> None:
        """Replace the store with the snapshot's; `data` may be a view (read in place)."""
        self.store = KVStore.restore(data)
        for hub, sink in list(self._streams.values()):
            responses = hub.resync(self.store)
            if responses:
                sink(responses)

    def leader_duties(self, now_ms: int, became_leader: bool) -> list[bytes]:
        commands: list[bytes] = []
        if became_leader:
            # A new leader gives every lease a fresh election timeout rather than expiring
            # all those whose deadline passed while nobody led (etcd's lessor promotion).
            self._expiry_proposed_ms.clear()
            promote = LeasePromoteRequest(extend_ms=self.election_timeout_ms)
            commands.append(encode_command(Command(promote, now_ms)))
            return commands
        due = [
            lease_id
            for lease_id in self.store.leases_due(now_ms)
            if now_ms - self._expiry_proposed_ms.get(lease_id, -EXPIRY_RETRY_MS) >= EXPIRY_RETRY_MS
        ]
        if len(self._expiry_proposed_ms) > 4 * len(due) + 1000:
            # Forget attempts old enough to retry anyway: the map stays bounded.
            self._expiry_proposed_ms = {
                lease_id: at_ms
                for lease_id, at_ms in self._expiry_proposed_ms.items()
                if now_ms - at_ms < EXPIRY_RETRY_MS
            }
        for lease_id in due:
            # One command per lease: each expiry deletes its keys in one revision, as etcd.
            self._expiry_proposed_ms[lease_id] = now_ms
            commands.append(encode_command(Command(LeaseExpireRequest(lease_id), now_ms)))
        return commands

    def leader_query(self, name: str, argument: Any, now_ms: int) -> Any:
        """LEASE_RENEW: the granted TTL (0: unknown or expired). LEASE_TIME_TO_LIVE:
        `[TTL, grantedTTL, keys]` as LeaseTimeToLive answers (TTL -1: unknown)."""
        if name == LEASE_RENEW:
            if type(argument) is not int:
                raise ValueError("a lease id is an integer")
            return self.store.lease_renew(argument, now_ms)
        if name == LEASE_TIME_TO_LIVE:
            if not (isinstance(argument, list) and len(argument) == 2):
                raise ValueError("expected [lease id, keys]")
            lease_id, keys = argument
            if type(lease_id) is not int:
                raise ValueError("a lease id is an integer")
            request = LeaseTimeToLiveRequest(lease_id, keys=bool(keys))
            response = self.store.time_to_live(request, now_ms)
            return [response.TTL, response.grantedTTL, list(response.keys)]
        raise ValueError(f"unknown question {name!r}")

    # ------------------------------------------------------------------ watch streams

    def open_stream(self, sink: WatchSink) -> tuple[int, WatchHub]:
        """Register a watch stream; `sink` receives responses for applied events."""
        if len(self._streams) >= WATCH_STREAMS_MAX:
            raise RuntimeError("too many watch streams")
        stream_id = self._next_stream
        self._next_stream += 1
        hub = WatchHub(self.store)
        self._streams[stream_id] = (hub, sink)
        return stream_id, hub

    def close_stream(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)

    def progress_notify(self) -> None:
        for hub, sink in list(self._streams.values()):
            responses = hub.progress_notify()
            if responses:
                sink(responses)

    @property
    def watchers(self) -> int:
        return sum(len(hub) for hub, _ in self._streams.values())

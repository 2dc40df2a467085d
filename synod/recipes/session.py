"""Sessions and the waiting primitives every recipe shares.

A `Session` is one lease kept alive in the background: the liveness of a participant. Keys
a recipe writes for a participant carry the session's lease, so a participant that crashes
(or is cut off for longer than the TTL) loses them all at once, in one revision.

Waiting never polls the store in a loop: it reads at some revision R, then watches from
R + 1, so a change between the read and the watch is never missed (the watch replays it).

Error handling: a lost session raises `SessionLost` from every waiting call; a caller that
catches it must assume everything the session held was released.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from synod.client import Client, Lease, kv_pb2, rpc_pb2, txn
from synod.recipes.errors import SessionLost

TTL_S_DEFAULT = 10
# How often a waiter wakes to check its session and deadline when no event comes.
POLL_S = 0.5

RANGE_CREATE = rpc_pb2.RangeRequest.CREATE
DESCEND = rpc_pb2.RangeRequest.DESCEND
ASCEND = rpc_pb2.RangeRequest.ASCEND


class Session:
    """A lease kept alive in the background; `with Session(client, ttl_s) as session:`."""

    def __init__(self, client: Client, ttl_s: int = TTL_S_DEFAULT) -> None:
        assert ttl_s > 0
        self.client = client
        self.ttl_s = ttl_s
        self.lease: Lease = client.lease(ttl_s)

    @property
    def id(self) -> int:
        return self.lease.id

    @property
    def lost(self) -> bool:
        return self.lease.lost

    def check(self) -> None:
        """Raise `SessionLost` if the lease is (or must be assumed) gone."""
        if self.lease.lost:
            raise SessionLost(f"session lease {self.id:x} lost: {self.lease.lost_reason}")

    def close(self) -> None:
        """Revoke the lease: every key of the session is deleted now."""
        self.lease.revoke()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def remaining_s(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return deadline - time.monotonic()


def deadline_after(timeout_s: float | None) -> float | None:
    return None if timeout_s is None else time.monotonic() + timeout_s


def wait_for_event(
    client: Client,
    key: bytes,
    after_revision: int,
    matches: Callable[[kv_pb2.Event], bool],
    *,
    prefix: bool = False,
    deadline: float | None = None,
    session: Session | None = None,
) -> bool:
    """Block until an event on `key` (or the prefix) after `after_revision` satisfies
    `matches`; False at the deadline. Raises `SessionLost` if `session` is lost."""
    with client.watch(key, prefix=prefix, start_revision=after_revision + 1) as watcher:
        while True:
            if session is not None:
                session.check()
            left = remaining_s(deadline)
            if left is not None and left <= 0:
                return False
            wait_s = POLL_S if left is None else min(POLL_S, left)
            response = watcher.get(wait_s)
            if response is not None and any(matches(event) for event in response.events):
                return True


def is_delete(event: kv_pb2.Event) -> bool:
    return event.type == kv_pb2.Event.DELETE


def is_put(event: kv_pb2.Event) -> bool:
    return event.type == kv_pb2.Event.PUT


def create_key(client: Client, key: bytes, value: bytes, lease_id: int) -> kv_pb2.KeyValue:
    """Create `key` with the lease unless it exists; return the key as stored. Safe to
    retry: a resent txn finds the key and reads it back."""
    response = client.txn(
        [txn.create_revision(key) == 0],
        [txn.put(key, value, lease=lease_id), txn.get(key)],
        [txn.get(key)],
    )
    ranged = response.responses[-1].response_range
    assert ranged.kvs, f"{key!r} vanished right after its creation"
    stored: kv_pb2.KeyValue = ranged.kvs[0]
    return stored


def delete_if_created_at(client: Client, key: bytes, create_revision: int) -> bool:
    """Delete `key` if it is still the incarnation created at `create_revision`."""
    response = client.txn([txn.create_revision(key) == create_revision], [txn.delete(key)], [])
    return response.succeeded

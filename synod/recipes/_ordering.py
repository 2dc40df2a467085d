"""Queueing by create revision, shared by Lock, Election and Semaphore.

Each participant creates one key under a prefix with its session's lease; the store's
create revision orders them by arrival. A participant waits only for the key created just
before its own (its predecessor): when that key is deleted it looks again, so a release
wakes exactly one waiter (no herd).
"""

from __future__ import annotations

from synod.client import Client, kv_pb2
from synod.recipes.session import (
    ASCEND,
    DESCEND,
    RANGE_CREATE,
    Session,
    is_delete,
    remaining_s,
    wait_for_event,
)


def predecessor(
    client: Client, prefix: bytes, create_revision: int
) -> tuple[kv_pb2.KeyValue | None, int]:
    """The key under `prefix` created last before `create_revision`, and the read's
    revision."""
    response = client.get(
        prefix,
        prefix=True,
        max_create_revision=create_revision - 1,
        sort_target=RANGE_CREATE,
        sort_order=DESCEND,
        limit=1,
    )
    return (response.kvs[0] if response.kvs else None), response.header.revision


def wait_first(
    client: Client,
    prefix: bytes,
    create_revision: int,
    session: Session,
    deadline: float | None,
) -> bool:
    """Block until the key created at `create_revision` is the oldest under `prefix`;
    False at the deadline. Raises `SessionLost`."""
    while True:
        session.check()
        before, revision = predecessor(client, prefix, create_revision)
        if before is None:
            return True
        left = remaining_s(deadline)
        if left is not None and left <= 0:
            return False
        wait_for_event(client, before.key, revision, is_delete, deadline=deadline, session=session)


def first(client: Client, prefix: bytes) -> tuple[kv_pb2.KeyValue | None, int]:
    """The oldest key under `prefix` and the read's revision."""
    response = client.get(
        prefix,
        prefix=True,
        sort_target=RANGE_CREATE,
        sort_order=ASCEND,
        limit=1,
    )
    return (response.kvs[0] if response.kvs else None), response.header.revision

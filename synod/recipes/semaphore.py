"""Semaphore(n): at most n holders at a time, admitted in order of arrival.

    with Semaphore(client, "pools/db", 4):
        run_query()

Each contender creates `<name>/<lease id>` with its session's lease; it holds a permit
when fewer than n keys under the name were created before its own. Waiters watch the
prefix for deletions and count again: unlike the lock, a release may wake every waiter
(a permit can be freed by any of the n holders, so no single predecessor can be watched);
the counting read is cheap and only contenders at positions ≤ n + releases get in.

Error handling. A lost session (lease expired or revoked) loses the permit: `acquire`
raises `SessionLost`, `is_held()` is False. A crashed holder's permit returns after at most
the TTL. The semaphore does not hand out fencing tokens: n holders act at once by design.
"""

from __future__ import annotations

from synod.client import Client
from synod.recipes.errors import LockReentryError
from synod.recipes.session import (
    ASCEND,
    RANGE_CREATE,
    TTL_S_DEFAULT,
    Session,
    create_key,
    deadline_after,
    delete_if_created_at,
    is_delete,
    remaining_s,
    wait_for_event,
)


class Semaphore:
    """A counting semaphore with `n` permits."""

    def __init__(
        self,
        client: Client,
        name: str,
        n: int,
        *,
        ttl_s: int = TTL_S_DEFAULT,
        session: Session | None = None,
        identifier: str = "",
    ) -> None:
        assert name, "a semaphore needs a name"
        if n < 1:
            raise ValueError("a semaphore needs at least one permit")
        self.client = client
        self.name = name
        self.n = n
        self.prefix = name.rstrip("/").encode() + b"/"
        self.ttl_s = ttl_s
        self.identifier = identifier
        self._given_session = session
        self._session: Session | None = None
        self._key = b""
        self._revision = 0

    def _admitted(self, key: bytes) -> tuple[bool, int]:
        """Whether `key` is among the n oldest contenders, and the read's revision. (A
        count with max_create_revision would be simpler, but etcd counts before that
        filter.)"""
        response = self.client.get(
            self.prefix,
            prefix=True,
            sort_target=RANGE_CREATE,
            sort_order=ASCEND,
            limit=self.n,
            keys_only=True,
        )
        return any(kv.key == key for kv in response.kvs), response.header.revision

    def acquire(self, blocking: bool = True, timeout_s: float | None = None) -> bool:
        """Wait for a permit; True when held."""
        if self._key:
            raise LockReentryError(f"semaphore {self.name!r}: this object already holds it")
        session = self._given_session or Session(self.client, self.ttl_s)
        self._session = session
        self._key = self.prefix + f"{session.id:016x}".encode()
        deadline = deadline_after(0.0 if not blocking else timeout_s)
        try:
            created = create_key(self.client, self._key, self.identifier.encode(), session.id)
            while True:
                session.check()
                admitted, revision = self._admitted(self._key)
                if admitted:
                    self._revision = created.create_revision
                    return True
                left = remaining_s(deadline)
                if left is not None and left <= 0:
                    break
                wait_for_event(
                    self.client,
                    self.prefix,
                    revision,
                    is_delete,
                    prefix=True,
                    deadline=deadline,
                    session=session,
                )
            delete_if_created_at(self.client, self._key, created.create_revision)
        except BaseException:
            self._forget()
            raise
        self._forget()
        return False

    def is_held(self) -> bool:
        if not self._revision or self._session is None or self._session.lost:
            return False
        kv = self.client.get_one(self._key)
        return kv is not None and kv.create_revision == self._revision

    def holders(self) -> list[str]:
        """Identifiers of the first n contenders (the current holders)."""
        response = self.client.get(self.prefix, prefix=True, sort_target=RANGE_CREATE, limit=self.n)
        return [kv.value.decode(errors="replace") for kv in response.kvs]

    def release(self) -> None:
        if self._session is None:
            return
        try:
            if self._revision and not self._session.lost:
                delete_if_created_at(self.client, self._key, self._revision)
        finally:
            self._forget()

    def _forget(self) -> None:
        session = self._session
        self._key, self._revision, self._session = b"", 0, None
        if session is not None and self._given_session is None:
            session.close()

    def __enter__(self) -> Semaphore:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

"""Lock: a distributed mutual-exclusion lock with fencing tokens.

    with Lock(client, "jobs/nightly", ttl_s=10) as lock:
        storage.write(data, fencing_token=lock.token)

How it works. Each contender creates `<name>/<lease id>` with its session's lease; the
store's create revision orders contenders by arrival. A contender holds the lock when no
key under the name was created before its own; until then it watches only its
predecessor's key (one waiter wakes per release, no herd). Releasing deletes the key; a
crashed holder's key vanishes when its lease expires (after at most the TTL).

Fencing. `token` is the create revision of the holder's key: each later holder has a
larger one. A lock alone cannot stop a holder that was paused (GC, SIGSTOP, swap) or whose
requests were delayed past its lease: it still believes it holds the lock while another
holder acts. Give the token to every downstream write, and have the downstream refuse a
token lower than the highest it has seen (`FencingGuard`), or, for data in Synod itself,
make the write a txn guarded by `lock.guard()`.

Error handling. If the session's lease is lost (expired, revoked, unreachable cluster for a
whole TTL), the lock is lost: `acquire` raises `SessionLost`, `is_held()` is False, and
`check()` raises. `release` after a loss does not raise. Locks are not reentrant: acquiring
a lock this `Lock` holds, or that another `Lock` of the same name holds in the same thread
or session, raises `LockReentryError`.
"""

from __future__ import annotations

import contextlib
import threading

from synod.client import Client, ClientError, rpc_pb2, txn
from synod.recipes._ordering import first, wait_first
from synod.recipes.errors import LockReentryError, NotHeld, SessionLost
from synod.recipes.session import (
    TTL_S_DEFAULT,
    Session,
    create_key,
    deadline_after,
    delete_if_created_at,
)

# (lease id, key) of every lock held or being acquired in this process, and (cluster, lock
# name, thread) for the same: the reentrancy checks. A thread that asks again for a lock
# it holds would otherwise wait for itself forever.
_ACTIVE: set[tuple[int, bytes]] = set()
_THREADS: set[tuple[tuple[str, ...], bytes, int]] = set()
_ACTIVE_GUARD = threading.Lock()


class Lock:
    """A named lock; `acquire`/`release` or a `with` block."""

    def __init__(
        self,
        client: Client,
        name: str,
        *,
        ttl_s: int = TTL_S_DEFAULT,
        session: Session | None = None,
        identifier: str = "",
    ) -> None:
        assert name, "a lock needs a name"
        self.client = client
        self.name = name
        self.prefix = name.rstrip("/").encode() + b"/"
        self.ttl_s = ttl_s
        self.identifier = identifier
        self._given_session = session
        self._session: Session | None = None
        self._key = b""
        self._token = 0
        self._owner: tuple[tuple[str, ...], bytes, int] | None = None

    # ------------------------------------------------------------------ state

    @property
    def token(self) -> int:
        """The fencing token of the current holding (0 when not held)."""
        return self._token

    @property
    def key(self) -> bytes:
        return self._key

    @property
    def session(self) -> Session | None:
        return self._session

    def guard(self) -> rpc_pb2.Compare:
        """A compare that holds only while this holding lasts: put it in a txn to make a
        write to Synod itself fenced."""
        if not self._token:
            raise NotHeld(f"lock {self.name!r} is not held")
        return txn.create_revision(self._key) == self._token

    def is_held(self) -> bool:
        """A linearizable check that this holding still exists in the cluster."""
        if not self._token or self._session is None or self._session.lost:
            return False
        kv = self.client.get_one(self._key)
        return kv is not None and kv.create_revision == self._token

    def check(self) -> None:
        """Raise `NotHeld` (or `SessionLost`) unless the lock is still held."""
        if self._session is not None:
            self._session.check()
        if not self.is_held():
            raise NotHeld(f"lock {self.name!r} is no longer held")

    def holder(self) -> tuple[str, int] | None:
        """(identifier, fencing token) of the current holder, or None."""
        kv, _ = first(self.client, self.prefix)
        return None if kv is None else (kv.value.decode(errors="replace"), kv.create_revision)

    # ------------------------------------------------------------------ acquire / release

    def acquire(self, blocking: bool = True, timeout_s: float | None = None) -> bool:
        """Wait for the lock (at most `timeout_s`, or not at all unless `blocking`); True
        when held. The token is then in `token`."""
        if self._token or self._key:
            raise LockReentryError(f"lock {self.name!r} is already held by this Lock")
        owner = (tuple(self.client.endpoints), self.prefix, threading.get_ident())
        with _ACTIVE_GUARD:
            if owner in _THREADS:
                raise LockReentryError(
                    f"lock {self.name!r} is already held (or awaited) by this thread; "
                    "locks are not reentrant"
                )
            _THREADS.add(owner)
        try:
            return self._acquire(blocking, timeout_s)
        finally:
            if not self._token:
                with _ACTIVE_GUARD:
                    _THREADS.discard(owner)
            else:
                self._owner = owner

    def _acquire(self, blocking: bool, timeout_s: float | None) -> bool:
        session = self._given_session or Session(self.client, self.ttl_s)
        key = self.prefix + f"{session.id:016x}".encode()
        with _ACTIVE_GUARD:
            if (session.id, key) in _ACTIVE:
                if self._given_session is None:
                    session.close()
                raise LockReentryError(
                    f"lock {self.name!r} is already held or awaited in session {session.id:x}"
                )
            _ACTIVE.add((session.id, key))
        self._session, self._key = session, key
        try:
            created = create_key(self.client, key, self.identifier.encode(), session.id)
            if created.lease != session.id:
                raise SessionLost(f"lock key {key!r} belongs to another lease")
            deadline = deadline_after(0.0 if not blocking else timeout_s)
            if wait_first(self.client, self.prefix, created.create_revision, session, deadline):
                session.check()
                self._token = created.create_revision
                return True
            delete_if_created_at(self.client, key, created.create_revision)
        except BaseException:
            self._abandon()
            raise
        self._abandon()
        return False

    def _abandon(self, delete_key: bool = True) -> None:
        """Forget this attempt or holding; close the session if it is ours, else delete
        the key (when `delete_key`) so that the next contender is not blocked."""
        session, key, owner = self._session, self._key, self._owner
        self._token, self._key, self._session, self._owner = 0, b"", None, None
        if session is None:
            return
        with _ACTIVE_GUARD:
            _ACTIVE.discard((session.id, key))
            if owner is not None:
                _THREADS.discard(owner)
        if self._given_session is None:
            session.close()
        elif delete_key and not session.lost:
            with contextlib.suppress(ClientError):
                self.client.txn([txn.create_revision(key) > 0], [txn.delete(key)], [])

    def release(self) -> None:
        """Give the lock up (deleting the key only if it is still this holding's). Does
        not raise when the lock was already lost."""
        if self._session is None:
            return
        token, key, session = self._token, self._key, self._session
        try:
            if token and not session.lost:
                delete_if_created_at(self.client, key, token)
        finally:
            self._abandon(delete_key=False)

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

"""Election: leader election with a fencing token, built like the lock.

    election = Election(client, "services/scheduler", ttl_s=10)
    token = election.campaign(b"host-a:8080")      # blocks until leader
    election.proclaim(b"host-a:8081")               # update the leader's value
    for leader in election.observe():                # anyone: follow the leader
        ...
    election.resign()

Each candidate creates `<name>/<lease id>` with its session's lease; the leader is the
candidate whose key has the smallest create revision; the others wait on their
predecessor only. The leader's `token` (its key's create revision) grows with each new
leader: downstream systems that remember the highest token they saw refuse a deposed
leader that has not noticed yet (see docs/recipes/election.md and `FencingGuard`).

Error handling. When the session's lease is lost the candidate is no longer leader:
`campaign` raises `SessionLost`, `proclaim` raises `NotHeld`, `is_leader()` is False.
`observe` survives member failures (the watch resumes on another member) and reports
None while there is no leader.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from synod.client import Client, ClientError, txn
from synod.recipes._ordering import first, wait_first
from synod.recipes.errors import NotHeld, RecipeError
from synod.recipes.session import (
    TTL_S_DEFAULT,
    Session,
    create_key,
    deadline_after,
    delete_if_created_at,
)


@dataclass(frozen=True)
class Leader:
    """The current leader: its key, its proclaimed value and its fencing token."""

    key: bytes
    value: bytes
    token: int


class Election:
    """One candidate (or observer) in the election called `name`."""

    def __init__(
        self,
        client: Client,
        name: str,
        *,
        ttl_s: int = TTL_S_DEFAULT,
        session: Session | None = None,
    ) -> None:
        assert name, "an election needs a name"
        self.client = client
        self.name = name
        self.prefix = name.rstrip("/").encode() + b"/"
        self.ttl_s = ttl_s
        self._given_session = session
        self._session: Session | None = None
        self._key = b""
        self._token = 0

    @property
    def token(self) -> int:
        """This candidate's fencing token while leader (0 otherwise)."""
        return self._token

    def campaign(self, value: bytes | str, timeout_s: float | None = None) -> int:
        """Become leader with `value` (waiting at most `timeout_s`); the fencing token.
        Raises `RecipeError` on timeout, `SessionLost` on session loss."""
        if self._token:
            raise RecipeError(f"already leader of {self.name!r}")
        session = self._session or self._given_session or Session(self.client, self.ttl_s)
        self._session = session
        key = self.prefix + f"{session.id:016x}".encode()
        self._key = key
        try:
            created = create_key(self.client, key, txn.to_bytes(value), session.id)
            if created.value != txn.to_bytes(value):
                self._proclaim_at(key, created.create_revision, value)
            deadline = deadline_after(timeout_s)
            if wait_first(self.client, self.prefix, created.create_revision, session, deadline):
                self._token = created.create_revision
                return self._token
            delete_if_created_at(self.client, key, created.create_revision)
        except BaseException:
            self._drop()
            raise
        self._drop()
        raise RecipeError(f"campaign for {self.name!r} timed out after {timeout_s:g}s")

    def _proclaim_at(self, key: bytes, token: int, value: bytes | str) -> None:
        assert self._session is not None
        response = self.client.txn(
            [txn.create_revision(key) == token],
            [txn.put(key, value, lease=self._session.id)],
            [],
        )
        if not response.succeeded:
            raise NotHeld(f"not leader of {self.name!r} any more")

    def proclaim(self, value: bytes | str) -> None:
        """Change the leader's value without an election; `NotHeld` if not leader."""
        if not self._token:
            raise NotHeld(f"not leader of {self.name!r}")
        self._proclaim_at(self._key, self._token, value)

    def is_leader(self) -> bool:
        """A linearizable check that this candidate still leads."""
        if not self._token or self._session is None or self._session.lost:
            return False
        current = self.leader()
        return current is not None and current.token == self._token

    def resign(self) -> None:
        """Step down (or stop campaigning); the next candidate takes over at once."""
        with contextlib.suppress(ClientError):
            if self._token and self._session is not None and not self._session.lost:
                delete_if_created_at(self.client, self._key, self._token)
        self._drop()

    def _drop(self) -> None:
        session = self._session
        key = self._key
        self._token, self._key, self._session = 0, b"", None
        if session is None:
            return
        if self._given_session is None:
            session.close()
        elif key and not session.lost:
            with contextlib.suppress(ClientError):
                self.client.txn([txn.create_revision(key) > 0], [txn.delete(key)], [])

    def leader(self) -> Leader | None:
        """The current leader (linearizable read), or None."""
        kv, _ = first(self.client, self.prefix)
        return None if kv is None else Leader(kv.key, kv.value, kv.create_revision)

    def observe(self, timeout_s: float | None = None) -> Iterator[Leader | None]:
        """Yield the leader now and after every change (new leader, new value, no leader);
        stop after `timeout_s` without a change (never, if None)."""
        current, revision = first(self.client, self.prefix)
        last = (
            None if current is None else Leader(current.key, current.value, current.create_revision)
        )
        yield last
        with self.client.watch(self.prefix, prefix=True, start_revision=revision + 1) as watcher:
            while True:
                if watcher.get(timeout_s) is None:
                    return
                kv, _ = first(self.client, self.prefix)
                now = None if kv is None else Leader(kv.key, kv.value, kv.create_revision)
                if now != last:
                    last = now
                    yield now

    def __enter__(self) -> Election:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.resign()

"""Barrier and DoubleBarrier.

`Barrier(name)`: a gate held closed by one key. `create()` raises it, `remove()` lowers
it, `wait()` blocks while it stands. Give `ttl_s` to make the gate fall by itself when its
creator dies.

`DoubleBarrier(name, n)`: participants `enter()` and block until n have arrived, do their
work, then `leave()` and block until all have left.

    with DoubleBarrier(client, "jobs/reduce", n=4):
        compute()            # starts when 4 are in; the block ends when all 4 are done

Keys: `<name>/waiters/<lease id>` per participant (with its session's lease), and
`<name>/ready`, created by the n-th arrival and deleted by the last to leave. Each step
reads at a revision R and watches from R + 1, so no arrival or departure is missed.

Error handling. A participant whose session is lost disappears from the barrier (its key
expires with its lease); it gets `SessionLost` if it is still waiting. A participant that
crashes inside the barrier leaves after its TTL, so the others' `leave()` completes; one
that crashes before n arrived leaves the others waiting for a replacement (use a timeout).
A barrier name serves one round at a time: reuse it once every participant has left.
"""

from __future__ import annotations

from synod.client import Client, Timeout, txn
from synod.recipes.errors import RecipeError
from synod.recipes.session import (
    TTL_S_DEFAULT,
    Session,
    create_key,
    deadline_after,
    is_delete,
    is_put,
    remaining_s,
    wait_for_event,
)


class Barrier:
    """A single gate: `create()`, `remove()`, `wait()`."""

    def __init__(self, client: Client, name: str, *, ttl_s: int | None = None) -> None:
        assert name
        self.client = client
        self.key = name.encode()
        self.ttl_s = ttl_s
        self._session: Session | None = None

    def create(self) -> bool:
        """Raise the gate; False if it already stood."""
        lease_id = 0
        if self.ttl_s is not None:
            self._session = self._session or Session(self.client, self.ttl_s)
            lease_id = self._session.id
        response = self.client.txn(
            [txn.create_revision(self.key) == 0], [txn.put(self.key, b"", lease=lease_id)], []
        )
        return response.succeeded

    def remove(self) -> None:
        """Lower the gate: every waiter is released."""
        self.client.txn([txn.create_revision(self.key) > 0], [txn.delete(self.key)], [])
        if self._session is not None:
            self._session.close()
            self._session = None

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block while the gate stands; False at the timeout."""
        deadline = deadline_after(timeout_s)
        response = self.client.get(self.key)
        if not response.kvs:
            return True
        return wait_for_event(
            self.client, self.key, response.header.revision, is_delete, deadline=deadline
        )


class DoubleBarrier:
    """Enter when `n` participants have arrived; leave when all have left."""

    def __init__(
        self,
        client: Client,
        name: str,
        n: int,
        *,
        ttl_s: int = TTL_S_DEFAULT,
        session: Session | None = None,
        timeout_s: float | None = None,
    ) -> None:
        assert name
        if n < 1:
            raise ValueError("a double barrier needs at least one participant")
        self.client = client
        self.n = n
        base = name.rstrip("/").encode()
        self.waiters = base + b"/waiters/"
        self.ready = base + b"/ready"
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._given_session = session
        self._session: Session | None = None
        self._key = b""

    def _count(self) -> tuple[int, int]:
        response = self.client.get(self.waiters, prefix=True, count_only=True)
        return response.count, response.header.revision

    def enter(self, timeout_s: float | None = None) -> None:
        """Arrive and block until n participants have; `Timeout` after `timeout_s`."""
        if self._key:
            raise RecipeError("already inside this barrier")
        session = self._given_session or Session(self.client, self.ttl_s)
        self._session = session
        self._key = self.waiters + f"{session.id:016x}".encode()
        deadline = deadline_after(timeout_s)
        try:
            self._arrive(session, deadline, timeout_s)
        except BaseException:
            self._key, self._session = b"", None
            if self._given_session is None:
                session.close()
            raise

    def _arrive(self, session: Session, deadline: float | None, timeout_s: float | None) -> None:
        create_key(self.client, self._key, b"", session.id)
        count, _ = self._count()
        if count >= self.n:
            create_key(self.client, self.ready, b"", session.id)
            return
        ready = self.client.get(self.ready)
        if ready.kvs:
            return
        if not wait_for_event(
            self.client,
            self.ready,
            ready.header.revision,
            is_put,
            deadline=deadline,
            session=session,
        ):
            self.client.txn([txn.create_revision(self._key) > 0], [txn.delete(self._key)], [])
            raise Timeout(f"barrier: fewer than {self.n} arrived in {timeout_s:g}s")

    def leave(self, timeout_s: float | None = None) -> None:
        """Depart and block until every participant has; `Timeout` after `timeout_s`."""
        if not self._key:
            raise RecipeError("not inside this barrier")
        deadline = deadline_after(timeout_s)
        try:
            self.client.txn([txn.create_revision(self._key) > 0], [txn.delete(self._key)], [])
            while True:
                count, revision = self._count()
                if count == 0:
                    self.client.txn(
                        [txn.create_revision(self.ready) > 0], [txn.delete(self.ready)], []
                    )
                    return
                left = remaining_s(deadline)
                if left is not None and left <= 0:
                    raise Timeout(f"barrier: {count} participants still inside")
                wait_for_event(
                    self.client,
                    self.waiters,
                    revision,
                    is_delete,
                    prefix=True,
                    deadline=deadline,
                )
        finally:
            session = self._session
            self._key, self._session = b"", None
            if session is not None and self._given_session is None:
                session.close()

    def __enter__(self) -> DoubleBarrier:
        self.enter(self.timeout_s)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.leave(self.timeout_s)

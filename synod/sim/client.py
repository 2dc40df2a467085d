"""Simulated clients: each calls one operation at a time on the cluster, with a timeout.

A client picks an operation (put / get / compare-and-set / delete on a small key set), sends
it to the member it believes leads, and follows the answers the way a real client library
does: `NotLeader` -> retry at the hint or at another member; an unreachable member -> try
the next one; `ProposalDropped` -> the write definitely failed; no answer by the deadline ->
the outcome is unknown and the operation is never resent (a resend could apply it twice).

What the checker sees: an operation enters the history when a member accepts it (the core's
propose or read_index returned), with that time as its call; a write that was never accepted
anywhere never happened and is not recorded. A get is recorded only once answered, since a
read that never returned has no effect. Sequence numbers give each write its (client, seq)
identity for the state machine's session table.

Invariants: at most one operation in flight per client; every recorded operation is
completed or given up on exactly once; retries per operation are bounded.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from synod.paxos.types import NodeId
from synod.sim.history import History, OpKind
from synod.sim.loop import EventLoop

ATTEMPTS_MAX = 32


class Answer(enum.Enum):
    """What a member said, at once, to a request."""

    ACCEPTED = "accepted"
    NOT_LEADER = "not leader"
    DROPPED = "dropped"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class Request:
    """One client operation, in the history's vocabulary (see `Operation.argument`)."""

    client: int
    seq: int
    kind: OpKind
    key: str
    argument: object


@dataclass(frozen=True, slots=True)
class Submitted:
    answer: Answer
    leader_hint: NodeId | None = None


class Door(Protocol):
    """The cluster as clients reach it: hand a request to one member, get its first answer."""

    def submit(self, member: NodeId, request: Request) -> Submitted: ...


@dataclass(frozen=True, slots=True)
class ClientKnobs:
    """How clients behave; drawn per seed."""

    timeout_us: int = 200_000
    latency_us_max: int = 300
    think_us_max: int = 2_000
    retry_backoff_us_max: int = 5_000
    key_count: int = 3
    wander_rate: float = 0.0

    def __post_init__(self) -> None:
        assert self.timeout_us >= 1
        assert self.latency_us_max >= 1
        assert self.key_count >= 1
        assert 0.0 <= self.wander_rate <= 1.0


@dataclass(slots=True)
class _InFlight:
    request: Request
    deadline_us: int
    attempts: int = 0
    accepted_us: int | None = None
    op_id: int | None = None
    done: bool = False


class Client:
    """One simulated client; drives itself through the event loop."""

    def __init__(
        self,
        client_id: int,
        loop: EventLoop,
        rng: random.Random,
        members: Sequence[NodeId],
        door: Door,
        history: History,
        knobs: ClientKnobs,
    ) -> None:
        assert members, "a client needs somewhere to go"
        self.client_id = client_id
        self._loop = loop
        self._rng = rng
        self._members = tuple(sorted(members))
        self._door = door
        self._history = history
        self._knobs = knobs
        self._target = self._rng.choice(self._members)
        self._seq = 0
        self._current: _InFlight | None = None
        self._last_seen: dict[str, str | None] = {}
        self._stopping = False
        self.last_success_us: int | None = None
        self.counters: dict[str, int] = {
            "ok": 0,
            "unknown": 0,
            "failed": 0,
            "not leader": 0,
            "unavailable": 0,
        }

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._loop.schedule(
            self._rng.randint(0, self._knobs.think_us_max), self._label("call"), self._call
        )

    def stop(self) -> None:
        """Finish the operation in flight (or let it time out) and call no more."""
        self._stopping = True

    @property
    def idle(self) -> bool:
        return self._current is None or self._current.done

    # -- calls ------------------------------------------------------------------------------

    def _call(self) -> None:
        assert self.idle, "one operation at a time"
        if self._stopping:
            return
        self._seq += 1
        request = self._draw_request()
        if self._knobs.wander_rate and self._rng.random() < self._knobs.wander_rate:
            self._target = self._rng.choice(self._members)
        deadline_us = self._loop.now_us + self._knobs.timeout_us
        current = _InFlight(request, deadline_us)
        self._current = current
        seq = self._seq
        self._loop.schedule_at(
            deadline_us, self._label(f"timeout seq {seq}"), lambda: self._on_deadline(seq)
        )
        self._send(current)

    def _draw_request(self) -> Request:
        key = f"k{self._rng.randrange(self._knobs.key_count)}"
        value = f"c{self.client_id}s{self._seq}"
        roll = self._rng.random()
        kind = OpKind.GET
        argument: object = None
        if roll < 0.3:
            kind, argument = OpKind.PUT, value
        elif roll < 0.55:
            expected = self._last_seen.get(key)
            if self._rng.random() < 0.2:
                expected = None
            kind, argument = OpKind.CAS, (expected, value)
        elif roll < 0.65:
            kind = OpKind.DELETE
        return Request(self.client_id, self._seq, kind, key, argument)

    def _send(self, current: _InFlight) -> None:
        """The request reaches `self._target` after a client-link latency."""
        current.attempts += 1
        target = self._target
        seq = current.request.seq
        self._loop.schedule(
            self._latency_us(),
            self._label(f"seq {seq} reaches {target}"),
            lambda: self._arrive(current, target),
        )

    def _arrive(self, current: _InFlight, target: NodeId) -> None:
        if current.done or current is not self._current:
            return
        submitted = self._door.submit(target, current.request)
        if submitted.answer is Answer.ACCEPTED:
            current.accepted_us = self._loop.now_us
            if current.request.kind is not OpKind.GET:
                request = current.request
                current.op_id = self._history.invoke(
                    request.client, request.kind, request.key, request.argument, self._loop.now_us
                )
            return
        if submitted.answer is Answer.DROPPED:
            self._finish(current, "failed")
            return
        if submitted.answer is Answer.NOT_LEADER:
            self.counters["not leader"] += 1
        else:
            self.counters["unavailable"] += 1
        self._retarget(target, submitted.leader_hint)
        if current.attempts >= ATTEMPTS_MAX:
            self._finish(current, "failed")
            return
        backoff_us = self._latency_us() + self._rng.randint(0, self._knobs.retry_backoff_us_max)
        self._loop.schedule(
            backoff_us,
            self._label(f"seq {current.request.seq} retries"),
            lambda: self._resend(current),
        )

    def _resend(self, current: _InFlight) -> None:
        if current.done or current is not self._current:
            return
        if self._loop.now_us >= current.deadline_us:
            return  # the deadline event gives up on it
        self._send(current)

    def _retarget(self, failed: NodeId, hint: NodeId | None) -> None:
        if hint is not None and hint != failed and hint in self._members:
            self._target = hint
            return
        others = [member for member in self._members if member != failed]
        self._target = self._rng.choice(others) if others else failed

    # -- answers ----------------------------------------------------------------------------

    def on_reply(self, seq: int, result: object) -> bool:
        """A member answered operation `seq` (a write applied, or a read served); True if
        that completed the operation (the client had not given up on it)."""
        current = self._current
        if current is None or current.done or current.request.seq != seq:
            return False  # an answer to an operation this client already gave up on
        assert current.accepted_us is not None, "only accepted operations are answered"
        request = current.request
        if request.kind is OpKind.GET:
            current.op_id = self._history.invoke(
                request.client, request.kind, request.key, request.argument, current.accepted_us
            )
            self._last_seen[request.key] = result if isinstance(result, str) else None
        elif request.kind in (OpKind.PUT, OpKind.CAS) and result is not False:
            assert isinstance(request.argument, (str, tuple))
            new = request.argument if isinstance(request.argument, str) else request.argument[1]
            self._last_seen[request.key] = str(new)
        elif request.kind is OpKind.DELETE:
            self._last_seen[request.key] = None
        assert current.op_id is not None
        self._history.complete(current.op_id, result, self._loop.now_us)
        self.last_success_us = self._loop.now_us
        self._finish(current, "ok")
        return True

    def on_read_failed(self, seq: int) -> None:
        """The member could not confirm its leadership for a read: try again elsewhere."""
        current = self._current
        if current is None or current.done or current.request.seq != seq:
            return
        current.accepted_us = None
        self._retarget(self._target, None)
        self._loop.schedule(
            self._latency_us(),
            self._label(f"seq {seq} retries read"),
            lambda: self._resend(current),
        )

    def _on_deadline(self, seq: int) -> None:
        current = self._current
        if current is None or current.done or current.request.seq != seq:
            return
        if current.op_id is not None:
            self._history.unknown(current.op_id)
            self._finish(current, "unknown")
        else:
            # Never accepted anywhere (or a read that never returned): it had no effect.
            self._finish(current, "failed")
        # The member we waited on may be gone: start the next call somewhere else.
        self._retarget(self._target, None)

    def _finish(self, current: _InFlight, outcome: str) -> None:
        assert not current.done
        current.done = True
        self.counters[outcome] += 1
        think_us = self._rng.randint(0, self._knobs.think_us_max)
        self._loop.schedule(think_us, self._label("call"), self._call)

    def _latency_us(self) -> int:
        return self._rng.randint(1, self._knobs.latency_us_max)

    def _label(self, text: str) -> str:
        return f"client {self.client_id} {text}"

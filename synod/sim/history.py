"""Client histories: what each simulated client asked, when, and what it was told.

Owns the vocabulary of the linearizability checker: an `Operation` is one client call on one
key of a key-value register, with its virtual call and return times in microseconds and the
result the client saw. An operation whose outcome the client never learned (it timed out, its
member crashed) has `return_us = None`: it may have taken effect at any point after its call,
or never. `History` records operations as the simulator runs; `generate_history` builds
linearizable histories from a seed for the checker's own tests and benchmark.

Invariants: every operation's return is at or after its call; an operation is completed or
given up on at most once; the generator draws only from the `random.Random` it is given, so a
seed always produces the same history.
"""

from __future__ import annotations

import enum
import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace


class OpKind(enum.Enum):
    """The four register operations: put(value), get(), cas(expected, new), delete()."""

    PUT = "put"
    GET = "get"
    CAS = "cas"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Operation:
    """One client call on one key.

    `argument`: put the value; cas the pair `(expected, new)` where `expected = None` means
    "key absent"; get and delete `None`. `result`: get the value read (`None`: absent); cas
    whether it swapped; delete whether the key existed, or `None` to leave it unchecked; put
    is not checked. The result is ignored when `return_us` is `None` (outcome unknown). Values
    are opaque to the checker: compared with `==` and hashed, so they must be hashable.
    """

    client: int
    kind: OpKind
    key: str
    argument: object
    call_us: int
    return_us: int | None
    result: object = None

    def __post_init__(self) -> None:
        assert self.client >= 0
        assert self.call_us >= 0
        assert self.return_us is None or self.return_us >= self.call_us, "returns after call"
        if self.kind is OpKind.PUT:
            assert self.argument is not None, "None is how the register says 'absent'"
        elif self.kind is OpKind.CAS:
            assert isinstance(self.argument, tuple), "cas takes (expected, new)"
            assert len(self.argument) == 2
            assert self.argument[1] is not None, "cas cannot swap in 'absent'"
        else:
            assert self.argument is None, "get and delete take no argument"
        if self.known and self.kind is OpKind.CAS:
            assert isinstance(self.result, bool), "a known cas says whether it swapped"
        if self.known and self.kind is OpKind.DELETE:
            assert self.result is None or isinstance(self.result, bool)

    @property
    def known(self) -> bool:
        """Whether the client learned the outcome (the operation returned)."""
        return self.return_us is not None

    def __str__(self) -> str:
        if self.kind is OpKind.PUT:
            call = f"put({self.argument!r})"
        elif self.kind is OpKind.CAS:
            assert isinstance(self.argument, tuple)
            call = f"cas({self.argument[0]!r} -> {self.argument[1]!r})"
        else:
            call = f"{self.kind.value}()"
        if self.return_us is None:
            return f"client {self.client} {call} [{self.call_us}us .. never] -> unknown"
        shown = "ok" if self.kind is OpKind.PUT else repr(self.result)
        return f"client {self.client} {call} [{self.call_us}us .. {self.return_us}us] -> {shown}"


class History:
    """Records the operations of simulated clients as they are called and answered.

    Operation ids are positions in `operations()`. An operation still pending when the
    history is read counts as unknown: the client never learned what happened.
    """

    def __init__(self, operation_count_max: int = 10_000_000) -> None:
        assert operation_count_max >= 1
        self._operations: list[Operation] = []
        self._pending: set[int] = set()
        self._operation_count_max = operation_count_max

    def invoke(self, client: int, kind: OpKind, key: str, argument: object, now_us: int) -> int:
        """Record a call at virtual time `now_us`; return the id to complete it with."""
        assert len(self._operations) < self._operation_count_max, "history is full"
        operation = Operation(client, kind, key, argument, now_us, None)
        op_id = len(self._operations)
        self._operations.append(operation)
        self._pending.add(op_id)
        return op_id

    def complete(self, op_id: int, result: object, now_us: int) -> None:
        """Record the answer the client received at virtual time `now_us`."""
        assert op_id in self._pending, "an operation is answered or given up on only once"
        self._pending.remove(op_id)
        operation = self._operations[op_id]
        assert now_us >= operation.call_us, "virtual time never runs backwards"
        self._operations[op_id] = replace(operation, return_us=now_us, result=result)

    def unknown(self, op_id: int) -> None:
        """Record that the client gave up (timeout): the outcome stays unknown."""
        assert op_id in self._pending, "an operation is answered or given up on only once"
        self._pending.remove(op_id)
        assert self._operations[op_id].return_us is None

    def operations(self) -> list[Operation]:
        """All operations by id; those still pending are unknown."""
        return list(self._operations)


@dataclass(frozen=True, slots=True)
class _Timing:
    """When a generated operation is called, takes effect (None: never) and returns."""

    client: int
    key: str
    call_us: int
    effect_us: int | None
    return_us: int | None


def generate_history(
    rng: random.Random,
    operation_count: int,
    key_count: int,
    client_count: int,
    unknown_fraction: float = 0.01,
    latency_us_max: int = 2_000,
    think_us_max: int = 500,
) -> list[Operation]:
    """A linearizable history: clients overlap, a real register applies each operation at a
    point inside its call (later, or never, for unknown ones) and the results are what it said.
    """
    assert operation_count >= 0
    assert key_count >= 1
    assert client_count >= 1
    assert 0.0 <= unknown_fraction <= 1.0
    assert latency_us_max >= 1
    timings = _generate_timings(
        rng, operation_count, key_count, client_count, unknown_fraction, latency_us_max,
        think_us_max,
    )  # fmt: skip
    register: dict[str, object] = {}
    written: dict[str, list[object]] = {}
    value_counter = [0]
    effective = sorted(
        (timing for timing in timings if timing.effect_us is not None),
        key=lambda timing: (timing.effect_us, timing.call_us, timing.client),
    )
    operations: list[Operation] = []
    for timing in effective:
        operations.append(_apply_generated(rng, timing, register, written, value_counter))
    for timing in timings:
        if timing.effect_us is None:
            kind, argument = _draw_call(rng, timing.key, None, written, value_counter)
            operations.append(
                Operation(timing.client, kind, timing.key, argument, timing.call_us, None)
            )
    operations.sort(key=lambda operation: (operation.call_us, operation.client))
    assert len(operations) == operation_count
    return operations


def _generate_timings(
    rng: random.Random,
    operation_count: int,
    key_count: int,
    client_count: int,
    unknown_fraction: float,
    latency_us_max: int,
    think_us_max: int,
) -> list[_Timing]:
    """Each client calls, waits for its answer (or times out), thinks, and calls again."""
    ready: list[tuple[int, int]] = [(rng.randrange(100), client) for client in range(client_count)]
    heapq.heapify(ready)
    timings: list[_Timing] = []
    for _ in range(operation_count):
        call_us, client = heapq.heappop(ready)
        key = f"key-{rng.randrange(key_count):03d}"
        latency_us = rng.randint(1, latency_us_max)
        return_us: int | None = call_us + latency_us
        effect_us: int | None = call_us + rng.randint(0, latency_us)
        if rng.random() < unknown_fraction:
            # The client gives up at `return_us`; the request may still land later, or never.
            effect_us = call_us + rng.randint(0, 3 * latency_us) if rng.random() < 0.5 else None
            timeout_us = call_us + latency_us
            return_us = None
            heapq.heappush(ready, (timeout_us + rng.randint(0, think_us_max), client))
        else:
            assert return_us is not None
            heapq.heappush(ready, (return_us + rng.randint(0, think_us_max), client))
        timings.append(_Timing(client, key, call_us, effect_us, return_us))
    return timings


def _draw_call(
    rng: random.Random,
    key: str,
    current: object,
    written: dict[str, list[object]],
    value_counter: list[int],
) -> tuple[OpKind, object]:
    """A random call; cas mostly expects the current value so that some swaps succeed."""
    roll = rng.random()
    if roll < 0.4:
        return OpKind.GET, None
    value_counter[0] += 1
    fresh = f"v{value_counter[0]}"
    if roll < 0.7:
        return OpKind.PUT, fresh
    if roll < 0.9:
        earlier: Sequence[object] = written.get(key, [])
        # A cas whose expected value is stale must fail; the register decides which it is.
        expected = current if rng.random() < 0.6 or not earlier else rng.choice(earlier)
        return OpKind.CAS, (expected, fresh)
    return OpKind.DELETE, None


def _apply_generated(
    rng: random.Random,
    timing: _Timing,
    register: dict[str, object],
    written: dict[str, list[object]],
    value_counter: list[int],
) -> Operation:
    """Draw the operation that takes effect at `timing.effect_us`, apply it, record its result."""
    current = register.get(timing.key)
    kind, argument = _draw_call(rng, timing.key, current, written, value_counter)
    result: object = None
    if kind is OpKind.GET:
        result = current
    elif kind is OpKind.PUT:
        register[timing.key] = argument
        written.setdefault(timing.key, []).append(argument)
    elif kind is OpKind.CAS:
        assert isinstance(argument, tuple)
        expected, new = argument
        result = current == expected
        if result:
            register[timing.key] = new
            written.setdefault(timing.key, []).append(new)
    else:
        result = (current is not None) if rng.random() < 0.8 else None
        register.pop(timing.key, None)
    return Operation(
        timing.client, kind, timing.key, argument, timing.call_us, timing.return_us, result
    )

"""Linearizability checker for key-value register histories.

Owns the verdict the simulator prints at the end of a run: could every operation the clients
saw have taken effect atomically at one instant between its call and its return, in an order
that a single register per key explains? Theory of operation:

- Keys are independent registers, and linearizability is compositional (Herlihy and Wing,
  1990): a history is linearizable iff each key's sub-history is. So the history is
  partitioned by key and each partition is searched alone, which keeps every search small.
- Each partition is searched with the algorithm of Wing and Gong (1993) as improved by Lowe
  ("Testing for linearizability", 2017): call and return events sit in one doubly linked list
  in time order. Scanning from the front, a call may be linearized now if the register
  allows it; it is then lifted out of the list (call and return) and the scan restarts. A
  return reached while its operation is still in the list means that operation should have
  been linearized before: undo the last choice and try the next call instead. Lowe's
  memoization remembers every (set of linearized operations, register state) already
  explored, so no configuration is explored twice; the set is a bitset in a Python int.
- An operation whose outcome is unknown returns at "+infinity": its return event sorts after
  every other event, so it may be linearized anywhere after its call. Reaching such a return
  means every known operation is already linearized, and the remaining unknown ones are
  simply left out: they never took effect. Unknown reads change nothing and are dropped.
- Three reductions shrink the search without changing any verdict (each function says why
  it is sound; a brute-force test compares verdicts): operations that never change the
  register when their result fits (reads, failed cas, delete of an absent key) are placed as
  soon as they fit, never branched on; values no read or cas compares with are merged into one,
  so concurrent writes of them in different orders meet in the memo; and unknown operations
  with the same call are placed only in call order.
- The search is bounded by a step budget per key. Exhausting it gives an inconclusive result,
  never a verdict either way. What makes it expensive is many operations overlapping on one
  key, and above all many unknown ones, since those overlap everything after their call.

Invariants: the search never returns "linearizable" without a full linearization of the known
operations; keys are checked in sorted order so the verdict and its explanation depend only on
the history, never on hash seeds.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from synod.sim.history import History, Operation, OpKind, generate_history

__all__ = [
    "STEP_BUDGET_DEFAULT",
    "CheckResult",
    "History",
    "OpKind",
    "Operation",
    "check_history",
    "generate_history",
]

# About a second of search per key on a slow machine; a history that needs more is either
# pathological (hundreds of operations overlapping on one key) or should be made smaller.
STEP_BUDGET_DEFAULT = 2_000_000

# How much of a failing key's history the explanation shows around the point the search hit.
_EXPLAIN_PREFIX_OPERATIONS_MAX = 10
_EXPLAIN_CANDIDATES_MAX = 12


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict on a history.

    `ok` is true only for a linearizable history. When false, `inconclusive` tells a search that
    ran out of budget apart from a proven violation; `key` is the first failing (or undecided)
    key in sorted order and `explanation` shows its operations where the search got furthest in
    time. `operations_checked` counts the operations of the keys searched.
    """

    ok: bool
    key: str | None
    explanation: str
    operations_checked: int
    inconclusive: bool = False

    def __post_init__(self) -> None:
        assert self.operations_checked >= 0
        assert not (self.ok and self.inconclusive), "a linearizable verdict is conclusive"
        assert self.ok == (self.key is None), "a failure names its key; a success names none"


class _Verdict(enum.Enum):
    LINEARIZABLE = "linearizable"
    VIOLATION = "violation"
    BUDGET_EXHAUSTED = "budget exhausted"


@dataclass(frozen=True, slots=True)
class _KeyOutcome:
    verdict: _Verdict
    furthest_prefix: tuple[int, ...]  # partition positions, in linearization order
    steps: int


def check_history(
    operations: Sequence[Operation],
    initial: Mapping[str, object] | None = None,
    step_budget: int = STEP_BUDGET_DEFAULT,
) -> CheckResult:
    """Decide whether `operations` are linearizable, key by key, registers starting at
    `initial` (a key not in it starts absent). Stops at the first key that is not.
    """
    assert step_budget >= 1
    initial = initial or {}
    partitions: dict[str, list[int]] = {}
    for index, operation in enumerate(operations):
        partitions.setdefault(operation.key, []).append(index)
    checked = 0
    undecided: CheckResult | None = None
    for key in sorted(partitions):
        partition = [operations[index] for index in partitions[key]]
        outcome = _check_key(partition, initial.get(key), step_budget)
        checked += len(partition)
        if outcome.verdict is _Verdict.VIOLATION:
            explanation = _explain(key, partition, partitions[key], initial.get(key), outcome)
            return CheckResult(False, key, explanation, checked)
        if outcome.verdict is _Verdict.BUDGET_EXHAUSTED and undecided is None:
            explanation = (
                f"search budget exhausted on key {key!r} after {outcome.steps} steps "
                f"({len(partition)} operations): no verdict for this key"
            )
            undecided = CheckResult(False, key, explanation, 0, inconclusive=True)
    if undecided is not None:
        return CheckResult(False, undecided.key, undecided.explanation, checked, True)
    assert checked == len(operations)
    explanation = f"linearizable: {checked} operations over {len(partitions)} keys"
    return CheckResult(True, None, explanation, checked)


def _step(operation: Operation, state: object) -> tuple[bool, object]:
    """Apply `operation` to a register holding `state` (None: absent): is the result the
    operation reported possible now, and what does the register hold after it?
    """
    kind = operation.kind
    if kind is OpKind.GET:
        return state == operation.result, state
    if kind is OpKind.PUT:
        return True, operation.argument
    if kind is OpKind.CAS:
        argument = operation.argument
        assert isinstance(argument, tuple)
        expected, new = argument
        swapped = state == expected
        legal = operation.return_us is None or operation.result == swapped
        return legal, (new if swapped else state)
    assert kind is OpKind.DELETE
    existed = state is not None
    legal = operation.return_us is None or operation.result is None or operation.result == existed
    return legal, None


@dataclass(frozen=True, slots=True)
class _EventList:
    """Call and return events of one partition as a doubly linked list over arrays.

    Entry 0 is the head sentinel and entry `2n + 1` the tail. Entry `e` in 1..2n belongs to
    operation `operation_of[e]`; `partner[e]` is the return of a call (0 for returns).
    """

    next_entry: list[int]
    previous_entry: list[int]
    operation_of: list[int]
    partner: list[int]
    tail: int

    def lift(self, call: int) -> None:
        """Unlink a call and its return; their own links stay for `unlift`."""
        for entry in (call, self.partner[call]):
            self.next_entry[self.previous_entry[entry]] = self.next_entry[entry]
            self.previous_entry[self.next_entry[entry]] = self.previous_entry[entry]

    def unlift(self, call: int) -> None:
        """Undo the latest `lift`, relinking in the reverse order (dancing links)."""
        for entry in (self.partner[call], call):
            self.next_entry[self.previous_entry[entry]] = entry
            self.previous_entry[self.next_entry[entry]] = entry


def _build_events(operations: Sequence[Operation]) -> _EventList:
    """Events sorted by time; at equal times calls come first, so touching operations count as
    concurrent (the permissive reading). Unknown returns come after everything.
    """
    never_us = 1 + max(
        (max(op.call_us, op.return_us or 0) for op in operations),
        default=0,
    )
    events: list[tuple[int, int, int]] = []  # (time, 0 call / 1 return, operation)
    for position, operation in enumerate(operations):
        events.append((operation.call_us, 0, position))
        return_us = never_us if operation.return_us is None else operation.return_us
        events.append((return_us, 1, position))
    events.sort()
    count = len(events)
    operation_of = [-1] * (count + 2)
    partner = [0] * (count + 2)
    call_entry: dict[int, int] = {}
    for entry, (_, is_return, position) in enumerate(events, start=1):
        operation_of[entry] = position
        if is_return:
            partner[call_entry[position]] = entry
        else:
            call_entry[position] = entry
    next_entry = list(range(1, count + 3))
    previous_entry = list(range(-1, count + 1))
    return _EventList(next_entry, previous_entry, operation_of, partner, count + 1)


def _check_key(operations: Sequence[Operation], initial: object, step_budget: int) -> _KeyOutcome:
    """Wing-Gong-Lowe search over one key's operations, placing pure operations greedily."""
    # Unknown reads cannot have changed anything, and leaving them out is always allowed.
    operations = [op for op in operations if op.known or op.kind is not OpKind.GET]
    operations, initial = _forget_unobserved(operations, initial)
    events = _build_events(operations)
    next_entry, operation_of, partner = events.next_entry, events.operation_of, events.partner
    known = [operation.known for operation in operations]
    pure = [_is_pure(operation) for operation in operations]
    twin_before = _twin_before(operations)
    explored: set[tuple[int, object]] = set()
    stack: list[tuple[int, object, bool]] = []  # (call entry placed, state before, greedy)
    order: list[int] = []  # positions of the operations on `stack`, in the same order
    return_us = [
        -1 if operation.return_us is None else operation.return_us for operation in operations
    ]
    furthest: list[int] = []  # the placed operations when the search got furthest in time
    furthest_reached = (-1, -1)  # (time of the return that stopped it, operations placed)
    linearized = 0  # bitset of operation positions
    state = initial
    entry = next_entry[0]
    greedy = True  # a first pass over the candidates that places only pure operations
    for step in range(step_budget):
        if entry == events.tail:
            return _KeyOutcome(_Verdict.LINEARIZABLE, tuple(furthest), step)
        position = operation_of[entry]
        if partner[entry]:
            twin = twin_before[position]
            if greedy != pure[position] or (twin >= 0 and not linearized >> twin & 1):
                entry = next_entry[entry]
                continue
            legal, state_after = _step(operations[position], state)
            candidate = (linearized | (1 << position), state_after)
            if legal and candidate not in explored:
                explored.add(candidate)
                stack.append((entry, state, greedy))
                order.append(position)
                linearized, state = candidate
                events.lift(entry)
                entry, greedy = next_entry[0], True
                continue
            if not (legal and greedy):
                entry = next_entry[entry]
                continue
            # A pure operation fits now but leads only to dead ends: so does this configuration.
        elif not known[position]:
            # Every event before an unknown return is a call: all known operations are placed.
            return _KeyOutcome(_Verdict.LINEARIZABLE, tuple(furthest), step)
        elif greedy:
            entry, greedy = next_entry[0], False
            continue
        if not partner[entry] and (return_us[position], len(order)) > furthest_reached:
            furthest_reached = (return_us[position], len(order))
            furthest = order.copy()
        # Backtrack. A greedy placement was never a choice, so its failure is its parent's too.
        placed_greedily = True
        while placed_greedily and stack:  # bounded: every turn pops
            entry, state, placed_greedily = stack.pop()
            linearized ^= 1 << order.pop()
            events.unlift(entry)
        if placed_greedily:
            return _KeyOutcome(_Verdict.VIOLATION, tuple(furthest), step)
        entry, greedy = next_entry[entry], False
    return _KeyOutcome(_Verdict.BUDGET_EXHAUSTED, tuple(furthest), step_budget)


class _Unobserved:
    """The one value standing for every value that no read or cas of the key compares with."""

    def __repr__(self) -> str:
        return "<a value never observed>"


_UNOBSERVED = _Unobserved()


def _forget_unobserved(
    operations: list[Operation], initial: object
) -> tuple[list[Operation], object]:
    """Replace the values nobody compares with by `_UNOBSERVED`.

    Whether an operation fits depends on the register only through equality with read results
    and cas expectations, and through presence. Values outside those are interchangeable, so
    writes of them in different orders lead to the same configuration, which the memo then
    explores once instead of once per order of the concurrent writes.
    """
    observed: set[object] = set()
    for operation in operations:
        if operation.kind is OpKind.GET:
            observed.add(operation.result)
        elif operation.kind is OpKind.CAS:
            assert isinstance(operation.argument, tuple)
            observed.add(operation.argument[0])
    forgotten: list[Operation] = []
    for operation in operations:
        if operation.kind is OpKind.PUT and operation.argument not in observed:
            operation = replace(operation, argument=_UNOBSERVED)
        elif operation.kind is OpKind.CAS:
            assert isinstance(operation.argument, tuple)
            expected, new = operation.argument
            if new not in observed:
                operation = replace(operation, argument=(expected, _UNOBSERVED))
        forgotten.append(operation)
    if initial is not None and initial not in observed:
        initial = _UNOBSERVED
    return forgotten, initial


def _twin_before(operations: Sequence[Operation]) -> list[int]:
    """For each unknown operation, the unknown one with the same call called just before it, or
    -1: the search places such twins only in call order.

    Unknown operations never return, so twins are interchangeable: a linearization that places
    them in another order, or skips one, stays valid with their names swapped. Without this, k
    unknown twins (say, deletes) make 2**k configurations where k + 1 suffice.
    """
    twins: list[int] = [-1] * len(operations)
    latest: dict[tuple[OpKind, object], int] = {}
    by_call = sorted(range(len(operations)), key=lambda p: (operations[p].call_us, p))
    for position in by_call:
        operation = operations[position]
        if not operation.known:
            signature = (operation.kind, operation.argument)
            twins[position] = latest.get(signature, -1)
            latest[signature] = position
    return twins


def _is_pure(operation: Operation) -> bool:
    """Whether the operation leaves the register unchanged wherever its result is legal.

    Such an operation that fits now can be placed now: a linearization that places it later
    stays valid with it moved here, since it changes no state and its call already happened.
    This partial-order reduction keeps reads from multiplying the configurations explored.
    """
    if not operation.known:
        return False
    if operation.kind is OpKind.GET:
        return True
    return operation.kind in (OpKind.CAS, OpKind.DELETE) and operation.result is False


def _explain(
    key: str,
    partition: Sequence[Operation],
    indexes: Sequence[int],
    initial: object,
    outcome: _KeyOutcome,
) -> str:
    """Where the search got furthest in time: the end of that linearizable prefix, then the
    operations that could come next and why none fits. Operations are named by their index in
    the checked history.
    """
    # Positions in `outcome` count only the operations the search kept (unknown reads dropped).
    kept = [i for i, op in enumerate(partition) if op.known or op.kind is not OpKind.GET]
    operations = [partition[i] for i in kept]
    names = [indexes[i] for i in kept]
    prefix = outcome.furthest_prefix
    placed = set(prefix)
    remaining = [p for p in range(len(operations)) if p not in placed]
    # A violation leaves some known operation out of every prefix, hence a finite deadline.
    deadline_us = min(operations[p].return_us or 0 for p in remaining if operations[p].known)
    lines = [
        f"key {key!r} is not linearizable: no order of its operations gets past {deadline_us}us",
        f"furthest linearizable prefix: {len(prefix)} of {len(operations)} operations; "
        f"register initially {_show_state(initial)}",
    ]
    state = initial
    shown_from = max(0, len(prefix) - _EXPLAIN_PREFIX_OPERATIONS_MAX)
    if shown_from:
        lines.append(f"  ... {shown_from} earlier operations of the prefix ...")
    for rank, position in enumerate(prefix):
        legal, state = _step(operations[position], state)
        assert legal, "the prefix was found legal by the search"
        if rank >= shown_from:
            lines.append(f"  op {names[position]}: {operations[position]}  => {_show_state(state)}")
    lines.append(
        f"register then: {_show_state(state)}; "
        f"none of the operations called by {deadline_us}us fits next:"
    )
    candidates = [p for p in remaining if operations[p].call_us <= deadline_us]
    candidates.sort(key=lambda p: (operations[p].call_us, p))
    for position in candidates[:_EXPLAIN_CANDIDATES_MAX]:
        reason = _why_not(operations[position], state)
        lines.append(f"  op {names[position]}: {operations[position]}  ({reason})")
    if len(candidates) > _EXPLAIN_CANDIDATES_MAX:
        lines.append(f"  ... {len(candidates) - _EXPLAIN_CANDIDATES_MAX} more ...")
    return "\n".join(lines)


def _why_not(operation: Operation, state: object) -> str:
    """Why `operation` cannot be the next step from `state`, in the register's words."""
    legal, _ = _step(operation, state)
    if legal:
        return "allowed here, but no continuation after it works"
    if operation.kind is OpKind.GET:
        return f"read {_show_state(operation.result)} but the register holds {_show_state(state)}"
    if operation.kind is OpKind.CAS:
        return f"returned {operation.result!r} but would have returned {not operation.result!r}"
    assert operation.kind is OpKind.DELETE
    return f"returned existed={operation.result!r} but the key {_show_presence(state)}"


def _show_state(state: object) -> str:
    return "absent" if state is None else repr(state)


def _show_presence(state: object) -> str:
    return "was absent" if state is None else "existed"

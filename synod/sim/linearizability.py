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
- An operation whose outcome is unknown returns at "+infinity": it may be linearized anywhere
  after its call, or never. Its return event would sort after every other one, so it is not
  kept at all: unknown calls sit in a second list, in call order, and a call there is a
  candidate while it precedes the first return left in the main list. Once the main list is
  empty every known operation is placed, and the unknown ones left never took effect.
  Unknown reads change nothing and are dropped.
- Reductions shrink the search without changing any verdict (each function says why it is
  sound; a test compares verdicts with a plain reference search):
  `_is_pure` operations (reads, failed cas, delete of an absent key) are placed as soon as they
  fit, never branched on; `_forget_unobserved` merges the values nothing compares with, so
  concurrent writes of them meet in the memo; `_twin_before` places interchangeable unknown
  operations in call order; `_unnoticed` and the unknown pass place an unknown operation only
  right before an operation that notices it, since a shortest linearization drops any other;
  and `_Failures` prunes a configuration whose options are a subset of one that failed.
  Candidates are tried pure first, then known, then unknown, so that a configuration is first
  reached with the fewest unknown operations placed, which makes `_Failures` effective.
- The search is bounded by a step budget per key. Exhausting it gives an inconclusive result,
  never a verdict either way. What makes it expensive is many operations overlapping on one
  key, and above all proving a violation among many unknown ones, which overlap everything
  after their call: the search must rule out every subset of them that could take effect.

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
    """The events of one partition as two doubly linked lists over shared arrays.

    The main list holds the calls and returns of known operations in time order, between
    `MAIN_HEAD` and `main_tail`. Unknown operations never return, so only their calls are
    kept, in call order, in a second list between `unknown_head` and `unknown_tail`: the scan
    over known candidates never walks past them. Entry `e` belongs to operation
    `operation_of[e]` at time `time_us[e]`; `partner[e]` is the return of a known call, 0 for a
    return and -1 for an unknown call.
    """

    next_entry: list[int]
    previous_entry: list[int]
    operation_of: list[int]
    partner: list[int]
    time_us: list[int]
    main_tail: int
    unknown_head: int
    unknown_tail: int

    MAIN_HEAD = 0

    def lift(self, call: int) -> None:
        """Unlink a call and its return; their own links stay for `unlift`."""
        self._unlink(call)
        if self.partner[call] > 0:
            self._unlink(self.partner[call])

    def unlift(self, call: int) -> None:
        """Undo the latest `lift`, relinking in the reverse order (dancing links)."""
        if self.partner[call] > 0:
            self._relink(self.partner[call])
        self._relink(call)

    def _unlink(self, entry: int) -> None:
        self.next_entry[self.previous_entry[entry]] = self.next_entry[entry]
        self.previous_entry[self.next_entry[entry]] = self.previous_entry[entry]

    def _relink(self, entry: int) -> None:
        self.next_entry[self.previous_entry[entry]] = entry
        self.previous_entry[self.next_entry[entry]] = entry


def _build_events(operations: Sequence[Operation]) -> _EventList:
    """Known events sorted by time; at equal times calls come first, so touching operations
    count as concurrent (the permissive reading). Unknown calls sorted by time apart.
    """
    known: list[tuple[int, int, int]] = []  # (time, 0 call / 1 return, operation)
    unknown: list[tuple[int, int, int]] = []
    for position, operation in enumerate(operations):
        if operation.return_us is None:
            unknown.append((operation.call_us, 0, position))
        else:
            known.append((operation.call_us, 0, position))
            known.append((operation.return_us, 1, position))
    known.sort()
    unknown.sort()
    # Layout: main head 0, known events, main tail, unknown head, unknown calls, unknown tail.
    main_tail = len(known) + 1
    unknown_head = main_tail + 1
    unknown_tail = unknown_head + len(unknown) + 1
    size = unknown_tail + 1
    operation_of = [-1] * size
    partner = [0] * size
    time_us = [-1] * size
    call_entry: dict[int, int] = {}
    for entry, (event_us, is_return, position) in enumerate(known, start=1):
        operation_of[entry], time_us[entry] = position, event_us
        if is_return:
            partner[call_entry[position]] = entry
        else:
            call_entry[position] = entry
    for entry, (event_us, _, position) in enumerate(unknown, start=unknown_head + 1):
        operation_of[entry], time_us[entry], partner[entry] = position, event_us, -1
    next_entry = list(range(1, size + 1))
    previous_entry = list(range(-1, size - 1))
    next_entry[main_tail] = previous_entry[unknown_head] = -1  # two separate lists
    return _EventList(
        next_entry, previous_entry, operation_of, partner, time_us,
        main_tail, unknown_head, unknown_tail,
    )  # fmt: skip


# The scan over the candidates runs in passes, each placing one class of operations: pure ones
# first (they are never a choice), then known ones, then unknown ones, so that a configuration
# is first reached with as few unknown operations placed as possible (see `_Failures`).
_PASS_PURE = 0
_PASS_KNOWN = 1
_PASS_UNKNOWN = 2


class _NoPrior:
    """Marks a configuration whose last operation placed is known (or that has none)."""

    def __repr__(self) -> str:
        return "<no prior>"


_NO_PRIOR = _NoPrior()


@dataclass(frozen=True, slots=True)
class _Partition:
    """One key's operations, prepared for the search: values nobody compares merged, unknown
    reads dropped, and per operation what the search asks about it most often.
    """

    operations: list[Operation]
    initial: object
    pass_of: list[int]
    twin_before: list[int]
    unknown: list[bool]
    references: list[tuple[object, ...]]
    unknown_referrers: _UnknownReferrers

    @staticmethod
    def prepare(operations: Sequence[Operation], initial: object) -> _Partition:
        # Unknown reads cannot have changed anything, and leaving them out is always allowed.
        kept = [op for op in operations if op.known or op.kind is not OpKind.GET]
        kept, initial = _forget_unobserved(kept, initial)
        return _Partition(
            kept,
            initial,
            [_pass_of(operation) for operation in kept],
            _twin_before(kept),
            [not operation.known for operation in kept],
            [_references(operation) for operation in kept],
            _UnknownReferrers(kept),
        )


def _check_key(operations: Sequence[Operation], initial: object, step_budget: int) -> _KeyOutcome:
    """Wing-Gong-Lowe search over one key's operations, with the reductions of the module doc.

    A configuration is (operations placed, register state, the state before the last one if
    that one is unknown): see `_unnoticed` for why the last matters.
    """
    # One loop over local names: this is the hot path, and Python pays for every attribute.
    partition = _Partition.prepare(operations, initial)
    operations, pass_of = partition.operations, partition.pass_of
    twin_before, unknown_referrers = partition.twin_before, partition.unknown_referrers
    unknown, references = partition.unknown, partition.references
    events = _build_events(operations)
    next_entry, operation_of, partner = events.next_entry, events.operation_of, events.partner
    time_us, main_tail, unknown_tail = events.time_us, events.main_tail, events.unknown_tail
    failures = _Failures(operations) if any(unknown) else None
    window_references: set[object] = set()  # in the unknown pass: what known candidates compare
    explored: set[tuple[int, object, object]] = set()
    stack: list[tuple[int, object, int, int]] = []  # (call placed, state before, pass, frontier)
    order: list[int] = []  # positions of the operations on `stack`, in the same order
    furthest: list[int] = []  # the placed operations when the search got furthest in time
    furthest_reached = (-1, -1)  # (frontier, operations placed)
    linearized = 0  # bitset of operation positions
    state = partition.initial
    prior: object = _NO_PRIOR  # the state before the last operation placed, if it is unknown
    frontier_us = -1  # in the unknown pass: the first return of an unplaced known operation
    entry, scan_pass = next_entry[0], _PASS_PURE
    for step in range(step_budget):
        if entry == main_tail:
            # Every known operation is placed; unplaced unknown ones never took effect.
            return _KeyOutcome(_Verdict.LINEARIZABLE, tuple(furthest), step)
        calls_left = scan_pass != _PASS_UNKNOWN or (
            entry != unknown_tail and time_us[entry] <= frontier_us
        )
        if calls_left and partner[entry]:
            position = operation_of[entry]
            twin = twin_before[position]
            if pass_of[position] != scan_pass or (twin >= 0 and not linearized >> twin & 1):
                entry = next_entry[entry]
                continue
            operation = operations[position]
            legal, state_after = _step(operation, state)
            if not legal or _unnoticed(operation, state, state_after, prior):
                entry = next_entry[entry]
                continue
            if scan_pass == _PASS_UNKNOWN and not (
                state in window_references
                or state_after in window_references
                or unknown_referrers.any_candidate(state, state_after, linearized, frontier_us)
            ):
                # Nothing that could come next compares with either state: nothing would notice.
                entry = next_entry[entry]
                continue
            candidate = (
                linearized | (1 << position),
                state_after,
                state if unknown[position] else _NO_PRIOR,
            )
            if candidate not in explored and not (failures and failures.covers(*candidate)):
                explored.add(candidate)
                stack.append((entry, state, scan_pass, frontier_us))
                order.append(position)
                linearized, state, prior = candidate
                events.lift(entry)
                entry, scan_pass = next_entry[0], _PASS_PURE
                continue
            if scan_pass != _PASS_PURE:
                entry = next_entry[entry]
                continue
            # A pure operation fits now but leads only to dead ends: so does this configuration.
        elif scan_pass == _PASS_PURE:
            entry, scan_pass = next_entry[0], _PASS_KNOWN
            continue
        else:
            if scan_pass == _PASS_KNOWN:
                frontier_us = time_us[entry]
                window_references = _window_references(events, references)
                entry, scan_pass = next_entry[events.unknown_head], _PASS_UNKNOWN
                if entry != unknown_tail and time_us[entry] <= frontier_us:
                    continue
            if (frontier_us, len(order)) > furthest_reached:
                furthest_reached = (frontier_us, len(order))
                furthest = order.copy()
        # Backtrack. A pure placement was never a choice, so its failure is its parent's too.
        popped_pass = _PASS_PURE
        while popped_pass == _PASS_PURE and stack:  # bounded: every turn pops
            if failures:
                failures.add(linearized, state, prior)
            entry, state, popped_pass, frontier_us = stack.pop()
            linearized ^= 1 << order.pop()
            events.unlift(entry)
            prior = stack[-1][1] if order and unknown[order[-1]] else _NO_PRIOR
        if popped_pass == _PASS_PURE:
            return _KeyOutcome(_Verdict.VIOLATION, tuple(furthest), step)
        if popped_pass == _PASS_UNKNOWN:
            window_references = _window_references(events, references)
        entry, scan_pass = next_entry[entry], popped_pass
    return _KeyOutcome(_Verdict.BUDGET_EXHAUSTED, tuple(furthest), step_budget)


def _references(operation: Operation) -> tuple[object, ...]:
    """The states a known operation compares the register with (None: absent)."""
    if not operation.known:
        return ()
    if operation.kind is OpKind.GET:
        return (operation.result,)
    if operation.kind is OpKind.CAS:
        assert isinstance(operation.argument, tuple)
        return (operation.argument[0],)
    if operation.kind is OpKind.DELETE and operation.result is not None:
        return (None,)
    return ()


def _window_references(events: _EventList, references: Sequence[tuple[object, ...]]) -> set[object]:
    """What the known candidates (calls before the first return in the main list) compare."""
    found: set[object] = set()
    entry = events.next_entry[events.MAIN_HEAD]
    while events.partner[entry] > 0:  # bounded: the main list ends with a return or the tail
        found.update(references[events.operation_of[entry]])
        entry = events.next_entry[entry]
    return found


class _UnknownReferrers:
    """The unknown cas operations by expected state, in call order.

    Such a cas notices a change from or to its expected state; other unknown operations never
    notice anything (a put overwrites blindly, a delete ends absent either way).
    """

    def __init__(self, operations: Sequence[Operation]) -> None:
        self._operations = operations
        self._by_expected: dict[object, list[int]] = {}
        for position, operation in enumerate(operations):
            if not operation.known and operation.kind is OpKind.CAS:
                assert isinstance(operation.argument, tuple)
                self._by_expected.setdefault(operation.argument[0], []).append(position)
        for positions in self._by_expected.values():
            positions.sort(key=lambda p: operations[p].call_us)

    def any_candidate(
        self, first: object, second: object, linearized: int, frontier_us: int
    ) -> bool:
        """Whether an unplaced one, called by `frontier_us`, expects `first` or `second`."""
        for state in (first, second):
            for position in self._by_expected.get(state, ()):
                if self._operations[position].call_us > frontier_us:
                    break
                if not linearized >> position & 1:
                    return True
        return False


def _unnoticed(operation: Operation, state: object, state_after: object, prior: object) -> bool:
    """Whether placing `operation` now would leave something unknown without an observer.

    An unknown operation that changes nothing, or one followed by an operation that fits and
    ends the same from the state before it (`prior`), can be left out of the linearization.
    Some shortest linearization has neither, so the search need not build them.
    """
    if operation.return_us is None and state_after == state:
        return True
    if prior is _NO_PRIOR:
        return False
    legal_from_prior, after_from_prior = _step(operation, prior)
    return legal_from_prior and after_from_prior == state_after


class _Failures:
    """Configurations proven to have no linearization, for subsumption.

    A configuration that placed the same known operations and reached the same state, but
    placed a superset of the unknown ones, has fewer options: unknown operations may stay out
    forever. So does one that must find an observer for its last unknown operation, compared
    with one that need not. Either fails if the other did. With many unknown operations this
    keeps a search that must prove a violation from trying every subset of them everywhere.
    """

    def __init__(self, operations: Sequence[Operation]) -> None:
        self._unknown_mask = sum(1 << p for p, op in enumerate(operations) if not op.known)
        assert self._unknown_mask, "only worth it with unknown operations"
        self._unknown_placed: dict[tuple[int, object, object], list[int]] = {}

    def add(self, linearized: int, state: object, prior: object) -> None:
        unknown = linearized & self._unknown_mask
        key = (linearized & ~self._unknown_mask, state, prior)
        kept = [old for old in self._unknown_placed.get(key, []) if unknown & ~old]
        kept.append(unknown)
        self._unknown_placed[key] = kept

    def covers(self, linearized: int, state: object, prior: object) -> bool:
        unknown = linearized & self._unknown_mask
        known = linearized & ~self._unknown_mask
        for restriction in (_NO_PRIOR, prior) if prior is not _NO_PRIOR else (_NO_PRIOR,):
            placed = self._unknown_placed.get((known, state, restriction), ())
            if any(not old & ~unknown for old in placed):
                return True
        return False


def _pass_of(operation: Operation) -> int:
    if _is_pure(operation):
        return _PASS_PURE
    return _PASS_KNOWN if operation.known else _PASS_UNKNOWN


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
    # Known operations first: they are the ones that must fit; unknown ones only might have.
    candidates = [p for p in remaining if operations[p].call_us <= deadline_us]
    candidates.sort(key=lambda p: (not operations[p].known, operations[p].call_us, p))
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

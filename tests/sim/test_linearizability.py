"""Tests of the linearizability checker (`synod/sim/linearizability.py`) and its history types.

The checker is the simulator's final judge (DESIGN.md, "Simulation": linearizability of the
client history at the end), so it is tested both ways: hand-written histories whose verdict is
known, a plain reference search (every order real time allows, no reductions) that must agree
on small random histories, and generated histories that a real register produced, which must
always pass and must fail once corrupted.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.sim.history import History, Operation, OpKind, generate_history
from synod.sim.linearizability import check_history

KEY = "k"


def put(value: object, call_us: int, return_us: int | None, key: str = KEY) -> Operation:
    return Operation(0, OpKind.PUT, key, value, call_us, return_us)


def get(result: object, call_us: int, return_us: int | None, key: str = KEY) -> Operation:
    return Operation(1, OpKind.GET, key, None, call_us, return_us, result)


def cas(
    expected: object, new: object, swapped: bool, call_us: int, return_us: int | None
) -> Operation:
    return Operation(2, OpKind.CAS, KEY, (expected, new), call_us, return_us, swapped)


def delete(existed: bool | None, call_us: int, return_us: int | None) -> Operation:
    return Operation(3, OpKind.DELETE, KEY, None, call_us, return_us, existed)


def linearizable(operations: Sequence[Operation], **initial: object) -> bool:
    result = check_history(operations, initial=initial)
    assert not result.inconclusive, "these histories are small enough to decide"
    return result.ok


# --- hand-written histories ------------------------------------------------------------------


def test_sequential_history_of_every_kind_is_linearizable() -> None:
    """Goal: the register model of put, get, cas and delete. Method: one client, no overlap."""
    history = [
        get(None, 0, 1),
        put("a", 2, 3),
        get("a", 4, 5),
        cas("a", "b", True, 6, 7),
        cas("a", "c", False, 8, 9),
        get("b", 10, 11),
        delete(True, 12, 13),
        delete(False, 14, 15),
        get(None, 16, 17),
    ]
    assert linearizable(history)


def test_empty_history_is_linearizable() -> None:
    result = check_history([])
    assert result.ok
    assert result.operations_checked == 0


def test_stale_read_after_completed_write_is_not_linearizable() -> None:
    """Goal: a read that starts after a write returned must see it (or something later)."""
    history = [put("a", 0, 10), put("b", 20, 30), get("a", 40, 50)]
    assert not linearizable(history)


def test_lost_write_is_not_linearizable() -> None:
    """Goal: an acknowledged write never vanishes. Method: later read sees the key absent."""
    assert not linearizable([put("a", 0, 10), get(None, 20, 30)])


def test_read_of_a_value_never_written_is_not_linearizable() -> None:
    history = [put("a", 0, 10), get("z", 5, 30)]
    assert not linearizable(history)


def test_read_concurrent_with_a_write_may_see_old_or_new_value() -> None:
    """Goal: overlap allows either order. Method: a read inside the write, both outcomes."""
    assert linearizable([put("a", 0, 10), get("a", 2, 8)])
    assert linearizable([put("a", 0, 10), get(None, 2, 8)])


def test_reads_cannot_go_back_to_the_old_value_once_a_read_saw_the_new_one() -> None:
    """Goal: the new value is visible to every read after the first read that saw it."""
    history = [put("a", 0, 100), get("a", 10, 20), get(None, 30, 40)]
    assert not linearizable(history)


def test_concurrent_writes_are_linearizable_in_both_orders() -> None:
    """Goal: overlapping writes may land in either order. Method: later reads see each one."""
    assert linearizable([put("a", 0, 10), put("b", 5, 15), get("a", 20, 30)])
    assert linearizable([put("a", 0, 10), put("b", 5, 15), get("b", 20, 30)])


def test_concurrent_writes_cannot_both_be_last() -> None:
    """Goal: one order must explain all later reads. Method: reads see a, then b, then a."""
    history = [
        put("a", 0, 10),
        put("b", 5, 15),
        get("a", 20, 30),
        get("b", 40, 50),
    ]
    assert not linearizable(history)


def test_concurrent_reads_may_take_effect_against_their_call_order() -> None:
    """Goal: reads are ordered by what they saw, not by when they were called. Method: the read
    called first sees the write, the one called second does not; both overlap the write.
    """
    assert linearizable([put("a", 0, 100), get("a", 1, 100), get(None, 2, 100)])


def test_touching_operations_count_as_concurrent() -> None:
    """Goal: a return and a call at the same virtual microsecond may be ordered either way."""
    assert linearizable([put("a", 0, 10), get(None, 10, 20)])


def test_unknown_write_later_observed_is_linearizable() -> None:
    """Goal: an operation whose client timed out may take effect long after its call."""
    history = [put("a", 0, None), get(None, 100, 110), get("a", 1_000, 1_010)]
    assert linearizable(history)


def test_unknown_write_never_observed_is_linearizable() -> None:
    """Goal: an unknown operation may never take effect."""
    history = [put("a", 0, None), get(None, 100, 110), get(None, 1_000, 1_010)]
    assert linearizable(history)


def test_unknown_write_cannot_take_effect_before_its_call() -> None:
    history = [get("a", 0, 10), put("a", 20, None)]
    assert not linearizable(history)


def test_unknown_write_once_observed_stays_until_overwritten() -> None:
    history = [put("a", 0, None), get("a", 10, 20), get(None, 30, 40)]
    assert not linearizable(history)


def test_unknown_read_is_ignored_whatever_it_claims() -> None:
    assert linearizable([get("never written", 0, None), put("a", 5, 10)])


def test_cas_swaps_only_when_the_register_holds_the_expected_value() -> None:
    """Goal: cas semantics. Method: success and failure, each reported truthfully and not."""
    assert linearizable([put("a", 0, 1), cas("a", "b", True, 2, 3), get("b", 4, 5)])
    assert linearizable([put("a", 0, 1), cas("x", "b", False, 2, 3), get("a", 4, 5)])
    assert not linearizable([put("a", 0, 1), cas("x", "b", True, 2, 3)])
    assert not linearizable([put("a", 0, 1), cas("a", "b", False, 2, 3)])


def test_failed_cas_leaves_the_value_unchanged() -> None:
    assert not linearizable([put("a", 0, 1), cas("x", "b", False, 2, 3), get("b", 4, 5)])


def test_cas_expecting_none_means_key_absent() -> None:
    assert linearizable([cas(None, "a", True, 0, 1), get("a", 2, 3)])
    assert not linearizable([put("a", 0, 1), cas(None, "b", True, 2, 3)])
    assert linearizable([put("a", 0, 1), delete(True, 2, 3), cas(None, "b", True, 4, 5)])


def test_unknown_cas_may_take_effect_only_if_its_expectation_held() -> None:
    """Goal: an unknown cas that took effect must have found the expected value."""
    assert linearizable([put("a", 0, 1), cas("a", "b", False, 2, None), get("b", 10, 11)])
    assert not linearizable([put("a", 0, 1), cas("x", "b", True, 2, None), get("b", 10, 11)])


def test_delete_result_is_checked_only_when_reported() -> None:
    assert linearizable([delete(False, 0, 1), put("a", 2, 3), delete(True, 4, 5)])
    assert not linearizable([delete(True, 0, 1)])
    assert not linearizable([put("a", 0, 1), delete(False, 2, 3)])
    assert linearizable([delete(None, 0, 1), put("a", 2, 3), delete(None, 4, 5), get(None, 6, 7)])


def test_initial_values_are_the_registers_starting_state() -> None:
    assert linearizable([get("a", 0, 1)], k="a")
    assert not linearizable([get(None, 0, 1)], k="a")


def test_values_are_opaque_so_bytes_and_str_differ() -> None:
    assert linearizable([put(b"a", 0, 1), get(b"a", 2, 3)])
    assert not linearizable([put(b"a", 0, 1), get("a", 2, 3)])


def test_keys_are_independent_registers() -> None:
    """Goal: partitioning by key. Method: interleaved writes to two keys, each read back."""
    history = [
        put("a", 0, 10, key="x"),
        put("b", 0, 10, key="y"),
        get("a", 20, 30, key="x"),
        get("b", 20, 30, key="y"),
    ]
    result = check_history(history)
    assert result.ok
    assert result.operations_checked == 4


def test_failing_history_explanation_names_the_key_and_the_offending_operation() -> None:
    """Goal: a failure is readable. Method: one bad key among good ones; read the explanation."""
    history = [
        put("a", 0, 10, key="good"),
        get("a", 20, 30, key="good"),
        put("v1", 0, 10, key="bad"),
        get("v0", 20, 30, key="bad"),
    ]
    result = check_history(history)
    assert not result.ok
    assert not result.inconclusive
    assert result.key == "bad"
    assert "'bad'" in result.explanation
    assert "op 3" in result.explanation, "operations are named by their index in the history"
    assert "read 'v0' but the register holds 'v1'" in result.explanation


def test_first_failing_key_in_sorted_order_is_reported() -> None:
    history = [get("x", 0, 1, key="zeta"), get("x", 0, 1, key="alpha")]
    assert check_history(history).key == "alpha"


def test_exhausted_budget_is_inconclusive_not_a_verdict() -> None:
    """Goal: a bounded search never guesses. Method: a budget far too small for the history."""
    history = generate_history(random.Random(3), 200, 1, 8)
    result = check_history(history, step_budget=10)
    assert not result.ok
    assert result.inconclusive
    assert result.key == "key-000"
    assert "search budget exhausted" in result.explanation


# --- the history recorder --------------------------------------------------------------------


def test_history_records_calls_answers_and_timeouts() -> None:
    """Goal: the simulator's recorder. Method: complete one, time out one, leave one pending."""
    history = History()
    first = history.invoke(0, OpKind.PUT, KEY, "a", 100)
    second = history.invoke(1, OpKind.GET, KEY, None, 150)
    third = history.invoke(2, OpKind.CAS, KEY, ("a", "b"), 160)
    history.complete(second, "a", 180)
    history.complete(first, None, 200)
    history.unknown(third)
    fourth = history.invoke(0, OpKind.DELETE, KEY, None, 300)
    operations = history.operations()
    assert [first, second, third, fourth] == [0, 1, 2, 3]
    assert operations[0] == Operation(0, OpKind.PUT, KEY, "a", 100, 200, None)
    assert operations[1] == Operation(1, OpKind.GET, KEY, None, 150, 180, "a")
    assert not operations[2].known
    assert not operations[3].known, "still pending at the end: unknown"
    assert check_history(operations).ok


def test_history_refuses_to_answer_an_operation_twice() -> None:
    history = History()
    op_id = history.invoke(0, OpKind.GET, KEY, None, 0)
    history.unknown(op_id)
    with pytest.raises(AssertionError):
        history.complete(op_id, None, 5)


def test_generated_history_is_a_function_of_the_seed() -> None:
    first = generate_history(random.Random(7), 300, 5, 4, unknown_fraction=0.1)
    second = generate_history(random.Random(7), 300, 5, 4, unknown_fraction=0.1)
    assert first == second
    assert len(first) == 300
    assert any(not operation.known for operation in first)


def test_ten_thousand_operations_over_100_keys_and_16_clients_are_linearizable() -> None:
    """Goal: the size the simulator produces checks quickly (timed in bench/checker.py).

    Method: a generated linearizable history with 1% unknown outcomes; no timing asserted.
    """
    history = generate_history(random.Random(1), 10_000, 100, 16, unknown_fraction=0.01)
    result = check_history(history)
    assert result.ok, result.explanation
    assert result.operations_checked == 10_000


# --- properties ------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    rng=st.randoms(use_true_random=False),
    operation_count=st.integers(1, 150),
    key_count=st.integers(1, 4),
    client_count=st.integers(1, 8),
    unknown_fraction=st.sampled_from([0.0, 0.05, 0.3]),
)
def test_histories_of_a_real_register_are_always_linearizable(
    rng: random.Random,
    operation_count: int,
    key_count: int,
    client_count: int,
    unknown_fraction: float,
) -> None:
    """Goal: no false alarms. Method: a real register applies overlapping operations at a
    random instant inside each call (later or never for unknown ones); the checker must agree.
    """
    history = generate_history(rng, operation_count, key_count, client_count, unknown_fraction)
    result = check_history(history)
    assert result.ok, result.explanation


def test_contended_histories_with_many_unknown_outcomes_are_linearizable() -> None:
    """Goal: no false alarms where the search works hardest. Method: 200 fixed seeds, 12
    clients on 2 keys, a fifth of the outcomes unknown; every history must pass.
    """
    for seed in range(200):
        history = generate_history(random.Random(seed), 100, 2, 12, unknown_fraction=0.2)
        result = check_history(history)
        assert result.ok, f"seed {seed}: {result.explanation}"


@settings(max_examples=100, deadline=None)
@given(
    rng=st.randoms(use_true_random=False),
    operation_count=st.integers(2, 150),
    key_count=st.integers(1, 4),
    client_count=st.integers(1, 8),
    choice=st.integers(0, 10_000),
)
def test_a_read_corrupted_to_a_never_written_value_is_caught(
    rng: random.Random, operation_count: int, key_count: int, client_count: int, choice: int
) -> None:
    """Goal: no missed violations. Method: corrupt one known read of a generated history to a
    value never written; the checker must reject it and name that read's key.
    """
    history = generate_history(rng, operation_count, key_count, client_count, 0.05)
    reads = [i for i, op in enumerate(history) if op.kind is OpKind.GET and op.known]
    if not reads:
        return
    index = reads[choice % len(reads)]
    history[index] = dataclasses.replace(history[index], result="never written")
    result = check_history(history)
    assert not result.ok
    assert not result.inconclusive
    assert result.key == history[index].key
    assert f"op {index}:" in result.explanation


def reference_linearizable(operations: Sequence[Operation]) -> bool:
    """Try every next operation that real time allows, remembering only which (operations
    left, state) failed: no event list, no reductions. Unknown operations may be left out.
    """

    @functools.cache
    def completes(remaining: frozenset[int], state: object) -> bool:
        if all(not operations[i].known for i in remaining):
            return True
        for i in sorted(remaining):
            returns_us = (operations[j].return_us for j in remaining)
            if any(r is not None and r < operations[i].call_us for r in returns_us):
                continue  # some operation left returned before this one was called
            legal, after = _apply(operations[i], state)
            if legal and completes(remaining - {i}, after):
                return True
        return False

    return completes(frozenset(range(len(operations))), None)


def _apply(op: Operation, state: object) -> tuple[bool, object]:
    """The register, written out independently of the checker's model."""
    if op.kind is OpKind.GET:
        return not op.known or op.result == state, state
    if op.kind is OpKind.PUT:
        return True, op.argument
    if op.kind is OpKind.CAS:
        assert isinstance(op.argument, tuple)
        swapped = state == op.argument[0]
        return not op.known or op.result == swapped, op.argument[1] if swapped else state
    existed = state is not None
    return not op.known or op.result is None or op.result == existed, None


values = st.sampled_from(["a", "b"])


@st.composite
def small_operations(draw: st.DrawFn) -> Operation:
    kind = draw(st.sampled_from(list(OpKind)))
    call_us = draw(st.integers(0, 12))
    duration_us = draw(st.none() | st.integers(0, 12))
    return_us = None if duration_us is None else call_us + duration_us
    if kind is OpKind.PUT:
        return Operation(0, kind, KEY, draw(values), call_us, return_us)
    if kind is OpKind.GET:
        return Operation(0, kind, KEY, None, call_us, return_us, draw(st.none() | values))
    if kind is OpKind.CAS:
        argument = (draw(st.none() | values), draw(values))
        return Operation(0, kind, KEY, argument, call_us, return_us, draw(st.booleans()))
    return Operation(
        0, kind, KEY, None, call_us, return_us, draw(st.sampled_from([None, True, False]))
    )


@settings(max_examples=700, deadline=None)
@given(st.lists(small_operations(), max_size=12))
def test_checker_agrees_with_a_reference_search_on_small_histories(
    operations: list[Operation],
) -> None:
    """Goal: the search, its memo and its reductions decide exactly like trying every order.
    Method: random small histories over two values (so values repeat), every verdict compared.
    """
    assert check_history(operations).ok == reference_linearizable(operations)

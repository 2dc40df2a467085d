"""Quorum arithmetic checked against a naive definition (DESIGN.md: 2n+1 survive n)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from synod.paxos.types import Membership, NodeId

voter_sets = st.sets(st.integers(min_value=1, max_value=9), min_size=1, max_size=7)


@given(voter_sets, st.sets(st.integers(min_value=1, max_value=12)))
def test_is_quorum_means_a_strict_majority_of_voters(voters: set[int], nodes: set[int]) -> None:
    membership = Membership(tuple(sorted(NodeId(v) for v in voters)))
    present = {NodeId(n) for n in nodes}
    naive = 2 * len(present & {NodeId(v) for v in voters}) > len(voters)
    assert membership.is_quorum(present) == naive


@given(voter_sets, st.data())
def test_any_two_quorums_intersect(voters: set[int], data: st.DataObject) -> None:
    """The property Paxos' safety rests on: phase-1 and phase-2 quorums always meet."""
    membership = Membership(tuple(sorted(NodeId(v) for v in voters)))
    ordered = sorted(voters)
    first = set(data.draw(st.permutations(ordered))[: membership.quorum()])
    second = set(data.draw(st.permutations(ordered))[: membership.quorum()])
    assert first & second


def test_learners_do_not_count_towards_a_quorum() -> None:
    membership = Membership((NodeId(1), NodeId(2), NodeId(3)), (NodeId(4), NodeId(5)))
    assert not membership.is_quorum({NodeId(1), NodeId(4), NodeId(5)})
    assert membership.is_quorum({NodeId(1), NodeId(2)})

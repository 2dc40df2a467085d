"""Range: key intervals, limit/more/count, sort, filters, and reads at older revisions.

Protects DESIGN.md's "ranges" of the MVCC store. Expected answers follow etcd 3.4's
applyRange and were checked against etcd 3.4.23 through its JSON gateway on the same data
(keys k1..k4 with k2 rewritten): count ignores limit and the min/max filters, sorting by a
non-KEY target defaults to ascending, `more` reports a cut by `limit`.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.kv import errors
from synod.kv.messages import CompactionRequest, RangeRequest, SortOrder, SortTarget
from tests.unit.kv.helpers import Store


def _etcd_sample() -> Store:
    """The data set used on real etcd: revisions 2..7 (a=1, k1=c, k2=a, k3=b, k2=a2, k4=d)."""
    store = Store()
    for key, value in [(b"a", b"1"), (b"k1", b"c"), (b"k2", b"a"), (b"k3", b"b")]:
        store.put(key, value)
    store.put(b"k2", b"a2")
    store.put(b"k4", b"d")
    return store


def test_single_key_range_returns_only_that_key() -> None:
    """Goal: empty range_end = one key. Method: range k1 among k1..k4."""
    store = _etcd_sample()
    assert store.keys(b"k1", b"") == [b"k1"]
    assert store.keys(b"k", b"") == []


def test_range_end_nul_means_every_key_from_key_on() -> None:
    """Goal: range_end "\\0" = keys >= key, and key "\\0" with it = all keys (etcd)."""
    store = _etcd_sample()
    assert store.keys(b"k3", b"\0") == [b"k3", b"k4"]
    assert store.keys(b"\0", b"\0") == [b"a", b"k1", b"k2", b"k3", b"k4"]


def test_range_end_at_or_below_key_is_empty() -> None:
    """Goal: an inverted interval selects nothing (etcd answers an empty range)."""
    store = _etcd_sample()
    response = store.kv.range(RangeRequest(b"k3", b"k1"))
    assert (response.kvs, response.count) == ((), 0)


def test_limit_cuts_and_sets_more_while_count_is_the_total() -> None:
    """Goal: limit/more/count as etcd reports them. Method: limit 2 over four keys."""
    response = _etcd_sample().kv.range(RangeRequest(b"k", b"l", limit=2))
    assert [kv.key for kv in response.kvs] == [b"k1", b"k2"]
    assert response.more is True
    assert response.count == 4


def test_revision_filters_apply_before_limit_and_do_not_change_count() -> None:
    """Goal: min_mod_revision prunes before the limit; count stays 4 (etcd: kvs [k2],
    more true, count 4 for min_mod_revision 5, limit 1)."""
    response = _etcd_sample().kv.range(RangeRequest(b"k", b"l", limit=1, min_mod_revision=5))
    assert [kv.key for kv in response.kvs] == [b"k2"]
    assert response.more is True
    assert response.count == 4


@pytest.mark.parametrize(
    ("field", "bound", "expected"),
    [
        ("min_mod_revision", 5, [b"k2", b"k3", b"k4"]),
        ("max_mod_revision", 5, [b"k1", b"k3"]),
        ("min_create_revision", 4, [b"k2", b"k3", b"k4"]),
        ("max_create_revision", 4, [b"k1", b"k2"]),
    ],
)
def test_each_revision_bound_filters_inclusively(
    field: str, bound: int, expected: list[bytes]
) -> None:
    """Goal: the four min/max filters, inclusive bounds. Method: one bound at a time."""
    assert _etcd_sample().keys(b"k", b"l", **{field: bound}) == expected


def test_count_only_returns_the_count_and_no_kvs() -> None:
    """Goal: count_only; filters do not reduce count (etcd: count 4 with max_mod 3)."""
    response = _etcd_sample().kv.range(
        RangeRequest(b"k", b"l", count_only=True, max_mod_revision=3)
    )
    assert (response.kvs, response.count) == ((), 4)


def test_keys_only_drops_values_and_keeps_metadata() -> None:
    """Goal: keys_only. Method: compare with a full range."""
    store = _etcd_sample()
    full = store.kv.range(RangeRequest(b"k", b"l")).kvs
    bare = store.kv.range(RangeRequest(b"k", b"l", keys_only=True)).kvs
    assert [kv.value for kv in bare] == [b""] * 4
    assert [(kv.key, kv.mod_revision, kv.version) for kv in bare] == [
        (kv.key, kv.mod_revision, kv.version) for kv in full
    ]


@pytest.mark.parametrize(
    ("order", "target", "expected"),
    [
        (SortOrder.NONE, SortTarget.VALUE, [b"k2", b"k3", b"k1", b"k4"]),  # etcd: ascending
        (SortOrder.DESCEND, SortTarget.KEY, [b"k4", b"k3", b"k2", b"k1"]),
        (SortOrder.ASCEND, SortTarget.MOD, [b"k1", b"k3", b"k2", b"k4"]),
        (SortOrder.DESCEND, SortTarget.CREATE, [b"k4", b"k3", b"k2", b"k1"]),
        (SortOrder.DESCEND, SortTarget.VERSION, [b"k2", b"k1", b"k3", b"k4"]),
        (SortOrder.ASCEND, SortTarget.VERSION, [b"k1", b"k3", b"k4", b"k2"]),
    ],
)
def test_sort_orders_by_target_with_ties_in_key_order(
    order: SortOrder, target: SortTarget, expected: list[bytes]
) -> None:
    """Goal: sort_order x sort_target; NONE with a non-KEY target sorts ascending (etcd).
    Method: sort the sample; ties (equal versions) keep ascending key order."""
    assert _etcd_sample().keys(b"k", b"l", sort_order=order, sort_target=target) == expected


def test_sort_then_limit_takes_the_first_of_the_sorted_order() -> None:
    """Goal: limit applies after sorting (etcd: DESCEND KEY limit 2 -> k4, k3, more)."""
    response = _etcd_sample().kv.range(
        RangeRequest(b"k", b"l", sort_order=SortOrder.DESCEND, limit=2)
    )
    assert [kv.key for kv in response.kvs] == [b"k4", b"k3"]
    assert response.more


def test_range_at_an_older_revision_sees_the_past_and_header_is_current() -> None:
    """Goal: MVCC reads; the header carries the current revision (etcd). Method: read k2
    at revision 4 and 3, and the prefix at revision 3."""
    store = _etcd_sample()
    response = store.kv.range(RangeRequest(b"k2", revision=4))
    assert response.kvs[0].value == b"a"
    assert response.header.revision == 7
    assert store.keys(b"k", b"l", revision=3) == [b"k1"]
    store.delete(b"k1")
    assert store.keys(b"k", b"l", revision=7) == [b"k1", b"k2", b"k3", b"k4"]


def test_negative_revision_reads_the_current_state() -> None:
    """Goal: etcd treats revision <= 0 as current (checked on etcd 3.4)."""
    assert _etcd_sample().keys(b"a", b"", revision=-1) == [b"a"]


def test_future_and_compacted_revisions_are_refused() -> None:
    """Goal: the two mvcc errors of range. Method: read above current, compact at 5, read
    at 4 (compacted) and at 5 (still fine, as on etcd)."""
    store = _etcd_sample()
    with pytest.raises(errors.FutureRevision):
        store.kv.range(RangeRequest(b"a", revision=8))
    store.do(CompactionRequest(5))
    with pytest.raises(errors.Compacted):
        store.kv.range(RangeRequest(b"k1", revision=4))
    assert store.keys(b"k", b"l", revision=5) == [b"k1", b"k2", b"k3"]


def test_empty_key_is_refused() -> None:
    """Goal: etcd's "key is not provided" for ranges."""
    with pytest.raises(errors.EmptyKey):
        Store().kv.range(RangeRequest(b""))


# --- a naive model ----------------------------------------------------------------------

_KEYS = st.sampled_from([b"a", b"ab", b"b", b"b\x00", b"ba", b"c", b"\xff", b"\x00"])
_OPS = st.lists(
    st.tuples(st.sampled_from(["put", "delete", "delete_range"]), _KEYS, _KEYS),
    max_size=25,
)


def _model_range(model: dict[bytes, bytes], key: bytes, range_end: bytes) -> list[bytes]:
    if not range_end:
        return [key] if key in model else []
    if range_end == b"\0":
        return sorted(k for k in model if k >= key)
    return sorted(k for k in model if key <= k < range_end)


@settings(max_examples=150, deadline=None)
@given(ops=_OPS, key=_KEYS, range_end=st.sampled_from([b"", b"\0", b"b", b"c", b"\xff\xff"]))
def test_range_matches_a_naive_dict_model_at_every_revision(
    ops: list[tuple[str, bytes, bytes]], key: bytes, range_end: bytes
) -> None:
    """Goal: range (current and historical) equals a plain dict replayed to that revision.
    Method: random puts/deletes, keeping a dict snapshot per revision; compare keys and
    values of every revision's range, and count, with the store's answer."""
    store = Store()
    model: dict[bytes, bytes] = {}
    snapshots = {1: dict(model)}
    for index, (op, first, second) in enumerate(ops):
        if op == "put":
            value = b"v%d" % index
            store.put(first, value)
            model[first] = value
        elif op == "delete":
            store.delete(first)
            model.pop(first, None)
        else:
            low, high = sorted((first, second))
            store.delete(low, high)
            for k in _model_range(model, low, high):
                del model[k]
        snapshots[store.kv.revision] = dict(model)
    for revision in range(1, store.kv.revision + 1):
        state = snapshots.get(revision)
        if state is None:
            continue
        expected = _model_range(state, key, range_end)
        response = store.kv.range(RangeRequest(key, range_end, revision=revision))
        assert [kv.key for kv in response.kvs] == expected
        assert [kv.value for kv in response.kvs] == [state[k] for k in expected]
        assert response.count == len(expected)

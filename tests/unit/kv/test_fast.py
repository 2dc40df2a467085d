"""The positional constructors of synod.kv.fast build exactly what the dataclasses build.

They set slots directly to skip the generated `__init__` on the put path, so a field added
to a message but not to its constructor would leave an unset slot; these tests compare
each constructor's parameters with its class's fields and the values it builds with the
dataclass's own.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import pytest

from synod.kv import fast
from synod.kv import messages as kv

KV = kv.KeyValue(b"k", 3, 7, 2, b"value", 42)

CASES: list[tuple[Callable[..., Any], type, tuple[Any, ...]]] = [
    (fast.key_value, kv.KeyValue, (b"key", 3, 7, 2, b"value", 42)),
    (fast.event, kv.Event, (kv.EventType.PUT, KV, kv.KeyValue(b"k", 3, 5, 1, b"old", 0))),
    (fast.put_response, kv.PutResponse, (kv.ResponseHeader(revision=9), KV)),
    (fast.put_request, kv.PutRequest, (b"key", b"value", 42, True, False, True)),
    (fast.command, kv.Command, (kv.PutRequest(b"key", b"v"), 1_700_000_000_000)),
]


def _name(case: object) -> str:
    return getattr(case, "__name__", "")


@pytest.mark.parametrize(("make", "cls", "args"), CASES, ids=_name)
def test_constructor_takes_every_field_of_its_class_in_order(
    make: Callable[..., Any], cls: type, args: tuple[Any, ...]
) -> None:
    assert list(inspect.signature(make).parameters) == [f.name for f in fields(cls)]


@pytest.mark.parametrize(("make", "cls", "args"), CASES, ids=_name)
def test_constructor_builds_what_the_dataclass_builds(
    make: Callable[..., Any], cls: type, args: tuple[Any, ...]
) -> None:
    made = make(*args)
    expected = cls(*args)
    assert type(made) is cls
    assert made == expected
    assert hash(made) == hash(expected)
    with pytest.raises(AttributeError):
        made.__setattr__(fields(cls)[0].name, None)  # still frozen


def test_store_header_sets_only_the_revision() -> None:
    assert fast.store_header(12) == kv.ResponseHeader(revision=12)
    assert [f.name for f in fields(kv.ResponseHeader)] == [
        "cluster_id",
        "member_id",
        "revision",
        "raft_term",
    ]

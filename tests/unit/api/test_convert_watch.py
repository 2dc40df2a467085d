"""Watch responses converted in bulk equal those converted one by one.

Protects the fan-out fast path (synod/api/convert.py `watch_responses`): the events of one
revision are converted once and copied to every watcher's message; what a client receives
must not change (etcd's WatchResponse, ETCD_COMPAT.md).
"""

from __future__ import annotations

from synod.api import convert
from synod.api.proto.etcdserverpb.rpc_pb2 import WatchResponse
from synod.kv.codec import encode_command
from synod.kv.messages import (
    Command,
    CompactionRequest,
    DeleteRangeRequest,
    PutRequest,
    WatchCreateRequest,
    WatchFilter,
)
from synod.kv.store import KVStore
from synod.kv.watch import WatchHub


def _header() -> tuple[int, int, int]:
    return (11, 22, 33)


def test_bulk_conversion_matches_one_by_one_for_every_kind_of_response() -> None:
    """Goal: same bytes on the wire. Method: a hub with watchers that differ in prev_kv,
    filters and ranges; a put, a delete, a refused and a compacted create; each batch the
    hub returns is converted in bulk and one by one and serialized."""
    store = KVStore()
    hub = WatchHub(store)
    batches = [
        hub.create(WatchCreateRequest(key=b"a", range_end=b"b")),
        hub.create(WatchCreateRequest(key=b"a", range_end=b"b", prev_kv=True)),
        hub.create(WatchCreateRequest(key=b"a/1")),
        hub.create(WatchCreateRequest(key=b"a", range_end=b"b", filters=(WatchFilter.NOPUT,))),
    ]
    for request in (
        PutRequest(b"a/1", b"one"),
        PutRequest(b"a/1", b"two"),
        PutRequest(b"a/2", b"x"),
        DeleteRangeRequest(b"a", b"b", prev_kv=True),
    ):
        applied = store.apply_payload(encode_command(Command(request)))
        batches.append(hub.on_applied(applied.events))
    store.apply_payload(encode_command(Command(PutRequest(b"c", b"1"))))
    store.apply_payload(encode_command(Command(CompactionRequest(store.revision))))
    batches.append(hub.create(WatchCreateRequest(key=b"a", start_revision=2)))
    batches.append(hub.create(WatchCreateRequest(key=b"z", range_end=b"a")))
    batches.append((hub.request_progress(),))
    assert sum(len(batch) for batch in batches) > 15
    for batch in batches:
        bulk = convert.watch_responses(batch, _header)
        single = [convert.watch_response(value, _header) for value in batch]
        assert [m.SerializeToString() for m in bulk] == [m.SerializeToString() for m in single]
        assert bulk == single
        bodies = convert.watch_response_bodies(batch, _header)
        assert [WatchResponse.FromString(body) for body in bodies] == single


def test_a_serialized_watch_id_parses_back_for_every_size_and_sign() -> None:
    """The native door appends each watcher's id to a shared serialized body: the field
    must parse back to the id, across varint lengths and for etcd's -1."""
    for watch_id in (0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1):
        body = convert._watch_id_field(watch_id)
        assert WatchResponse.FromString(body).watch_id == watch_id
        assert WatchResponse(watch_id=watch_id).SerializeToString() == body


def test_watchers_of_one_revision_share_its_events() -> None:
    """Goal: the hub hands every watcher of a revision the same Event objects (what lets
    the door convert each once), prev_kv stripped once for those that did not ask."""
    store = KVStore()
    hub = WatchHub(store)
    for _ in range(3):
        hub.create(WatchCreateRequest(key=b"k"))
    store.apply_payload(encode_command(Command(PutRequest(b"k", b"1"))))
    applied = store.apply_payload(encode_command(Command(PutRequest(b"k", b"2"))))
    responses = hub.on_applied(applied.events)
    assert len(responses) == 3
    first = responses[0].events[0]
    assert first.prev_kv is None
    assert all(response.events[0] is first for response in responses)
    assert all(response.header is responses[0].header for response in responses)

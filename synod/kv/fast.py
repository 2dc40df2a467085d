"""Positional constructors for the frozen messages built on every put.

A frozen dataclass's generated `__init__` parses keywords and defaults and then sets each
field through `object.__setattr__`: about 1-3 µs for a KeyValue on the development VM, and
a put builds six such values on every member (request, command, key-value, event, header,
response). These functions set the slots directly through their member descriptors, which
frozen classes leave usable, for about a third of the cost. Every argument is required and
positional, so a value built here equals the one the dataclass would build; a unit test
checks each against its class's field list, so adding a field without updating these fails.
"""

from __future__ import annotations

from typing import Any

from synod.kv.messages import (
    Command,
    Event,
    EventType,
    KeyValue,
    PutRequest,
    PutResponse,
    ResponseHeader,
    WriteRequest,
)

_new = object.__new__


def slot_setter(cls: type, name: str) -> Any:
    """The function that sets field `name` of a slotted (possibly frozen) class's instance."""
    return getattr(cls, name).__set__


_setter = slot_setter


_kv_key = _setter(KeyValue, "key")
_kv_create = _setter(KeyValue, "create_revision")
_kv_mod = _setter(KeyValue, "mod_revision")
_kv_version = _setter(KeyValue, "version")
_kv_value = _setter(KeyValue, "value")
_kv_lease = _setter(KeyValue, "lease")
_event_type = _setter(Event, "type")
_event_kv = _setter(Event, "kv")
_event_prev = _setter(Event, "prev_kv")
_header_cluster = _setter(ResponseHeader, "cluster_id")
_header_member = _setter(ResponseHeader, "member_id")
_header_revision = _setter(ResponseHeader, "revision")
_header_term = _setter(ResponseHeader, "raft_term")
_put_response_header = _setter(PutResponse, "header")
_put_response_prev = _setter(PutResponse, "prev_kv")
_put_key = _setter(PutRequest, "key")
_put_value = _setter(PutRequest, "value")
_put_lease = _setter(PutRequest, "lease")
_put_prev_kv = _setter(PutRequest, "prev_kv")
_put_ignore_value = _setter(PutRequest, "ignore_value")
_put_ignore_lease = _setter(PutRequest, "ignore_lease")
_command_request = _setter(Command, "request")
_command_now = _setter(Command, "now_ms")


def key_value(
    key: bytes, create_revision: int, mod_revision: int, version: int, value: bytes, lease: int
) -> KeyValue:
    made: KeyValue = _new(KeyValue)
    _kv_key(made, key)
    _kv_create(made, create_revision)
    _kv_mod(made, mod_revision)
    _kv_version(made, version)
    _kv_value(made, value)
    _kv_lease(made, lease)
    return made


def event(type: EventType, kv: KeyValue, prev_kv: KeyValue | None) -> Event:
    made: Event = _new(Event)
    _event_type(made, type)
    _event_kv(made, kv)
    _event_prev(made, prev_kv)
    return made


def store_header(revision: int) -> ResponseHeader:
    """The store's header: only the revision; the server fills in the rest."""
    made: ResponseHeader = _new(ResponseHeader)
    _header_cluster(made, 0)
    _header_member(made, 0)
    _header_revision(made, revision)
    _header_term(made, 0)
    return made


def put_response(header: ResponseHeader, prev_kv: KeyValue | None) -> PutResponse:
    made: PutResponse = _new(PutResponse)
    _put_response_header(made, header)
    _put_response_prev(made, prev_kv)
    return made


def put_request(
    key: bytes, value: bytes, lease: int, prev_kv: bool, ignore_value: bool, ignore_lease: bool
) -> PutRequest:
    made: PutRequest = _new(PutRequest)
    _put_key(made, key)
    _put_value(made, value)
    _put_lease(made, lease)
    _put_prev_kv(made, prev_kv)
    _put_ignore_value(made, ignore_value)
    _put_ignore_lease(made, ignore_lease)
    return made


def command(request: WriteRequest, now_ms: int) -> Command:
    made: Command = _new(Command)
    _command_request(made, request)
    _command_now(made, now_ms)
    return made

"""The one error type the API layer raises: a gRPC status code and etcd's exact message.

Every door (gRPC, JSON gateway, native) turns an `EtcdError` into its own wire form; clients
match on the message strings, so they are etcd's byte for byte. The store's `KVError`s and
the member's runtime errors are translated here and nowhere else.
"""

from __future__ import annotations

import enum

from synod.kv.errors import KVError
from synod.server.members import Refusal


class StatusCode(enum.IntEnum):
    """gRPC status codes (the value is the wire number)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class EtcdError(Exception):
    """A request refused or failed; `code` is the gRPC status, `message` etcd's text."""

    def __init__(self, code: int, message: str) -> None:
        assert message, "every EtcdError carries a message"
        super().__init__(message)
        self.code = StatusCode(code)
        self.message = message

    def __repr__(self) -> str:
        return f"EtcdError({self.code.name}, {self.message!r})"


# etcd's messages for the errors that do not come from the store (etcdserver/api/v3rpc).
NO_LEADER = "etcdserver: no leader"
REQUEST_TIMED_OUT = "etcdserver: request timed out"
LEADER_CHANGED = "etcdserver: leader changed"
TOO_MANY_REQUESTS = "etcdserver: too many requests"
REQUEST_TOO_LARGE = "etcdserver: request is too large"
NOT_LEADER = "etcdserver: not leader"
BAD_LEADER_TRANSFEREE = "etcdserver: bad leader transferee"
LEADER_TRANSFER_TIMED_OUT = "etcdserver: request timed out, leader transfer took too long"
MEMBER_NOT_FOUND = "etcdserver: member not found"


def no_leader() -> EtcdError:
    return EtcdError(StatusCode.UNAVAILABLE, NO_LEADER)


def request_timed_out() -> EtcdError:
    return EtcdError(StatusCode.UNAVAILABLE, REQUEST_TIMED_OUT)


def too_many_requests() -> EtcdError:
    return EtcdError(StatusCode.RESOURCE_EXHAUSTED, TOO_MANY_REQUESTS)


def request_too_large() -> EtcdError:
    return EtcdError(StatusCode.INVALID_ARGUMENT, REQUEST_TOO_LARGE)


def unimplemented(what: str) -> EtcdError:
    return EtcdError(StatusCode.UNIMPLEMENTED, f"synod: {what} is not supported yet")


def from_kv_error(error: KVError) -> EtcdError:
    """The store's refusal, with its etcd code and message."""
    return EtcdError(int(error.code), error.message)


_REFUSAL_CODES = {
    Refusal.MEMBER_NOT_FOUND: StatusCode.NOT_FOUND,
    Refusal.BAD_URLS: StatusCode.INVALID_ARGUMENT,
    Refusal.UNHEALTHY: StatusCode.UNAVAILABLE,
    Refusal.NOT_ENOUGH_STARTED: StatusCode.UNKNOWN,  # etcd 3.4 maps no code for it
}


def from_member_refusal(refusal: Refusal) -> EtcdError:
    """A refused member change, with etcd's code and message."""
    return EtcdError(_REFUSAL_CODES.get(refusal, StatusCode.FAILED_PRECONDITION), refusal.value)

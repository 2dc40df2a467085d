"""Typed errors of the key-value state machine, each carrying etcd's gRPC code and message.

A `KVError` raised by `KVStore.apply` means the command was rejected *before* anything
changed: the store validates first and mutates only once nothing can fail any more. The
message strings are etcd's, byte for byte, because clients match on them.
"""

from __future__ import annotations

import enum


class GrpcCode(enum.IntEnum):
    """The gRPC status codes etcd answers with (the value is the wire number)."""

    OK = 0
    INVALID_ARGUMENT = 3
    NOT_FOUND = 5
    FAILED_PRECONDITION = 9
    OUT_OF_RANGE = 11


class KVError(Exception):
    """A client request the store refuses; the client is at fault. Nothing was changed."""

    code: GrpcCode = GrpcCode.INVALID_ARGUMENT
    message: str = ""

    def __init__(self, message: str | None = None) -> None:
        if message is not None:
            self.message = message
        assert self.message, "every KVError carries etcd's message"
        super().__init__(self.message)


class EmptyKey(KVError):
    message = "etcdserver: key is not provided"


class KeyNotFound(KVError):
    message = "etcdserver: key not found"


class ValueProvided(KVError):
    message = "etcdserver: value is provided"


class LeaseProvided(KVError):
    message = "etcdserver: lease is provided"


class TooManyOps(KVError):
    message = "etcdserver: too many operations in txn request"


class DuplicateKey(KVError):
    message = "etcdserver: duplicate key given in txn request"


class RequestTooLarge(KVError):
    """For the api layer, which measures requests (etcd's limit is 1.5 MiB)."""

    message = "etcdserver: request is too large"


class InvalidSortOption(KVError):
    message = "etcdserver: invalid sort option"


class Compacted(KVError):
    code = GrpcCode.OUT_OF_RANGE
    message = "etcdserver: mvcc: required revision has been compacted"
    mvcc_message = "mvcc: required revision has been compacted"


class FutureRevision(KVError):
    code = GrpcCode.OUT_OF_RANGE
    message = "etcdserver: mvcc: required revision is a future revision"
    mvcc_message = "mvcc: required revision is a future revision"


class LeaseNotFound(KVError):
    code = GrpcCode.NOT_FOUND
    message = "etcdserver: requested lease not found"


class LeaseExists(KVError):
    code = GrpcCode.FAILED_PRECONDITION
    message = "etcdserver: lease already exists"


class LeaseTTLTooLarge(KVError):
    code = GrpcCode.OUT_OF_RANGE
    message = "etcdserver: too large lease TTL"


class MalformedCommand(Exception):
    """A log payload or snapshot that does not decode to a valid command or store.

    Not a client error: whoever wrote the bytes (a buggy proposer, a corrupt disk) is at
    fault, so this is not a `KVError` and carries no etcd message.
    """

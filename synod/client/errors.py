"""The client's typed errors: what went wrong, who is at fault, and whether a write may
have been applied.

Every failure a caller can act on has its own type. The one that matters most for
correctness is `OutcomeUnknown`: the request reached (or may have reached) a member and no
answer came back, so a write may or may not be in the log. The client never retries such a
write on its own unless a compare in the request makes a second application impossible.
"""

from __future__ import annotations

# gRPC status codes (wire numbers) used below; the client does not import grpc here so
# that a native transport can raise the same errors.
CANCELLED = 1
UNKNOWN = 2
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
FAILED_PRECONDITION = 9
OUT_OF_RANGE = 11
UNAVAILABLE = 14

# etcd's messages that the client recognises (ETCD_COMPAT.md "Limits and error strings").
MESSAGE_COMPACTED = "mvcc: required revision has been compacted"
MESSAGE_FUTURE_REVISION = "mvcc: required revision is a future revision"
MESSAGE_NO_LEADER = "etcdserver: no leader"
MESSAGE_LEASE_NOT_FOUND = "etcdserver: requested lease not found"
MESSAGE_KEY_NOT_FOUND = "etcdserver: key not found"
# The server waited for its proposal and gave up: the write may still be chosen.
MESSAGES_OUTCOME_UNKNOWN = (
    "etcdserver: request timed out",
    "etcdserver: leader changed",
    "etcdserver: request timed out, possibly due to previous leader failure",
    "etcdserver: request timed out, possibly due to connection lost",
)


class ClientError(Exception):
    """Base of every error the client raises. `code` is the gRPC status number (0 when the
    error is the client's own), `message` the server's text or the client's."""

    def __init__(self, message: str, code: int = 0, endpoint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.endpoint = endpoint

    def __str__(self) -> str:
        return f"{self.message} (at {self.endpoint})" if self.endpoint else self.message


class InvalidArgument(ClientError):
    """The server refused the request as malformed or too large; retrying cannot help."""


class NotFound(ClientError):
    """A named thing does not exist (a lease, a key the caller required, a member)."""


class LeaseNotFound(NotFound):
    """The lease is unknown to the cluster: revoked, expired, or never granted."""


class Compacted(ClientError):
    """The revision asked for was compacted away; `compact_revision` is the oldest one
    still kept (0 when the server did not say)."""

    def __init__(self, message: str, code: int = OUT_OF_RANGE, endpoint: str = "") -> None:
        super().__init__(message, code, endpoint)
        self.compact_revision = 0


class FutureRevision(ClientError):
    """The revision asked for is newer than the store's."""


class Unavailable(ClientError):
    """No member could be reached, or the member could not serve the request. The request
    was not applied (it never reached a member able to apply it)."""


class NoLeader(Unavailable):
    """The member reached has no leader (election in progress or cut off); not applied."""


class Timeout(ClientError):
    """The deadline passed before an answer came. Raised as-is for reads and for requests
    known not to have been applied; see `OutcomeUnknown` for writes."""


class OutcomeUnknown(Timeout):
    """A write was sent and no answer came back in time (deadline, connection lost,
    'request timed out'): it may or may not have been applied. Read before retrying."""


class Cancelled(ClientError):
    """The call or stream was cancelled by this client (closing, or the caller)."""


class ClientClosed(ClientError):
    """The client was closed; open a new one."""


class LeaseExpired(ClientError):
    """A lease the client kept alive is gone (it expired or was revoked): every key
    attached to it was deleted by the cluster. Recipes raise it as session loss."""


def error_from_status(code: int, message: str, endpoint: str = "", *, sent: bool) -> ClientError:
    """The typed error for a gRPC status from a member. `sent` says whether the request may
    have left this process (a refused connection never sent it)."""
    # etcd prefixes the store's messages with 'etcdserver: ' on unary calls, not on watches.
    bare = (
        message.removeprefix("etcdserver: ") if message.startswith("etcdserver: mvcc") else message
    )
    if code == UNAVAILABLE and message == MESSAGE_NO_LEADER:
        return NoLeader(message, code, endpoint)
    if message in MESSAGES_OUTCOME_UNKNOWN:
        return OutcomeUnknown(message, code, endpoint)
    if code == OUT_OF_RANGE and bare == MESSAGE_COMPACTED:
        return Compacted(message, code, endpoint)
    if code == OUT_OF_RANGE and bare == MESSAGE_FUTURE_REVISION:
        return FutureRevision(message, code, endpoint)
    if code == NOT_FOUND and message == MESSAGE_LEASE_NOT_FOUND:
        return LeaseNotFound(message, code, endpoint)
    if code == NOT_FOUND:
        return NotFound(message, code, endpoint)
    if code == INVALID_ARGUMENT:
        return InvalidArgument(message, code, endpoint)
    if code == DEADLINE_EXCEEDED:
        return (
            OutcomeUnknown(message or "deadline exceeded", code, endpoint)
            if sent
            else Timeout(message or "deadline exceeded", code, endpoint)
        )
    if code == CANCELLED:
        return Cancelled(message or "cancelled", code, endpoint)
    if code == UNAVAILABLE:
        if sent:
            return OutcomeUnknown(message or "connection lost", code, endpoint)
        return Unavailable(message or "unavailable", code, endpoint)
    return ClientError(message or f"status {code}", code, endpoint)

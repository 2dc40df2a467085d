"""The one seam between the client and the wire.

A `Transport` moves protobuf messages (synod.api.proto) to a member and back; it knows the
endpoint list and which member it is talking to, and it turns wire failures into the
client's typed errors (synod.client.errors) with `sent` decided honestly. It decides
nothing else: retries, deadlines across attempts, failover policy and keep-alive timing
belong to the client. Today's transport is etcd's gRPC API (grpc_transport.py); Synod's
native door will be a second implementation of the same protocol, so switching is local.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from google.protobuf.message import Message

from synod.api.proto.etcdserverpb import rpc_pb2

Req = TypeVar("Req", bound=Message, contravariant=True)
Resp = TypeVar("Resp", bound=Message, covariant=True)

# The unary methods of etcd's v3 API, by their gRPC names: service and request type.
UNARY_METHODS: dict[str, tuple[str, type[Message]]] = {
    "Range": ("KV", rpc_pb2.RangeRequest),
    "Put": ("KV", rpc_pb2.PutRequest),
    "DeleteRange": ("KV", rpc_pb2.DeleteRangeRequest),
    "Txn": ("KV", rpc_pb2.TxnRequest),
    "Compact": ("KV", rpc_pb2.CompactionRequest),
    "LeaseGrant": ("Lease", rpc_pb2.LeaseGrantRequest),
    "LeaseRevoke": ("Lease", rpc_pb2.LeaseRevokeRequest),
    "LeaseTimeToLive": ("Lease", rpc_pb2.LeaseTimeToLiveRequest),
    "LeaseLeases": ("Lease", rpc_pb2.LeaseLeasesRequest),
    "MemberList": ("Cluster", rpc_pb2.MemberListRequest),
    "MemberAdd": ("Cluster", rpc_pb2.MemberAddRequest),
    "MemberRemove": ("Cluster", rpc_pb2.MemberRemoveRequest),
    "MemberUpdate": ("Cluster", rpc_pb2.MemberUpdateRequest),
    "MemberPromote": ("Cluster", rpc_pb2.MemberPromoteRequest),
    "Status": ("Maintenance", rpc_pb2.StatusRequest),
    "Alarm": ("Maintenance", rpc_pb2.AlarmRequest),
    "MoveLeader": ("Maintenance", rpc_pb2.MoveLeaderRequest),
}


class Stream(Protocol[Req, Resp]):
    """A bidirectional stream to one member (watch, lease keep-alive)."""

    @property
    def endpoint(self) -> str: ...

    async def send(self, request: Req) -> None:
        """Queue one request; raises a ClientError if the stream is broken."""
        ...

    async def receive(self) -> Resp:
        """The next response; raises a ClientError when the stream ends or breaks."""
        ...

    def cancel(self) -> None:
        """End the stream from this side; further calls raise `Cancelled`."""
        ...


class Transport(Protocol):
    """Unary calls and streams to the members of one cluster."""

    @property
    def endpoints(self) -> Sequence[str]: ...

    @property
    def current(self) -> str:
        """The endpoint the next call goes to unless one is named."""
        ...

    def failover(self, failed: str) -> None:
        """`failed` did not answer: move on to the next endpoint (if it is still current)."""
        ...

    async def call(
        self, method: str, request: Message, timeout_s: float, endpoint: str | None = None
    ) -> Message:
        """One attempt of a unary call to `endpoint` (default: the current one)."""
        ...

    def watch(
        self, endpoint: str | None = None
    ) -> Stream[rpc_pb2.WatchRequest, rpc_pb2.WatchResponse]:
        """Open a watch stream (the member ends it if it loses its leader)."""
        ...

    def keep_alive(
        self, endpoint: str | None = None
    ) -> Stream[rpc_pb2.LeaseKeepAliveRequest, rpc_pb2.LeaseKeepAliveResponse]:
        """Open a lease keep-alive stream."""
        ...

    def snapshot(
        self, endpoint: str | None = None
    ) -> Stream[rpc_pb2.SnapshotRequest, rpc_pb2.SnapshotResponse]:
        """Open a snapshot download: send one request, then receive chunks until one says
        `remaining_bytes == 0`."""
        ...

    async def close(self) -> None: ...


def normalize_endpoint(text: str) -> str:
    """'http://host:port', 'host:port' or 'host' (port 2379) as 'host:port'."""
    endpoint = text.strip()
    for scheme in ("http://", "https://", "grpc://"):
        if endpoint.startswith(scheme):
            endpoint = endpoint[len(scheme) :]
    endpoint = endpoint.rstrip("/")
    if not endpoint:
        raise ValueError(f"empty endpoint in {text!r}")
    if ":" not in endpoint.rsplit("]", 1)[-1]:
        endpoint += ":2379"
    return endpoint


def parse_endpoints(endpoints: str | Sequence[str]) -> list[str]:
    """A comma-separated string or a sequence, normalized, duplicates dropped, order kept."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    result: list[str] = []
    for item in items:
        if item.strip():
            endpoint = normalize_endpoint(item)
            if endpoint not in result:
                result.append(endpoint)
    if not result:
        raise ValueError("no endpoint given")
    return result

"""The gRPC transport: etcd's v3 API over grpc.aio, one channel per endpoint.

It maps grpc.RpcError to the client's typed errors. A request counts as not sent only when
gRPC reports that it could not connect (the call never left this process); any other
transport failure after the call started leaves the outcome unknown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Generic, TypeVar, cast

import grpc
from google.protobuf.message import Message

from synod.api.proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.client import errors
from synod.client.transport import UNARY_METHODS, parse_endpoints

# etcd clients send this so that a member without a leader refuses (or ends) the call
# instead of serving a stale view (etcd's rpctypes.MetadataRequireLeaderKey).
REQUIRE_LEADER = (("hasleader", "true"),)
# Texts of gRPC's own UNAVAILABLE errors that mean the request never left this process.
_NOT_SENT_MARKERS = (
    "failed to connect",
    "connection refused",
    "dns resolution failed",
    "name resolution",
    "no address",
    "connections to all backends failing",
)

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


def _not_sent(details: str) -> bool:
    lowered = details.lower()
    return any(marker in lowered for marker in _NOT_SENT_MARKERS)


def translate(error: grpc.RpcError, endpoint: str, *, started: bool = True) -> errors.ClientError:
    """The typed client error for a gRPC failure at `endpoint`."""
    code = error.code() if hasattr(error, "code") else None
    details = (error.details() if hasattr(error, "details") else None) or ""
    number = code.value[0] if code is not None else errors.UNKNOWN
    sent = started and not (number == errors.UNAVAILABLE and _not_sent(details))
    return errors.error_from_status(number, details, endpoint, sent=sent)


class GrpcStream(Generic[Req, Resp]):
    """One bidirectional gRPC call seen through the transport's `Stream` protocol."""

    def __init__(self, call: Any, endpoint: str) -> None:
        self._call = call
        self._endpoint = endpoint
        self._cancelled = False

    @property
    def endpoint(self) -> str:
        return self._endpoint

    async def send(self, request: Req) -> None:
        if self._cancelled:
            raise errors.Cancelled("stream cancelled", errors.CANCELLED, self._endpoint)
        try:
            await self._call.write(request)
        except grpc.RpcError as error:
            raise translate(error, self._endpoint) from error
        except (asyncio.InvalidStateError, grpc.aio.UsageError) as error:
            raise errors.Unavailable(f"stream closed: {error}", 0, self._endpoint) from error

    async def receive(self) -> Resp:
        if self._cancelled:
            raise errors.Cancelled("stream cancelled", errors.CANCELLED, self._endpoint)
        try:
            response = await self._call.read()
        except grpc.RpcError as error:
            raise translate(error, self._endpoint) from error
        except asyncio.CancelledError:
            if self._cancelled:
                raise errors.Cancelled(
                    "stream cancelled", errors.CANCELLED, self._endpoint
                ) from None
            raise
        if response is grpc.aio.EOF:
            code = await self._call.code()
            details = await self._call.details()
            if code == grpc.StatusCode.OK:
                raise errors.Unavailable("stream ended by the member", 0, self._endpoint)
            raise errors.error_from_status(code.value[0], details or "", self._endpoint, sent=True)
        assert isinstance(response, Message)
        return cast(Resp, response)

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()


class GrpcServerStream(GrpcStream[Req, Resp]):
    """A server-streaming gRPC call (Snapshot) through the `Stream` protocol: its one
    request, sent by `send`, starts the call."""

    def __init__(self, start: Any, endpoint: str) -> None:
        super().__init__(None, endpoint)
        self._start = start

    async def send(self, request: Req) -> None:
        if self._cancelled:
            raise errors.Cancelled("stream cancelled", errors.CANCELLED, self._endpoint)
        if self._call is not None:
            raise errors.Unavailable("a server stream takes one request", 0, self._endpoint)
        self._call = self._start(request)

    async def receive(self) -> Resp:
        if self._call is None:
            raise errors.Unavailable("nothing was requested on this stream", 0, self._endpoint)
        return await super().receive()

    def cancel(self) -> None:
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()


class GrpcTransport:
    """The `Transport` over etcd's gRPC services (Synod's and etcd's own)."""

    def __init__(self, endpoints: str | Sequence[str]) -> None:
        self._endpoints = parse_endpoints(endpoints)
        self._index = 0
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[tuple[str, str], Any] = {}

    @property
    def endpoints(self) -> Sequence[str]:
        return tuple(self._endpoints)

    @property
    def current(self) -> str:
        return self._endpoints[self._index]

    def failover(self, failed: str) -> None:
        if self._endpoints[self._index] == failed:
            self._index = (self._index + 1) % len(self._endpoints)

    def _stub(self, endpoint: str, service: str) -> Any:
        stub = self._stubs.get((endpoint, service))
        if stub is None:
            channel = self._channels.get(endpoint)
            if channel is None:
                channel = grpc.aio.insecure_channel(
                    endpoint,
                    options=[
                        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                        ("grpc.initial_reconnect_backoff_ms", 100),
                        ("grpc.max_reconnect_backoff_ms", 1000),
                    ],
                )
                self._channels[endpoint] = channel
            factory = {
                "KV": rpc_pb2_grpc.KVStub,
                "Lease": rpc_pb2_grpc.LeaseStub,
                "Watch": rpc_pb2_grpc.WatchStub,
                "Cluster": rpc_pb2_grpc.ClusterStub,
                "Maintenance": rpc_pb2_grpc.MaintenanceStub,
            }[service]
            stub = factory(channel)
            self._stubs[(endpoint, service)] = stub
        return stub

    async def call(
        self, method: str, request: Message, timeout_s: float, endpoint: str | None = None
    ) -> Message:
        service, request_type = UNARY_METHODS[method]
        assert isinstance(request, request_type), (method, type(request))
        target = endpoint or self.current
        function = getattr(self._stub(target, service), method)
        try:
            response = await function(request, timeout=max(timeout_s, 0.001))
        except grpc.RpcError as error:
            raise translate(error, target) from error
        assert isinstance(response, Message)
        return response

    def watch(
        self, endpoint: str | None = None
    ) -> GrpcStream[rpc_pb2.WatchRequest, rpc_pb2.WatchResponse]:
        target = endpoint or self.current
        call = self._stub(target, "Watch").Watch(metadata=REQUIRE_LEADER)
        return GrpcStream(call, target)

    def keep_alive(
        self, endpoint: str | None = None
    ) -> GrpcStream[rpc_pb2.LeaseKeepAliveRequest, rpc_pb2.LeaseKeepAliveResponse]:
        target = endpoint or self.current
        call = self._stub(target, "Lease").LeaseKeepAlive(metadata=REQUIRE_LEADER)
        return GrpcStream(call, target)

    def snapshot(
        self, endpoint: str | None = None
    ) -> GrpcServerStream[rpc_pb2.SnapshotRequest, rpc_pb2.SnapshotResponse]:
        target = endpoint or self.current
        return GrpcServerStream(self._stub(target, "Maintenance").Snapshot, target)

    async def close(self) -> None:
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        for channel in channels:
            await channel.close()

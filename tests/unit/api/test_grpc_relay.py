"""The gRPC worker's routing and its native link, without processes (the worker end to end
is tests/integration/test_grpc_workers.py).

Goal: every method of the etcd gRPC API has a handler in the worker, relayed over the
native door exactly where the door serves it; the link to the member takes a response as
large as the member's gRPC server would send, and a broken link fails its calls and
streams with UNAVAILABLE instead of leaving them waiting.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc import aio

from synod.api import grpc_relay
from synod.api.proto import native_wire as wire
from synod.api.proto.etcdserverpb import rpc_pb2
from synod.api.proto.v3electionpb import v3election_pb2
from synod.api.proto.v3lockpb import v3lock_pb2


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return None


def _kind(handler: grpc.RpcMethodHandler) -> str:
    function = (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )
    return function.__qualname__.split(".")[0]


def test_every_etcd_method_is_served_and_relayed_where_the_native_door_serves_it() -> None:
    async def build() -> dict[str, dict[str, grpc.RpcMethodHandler]]:
        channel = aio.insecure_channel("127.0.0.1:1")
        try:
            return grpc_relay.method_handlers(grpc_relay.NativeRelay("127.0.0.1:1"), channel)
        finally:
            await channel.close()

    services = asyncio.run(build())
    expected = {
        service.full_name: {method.name for method in service.methods}
        for proto in (rpc_pb2.DESCRIPTOR, v3lock_pb2.DESCRIPTOR, v3election_pb2.DESCRIPTOR)
        for service in proto.services_by_name.values()
    }
    assert {name: set(methods) for name, methods in services.items()} == expected
    relayed = {
        method
        for methods in services.values()
        for method, handler in methods.items()
        if _kind(handler).startswith("_relayed")
    }
    assert relayed == set(wire.METHODS_BY_NAME) - {"Snapshot"}
    assert _kind(services["etcdserverpb.Watch"]["Watch"]) == "_relayed_stream"
    assert _kind(services["v3lockpb.Lock"]["Lock"]) == "_proxied"


def test_the_link_takes_large_responses_and_fails_everything_when_lost() -> None:
    async def run() -> None:
        link = grpc_relay._NativeLink()
        transport = _Transport()
        link.connection_made(transport)  # type: ignore[arg-type]
        call: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        link.calls[7] = call
        inbox: grpc_relay._Inbox = asyncio.Queue()
        link.streams[8] = (wire.METHODS_BY_NAME["Watch"].code, inbox)
        # the head of a 100 MiB Range response: more than a native client takes
        head = wire.HEAD.pack(wire.HEAD_BYTES - wire.LENGTH_BYTES + 100 * 2**20, 7, 1, 0)
        link.data_received(head + b"x" * 1000)
        assert not transport.closed and not call.done()

        link.connection_lost(ConnectionResetError("reset"))
        assert isinstance(call.exception(), grpc_relay.MemberLost)
        flags, body = inbox.get_nowait()
        assert flags == wire.FLAG_END | wire.FLAG_ERROR
        assert wire.decode_error(body)[0] == grpc.StatusCode.UNAVAILABLE.value[0]

    asyncio.run(run())

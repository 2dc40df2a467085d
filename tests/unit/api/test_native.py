"""The native door (synod.api.native) and its client transport against fake handlers: the
frame codec, pipelining on one connection, errors with etcd's codes, streams, and bad
frames that close only the connection that sent them (DESIGN.md, api: the native door).

Method: a real NativeDoor on a loopback port over an in-process fake of `Handlers`; the
client is the real NativeTransport. No member, no consensus, no clocks asserted on.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
import uvloop

from synod.api import native
from synod.api.errors import EtcdError, StatusCode
from synod.api.handlers import Handlers
from synod.api.native import NativeDoor, start_native_door
from synod.api.proto import native_wire as wire
from synod.api.proto.etcdserverpb import rpc_pb2
from synod.client import errors
from synod.client.native_transport import AutoTransport, NativeTransport

# --------------------------------------------------------------------------- codec


def test_frames_round_trip_when_fed_one_byte_at_a_time() -> None:
    frames = [
        (1, 1, 0, rpc_pb2.RangeRequest(key=b"k").SerializeToString()),
        (2**64 - 1, 20, wire.FLAG_END, b""),
        (7, 2, wire.FLAG_END | wire.FLAG_ERROR, wire.encode_error(9, "etcdserver: no leader")),
    ]
    data = b"".join(wire.encode_frame(*frame) for frame in frames)
    buffer = bytearray()
    decoded: list[tuple[int, int, int, bytes]] = []
    for index in range(len(data)):
        buffer += data[index : index + 1]
        decoded += wire.decode_frames(buffer, wire.SERVER_FRAME_BYTES_MAX)
    assert decoded == frames
    assert not buffer
    assert wire.decode_error(frames[2][3]) == (9, "etcdserver: no leader")


def test_a_frame_over_the_limit_is_refused_from_its_length_alone() -> None:
    buffer = bytearray(struct.pack(">I", wire.SERVER_FRAME_BYTES_MAX))
    with pytest.raises(wire.FrameError, match="over"):
        wire.decode_frames(buffer, wire.SERVER_FRAME_BYTES_MAX)


def test_unknown_flags_and_short_lengths_are_refused() -> None:
    with pytest.raises(wire.FrameError, match="flags"):
        wire.decode_frames(bytearray(wire.HEAD.pack(10, 1, 1, 0x80)), 1024)
    with pytest.raises(wire.FrameError, match="shorter"):
        wire.decode_frames(bytearray(struct.pack(">I", 3) + b"abc"), 1024)


def test_every_method_has_one_code_and_the_client_knows_every_unary_one() -> None:
    from synod.client.transport import UNARY_METHODS

    assert set(UNARY_METHODS) <= set(wire.METHODS_BY_NAME)
    streams = {m.name for m in wire.METHODS.values() if m.streaming}
    assert streams == {"Watch", "LeaseKeepAlive", "Snapshot"}


# --------------------------------------------------------------------------- fakes


class FakeWatch:
    """A watch session echoing each create as `created` and one event per progress."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[rpc_pb2.WatchResponse | None] = asyncio.Queue()
        self.closed = False

    async def handle(self, request: rpc_pb2.WatchRequest) -> None:
        if request.HasField("create_request"):
            self.queue.put_nowait(rpc_pb2.WatchResponse(watch_id=1, created=True))
        elif request.HasField("progress_request"):
            event = {"kv": {"key": b"k", "mod_revision": 5}}
            self.queue.put_nowait(rpc_pb2.WatchResponse(watch_id=1, events=[event]))

    async def responses(self) -> AsyncIterator[bytes]:
        """Serialized, as the door asks for them (`open_serialized_watch`)."""
        while (response := await self.queue.get()) is not None:
            yield response.SerializeToString()

    def close(self, error: EtcdError | None = None) -> None:
        self.closed = True
        self.queue.put_nowait(None)


class FakeHandlers:
    """What the door calls on `Handlers`; a Put waits on `gate` when its value is 'slow'."""

    election_timeout_s = 60.0

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.watches: list[FakeWatch] = []
        self.cancelled = 0

    def has_leader(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Callable[[Any], Awaitable[Any]]:
        async def empty(request: Any) -> Any:
            return rpc_pb2.StatusResponse(version="fake")

        return empty

    async def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        if request.key == b"compacted":
            raise EtcdError(StatusCode.OUT_OF_RANGE, "mvcc: required revision has been compacted")
        return rpc_pb2.RangeResponse(kvs=[{"key": request.key, "value": request.key}], count=1)

    def put_begin(self, request: rpc_pb2.PutRequest) -> asyncio.Future[rpc_pb2.PutResponse]:
        """`put`, as the door calls it: the begun call's future (the real Handlers' member
        future); a cancelled one counts in `cancelled`."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[rpc_pb2.PutResponse] = loop.create_future()
        response = rpc_pb2.PutResponse(header={"revision": len(request.value)})
        if request.value != b"slow":
            outcome.set_result(response)
            return outcome

        async def release() -> None:
            await self.gate.wait()
            if not outcome.done():
                outcome.set_result(response)

        waiter = loop.create_task(release())

        def on_done(done: asyncio.Future[rpc_pb2.PutResponse]) -> None:
            if done.cancelled():
                self.cancelled += 1
                waiter.cancel()

        outcome.add_done_callback(on_done)
        return outcome

    def put_end(self, outcome: asyncio.Future[rpc_pb2.PutResponse]) -> rpc_pb2.PutResponse:
        return outcome.result()

    async def lease_keep_alive(
        self, request: rpc_pb2.LeaseKeepAliveRequest
    ) -> rpc_pb2.LeaseKeepAliveResponse:
        if request.ID == 404:
            raise EtcdError(StatusCode.UNAVAILABLE, "etcdserver: no leader")
        return rpc_pb2.LeaseKeepAliveResponse(ID=request.ID, TTL=10)

    async def snapshot(
        self, request: rpc_pb2.SnapshotRequest
    ) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        for remaining in (2, 1, 0):
            yield rpc_pb2.SnapshotResponse(remaining_bytes=remaining, blob=bytes([remaining]))

    def open_serialized_watch(self) -> FakeWatch:
        watch = FakeWatch()
        self.watches.append(watch)
        return watch


def run(test: Callable[[NativeDoor, FakeHandlers], Awaitable[None]], uv: bool = False) -> None:
    async def main() -> None:
        handlers = FakeHandlers()
        door = await start_native_door(cast(Handlers, handlers), ("127.0.0.1", 0))
        try:
            async with asyncio.timeout(20):
                await test(door, handlers)
        finally:
            await door.stop(1.0)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop if uv else None) as runner:
        runner.run(main())


def transport(door: NativeDoor) -> NativeTransport:
    """A client transport whose one endpoint is the door (named as its own address)."""
    address = f"127.0.0.1:{door.address[1]}"
    return NativeTransport([address], native_endpoints=[address])


# --------------------------------------------------------------------------- the door


@pytest.mark.parametrize("uv", [False, True], ids=["asyncio", "uvloop"])
def test_many_pipelined_requests_share_one_connection_and_answer_out_of_order(uv: bool) -> None:
    async def test(door: NativeDoor, handlers: FakeHandlers) -> None:
        client = transport(door)
        slow = asyncio.ensure_future(client.call("Put", rpc_pb2.PutRequest(value=b"slow"), 10))
        requests = [rpc_pb2.RangeRequest(key=b"k%d" % i) for i in range(2000)]
        answers = await asyncio.gather(*(client.call("Range", r, 10) for r in requests))
        assert [cast(rpc_pb2.RangeResponse, a).kvs[0].key for a in answers] == [
            r.key for r in requests
        ]
        assert not slow.done(), "the slow put did not hold back the reads behind it"
        handlers.gate.set()
        assert cast(rpc_pb2.PutResponse, await slow).header.revision == 4
        assert door.connections_accepted == 1
        await client.close()

    run(test, uv)


def test_requests_beyond_the_in_flight_bound_wait_unread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "IN_FLIGHT_MAX", 4)

    async def test(door: NativeDoor, handlers: FakeHandlers) -> None:
        client = transport(door)
        puts = [
            asyncio.ensure_future(client.call("Put", rpc_pb2.PutRequest(value=b"slow"), 10))
            for _ in range(20)
        ]
        while not door.connections or not next(iter(door.connections)).waiting:
            await asyncio.sleep(0.01)
        connection = next(iter(door.connections))
        assert len(connection.calls) == 4
        handlers.gate.set()
        assert len(await asyncio.gather(*puts)) == 20
        assert not connection.calls and not connection.waiting
        await client.close()

    run(test)


def test_an_etcd_error_reaches_the_client_with_its_code_and_message() -> None:
    async def test(door: NativeDoor, handlers: FakeHandlers) -> None:
        client = transport(door)
        with pytest.raises(errors.Compacted) as raised:
            await client.call("Range", rpc_pb2.RangeRequest(key=b"compacted"), 5)
        assert raised.value.code == StatusCode.OUT_OF_RANGE
        status = await client.call("Status", rpc_pb2.StatusRequest(), 5)
        assert cast(rpc_pb2.StatusResponse, status).version == "fake"
        await client.close()

    run(test)


def test_a_call_past_its_deadline_is_outcome_unknown_and_cancelled_on_the_member() -> None:
    async def test(door: NativeDoor, handlers: FakeHandlers) -> None:
        client = transport(door)
        with pytest.raises(errors.OutcomeUnknown):
            await client.call("Put", rpc_pb2.PutRequest(value=b"slow"), 0.05)
        while handlers.cancelled == 0:
            await asyncio.sleep(0.01)
        connection = next(iter(door.connections))
        assert not connection.calls
        await client.close()

    run(test)


def test_a_refused_connection_is_unavailable_not_sent() -> None:
    async def test(door: NativeDoor, handlers: FakeHandlers) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        address = f"127.0.0.1:{port}"
        client = NativeTransport([address], native_endpoints=[address])
        with pytest.raises(errors.Unavailable) as raised:
            await client.call("Put", rpc_pb2.PutRequest(key=b"k"), 1)
        assert not isinstance(raised.value, errors.OutcomeUnknown)
        await client.close()

    run(test)


@pytest.mark.parametrize("uv", [False, True], ids=["asyncio", "uvloop"])
def test_a_watch_stream_carries_several_responses_and_closes_its_session(uv: bool) -> None:
    async def test(door: NativeDoor, handlers: FakeHandlers) -> None:
        client = transport(door)
        stream = client.watch()
        await stream.send(rpc_pb2.WatchRequest(create_request={"key": b"k"}))
        assert (await stream.receive()).created
        for _ in range(3):
            await stream.send(rpc_pb2.WatchRequest(progress_request={}))
        for _ in range(3):
            assert (await stream.receive()).events[0].kv.mod_revision == 5
        stream.cancel()
        while not handlers.watches[0].closed:
            await asyncio.sleep(0.01)
        with pytest.raises(errors.Cancelled):
            await stream.receive()
        await client.close()

    run(test, uv)


def test_a_keep_alive_stream_answers_each_request_and_ends_with_the_members_error() -> None:
    async def test(door: NativeDoor, handlers: FakeHandlers) -> None:
        client = transport(door)
        stream = client.keep_alive()
        renewed = []
        for lease in (1, 2):
            await stream.send(rpc_pb2.LeaseKeepAliveRequest(ID=lease))
            renewed.append((await stream.receive()).ID)
        assert renewed == [1, 2]
        await stream.send(rpc_pb2.LeaseKeepAliveRequest(ID=404))
        with pytest.raises(errors.NoLeader):
            await stream.receive()
        await client.close()

    run(test)


def test_a_snapshot_stream_delivers_every_chunk_in_order_then_ends() -> None:
    async def test(door: NativeDoor, handlers: FakeHandlers) -> None:
        client = transport(door)
        stream = client.snapshot()
        await stream.send(rpc_pb2.SnapshotRequest())
        chunks = [await stream.receive() for _ in range(3)]
        assert [chunk.blob for chunk in chunks] == [b"\x02", b"\x01", b"\x00"]
        with pytest.raises(errors.Unavailable, match="ended by the member"):
            await stream.receive()
        await client.close()

    run(test)


BAD_FRAMES = {
    "oversized": struct.pack(">I", wire.SERVER_FRAME_BYTES_MAX + 1) + b"x" * 64,
    "unknown method": wire.encode_frame(1, 250, 0, b""),
    "undecodable body": wire.encode_frame(1, 1, 0, b"\xff\xff\xff"),
    "error flag from a client": wire.encode_frame(1, 1, wire.FLAG_ERROR, b""),
}


@pytest.mark.parametrize("frame", list(BAD_FRAMES.values()), ids=list(BAD_FRAMES))
def test_a_bad_frame_closes_only_its_own_connection(frame: bytes) -> None:
    async def test(door: NativeDoor, handlers: FakeHandlers) -> None:
        client = transport(door)
        watch = client.watch()
        await watch.send(rpc_pb2.WatchRequest(create_request={"key": b"k"}))
        assert (await watch.receive()).created
        reader, writer = await asyncio.open_connection(*door.address)
        writer.write(frame)
        assert await reader.read() == b"", "the bad connection was not closed"
        writer.close()
        assert door.connections_refused == 1
        answer = await client.call("Range", rpc_pb2.RangeRequest(key=b"still"), 5)
        assert cast(rpc_pb2.RangeResponse, answer).kvs[0].key == b"still"
        await watch.send(rpc_pb2.WatchRequest(progress_request={}))
        assert (await watch.receive()).events
        await client.close()

    run(test)


def test_auto_settles_on_the_native_door_when_it_answers_and_tries_grpc_otherwise() -> None:
    async def test(door: NativeDoor, handlers: FakeHandlers) -> None:
        native_port = door.address[1]
        auto = AutoTransport([f"127.0.0.1:{native_port - wire.NATIVE_PORT_OFFSET}"])
        await auto.call("Range", rpc_pb2.RangeRequest(key=b"a"), 5)
        assert auto.chosen == "native"
        await auto.close()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed = probe.getsockname()[1]
        fallback = AutoTransport([f"127.0.0.1:{closed}"])
        assert await fallback.decide() is fallback._grpc
        assert fallback.chosen is None, "settled on gRPC before any member answered"
        await fallback.close()

    run(test)


# --------------------------------------------------------------------------- the flag


def test_the_native_port_defaults_to_two_above_the_first_client_port() -> None:
    from synod.server.config import ConfigError, Url
    from synod.server.main import _native_port

    client = Url.parse("http://127.0.0.1:2379")
    assert _native_port("", client) == 2381
    assert _native_port("off", client) is None
    assert _native_port("http://127.0.0.1:9000", client) == 9000
    assert _native_port("", Url.parse("http://127.0.0.1:0")) == 0
    assert _native_port("", Url.parse("http://127.0.0.1:65534")) is None
    with pytest.raises(ConfigError, match="host"):
        _native_port("http://10.0.0.1:9000", client)

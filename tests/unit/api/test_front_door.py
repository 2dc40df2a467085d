"""The front door: gRPC (a real grpc.aio server with the generated etcd stubs) and the
aiohttp application on one port; bad or silent connections closed one by one."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import uvloop
from aiohttp import web
from grpc import aio

from synod.api.front_door import PREFACE, FrontDoor, start_front_door
from synod.api.proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc


class KV(rpc_pb2_grpc.KVServicer):
    async def Range(self, request: rpc_pb2.RangeRequest, context: Any) -> rpc_pb2.RangeResponse:
        if request.key == b"missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "nope")
        return rpc_pb2.RangeResponse(
            header=rpc_pb2.ResponseHeader(revision=7),
            kvs=[{"key": request.key, "value": request.key * 2}],
            count=1,
        )

    async def Put(self, request: rpc_pb2.PutRequest, context: Any) -> rpc_pb2.PutResponse:
        # echo the size back as the revision: exercises big messages through the splice
        return rpc_pb2.PutResponse(
            header=rpc_pb2.ResponseHeader(revision=len(request.value)),
            prev_kv={"key": request.key, "value": request.value},
        )


class Watch(rpc_pb2_grpc.WatchServicer):
    async def Watch(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[rpc_pb2.WatchResponse]:
        watch_id = 0
        async for _request in request_iterator:
            yield rpc_pb2.WatchResponse(watch_id=watch_id, created=True)
            watch_id += 1


def make_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"hello": request.method})

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), content_type="application/json")

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_get("/hello", hello)
    app.router.add_post("/echo", echo)
    return app


Scenario = Callable[[FrontDoor, str], Awaitable[None]]


def run(
    scenario: Scenario, *, unix: Path | None = None, timeout: float = 10.0, uv: bool = False
) -> None:
    async def main() -> None:
        server = aio.server()
        rpc_pb2_grpc.add_KVServicer_to_server(KV(), server)
        rpc_pb2_grpc.add_WatchServicer_to_server(Watch(), server)
        if unix is not None:
            target = f"unix:{unix}"
            server.add_insecure_port(target)
        else:
            port = server.add_insecure_port("127.0.0.1:0")
            target = f"127.0.0.1:{port}"
        await server.start()
        door = await start_front_door(("127.0.0.1", 0), target, make_app(), first_bytes_timeout=0.5)
        try:
            endpoint = f"127.0.0.1:{door.address[1]}"
            await asyncio.wait_for(scenario(door, endpoint), timeout)
        finally:
            await door.close()
            await server.stop(None)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop if uv else None) as runner:
        runner.run(main())


async def grpc_range(endpoint: str, key: bytes) -> rpc_pb2.RangeResponse:
    async with aio.insecure_channel(endpoint) as channel:
        stub = rpc_pb2_grpc.KVStub(channel)
        response: rpc_pb2.RangeResponse = await stub.Range(rpc_pb2.RangeRequest(key=key), timeout=5)
        return response


async def http_get(endpoint: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{endpoint}/hello") as response,
    ):
        return response.status, await response.json()


async def raw_exchange(endpoint: str, data: bytes, wait: float = 3.0) -> bytes:
    """Send `data`, then read until the server closes (or `wait` passes)."""
    host, port = endpoint.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        if data:
            writer.write(data)
            await writer.drain()
        chunks = []
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


@pytest.mark.parametrize("uv", [False, True], ids=["asyncio", "uvloop"])
def test_grpc_and_http_on_one_port(uv: bool) -> None:
    async def scenario(door: FrontDoor, endpoint: str) -> None:
        response = await grpc_range(endpoint, b"k")
        assert response.kvs[0].value == b"kk" and response.header.revision == 7
        assert await http_get(endpoint) == (200, {"hello": "GET"})
        # errors, streaming and concurrency through the splice
        async with aio.insecure_channel(endpoint) as channel:
            stub = rpc_pb2_grpc.KVStub(channel)
            with pytest.raises(aio.AioRpcError) as failure:
                await stub.Range(rpc_pb2.RangeRequest(key=b"missing"), timeout=5)
            assert failure.value.code() == grpc.StatusCode.NOT_FOUND
            results = await asyncio.gather(
                *(stub.Range(rpc_pb2.RangeRequest(key=b"%d" % i), timeout=5) for i in range(50))
            )
            assert [r.kvs[0].key for r in results] == [b"%d" % i for i in range(50)]
            watch_stub: Any = rpc_pb2_grpc.WatchStub(channel)
            watch = watch_stub.Watch()
            for i in range(3):
                await watch.write(rpc_pb2.WatchRequest(create_request={"key": b"a"}))
                reply = await watch.read()
                assert reply.created and reply.watch_id == i
            await watch.done_writing()
        assert door.grpc_connections >= 1 and door.http_connections >= 1

    run(scenario, uv=uv)


@pytest.mark.parametrize("uv", [False, True], ids=["asyncio", "uvloop"])
def test_big_messages_both_ways(uv: bool) -> None:
    async def scenario(door: FrontDoor, endpoint: str) -> None:
        value = bytes(range(256)) * (3 * 4096)  # 3 MiB
        async with aio.insecure_channel(
            endpoint,
            options=[
                ("grpc.max_send_message_length", 16 << 20),
                ("grpc.max_receive_message_length", 16 << 20),
            ],
        ) as channel:
            stub = rpc_pb2_grpc.KVStub(channel)
            response = await stub.Put(rpc_pb2.PutRequest(key=b"big", value=value), timeout=10)
        assert response.header.revision == len(value) and response.prev_kv.value == value
        body = b'{"x":"' + b"y" * (5 << 20) + b'"}'
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://{endpoint}/echo", data=io.BytesIO(body)) as reply,
        ):
            assert reply.status == 200 and await reply.read() == body

    run(scenario, timeout=30, uv=uv)


def test_http_keepalive_and_many_clients() -> None:
    async def scenario(door: FrontDoor, endpoint: str) -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(5):  # one connection, several requests
                async with session.get(f"http://{endpoint}/hello") as response:
                    assert response.status == 200
        results = await asyncio.gather(*(http_get(endpoint) for _ in range(20)))
        assert all(status == 200 for status, _ in results)

    run(scenario)


@pytest.mark.parametrize("uv", [False, True], ids=["asyncio", "uvloop"])
def test_garbage_closes_only_that_connection(uv: bool) -> None:
    async def scenario(door: FrontDoor, endpoint: str) -> None:
        async with aio.insecure_channel(endpoint) as channel:  # a gRPC connection in use
            stub = rpc_pb2_grpc.KVStub(channel)
            await stub.Range(rpc_pb2.RangeRequest(key=b"a"), timeout=5)
            answer = await raw_exchange(endpoint, b"\x00\x01\x02garbage\r\n\r\n")
            assert answer == b"" or answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400"))
            # a broken HTTP/2 client after a valid preface: grpc closes it, not the door
            await raw_exchange(endpoint, PREFACE + b"\xff" * 64, wait=3)
            await stub.Range(rpc_pb2.RangeRequest(key=b"b"), timeout=5)
        assert await http_get(endpoint) == (200, {"hello": "GET"})

    run(scenario, uv=uv)


def test_silent_and_half_preface_clients_time_out() -> None:
    async def scenario(door: FrontDoor, endpoint: str) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await raw_exchange(endpoint, b"", wait=3) == b""
        assert await raw_exchange(endpoint, PREFACE[:10], wait=3) == b""
        assert loop.time() - start < 2.5  # each was closed after the 0.5 s timeout
        assert await http_get(endpoint) == (200, {"hello": "GET"})

    run(scenario)


def test_client_closing_early() -> None:
    async def scenario(door: FrontDoor, endpoint: str) -> None:
        host, port = endpoint.split(":")
        for data in (b"", b"GE", PREFACE, PREFACE[:5]):
            with socket.create_connection((host, int(port))) as sock:
                if data:
                    sock.sendall(data)
        await asyncio.sleep(0.2)
        assert await http_get(endpoint) == (200, {"hello": "GET"})
        assert (await grpc_range(endpoint, b"x")).count == 1

    run(scenario)


def test_upstream_down_fails_grpc_only() -> None:
    async def main() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            dead = probe.getsockname()[1]
        door = await start_front_door(("127.0.0.1", 0), f"127.0.0.1:{dead}", make_app())
        try:
            endpoint = f"127.0.0.1:{door.address[1]}"
            with pytest.raises(aio.AioRpcError) as failure:
                await grpc_range(endpoint, b"k")
            assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
            assert await http_get(endpoint) == (200, {"hello": "GET"})
        finally:
            await door.close()

    asyncio.run(main())


def test_unix_socket_target(tmp_path: Path) -> None:
    async def scenario(door: FrontDoor, endpoint: str) -> None:
        assert (await grpc_range(endpoint, b"u")).kvs[0].value == b"uu"
        assert await http_get(endpoint) == (200, {"hello": "GET"})

    run(scenario, unix=tmp_path / "grpc.sock")


def test_close_releases_port_and_connections() -> None:
    async def main() -> None:
        door = await start_front_door(("127.0.0.1", 0), "127.0.0.1:1", make_app())
        port = door.address[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await door.close()
        assert await asyncio.wait_for(reader.read(), 3) == b""
        writer.close()
        await door.close()  # idempotent
        with socket.socket() as again:
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(("127.0.0.1", port))

    asyncio.run(main())


# ---------------------------------------------------------------------------- real handlers


def test_real_member_behind_one_port(tmp_path: Path) -> None:
    """A one-member cluster with the real Handlers: etcd gRPC stubs and the JSON gateway
    on the same port see the same store; /health, /version and /metrics answer."""
    from synod.api.front_door import start_etcd_client_port
    from synod.api.handlers import Handlers
    from synod.api.metrics import SynodMetrics, member_sampler
    from synod.paxos.config import Config as CoreConfig
    from synod.server.config import ServerConfig, Url, parse_initial_cluster
    from synod.server.kv_service import KvService
    from synod.server.member import Member

    async def main() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            peer_port = probe.getsockname()[1]
        cluster = parse_initial_cluster(f"m0=http://127.0.0.1:{peer_port}", "t")
        config = ServerConfig(
            name="m0",
            data_dir=str(tmp_path / "m0"),
            listen_client_urls=(Url("http", "127.0.0.1", 1),),
            advertise_client_urls=(Url("http", "127.0.0.1", 1),),
            listen_peer_url=cluster[0].peer_url,
            initial_cluster=cluster,
            initial_cluster_token="t",
            tick_ms=20,
            core=CoreConfig(heartbeat_ticks=1, election_ticks=10),
        )
        service = KvService(election_timeout_ms=200)
        member = Member(config, service)
        await member.start()
        metrics = SynodMetrics(member_sampler(member, service))
        handlers = Handlers(member, service, config)
        port = await start_etcd_client_port(handlers, ("127.0.0.1", 0), metrics)
        port2 = await start_etcd_client_port(handlers, "127.0.0.1:0")  # own metrics
        endpoint = f"127.0.0.1:{port.address[1]}"
        base = f"http://{endpoint}"
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(200):
                    async with session.get(base + "/health") as reply:
                        if reply.status == 200:
                            break
                    await asyncio.sleep(0.05)
                assert reply.status == 200
                async with aio.insecure_channel(endpoint) as channel:
                    kv = rpc_pb2_grpc.KVStub(channel)
                    put = await kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=5)
                watch_body = b'{"create_request":{"key":"aw=="}}'  # "k"
                async with session.post(base + "/v3/watch", data=watch_body) as watch:
                    created = json.loads(await asyncio.wait_for(watch.content.readline(), 5))
                    assert created["result"]["created"] is True
                    async with session.post(
                        base + "/v3/kv/put", data=b'{"key":"aw==","value":"dzI="}'
                    ) as reply:
                        second = await reply.json()
                    event = json.loads(await asyncio.wait_for(watch.content.readline(), 5))
                    kv_json = event["result"]["events"][0]["kv"]
                    assert kv_json["value"] == "dzI=" and kv_json["version"] == "2"
                    assert kv_json["mod_revision"] == second["header"]["revision"]
                    assert int(kv_json["create_revision"]) == put.header.revision
                async with session.post(base + "/v3/kv/range", data=b'{"key":"aw=="}') as reply:
                    body = await reply.json()
                    assert body["kvs"][0]["value"] == "dzI=" and body["count"] == "1"
                async with session.post(base + "/v3/lease/keepalive", data=b'{"ID":"5"}') as r:
                    assert r.status == 200 and "TTL" not in (await r.json())["result"]
                async with session.post(base + "/v3/lease/grant", data=b'{"TTL":5}') as r:
                    lease = (await r.json())["ID"]
                async with session.post(
                    base + "/v3/lock/lock", data=json.dumps({"name": "bA==", "lease": lease})
                ) as r:
                    assert r.status == 200 and (await r.json())["key"]
                async with session.get(base + "/version") as reply:
                    assert (await reply.json())["etcdcluster"] == "3.4.0"
                async with session.get(base + "/metrics") as reply:
                    text = await reply.text()
                assert "etcd_server_has_leader 1.0" in text
                assert "etcd_server_is_leader 1.0" in text
                assert "etcd_debugging_mvcc_keys_total 2.0" in text  # k and the lock key
                assert "synod_commit_slot" in text and "etcd_debugging_mvcc_watcher_total" in text
                other = f"http://127.0.0.1:{port2.address[1]}"
                async with session.post(other + "/v3/kv/range", data=b'{"key":"aw=="}') as r:
                    assert (await r.json())["kvs"][0]["value"] == "dzI="
                assert port2.metrics.value("etcd_server_has_leader") == 1
                async with session.get(other + "/metrics") as reply:
                    assert "synod_ballot_round" in await reply.text()
        finally:
            await port2.stop(None)
            await port.stop(None)
            await member.stop()

    asyncio.run(main())

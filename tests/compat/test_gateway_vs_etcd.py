"""The JSON gateway against a real etcd 3.4: the same requests to both, the same shapes back.

Starts one throwaway etcd (Debian's etcd-server) and one in-process Synod member (a
one-member cluster: real Member, KvService, Handlers, grpc server, front door and
gateway on one port), sends both the same sequence of JSON requests and compares the
answers: HTTP status, the set of fields at every level (so an omitted zero value, an
int64 printed as a number, a renamed field all show), and the values that do not depend
on ids or timing. Skipped when no `etcd` binary is on PATH.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

ETCD = shutil.which("etcd")
pytestmark = pytest.mark.skipif(
    ETCD is None, reason="etcd binary not on PATH (install Debian's etcd-server to run)"
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_etcd(base: Path) -> tuple[subprocess.Popen[bytes], str]:
    assert ETCD is not None
    client_port, peer_port = free_ports(2)
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    args = [
        ETCD,
        "--name=gw-compat",
        f"--data-dir={base / 'data'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=gw-compat={peer}",
        "--initial-cluster-state=new",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    with (base / "etcd.log").open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    return proc, client


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def etcd_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import urllib.request

    for attempt in range(3):
        base = tmp_path_factory.mktemp(f"etcd{attempt}")
        proc, url = start_etcd(base)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with urllib.request.urlopen(url + "/health", timeout=1) as reply:
                        if json.loads(reply.read())["health"] == "true":
                            yield url
                            return
                except OSError:
                    pass
                time.sleep(0.1)
        finally:
            stop(proc)
    pytest.fail("etcd did not come up")


def shape(value: Any) -> Any:
    """The structure of a JSON value: dict keys, list shapes, scalar types."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


class Pair:
    """One etcd and one Synod member, asked the same things."""

    def __init__(self, session: aiohttp.ClientSession, etcd: str, synod: str) -> None:
        self.session = session
        self.urls = {"etcd": etcd, "synod": synod}

    async def post(self, path: str, body: Any = None, raw: bytes | None = None) -> dict[str, Any]:
        data = raw if raw is not None else json.dumps(body or {}).encode()
        answers: dict[str, Any] = {}
        for name, url in self.urls.items():
            async with self.session.post(url + path, data=data) as reply:
                text = await reply.text()
                answers[name] = (reply.status, json.loads(text) if text.strip() else None)
        return answers

    async def same_shape(self, path: str, body: Any = None) -> dict[str, Any]:
        answers = await self.post(path, body)
        (s1, b1), (s2, b2) = answers["etcd"], answers["synod"]
        assert s1 == s2 == 200, (path, answers)
        assert shape(b1) == shape(b2), (path, b1, b2)
        return {"etcd": b1, "synod": b2}

    async def same_error(self, path: str, body: Any = None, raw: bytes | None = None) -> None:
        answers = await self.post(path, body, raw)
        (s1, b1), (s2, b2) = answers["etcd"], answers["synod"]
        assert s1 == s2 and s1 >= 400, (path, answers)
        assert set(b1) == set(b2) == {"error", "message", "code"}, (path, answers)
        assert b1["code"] == b2["code"], (path, answers)
        if raw is None:  # etcd's own messages (not Go's JSON decoder's) must match exactly
            assert b1["error"] == b2["error"], (path, answers)


def run_against_both(etcd_url: str, tmp_path: Path, scenario: Any) -> None:
    from synod.api.front_door import start_etcd_client_port
    from synod.api.handlers import Handlers
    from synod.paxos.config import Config as CoreConfig
    from synod.server.config import ServerConfig, Url, parse_initial_cluster
    from synod.server.kv_service import KvService
    from synod.server.member import Member

    async def main() -> None:
        (peer_port,) = free_ports(1)
        cluster = parse_initial_cluster(f"m0=http://127.0.0.1:{peer_port}", "gw")
        config = ServerConfig(
            name="m0",
            data_dir=str(tmp_path / "m0"),
            listen_client_urls=(Url("http", "127.0.0.1", 1),),
            advertise_client_urls=(Url("http", "127.0.0.1", 1),),
            listen_peer_url=cluster[0].peer_url,
            initial_cluster=cluster,
            initial_cluster_token="gw",
            tick_ms=20,
            core=CoreConfig(heartbeat_ticks=1, election_ticks=10),
        )
        service = KvService(election_timeout_ms=200)
        member = Member(config, service)
        await member.start()
        port = await start_etcd_client_port(Handlers(member, service, config), ("127.0.0.1", 0))
        try:
            synod_url = f"http://127.0.0.1:{port.address[1]}"
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
                deadline = asyncio.get_running_loop().time() + 10
                while True:
                    async with session.get(synod_url + "/health") as reply:
                        if reply.status == 200:
                            break
                    assert asyncio.get_running_loop().time() < deadline, "no leader"
                    await asyncio.sleep(0.05)
                await scenario(Pair(session, etcd_url, synod_url))
        finally:
            await port.stop(None)
            await member.stop()

    asyncio.run(main())


def test_kv_shapes(etcd_url: str, tmp_path: Path) -> None:
    async def scenario(both: Pair) -> None:
        prefix = b"/kv-shapes/"
        await both.same_shape("/v3/kv/put", {"key": b64(prefix + b"a"), "value": b64(b"1")})
        got = await both.same_shape("/v3/kv/range", {"key": b64(prefix + b"a")})
        for name in ("etcd", "synod"):
            kv = got[name]["kvs"][0]
            assert (kv["key"], kv["value"], kv["version"]) == (b64(prefix + b"a"), "MQ==", "1")
            assert got[name]["count"] == "1"
        await both.same_shape("/v3/kv/range", {"key": b64(prefix + b"missing")})
        await both.same_shape("/v3/kv/put", {"key": b64(prefix + b"e"), "value": ""})
        await both.same_shape("/v3/kv/range", {"key": b64(prefix + b"e")})  # no "value"
        await both.same_shape(
            "/v3/kv/put", {"key": b64(prefix + b"a"), "value": b64(b"2"), "prev_kv": True}
        )
        await both.same_shape(
            "/v3/kv/range",
            {"key": b64(prefix), "range_end": b64(prefix[:-1] + b"0"), "count_only": True},
        )
        await both.same_shape(
            "/v3beta/kv/deleterange", {"key": b64(prefix + b"e"), "prev_kv": True}
        )
        txn = {
            "compare": [
                {
                    "key": b64(prefix + b"L"),
                    "target": "CREATE",
                    "result": "EQUAL",
                    "create_revision": "0",
                }
            ],
            "success": [{"request_put": {"key": b64(prefix + b"L"), "value": b64(b"me")}}],
            "failure": [{"request_range": {"key": b64(prefix + b"L")}}],
        }
        won = await both.same_shape("/v3/kv/txn", txn)
        assert won["etcd"]["succeeded"] is True and won["synod"]["succeeded"] is True
        lost = await both.same_shape("/v3/kv/txn", txn)
        assert "succeeded" not in lost["etcd"] and "succeeded" not in lost["synod"]

    run_against_both(etcd_url, tmp_path, scenario)


def test_error_answers(etcd_url: str, tmp_path: Path) -> None:
    async def scenario(both: Pair) -> None:
        await both.same_error("/v3/kv/put", {"key": b64(b"x"), "value": "", "lease": "12345"})
        await both.same_error("/v3/kv/range", {"key": b64(b"x"), "revision": "100000"})
        await both.same_error("/v3/kv/range", {})  # key is not provided
        await both.same_error("/v3/lease/revoke", {"ID": "424242"})
        for raw in (b'{"key":', b"[]", b'{"key":"YQ==","limit":"abc"}', b'{"key":"!!"}'):
            await both.same_error("/v3/kv/range", raw=raw)
        # unknown fields are ignored by both
        await both.same_shape("/v3/kv/range", {"key": b64(b"x"), "bogus": 1})

    run_against_both(etcd_url, tmp_path, scenario)


def test_lease_shapes(etcd_url: str, tmp_path: Path) -> None:
    async def scenario(both: Pair) -> None:
        granted = await both.same_shape("/v3/lease/grant", {"TTL": 30, "ID": "7587"})
        assert granted["etcd"]["TTL"] == granted["synod"]["TTL"] == "30"
        alive = await both.same_shape("/v3/lease/keepalive", {"ID": "7587"})
        assert set(alive["etcd"]["result"]) == {"header", "ID", "TTL"}
        dead = await both.same_shape("/v3/lease/keepalive", {"ID": "999"})
        assert "TTL" not in dead["etcd"]["result"] and "TTL" not in dead["synod"]["result"]
        await both.same_shape("/v3/kv/lease/timetolive", {"ID": "999"})
        await both.same_shape("/v3/lease/leases", {})
        await both.same_shape("/v3/kv/lease/revoke", {"ID": "7587"})

    run_against_both(etcd_url, tmp_path, scenario)


def test_watch_stream_shapes(etcd_url: str, tmp_path: Path) -> None:
    async def scenario(both: Pair) -> None:
        key = b64(b"/watch-shapes/k")
        chunks: dict[str, list[Any]] = {}
        for name, url in both.urls.items():
            async with both.session.post(
                url + "/v3/watch", data=json.dumps({"create_request": {"key": key}}).encode()
            ) as reply:
                assert reply.status == 200
                first = await asyncio.wait_for(reply.content.readline(), 5)
                await both.session.post(url + "/v3/kv/put", data=json.dumps({"key": key}))
                await both.session.post(url + "/v3/kv/deleterange", data=json.dumps({"key": key}))
                put = await asyncio.wait_for(reply.content.readline(), 5)
                delete = await asyncio.wait_for(reply.content.readline(), 5)
                chunks[name] = [json.loads(line) for line in (first, put, delete)]
                assert all(line.endswith(b"\n") for line in (first, put, delete))
        assert shape(chunks["etcd"]) == shape(chunks["synod"]), chunks
        for name in ("etcd", "synod"):
            created, put, delete = (c["result"] for c in chunks[name])
            assert created["created"] is True
            assert "type" not in put["events"][0] and delete["events"][0]["type"] == "DELETE"

    run_against_both(etcd_url, tmp_path, scenario)


def test_plain_gets_and_cluster(etcd_url: str, tmp_path: Path) -> None:
    async def scenario(both: Pair) -> None:
        answers = {}
        for name, url in both.urls.items():
            async with both.session.get(url + "/version", data=b"{}") as reply:
                answers[name] = (reply.status, await reply.json())
        assert shape(answers["etcd"]) == shape(answers["synod"])
        assert answers["synod"][1]["etcdcluster"] == answers["etcd"][1]["etcdcluster"]
        for name, url in both.urls.items():
            async with both.session.get(url + "/health") as reply:
                answers[name] = (reply.status, await reply.read())
        assert answers["etcd"] == answers["synod"] == (200, b'{"health":"true"}')
        members = await both.post("/v3/cluster/member/list", {})
        etcd_member, synod_member = (members[n][1]["members"][0] for n in ("etcd", "synod"))
        assert set(etcd_member) == set(synod_member)
        assert shape(members["etcd"][1]["header"]) == shape(members["synod"][1]["header"])
        status = await both.post("/v3/maintenance/status", {})
        assert set(status["etcd"][1]) <= set(status["synod"][1]) | {"dbSizeInUse"}
        await both.same_shape("/v3/maintenance/hash", {})

    run_against_both(etcd_url, tmp_path, scenario)


def test_watch_bodies(etcd_url: str, tmp_path: Path) -> None:
    async def scenario(both: Pair) -> None:
        for name, url in both.urls.items():
            async with both.session.post(
                url + "/v3/watch", data=b'{"create_request":{"key":"YQ=="'
            ) as reply:
                assert reply.status == 500, name
                body = await reply.json()
                assert body["code"] == 2 and set(body) == {"error", "message", "code"}, name
            async with both.session.post(
                url + "/v3/watch", data=b'{"create_request":{"key":"YQ=="}} {"create_req'
            ) as reply:
                assert reply.status == 200, name
                first = json.loads(await asyncio.wait_for(reply.content.readline(), 5))
                assert first["result"]["created"] is True, name

    run_against_both(etcd_url, tmp_path, scenario)

"""Synod's Python client and recipes against a real etcd 3.4 and against Synod, side by side.

Goal: the client speaks etcd's v3 API as etcd speaks it (etcd is the reference for its
behaviour), so the same calls give the same results and the same typed errors from both:
KV and txn, leases kept alive in the background and lost when revoked, watches (ordered,
resumed, compacted), and the recipes (lock, election, semaphore, queue, broadcast).
Method: one throwaway single-member etcd (Debian's etcd-server) on free loopback ports in a
temp dir, and one single-member Synod; every test runs against both. The etcd half is
skipped only when no `etcd` binary is on PATH.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from synod.client import (
    Client,
    Compacted,
    FutureRevision,
    LeaseNotFound,
    kv_pb2,
    txn,
)
from synod.recipes import Broadcast, Election, FencingGuard, Lock, Queue, Semaphore
from tests.integration.cluster import free_ports, launch

pytestmark = pytest.mark.slow

ETCD = shutil.which("etcd")
TTL_S = 2


def start_etcd(base: Path) -> tuple[subprocess.Popen[bytes], str]:
    assert ETCD is not None
    client_port, peer_port = free_ports(2)
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    args = [
        ETCD,
        "--name=client-compat",
        f"--data-dir={base / 'data'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=client-compat={peer}",
        "--initial-cluster-state=new",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    with (base / "etcd.log").open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    return process, f"127.0.0.1:{client_port}"


def wait_ready(endpoint: str, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 20
    with Client(endpoint, timeout_s=1.0) as probe:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                probe.get("ready")
                return True
            except Exception:
                time.sleep(0.1)
    return False


@pytest.fixture(scope="module", params=["etcd", "synod"])
def endpoint(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "synod":
        cluster = launch(tmp_path_factory.mktemp("synod-one"), size=1, token="compat")
        try:
            yield cluster.endpoints[0]
        finally:
            cluster.stop_all()
        return
    if ETCD is None:
        pytest.skip("etcd binary not on PATH (install Debian's etcd-server to run)")
    yield from running_etcd(tmp_path_factory)


def running_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A single-member etcd's client address while the caller runs; stopped afterwards."""
    for _ in range(3):  # a picked port may be taken before etcd binds it: try new ones
        process, address = start_etcd(tmp_path_factory.mktemp("etcd"))
        try:
            if wait_ready(address, process):
                yield address
                return
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    pytest.fail("etcd did not come up (see etcd.log in the temp dirs)")


@pytest.fixture
def client(endpoint: str) -> Iterator[Client]:
    with Client(endpoint, timeout_s=5.0) as connected:
        yield connected


def test_kv_and_compare_and_swap(client: Client) -> None:
    first = client.put("kv/a", "1")
    assert client.get_one("kv/a").value == b"1"  # type: ignore[union-attr]
    client.put("kv/b", "2")
    listed = client.get("kv/", prefix=True, limit=1)
    assert [kv.key for kv in listed.kvs] == [b"kv/a"] and listed.more and listed.count == 2
    won = client.txn(
        [txn.mod_revision("kv/a") == first.header.revision], [txn.put("kv/a", "3")], []
    )
    lost = client.txn(
        [txn.mod_revision("kv/a") == first.header.revision],
        [txn.put("kv/a", "4")],
        [txn.get("kv/a")],
    )
    assert won.succeeded and not lost.succeeded
    assert lost.responses[0].response_range.kvs[0].value == b"3"
    assert client.delete("kv/", prefix=True).deleted == 2


def test_typed_errors_match(client: Client) -> None:
    with pytest.raises(LeaseNotFound):
        client.put("errors/a", "x", lease=0x1234)
    now = client.put("errors/a", "1").header.revision
    with pytest.raises(FutureRevision):
        client.get("errors/a", revision=now + 1000)
    client.put("errors/a", "2")
    client.compact(now + 1)
    with pytest.raises(Compacted):
        client.get("errors/a", revision=now)
    # etcd confirms the watch and then cancels it; either way the caller gets Compacted.
    with pytest.raises(Compacted) as caught, client.watch("errors/a", start_revision=now) as w:
        w.get(5)
    assert caught.value.compact_revision == now + 1


def test_lease_kept_alive_in_the_background_and_lost_when_revoked(client: Client) -> None:
    lease = client.lease(TTL_S)
    client.put("leases/a", "x", lease=lease.id)
    time.sleep(TTL_S + 1.0)
    assert not lease.lost and client.get_one("leases/a") is not None
    client.lease_revoke(lease.id)
    assert client.get_one("leases/a") is None
    deadline = time.monotonic() + TTL_S + 2
    while not lease.lost and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lease.lost


def test_watch_delivers_in_order_and_resumes(client: Client) -> None:
    start = client.put("watch/a", "0").header.revision
    with client.watch("watch/", prefix=True) as watcher:
        for i in range(1, 4):
            client.put("watch/a", str(i))
        client.delete("watch/a")
        events: list[kv_pb2.Event] = []
        while len(events) < 4:
            events.extend(watcher.events(5))
    assert [e.kv.value for e in events[:3]] == [b"1", b"2", b"3"]
    assert events[3].type == kv_pb2.Event.DELETE
    with client.watch("watch/a", start_revision=start + 2) as resumed:
        again = resumed.events(5)
    assert again[0].kv.value == b"2"


def test_lock_excludes_threads_and_fences(endpoint: str) -> None:
    guard = FencingGuard()
    holders: list[int] = []
    lock = threading.Lock()

    def contend() -> None:
        with Client(endpoint) as own:
            for _ in range(3):
                with Lock(own, "compat/lock", ttl_s=TTL_S) as held:
                    guard.check(held.token)
                    with lock:
                        holders.append(held.token)
                        assert len(holders) == 1 or holders[-2] < 0
                    time.sleep(0.01)
                    with lock:
                        holders.append(-held.token)

    threads = [threading.Thread(target=contend) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(holders) == 24
    assert all(holders[i] == -holders[i + 1] for i in range(0, 24, 2))


def test_election_semaphore_queue_and_broadcast(client: Client) -> None:
    election = Election(client, "compat/election", ttl_s=TTL_S)
    token = election.campaign("a")
    election.proclaim("b")
    leader = election.leader()
    assert leader is not None and leader.value == b"b" and leader.token == token
    election.resign()
    assert election.leader() is None

    first, second, third = (Semaphore(client, "compat/sem", 2, ttl_s=TTL_S) for _ in range(3))
    assert first.acquire() and second.acquire()
    assert not third.acquire(timeout_s=0.3)
    first.release()
    assert third.acquire(timeout_s=5)
    second.release()
    third.release()

    queue = Queue(client, "compat/queue", visibility_s=TTL_S, max_deliveries=2)
    queue.push("later", priority=2)
    queue.push("now")
    message = queue.pop(0)
    assert message.payload == b"now"
    queue.ack(message)
    assert queue.pop(0).payload == b"later"
    redelivered = queue.pop(timeout_s=10)
    assert redelivered.payload == b"later" and redelivered.deliveries == 2
    queue.ack(redelivered)

    channel = Broadcast(client, "compat/broadcast")
    with channel.subscribe() as subscription:
        positions = [channel.publish(f"m{i}") for i in range(3)]
        got = [subscription.get(5) for _ in range(3)]
    assert [m.position for m in got if m] == positions


def test_asyncio_client_does_the_same(endpoint: str) -> None:
    from synod.client import AsyncClient

    async def scenario() -> None:
        async with AsyncClient(endpoint, timeout_s=5.0) as client:
            written = await client.put("async/a", "1")
            watcher = client.watch("async/a", start_revision=written.header.revision)
            await client.put("async/a", "2")
            values: list[bytes] = []
            async for response in watcher:
                values.extend(event.kv.value for event in response.events)
                if len(values) >= 2:
                    watcher.cancel()
            assert values == [b"1", b"2"]
            lease = await client.lease(TTL_S)
            await client.put("async/b", "x", lease=lease.id)
            await lease.revoke()
            assert await client.get_one("async/b") is None

    asyncio.run(asyncio.wait_for(scenario(), 20))

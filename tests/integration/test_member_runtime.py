"""Three member runtimes in one process on loopback, with real WAL storage: writes at the
leader and at followers, linearizable reads through followers, and a restart that keeps
every acknowledged write."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack
import pytest

from synod.paxos.config import Config as CoreConfig
from synod.server import member as member_module
from synod.server.config import ServerConfig, Url, parse_initial_cluster
from synod.server.errors import NoLeader, RequestTimeout
from synod.server.member import Member
from synod.storage.fs import RealFile


class DictService:
    """A trivial replicated dictionary: put returns the previous value."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def apply(self, payload: bytes, slot: int) -> object:
        key, value = msgpack.unpackb(payload)
        previous = self.data.get(key)
        self.data[key] = value
        return previous

    def snapshot(self) -> bytes:
        packed: bytes = msgpack.packb(self.data)
        return packed

    def restore(self, data: bytes | memoryview) -> None:
        self.data = msgpack.unpackb(data)

    def leader_duties(self, now_ms: int, became_leader: bool) -> list[bytes]:
        return []

    def leader_query(self, name: str, argument: Any, now_ms: int) -> Any:
        raise ValueError(f"unknown question {name!r}")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def make_configs(tmp_path: Path, snapshot_every: int = 10_000) -> list[ServerConfig]:
    peer_ports = free_ports(3)
    text = ",".join(f"m{i}=http://127.0.0.1:{port}" for i, port in enumerate(peer_ports))
    cluster = parse_initial_cluster(text, "test")
    core = CoreConfig(heartbeat_ticks=1, election_ticks=10)
    return [
        ServerConfig(
            name=f"m{i}",
            data_dir=str(tmp_path / f"m{i}"),
            listen_client_urls=(Url("http", "127.0.0.1", 1),),
            advertise_client_urls=(Url("http", "127.0.0.1", 1),),
            listen_peer_url=cluster[i].peer_url,
            initial_cluster=cluster,
            initial_cluster_token="test",
            tick_ms=20,
            snapshot_every_slots=snapshot_every,
            core=core,
        )
        for i in range(3)
    ]


async def wait_for_leader(members: list[Member], seconds: float = 10.0) -> Member:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        leaders = [m for m in members if m.is_leader]
        if len(leaders) == 1 and all(m.leader_id == leaders[0].member_id for m in members):
            return leaders[0]
        await asyncio.sleep(0.02)
    raise AssertionError("no leader elected")


def test_writes_through_any_member_and_reads_through_followers(tmp_path: Path) -> None:
    async def scenario() -> None:
        configs = make_configs(tmp_path, snapshot_every=5)
        members = [Member(config, DictService()) for config in configs]
        for member in members:
            await member.start()
        leader = await wait_for_leader(members)
        followers = [m for m in members if m is not leader]
        assert await leader.write(msgpack.packb(["a", 1])) is None
        assert await followers[0].write(msgpack.packb(["a", 2])) == 1
        writes = [members[i % 3].write(msgpack.packb([f"k{i}", i])) for i in range(30)]
        await asyncio.gather(*writes)
        await followers[1].read_barrier()
        service = followers[1].service
        assert isinstance(service, DictService)
        assert service.data["a"] == 2
        assert all(service.data[f"k{i}"] == i for i in range(30))
        for member in members:
            await member.stop()
        # Restart all: every acknowledged write is still there (snapshots were taken).
        members = [Member(config, DictService()) for config in configs]
        for member in members:
            await member.start()
        leader = await wait_for_leader(members)
        await leader.read_barrier()
        service = leader.service
        assert isinstance(service, DictService)
        assert service.data["a"] == 2 and service.data["k29"] == 29
        for member in members:
            await member.stop()

    asyncio.run(scenario())


def test_requests_without_a_quorum_time_out_with_etcds_error(tmp_path: Path) -> None:
    """A write and a read at a leader that lost its followers fail after the request timeout
    with etcd's message, and nothing stays waiting."""

    async def scenario() -> None:
        configs = [replace(c, request_timeout_s=0.3) for c in make_configs(tmp_path)]
        members = [Member(config, DictService()) for config in configs]
        for member in members:
            await member.start()
        leader = await wait_for_leader(members)
        for member in members:
            if member is not leader:
                await member.stop()
        started = asyncio.get_running_loop().time()
        with pytest.raises(RequestTimeout, match="etcdserver: request timed out"):
            await asyncio.wait_for(leader.write(msgpack.packb(["lost", 1])), 10)
        waited = asyncio.get_running_loop().time() - started
        assert 0.3 <= waited < 3.0, waited
        if leader.is_leader:  # else it already stepped down, which fails reads at once
            with pytest.raises((RequestTimeout, NoLeader)):
                await asyncio.wait_for(leader.read_barrier(), 10)
        assert not leader._writes and not leader._reads
        await leader.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("wal_fsync", ["loop", "thread"])
def test_a_failed_fsync_stops_the_member_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wal_fsync: str
) -> None:
    """A failed fsync leaves the page cache untrustworthy: the member exits (code 70)
    rather than acknowledge anything, wherever the log is fsynced (--wal-fsync)."""
    exits: list[int] = []
    monkeypatch.setattr(member_module.os, "_exit", exits.append)
    monkeypatch.setattr(member_module.logging, "shutdown", lambda: None)

    async def scenario() -> None:
        config = replace(make_configs(tmp_path)[0], wal_fsync=wal_fsync)
        alone = parse_initial_cluster(f"m0={config.listen_peer_url}", "test")
        member = Member(replace(config, initial_cluster=alone), DictService())
        await member.start()
        await wait_for_leader([member])
        await member.write(msgpack.packb(["before", 1]))

        def broken_sync(self: RealFile) -> None:
            raise OSError(errno.EIO, "injected fsync failure")

        monkeypatch.setattr(RealFile, "sync", broken_sync)
        write = asyncio.ensure_future(member.write(msgpack.packb(["after", 1])))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not exits and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert exits == [member_module.STORAGE_FAILED_EXIT]
        assert not write.done() or write.exception() is not None, "never acknowledged"
        write.cancel()
        with contextlib.suppress(Exception):  # its storage failed: closing may raise
            await member.stop()

    asyncio.run(scenario())


def test_members_take_their_snapshots_at_different_slots(tmp_path: Path) -> None:
    """Each member snapshots at its own phase of the interval: members that all snapshotted
    at the same slot slowed every write of the quorum at once (put p99.9 28 ms against 9-11
    with phases, snapshots every 2,000 slots)."""

    async def scenario() -> None:
        every = 40
        configs = make_configs(tmp_path, snapshot_every=every)
        members = [Member(config, DictService()) for config in configs]
        for member in members:
            await member.start()
        leader = await wait_for_leader(members)
        first: dict[int, int] = {}
        for i in range(every * 3):
            await leader.write(msgpack.packb([f"k{i}", i]))
            for member in members:
                snapshot = member.storage.snapshot_file()
                if snapshot is not None and member.member_id not in first:
                    first[member.member_id] = snapshot.meta.last_slot
        assert len(first) == 3, "every member snapshotted within its first two intervals"
        assert len(set(first.values())) > 1, first
        for member in members:
            await member.stop()

    asyncio.run(scenario())

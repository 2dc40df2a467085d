"""A follower's learned commit slot rides on its next sync (synod.server.deferred_sync):
three member runtimes in one process, real WAL storage, fsyncs counted."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import msgpack
import pytest

from synod.paxos.messages import AcceptReply, Message
from synod.server import deferred_sync
from synod.server.member import Member
from synod.server.members import plan_publish
from synod.storage.fs import RealFile
from tests.integration.test_member_runtime import DictService, make_configs, wait_for_leader

WRITES = 40


def _count_syncs(monkeypatch: pytest.MonkeyPatch, data_dirs: Sequence[str]) -> Counter[str]:
    """fsyncs per member data directory."""
    counts: Counter[str] = Counter()
    real_sync = RealFile.sync

    def counting_sync(self: RealFile) -> None:
        for data_dir in data_dirs:
            if str(self.path).startswith(data_dir):
                counts[data_dir] += 1
        real_sync(self)

    monkeypatch.setattr(RealFile, "sync", counting_sync)
    return counts


async def _started(tmp_path: Path) -> tuple[list[Member], Member, list[Member]]:
    """Three members with a leader, once each has published its client URLs (those
    entries, written at start, would add syncs to the ones a test counts)."""
    members = [Member(config, DictService()) for config in make_configs(tmp_path)]
    for member in members:
        await member.start()
    leader = await wait_for_leader(members)
    for _ in range(500):
        if all(_published(m, member) for m in members for member in members):
            break
        await asyncio.sleep(0.01)
    return members, leader, [m for m in members if m is not leader]


def _published(seen_by: Member, member: Member) -> bool:
    urls = tuple(str(url) for url in member.config.advertise_client_urls)
    return plan_publish(seen_by.table, member.member_id, member.config.name, urls) is None


def test_a_follower_syncs_once_per_lone_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One fsync per write on each follower, for the accepted entry: the commit slot the
    leader sends next is synced with the following entry, as etcd's followers do (before,
    each follower made a second fsync per write for it)."""
    monkeypatch.setattr(deferred_sync, "DELAY_S", 60.0)  # only the next entry syncs it

    async def scenario() -> None:
        members, leader, followers = await _started(tmp_path)
        counts = _count_syncs(monkeypatch, [m.config.data_dir for m in members])
        for i in range(WRITES):
            assert await leader.write(msgpack.packb([f"k{i}", i])) is None
        for follower in followers:
            assert counts[follower.config.data_dir] <= WRITES + 2, counts
        for member in members:
            await member.stop()

    asyncio.run(scenario())


def test_writes_through_a_follower_do_not_wait_for_the_held_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower applies the entries a commit hint reveals at once and answers the writes
    it forwarded, even while the hint's own sync waits (here, for a minute)."""
    monkeypatch.setattr(deferred_sync, "DELAY_S", 60.0)

    async def scenario() -> None:
        members, _, followers = await _started(tmp_path)
        for i in range(WRITES):
            previous = await asyncio.wait_for(followers[0].write(msgpack.packb(["k", i])), 3)
            assert previous == (i - 1 if i else None)
        assert followers[0]._held, "the last commit hint is held for the next sync"
        for member in members:
            await member.stop()

    asyncio.run(scenario())


def test_a_followers_replies_leave_only_once_its_saves_are_durable(tmp_path: Path) -> None:
    """Whatever a follower sends to acknowledge (its accept replies) leaves only when every
    record it wrote is synced, under writes through every member and reads."""

    async def scenario() -> None:
        members, leader, followers = await _started(tmp_path)
        replies_checked = Counter[int]()
        for follower in followers:
            wal = follower.storage.wal
            send = follower.send

            def checked_send(
                messages: Sequence[Message], wal: object = wal, send: object = send
            ) -> None:
                if any(type(m) is AcceptReply for m in messages):
                    assert wal._durable == wal._appended, "a reply before its sync"  # type: ignore[attr-defined]
                    replies_checked[id(wal)] += 1
                send(messages)  # type: ignore[operator]

            follower.send = checked_send  # type: ignore[method-assign]
        for round_ in range(10):
            writes = [members[i % 3].write(msgpack.packb([f"k{i}", round_])) for i in range(12)]
            await asyncio.gather(*writes)
            await followers[round_ % 2].read_barrier()
            await asyncio.sleep(deferred_sync.DELAY_S * 2)  # let held syncs run out
        assert len(replies_checked) == 2 and min(replies_checked.values()) >= 20
        service = followers[1].service
        assert isinstance(service, DictService) and service.data["k11"] == 9
        del leader
        for member in members:
            await member.stop()

    asyncio.run(scenario())

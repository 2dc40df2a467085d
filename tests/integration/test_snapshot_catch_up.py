"""A lagging member catches up through a multi-chunk snapshot although its connection to
the leader is cut in the middle of the transfer (issue 3: "a lagging member receives the
snapshot in chunks, each checked, resumable after a broken connection").

Method: three member runtimes in this process over real files. One follower is stopped;
the others take a few hundred writes and compact their logs past it. The follower restarts;
the leader streams its snapshot file in 8 KiB chunks. Once the follower holds 20 chunks,
both directions of the link are dropped (the peer transport forgets the peer, losing what
was queued) and restored half a second later. The follower must end with the leader's state, and the
transfer must have resumed where it stopped: no chunk after the cut starts before what the
follower had acknowledged, and little is sent twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack

from synod.paxos.config import Config as CoreConfig
from synod.server.member import Member
from synod.server.snapshot_transfer import SNAPSHOT_CHUNK
from tests.integration.test_member_runtime import DictService, make_configs, wait_for_leader

WRITES = 300
VALUE = "x" * 2000
CHUNK_BYTES = 8192
CUT_AFTER_CHUNKS = 20


def _cut(first: Member, second: Member) -> list[tuple[Member, dict[int, tuple[str, int]]]]:
    """Drop the connections between two members; returns what restores them."""
    saved = []
    for member, other in ((first, second), (second, first)):
        book = {peer: member.transport.address_of(peer) for peer in member.transport.peer_ids}
        saved.append((member, book))
        member.transport.set_peers({p: a for p, a in book.items() if p != other.member_id})
    return saved


async def _until(condition: Any, seconds: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_a_lagging_member_catches_up_through_a_cut_snapshot_transfer(tmp_path: Path) -> None:
    async def scenario() -> None:
        core = CoreConfig(heartbeat_ticks=1, election_ticks=50)  # no elections under load
        configs = [replace(c, core=core) for c in make_configs(tmp_path, snapshot_every=50)]
        members = [Member(config, DictService()) for config in configs]
        for member in members:
            await member.start()
        leader = await wait_for_leader(members)
        lagging_index = next(i for i, m in enumerate(members) if m is not leader)
        await members[lagging_index].stop()
        for index in range(WRITES):
            await leader.write(msgpack.packb([f"k{index}", f"{index}-{VALUE}"]))
        settled = leader.machine.applied_slot - 50
        await _until(lambda: leader._last_snapshot_slot >= settled, 30, "the leader to compact")
        assert leader.node._log.first_slot > 60

        chunk_offsets: list[tuple[tuple[int, ...], int]] = []
        restore: list[tuple[Member, dict[int, tuple[str, int]]]] = []
        cut_at: list[tuple[int, int]] = []
        real_send = leader.snapshot_sender.send
        lagging = Member(configs[lagging_index], DictService())

        def send(peer: int, items: list[Any]) -> None:
            chunks = [(tuple(item[1]), item[2]) for item in items if item[0] == SNAPSHOT_CHUNK]
            chunk_offsets.extend(chunks)
            real_send(peer, items)
            progress = lagging.snapshot_receiver.progress()
            newest = leader.storage.snapshot_file()
            if (
                not restore
                and progress
                and newest is not None
                and progress[0][0] == newest.meta.last_slot
                and progress[1] >= CUT_AFTER_CHUNKS * CHUNK_BYTES
            ):
                restore.extend(_cut(leader, lagging))
                cut_at.append((len(chunk_offsets), progress[1]))

        leader.snapshot_sender.send = send
        leader.snapshot_sender.chunk_bytes = CHUNK_BYTES
        await lagging.start()
        members[lagging_index] = lagging
        await _until(lambda: restore, 30, "the transfer to pass the cut point")
        await asyncio.sleep(0.5)
        for member, book in restore:
            member.transport.set_peers(book)
        service = lagging.service
        assert isinstance(service, DictService)
        await _until(lambda: service.data.get(f"k{WRITES - 1}"), 60, "the follower to catch up")
        await lagging.read_barrier()
        leader_service = leader.service
        assert isinstance(leader_service, DictService)
        assert service.data == leader_service.data
        assert leader.snapshot_sender.completed >= 1
        sent_at_cut, held_at_cut = cut_at[0]
        key = chunk_offsets[sent_at_cut - 1][0]
        # The cut is armed only inside a transfer of the leader's newest snapshot: an older
        # one (offered while the follower was down, resumed when it is back) may be given
        # up for the newest after a cut, which is right but is not what this test checks.
        assert key[2] > held_at_cut >= CUT_AFTER_CHUNKS * CHUNK_BYTES, "cut mid-transfer"
        after_cut = [offset for k, offset in chunk_offsets[sent_at_cut:] if k == key]
        assert after_cut, "the same snapshot went on after the cut"
        assert min(after_cut) >= held_at_cut, "resumed, not started over"
        assert len(after_cut) < 1.2 * (key[2] - held_at_cut) / CHUNK_BYTES + 8
        for member in members:
            await member.stop()

    asyncio.run(scenario())

"""Questions only the leader answers (`Member.ask_leader`; the lease keep-alive rides on it),
asked of three member runtimes in one process over real storage.

Goal: any member gets the leader's answer, given after a read round and after everything
committed before the question is applied there; a question the leader refuses comes back
as an error to the member that asked, without breaking anything for the next one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgpack
import pytest

from synod.server.errors import NoLeader
from synod.server.member import Member
from tests.integration.test_member_runtime import DictService, make_configs, wait_for_leader


class AnsweringService(DictService):
    """Answers "who" with its member's name and the keys it holds, refuses the rest."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.asked_at: list[int] = []

    def leader_query(self, name: str, argument: Any, now_ms: int) -> Any:
        if name != "who":
            raise ValueError(f"unknown question {name!r}")
        self.asked_at.append(now_ms)
        return [self.name, argument, sorted(self.data)]


def test_every_member_gets_the_leaders_answer_and_refusals_come_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        configs = make_configs(tmp_path)
        services = [AnsweringService(config.name) for config in configs]
        members = [Member(config, services[i]) for i, config in enumerate(configs)]
        for member in members:
            await member.start()
        try:
            leader = await wait_for_leader(members)
            leader_name = leader.config.name
            followers = [member for member in members if member is not leader]
            await followers[0].write(msgpack.packb(["written-through-a-follower", 1]))
            for index, member in enumerate(members):
                answer = await member.ask_leader("who", index)
                assert answer == [leader_name, index, ["written-through-a-follower"]]
            leader_service = services[members.index(leader)]
            assert len(leader_service.asked_at) == 3
            assert all(not s.asked_at for s in services if s is not leader_service)
            for asking in (followers[1], leader):
                with pytest.raises(NoLeader, match="bad query"):
                    await asking.ask_leader("what", 0)
            assert (await followers[1].ask_leader("who", 9))[0] == leader_name
        finally:
            for member in members:
                await member.stop()

    asyncio.run(scenario())

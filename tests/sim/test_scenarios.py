"""Directed scenarios: interleavings too narrow for random faults to find often, scripted on
the simulator so that a core which breaks the rule they protect fails at once.

Each scenario builds a world with fixed knobs (no random faults), then cuts links, tears a
save and restarts members at chosen moments, and lets the simulator's invariants judge.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from synod.paxos.config import Config
from synod.paxos.node import Role
from synod.paxos.types import NodeId
from synod.sim.faults import FaultKnobs
from synod.sim.invariants import SafetyViolation
from synod.sim.kvmachine import Command
from synod.sim.storage import MemoryStorage
from synod.sim.world import RunOptions, World

STEP_US = 1_000
WAIT_US_MAX = 2_000_000


def _quiet_world(seed: int) -> World:
    """Three members, no pre-vote and no check-quorum (so a cut-off leader keeps leading),
    record-level storage, no random faults, one client."""
    options = RunOptions(seed, 3, "calm")
    drawn = World(options).knobs
    config = Config(heartbeat_ticks=1, election_ticks=10, pre_vote=False, check_quorum=False)
    knobs = replace(drawn, config=config, faults=FaultKnobs(), client_count=1, storage="model")
    return World(options, knobs)


def _wait_for(world: World, condition: object, what: str) -> None:
    assert callable(condition)
    deadline_us = world.loop.now_us + WAIT_US_MAX
    while not condition():
        assert world.loop.now_us < deadline_us, f"scenario stuck waiting for {what}"
        world.run_until(world.loop.now_us + STEP_US)


def _role(world: World, member: NodeId) -> Role | None:
    node = world.members[member].node
    return None if node is None else node.role


SCENARIO_CLIENT = 1_000  # not one of the world's clients: its writes have no waiter


def _write(world: World, member: NodeId, value: str, seq: int) -> None:
    """A write straight into one member's core, as a client request would arrive."""
    command = Command(SCENARIO_CLIENT, seq, "put", "k0", value).encode()
    world.members[member].propose(SCENARIO_CLIENT, seq, command)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_promise_lost_in_a_torn_save_was_never_sent(seed: int) -> None:
    """An acceptor's promise must be durable before the candidate hears it (DESIGN.md:
    "acceptor state is durable before any reply that reveals it").

    Method: leader L is cut off from X (both ways) and from acceptor Y (L -> Y only). X
    campaigns; Y's save of its promise to X is torn and Y dies. If the promise had gone out
    before the save, X now leads with a quorum (X, Y) while Y restarts remembering only L's
    ballot. L (still leading: no check-quorum) then reaches Y first and gets a write chosen
    at the next slot with quorum (L, Y), and X, once Y hears it, gets another value chosen at
    the same slot with quorum (X, Y). A core that persists first never lets X lead.
    """
    world = _quiet_world(seed)
    world.start()
    _wait_for(world, lambda: world.leader_id() is not None, "a first leader")
    leader = world.leader_id()
    assert leader is not None
    x, y = (member for member in world.ids if member != leader)
    world.tick_us[y] = 20 * world.tick_us[y]  # Y's election timer is slow: X campaigns first
    network = world.network
    network.cut(leader, x)
    network.cut(x, leader)
    network.cut(leader, y)
    storage = world.members[y].storage
    assert isinstance(storage, MemoryStorage)
    storage.tear_next_promise = True
    _wait_for(world, lambda: not world.members[y].up, "Y's torn promise save")
    network.cut(x, y)  # X's messages stay away from Y until L has had its turn
    network.heal_partitions()
    network.cut(leader, x)
    network.cut(x, leader)
    network.cut(x, y)
    world.run_until(world.loop.now_us + 100)
    if not world.members[y].up:
        world.members[y].start()
    try:
        if _role(world, leader) is Role.LEADER:
            _write(world, leader, "from the old leader", 1)
        world.run_until(world.loop.now_us + 50_000)
        if _role(world, x) is Role.LEADER:
            _write(world, x, "from the new leader", 2)
        network.heal_partitions()
        world.run_until(world.loop.now_us + 200_000)
    except SafetyViolation as violation:
        pytest.fail(f"{violation.prop}: {violation.detail}")

"""Benchmark: commands committed per second by three cores, no faults, zero latency.

Three real `Node`s under the real `Driver`, storage that keeps nothing, a network that
delivers at once, 100-byte commands proposed in bursts (batched into slots). Measures the
core and driver alone: the target is that they are never the server's bottleneck
(>= 300,000 commands/s on one core). `--profile` prints the top entries of cProfile.

    python bench/core.py [--commands 2000000] [--burst 2000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import time
from collections.abc import Sequence

from synod.paxos.config import Config
from synod.paxos.messages import Message
from synod.paxos.node import Node, Restore
from synod.paxos.ready import SnapshotInstall
from synod.paxos.types import Entry, HardState, NodeId, Slot, SnapshotMeta
from synod.server.driver import Driver


class NullStorage:
    def save(
        self,
        snapshot: SnapshotInstall | None,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        sync: bool,
    ) -> None:
        return None


class CountingMachine:
    def __init__(self) -> None:
        self.commands = 0

    def apply(self, entry: Entry) -> None:
        self.commands += len(entry.commands)

    def snapshot(self) -> tuple[SnapshotMeta, bytes]:
        raise NotImplementedError("the benchmark never compacts")

    def restore(self, meta: SnapshotMeta, data: bytes) -> None:
        raise NotImplementedError("the benchmark never compacts")


class Wire:
    def __init__(self) -> None:
        self.queue: list[Message] = []

    def send(self, messages: Sequence[Message]) -> None:
        self.queue.extend(messages)


def run(commands_total: int, burst: int) -> tuple[float, int]:
    ids = [NodeId(1), NodeId(2), NodeId(3)]
    config = Config(batch_commands_max=burst, uncommitted_slots_max=1 << 20)
    restore = Restore.bootstrap(ids)
    wire = Wire()
    nodes: dict[NodeId, Node] = {}
    drivers: dict[NodeId, Driver] = {}
    machines: dict[NodeId, CountingMachine] = {}
    for node_id in ids:
        nodes[node_id] = Node(node_id, config, random.Random(node_id), restore)
        machines[node_id] = CountingMachine()
        drivers[node_id] = Driver(
            nodes[node_id], NullStorage(), wire, machines[node_id], lambda _: None, lambda _: None
        )

    def pump() -> None:
        for _ in range(1000):
            for node_id in ids:
                drivers[node_id].run()
            if not wire.queue:
                return
            batch, wire.queue = wire.queue, []
            for message in batch:
                nodes[message.dst].step(message)

    leader = nodes[NodeId(1)]
    for _ in range(4 * config.election_ticks):
        leader.tick()
        pump()
        if leader.leader == leader.node_id:
            break
    assert leader.leader == leader.node_id, "no leader elected"
    command = bytes(100)
    burst_commands = [command] * burst
    started = time.perf_counter()
    proposed = 0
    while proposed < commands_total:
        leader.propose(burst_commands)
        proposed += burst
        pump()
    for _ in range(3):
        for node in nodes.values():
            node.tick()
        pump()
    elapsed = time.perf_counter() - started
    applied = min(machine.commands for machine in machines.values())
    assert applied == proposed, f"applied {applied} of {proposed}"
    assert all(node.commit_slot == Slot(leader.commit_slot) for node in nodes.values())
    return elapsed, applied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=2_000_000)
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
    elapsed, applied = run(args.commands, args.burst)
    if args.profile:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    rate = applied / elapsed
    print(f"3 cores, zero latency, burst {args.burst}, 100-byte commands")
    print(f"committed and applied on all members: {applied} commands in {elapsed:.2f} s")
    verdict = "met" if rate >= 300_000 else "NOT met"
    print(f"commands/s: {rate:,.0f}  (target >= 300,000: {verdict})")


if __name__ == "__main__":
    main()

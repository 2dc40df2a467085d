"""A hand-driven cluster of real cores under the real driver, for scenario tests.

Messages wait in a queue until the test delivers them; links can be cut one way or both.
Nothing here is random except the seeded election timeouts, and no clock exists: the test
ticks members by hand.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import msgpack

from synod.paxos.config import Config
from synod.paxos.messages import Message
from synod.paxos.node import Node, Restore, Role
from synod.paxos.ready import SnapshotInstall
from synod.paxos.types import Entry, HardState, Membership, NodeId, Slot, SnapshotMeta
from synod.server.driver import Driver

TEST_CONFIG = Config(heartbeat_ticks=1, election_ticks=10)


@dataclass
class MemoryStorage:
    hard_state: HardState = field(default_factory=HardState)
    snapshot_meta: SnapshotMeta | None = None
    snapshot_data: bytes = b""
    entries: dict[int, Entry] = field(default_factory=dict)
    saves: int = 0
    synced_hard_state: HardState = field(default_factory=HardState)

    def save(
        self,
        snapshot: SnapshotInstall | None,
        entries: Sequence[Entry],
        hard_state: HardState | None,
        sync: bool,
    ) -> None:
        self.saves += 1
        if snapshot is not None:
            self.snapshot_meta = snapshot.meta
            self.snapshot_data = snapshot.data
            self.entries = {}
        for entry in entries:
            self.entries[entry.slot] = entry
        if hard_state is not None:
            self.hard_state = hard_state
        if sync:
            self.synced_hard_state = self.hard_state

    def lose_unsynced(self) -> None:
        """A crash: a hard state saved without sync may not have reached the disk."""
        self.hard_state = self.synced_hard_state

    def keep_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        self.snapshot_meta = meta
        self.snapshot_data = data
        self.entries = {s: e for s, e in self.entries.items() if s > meta.last_slot}

    def restore(self, bootstrap: Restore) -> Restore:
        meta = self.snapshot_meta or bootstrap.snapshot
        slots = sorted(s for s in self.entries if s > meta.last_slot)
        return Restore(self.hard_state, meta, tuple(self.entries[s] for s in slots))


class ListMachine:
    """Applies commands by appending them: equal lists mean equal state."""

    def __init__(self, membership: Membership) -> None:
        self.commands: list[bytes] = []
        self.last_slot = Slot(0)
        self.membership = membership

    def apply(self, entry: Entry) -> None:
        assert entry.slot == self.last_slot + 1, "entries are applied in order, once"
        self.commands.extend(entry.commands)
        self.last_slot = entry.slot

    def snapshot(self) -> tuple[SnapshotMeta, bytes]:
        return SnapshotMeta(self.last_slot, self.membership), msgpack.packb(self.commands)

    def restore(self, meta: SnapshotMeta, data: bytes) -> None:
        self.commands = list(msgpack.unpackb(data))
        self.last_slot = meta.last_slot


class Member:
    def __init__(self, node_id: NodeId, cluster: Cluster, config: Config) -> None:
        self.node_id = node_id
        self.cluster = cluster
        self.config = config
        self.storage = MemoryStorage()
        self.reads_served: list[tuple[int, list[bytes]]] = []
        self.reads_failed: list[int] = []
        self.start()

    def start(self) -> None:
        restore = self.storage.restore(self.cluster.bootstrap)
        self.node = Node(self.node_id, self.config, random.Random(self.node_id), restore)
        self.machine = ListMachine(restore.snapshot.membership)
        if self.storage.snapshot_meta is not None:
            self.machine.restore(self.storage.snapshot_meta, self.storage.snapshot_data)
        self.driver = Driver(
            self.node,
            self.storage,
            self,
            self.machine,
            lambda read_id: self.reads_served.append((read_id, list(self.machine.commands))),
            self.reads_failed.append,
        )

    def send(self, messages: Sequence[Message]) -> None:
        self.cluster.in_flight.extend(messages)


class Cluster:
    def __init__(self, size: int, config: Config = TEST_CONFIG, spares: int = 0) -> None:
        """`size` voters; `spares` more members outside the configuration until added."""
        voters = [NodeId(i) for i in range(1, size + 1)]
        self.bootstrap = Restore.bootstrap(voters)
        self.in_flight: list[Message] = []
        self.cut: set[tuple[int, int]] = set()
        self.down: set[int] = set()
        ids = [NodeId(i) for i in range(1, size + spares + 1)]
        self.members = {i: Member(i, self, config) for i in ids}

    def node(self, node_id: int) -> Node:
        return self.members[NodeId(node_id)].node

    def member(self, node_id: int) -> Member:
        return self.members[NodeId(node_id)]

    def run_drivers(self) -> None:
        for node_id in sorted(self.members):
            if node_id not in self.down:
                self.members[node_id].driver.run()
                self.members[node_id].node.check_invariants()

    def deliver_once(self) -> None:
        """Run the drivers, then deliver only the messages in flight now (one hop)."""
        self.run_drivers()
        batch, self.in_flight = self.in_flight, []
        for message in batch:
            if (message.src, message.dst) in self.cut or message.dst in self.down:
                continue
            if message.src not in self.down:
                self.members[message.dst].node.step(message)
        self.run_drivers()

    def deliver(self, rounds_max: int = 200) -> None:
        """Deliver messages (dropping those on cut links or to down members) until quiet."""
        for _ in range(rounds_max):
            self.run_drivers()
            if not self.in_flight:
                return
            batch, self.in_flight = self.in_flight, []
            for message in batch:
                if (message.src, message.dst) in self.cut or message.dst in self.down:
                    continue
                if message.src in self.down:
                    continue
                self.members[message.dst].node.step(message)
        raise AssertionError("messages kept flowing: no quiescence")

    def tick(self, node_ids: Iterable[int], times: int = 1) -> None:
        for _ in range(times):
            for node_id in node_ids:
                if node_id not in self.down:
                    self.node(node_id).tick()
            self.deliver()

    def tick_all(self, times: int = 1) -> None:
        self.tick(sorted(self.members), times)

    def elect(self, node_id: int) -> None:
        """Let `node_id` time out alone and win.

        The others are aged to the end of their leader lease (as if they had not heard from a
        leader for an election timeout) without reaching their own randomized timeouts.
        """
        for other_id, other in self.members.items():
            if other_id != node_id and other.node.role is not Role.LEADER:
                other.node._election_elapsed = max(
                    other.node._election_elapsed, other.config.election_ticks
                )
        for _ in range(4 * TEST_CONFIG.election_ticks):
            self.node(node_id).tick()
            self.deliver()
            if self.node(node_id).role is Role.LEADER:
                return
        raise AssertionError(f"member {node_id} did not become leader")

    def isolate(self, node_id: int) -> None:
        for other in self.members:
            if other != node_id:
                self.cut.add((node_id, other))
                self.cut.add((other, node_id))

    def heal(self) -> None:
        self.cut.clear()

    def crash(self, node_id: int) -> None:
        self.down.add(node_id)
        self.member(node_id).storage.lose_unsynced()

    def restart(self, node_id: int) -> None:
        self.down.discard(node_id)
        self.member(node_id).start()

    def propose(self, node_id: int, *commands: bytes) -> None:
        self.node(node_id).propose(list(commands))
        self.deliver()

    def applied(self, node_id: int) -> list[bytes]:
        return self.member(node_id).machine.commands

    def leaders(self) -> list[int]:
        return [
            i
            for i, m in sorted(self.members.items())
            if i not in self.down and m.node.role is Role.LEADER
        ]

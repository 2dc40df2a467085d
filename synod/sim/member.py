"""One simulated member: a real core under the real driver, over simulated storage, network
and state machine, with its crash and restart life cycle.

Owns what a member process owns and loses on a crash: the `Node`, the `Driver`, the state
machine, and the tables of client operations waiting on it (writes by (client, seq), reads by
read id). Only the storage outlives an incarnation. A restart reads the storage's
durable state back, restores the state machine from the stored snapshot and builds a new
`Node` from `Restore`, exactly as a real process would after a power cut.

A `SimulatedCrash` raised by the storage inside a save ends the incarnation on the spot: the
driver's remaining work for that Ready (the messages that waited for the persist, the
applies, the reads) never happens.

Invariants: a down member has no node, driver or waiting operations; every input reaches the
core only while the member is up; the driver runs after every input.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from synod.paxos.config import Config
from synod.paxos.messages import Message
from synod.paxos.node import Node
from synod.paxos.types import Entry, Membership, NodeId, SnapshotMeta
from synod.server.driver import Driver
from synod.sim.kvmachine import KeyValueMachine, Outcome
from synod.sim.network import Network
from synod.sim.storage import MemberStorage, SimulatedCrash

WAITING_MAX = 100_000


class MemberObserver(Protocol):
    """What the simulator watches on a member (invariants, client answers, life cycle)."""

    def on_applied(
        self, member: Member, entry: Entry, outcomes: tuple[Outcome, ...], machine: KeyValueMachine
    ) -> None: ...

    def on_restored(self, member: Member, meta: SnapshotMeta, machine: KeyValueMachine) -> None: ...

    def on_write_answered(self, member: Member, client: int, seq: int, result: object) -> None: ...

    def on_read_answered(
        self, member: Member, client: int, seq: int, value: str | None
    ) -> None: ...

    def on_read_failed(self, member: Member, client: int, seq: int) -> None: ...

    def on_crashed(self, member: Member, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class _WaitingRead:
    client: int
    seq: int
    key: str


class _ObservedMachine:
    """The driver's state machine: the KV machine, with every apply and restore reported."""

    def __init__(self, member: Member, machine: KeyValueMachine) -> None:
        self._member = member
        self.machine = machine

    def apply(self, entry: Entry) -> None:
        outcomes = self.machine.execute(entry)
        self._member.applied(entry, outcomes)

    def snapshot(self) -> tuple[SnapshotMeta, bytes]:
        return self.machine.snapshot()

    def restore(self, meta: SnapshotMeta, data: bytes) -> None:
        self.machine.restore(meta, data)
        self._member.restored(meta)


class Member:
    """A member process that can crash and restart; inputs are ignored while it is down."""

    def __init__(
        self,
        node_id: NodeId,
        config: Config,
        core_rng: Callable[[int], random.Random],
        storage: MemberStorage,
        network: Network,
        observer: MemberObserver,
    ) -> None:
        self.node_id = node_id
        self.config = config
        self.storage = storage
        self.incarnation = 0
        self.node: Node | None = None
        self._core_rng = core_rng
        self._network = network
        self._observer = observer
        self._driver: Driver | None = None
        self._machine: _ObservedMachine | None = None
        self._writes: dict[tuple[int, int], None] = {}
        self._reads: dict[int, _WaitingRead] = {}

    @property
    def up(self) -> bool:
        return self.node is not None

    @property
    def machine(self) -> KeyValueMachine:
        assert self._machine is not None, "a down member has no state machine"
        return self._machine.machine

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Boot (or reboot) from durable storage."""
        assert not self.up
        self.incarnation += 1
        recovered = self.storage.recover()
        machine = KeyValueMachine(recovered.restore.snapshot.membership)
        machine.restore(recovered.restore.snapshot, recovered.snapshot_data)
        self._machine = _ObservedMachine(self, machine)
        self._observer.on_restored(self, recovered.restore.snapshot, machine)
        rng = self._core_rng(self.incarnation)
        self.node = Node(self.node_id, self.config, rng, recovered.restore)
        self._driver = Driver(
            self.node,
            self.storage,
            self._network,
            self._machine,
            self._on_read,
            self._on_read_failed,
        )
        self._run()

    def crash(self, reason: str) -> None:
        """Kill the process: everything but durable storage is gone."""
        assert self.up
        self.storage.crash()
        self._die(reason)

    def _die(self, reason: str) -> None:
        self.node = None
        self._driver = None
        self._machine = None
        self._writes.clear()
        self._reads.clear()
        self._observer.on_crashed(self, reason)

    # -- inputs -----------------------------------------------------------------------------

    def tick(self) -> None:
        assert self.node is not None
        self.node.tick()
        self._run()

    def receive(self, message: Message) -> None:
        assert self.node is not None
        assert message.dst == self.node_id
        self.node.step(message)
        self._run()

    def propose(self, client: int, seq: int, command: bytes) -> None:
        """Hand a write to the core; raises NotLeader or ProposalDropped as the core does."""
        assert self.node is not None
        self.node.propose([command])
        assert len(self._writes) < WAITING_MAX, "too many writes waiting on one member"
        self._writes[(client, seq)] = None
        self._run()

    def read(self, client: int, seq: int, key: str, read_id: int) -> None:
        """Start a read-index read; raises NotLeader as the core does."""
        assert self.node is not None
        assert read_id not in self._reads
        self.node.read_index(read_id)
        assert len(self._reads) < WAITING_MAX, "too many reads waiting on one member"
        self._reads[read_id] = _WaitingRead(client, seq, key)
        self._run()

    def transfer_leadership(self, target: NodeId) -> None:
        """Ask the core to hand leadership to `target`; raises as the core does."""
        assert self.node is not None
        self.node.transfer_leadership(target)
        self._run()

    def change_membership(self, membership: Membership) -> None:
        """Ask the core to change the configuration; raises as the core does."""
        assert self.node is not None
        self.node.change_membership(membership)
        self._run()

    def compact(self) -> bool:
        """Snapshot the state machine, keep it durably, and let the core drop the log below."""
        assert self.node is not None
        meta, data = self.machine.snapshot()
        if meta.last_slot <= self.storage.snapshot_slot:
            return False
        self.storage.save_compaction_snapshot(meta, data)
        self.node.compact(meta)
        self._run()
        return True

    def _run(self) -> None:
        assert self._driver is not None
        try:
            self._driver.run()
        except SimulatedCrash as crash:
            self._die(str(crash))

    # -- what the driver calls back ---------------------------------------------------------

    def applied(self, entry: Entry, outcomes: tuple[Outcome, ...]) -> None:
        self._observer.on_applied(self, entry, outcomes, self.machine)
        for outcome in outcomes:
            key = (outcome.client, outcome.seq)
            if key in self._writes:
                del self._writes[key]
                self._observer.on_write_answered(self, outcome.client, outcome.seq, outcome.result)

    def restored(self, meta: SnapshotMeta) -> None:
        self._observer.on_restored(self, meta, self.machine)

    def _on_read(self, read_id: int) -> None:
        waiting = self._reads.pop(read_id, None)
        if waiting is None:
            return
        value = self.machine.get(waiting.key)
        self._observer.on_read_answered(self, waiting.client, waiting.seq, value)

    def _on_read_failed(self, read_id: int) -> None:
        waiting = self._reads.pop(read_id, None)
        if waiting is not None:
            self._observer.on_read_failed(self, waiting.client, waiting.seq)

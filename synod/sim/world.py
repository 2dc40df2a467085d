"""One simulated run: members, network, clients and faults from one seed; a safety phase with
faults, then a liveness phase after healing; invariants after every event, linearizability
of the client history at the end.

The world is the hub: it routes messages from the network to members, client requests to
members (the `Door`), member answers back to clients, member life-cycle events to the fault
bookkeeping, and every apply to the `SafetyMonitor`. It owns the per-member tick timers,
each with its own drifting period, and the two phases:

- safety: clients run and the `FaultScheduler` injects the seed's faults for `safety_us`;
- liveness: partitions and clogs are removed, loss and duplication turned off, crashed
  members restarted and storage made reliable. Within `liveness_us_max` a leader must exist,
  every client must complete an operation called after the heal, and once clients stop every
  member must have applied everything the leader committed. Otherwise: a liveness violation.

Invariants: the run is a pure function of its options (the seed above all); the number of
events is bounded by `events_max`.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field

from synod.paxos.errors import MembershipChangeRefused, NotLeader, ProposalDropped
from synod.paxos.messages import Message
from synod.paxos.node import Role, TransferRefused
from synod.paxos.types import Ballot, Entry, Membership, NodeId, SnapshotMeta
from synod.sim.client import Answer, Client, Request, Submitted
from synod.sim.disk import WalStorage
from synod.sim.faults import TICK_US, FaultScheduler, Knobs, draw_knobs
from synod.sim.history import History, OpKind
from synod.sim.invariants import SafetyMonitor, SafetyViolation
from synod.sim.kvmachine import Command, KeyValueMachine, Outcome
from synod.sim.linearizability import check_history
from synod.sim.loop import EventLoop
from synod.sim.member import Member
from synod.sim.network import Network
from synod.sim.rng import SeededStreams
from synod.sim.storage import MemberStorage, MemoryStorage

EVENTS_MAX = 20_000_000
LIVENESS_CHECK_EVERY_US = 5_000
SAFETY_US_DEFAULT = 2_000_000
LIVENESS_US_MAX_DEFAULT = 5_000_000
MEMBERS_MAX = 9
RESTART_US_DEFAULT = 200_000
SPARE_MEMBERS = 2


@dataclass(frozen=True, slots=True)
class RunOptions:
    seed: int
    nodes: int = 3
    profile: str = "swarm"
    safety_us: int = SAFETY_US_DEFAULT
    liveness_us_max: int = LIVENESS_US_MAX_DEFAULT
    reconfig: bool = False

    def __post_init__(self) -> None:
        assert self.seed >= 0
        assert 1 <= self.nodes <= MEMBERS_MAX - (SPARE_MEMBERS if self.reconfig else 0)
        assert self.safety_us >= 0
        assert self.liveness_us_max >= 1

    def reproduce_command(self) -> str:
        command = f"synod sim --seed {self.seed} --runs 1 --nodes {self.nodes}"
        if self.profile != "swarm":
            command += f" --faults {self.profile}"
        if self.safety_us != SAFETY_US_DEFAULT:
            command += f" --seconds {self.safety_us / 1_000_000:g}"
        if self.reconfig:
            command += " --reconfig"
        return command


@dataclass(frozen=True, slots=True)
class RunResult:
    options: RunOptions
    knobs: Knobs
    ok: bool
    violation: str | None
    detail: str
    trace: tuple[str, ...]
    events: int
    simulated_us: int
    operations_checked: int
    inconclusive: bool
    faults: dict[str, int] = field(default_factory=dict)
    digest: str = ""

    def report(self) -> str:
        """The failure report: property, detail, the last events, the reproduce command."""
        lines = [f"seed {self.options.seed}: {self.violation}", self.detail, "", "last events:"]
        lines += ["  " + line for line in self.trace]
        lines += ["", "knobs:"] + ["  " + line for line in self.knobs.describe()]
        lines += ["", "reproduce: " + self.options.reproduce_command()]
        return "\n".join(lines)


class LivenessViolation(Exception):
    pass


class World:
    """Builds every component of a run from the options and runs it to a verdict."""

    def __init__(self, options: RunOptions, knobs: Knobs | None = None) -> None:
        """`knobs` replaces the seed's drawn configuration (directed scenarios only)."""
        self.options = options
        self.streams = SeededStreams(options.seed)
        drawn = draw_knobs(
            self.streams.stream("knobs"),
            options.nodes,
            options.profile,
            self.streams.stream("knobs-later"),
        )
        self.knobs = drawn if knobs is None else knobs
        self.loop = EventLoop(quiet_labels=("tick ", "liveness check"))
        # With reconfiguration on, spare members start outside the configuration (they learn
        # it from the leader once added) and the membership changes during the run.
        self.initial_voters = tuple(NodeId(i) for i in range(1, options.nodes + 1))
        spares = SPARE_MEMBERS if options.reconfig else 0
        self.ids = tuple(NodeId(i) for i in range(1, options.nodes + spares + 1))
        self.network = Network(
            self.loop, self.streams.stream("network"), self.ids, self.knobs.network, self._deliver
        )
        self.monitor = SafetyMonitor()
        self.history = History()
        self.members = {member_id: self._build_member(member_id) for member_id in self.ids}
        self.tick_us = {member_id: TICK_US for member_id in self.ids}
        self._life_rng = self.streams.stream("life")
        for member_id in self.ids:
            self.redraw_tick(member_id)
        self.scheduler = FaultScheduler(
            self.loop,
            self.streams.stream("faults"),
            self.network,
            self,
            self.knobs.faults,
            self.streams.stream("faults-transfer"),
            self.streams.stream("faults-leader"),
        )
        self.clients = [
            Client(
                index,
                self.loop,
                self.streams.stream(f"client-{index}"),
                self.ids,
                self,
                self.history,
                self.knobs.clients,
            )
            for index in range(self.knobs.client_count)
        ]
        self._read_ids = 0
        self._healed_us: int | None = None
        self._clients_stopped = False
        self._finished = False
        self.restarts = 0
        self.leaders: list[tuple[int, NodeId, Ballot]] = []
        self.life_events: list[tuple[int, str]] = []

    def _build_member(self, member_id: NodeId) -> Member:
        membership = Membership(self.initial_voters)
        kind = WalStorage if self.knobs.storage == "wal" else MemoryStorage
        storage: MemberStorage = kind(
            self.streams.stream(f"disk-{member_id}"),
            membership,
            KeyValueMachine(membership).encode_state(),
            self.knobs.faults.crash_during_save_probability,
        )

        return Member(
            member_id,
            self.knobs.config,
            lambda incarnation: self.streams.stream(f"core-{member_id}-{incarnation}"),
            storage,
            self.network,
            self,
        )

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> RunResult:
        violation: str | None = None
        detail = ""
        try:
            self.start()
            self.run_until(self.options.safety_us)
            self._heal()
            self.run_until(self.options.safety_us + self.options.liveness_us_max)
            if not self._finished:
                raise LivenessViolation(self._liveness_shortfall())
            self.monitor.check_acknowledged_writes()
        except SafetyViolation as error:
            violation, detail = f"safety violation ({error.prop})", error.detail
        except LivenessViolation as error:
            violation, detail = "liveness violation", str(error)
        except Exception as error:  # an assertion in the core, the driver or the simulator
            violation = f"crash: {type(error).__name__}: {error}"
            detail = "".join(traceback.format_exception(error)[-12:])
        checked, inconclusive = 0, False
        if violation is None:
            verdict = check_history(self.history.operations())
            checked, inconclusive = verdict.operations_checked, verdict.inconclusive
            if not verdict.ok and not verdict.inconclusive:
                violation, detail = "linearizability violation", verdict.explanation
        return RunResult(
            self.options,
            self.knobs,
            violation is None,
            violation,
            detail,
            tuple(self.loop.trace()),
            self.loop.events_fired,
            self.loop.now_us,
            checked,
            inconclusive,
            self._fault_counts(),
            self.loop.digest(),
        )

    def start(self) -> None:
        """Boot the members, start the clients and the fault scheduler (`run` calls this)."""
        for member_id in self.ids:
            self._boot(member_id)
        for client in self.clients:
            client.start()
        self.scheduler.start()
        if self.options.reconfig:
            rng = self.streams.stream("reconfig")
            every_us = rng.choice((10_000, 50_000, 150_000))
            self._schedule_reconfig(every_us, rng)

    # -- reconfiguration --------------------------------------------------------------------

    def _schedule_reconfig(self, every_us: int, rng: random.Random) -> None:
        def fire() -> None:
            if self._healed_us is not None:
                return
            self.reconfigure(rng)
            self._schedule_reconfig(every_us, rng)

        self.loop.schedule(rng.randint(1, 2 * every_us), "reconfigure", fire)

    def reconfigure(self, rng: random.Random) -> bool:
        """Ask the leader for one random membership change (any kind, the leader included)."""
        leader = self._leader()
        if leader is None or leader.node is None:
            return False
        current = leader.node.membership
        voters, learners = set(current.voters), set(current.learners)
        outsiders = sorted(set(self.ids) - voters - learners)
        choices: list[tuple[str, NodeId]] = []
        choices += [("add learner", m) for m in outsiders] + [("add voter", m) for m in outsiders]
        choices += [("promote", m) for m in sorted(learners)]
        choices += [("remove learner", m) for m in sorted(learners)]
        if len(voters) > 1:
            choices += [("remove voter", m) for m in sorted(voters)]
            choices += [("demote", m) for m in sorted(voters)]
        if outsiders:
            # Two voters at once: the core must refuse it (quorums of the two need not meet).
            choices += [("swap in", m) for m in outsiders]
        if not choices:
            return False
        action, member = rng.choice(choices)
        if action == "swap in":
            voters.discard(rng.choice(sorted(voters)))
        if action in ("add voter", "promote", "swap in"):
            voters.add(member)
        if action in ("remove voter", "demote"):
            voters.discard(member)
        if action in ("add learner", "demote"):
            learners.add(member)
        if action in ("promote", "remove learner"):
            learners.discard(member)
        target = Membership(tuple(sorted(voters)), tuple(sorted(learners)))
        self.loop.note(f"leader {leader.node_id} asked to {action} {member}: {target}")
        try:
            leader.change_membership(target)
            self.scheduler.count(f"reconfig {action}")
        except (NotLeader, MembershipChangeRefused) as refused:
            self.loop.note(f"membership change refused: {refused}")
        self._after_input(leader)
        return True

    def run_until(self, end_us: int) -> None:
        """Fire events up to virtual time `end_us` (directed scenarios step with this)."""
        loop = self.loop
        while not self._finished:
            next_us = loop.next_time_us()
            if next_us is None or next_us > end_us:
                break
            assert loop.events_fired < EVENTS_MAX, "too many events: the run does not settle"
            loop.run_one()

    def _fault_counts(self) -> dict[str, int]:
        counts = dict(self.scheduler.counters)
        for name in ("lost", "duplicated", "reordered", "cut"):
            if self.network.counters[name]:
                counts[f"message {name}"] = self.network.counters[name]
        torn = sum(member.storage.torn_saves for member in self.members.values())
        if torn:
            counts["crash during save"] = torn
        return dict(sorted(counts.items()))

    # -- members: boot, ticks, crashes ------------------------------------------------------

    def member_ids(self) -> Sequence[NodeId]:
        return self.ids

    def is_up(self, member: NodeId) -> bool:
        return self.members[member].up

    def _boot(self, member_id: NodeId) -> None:
        member = self.members[member_id]
        if member.up:
            return
        member.start()
        self._after_input(member)
        incarnation = member.incarnation
        self.loop.schedule(
            self.tick_us[member_id], f"tick {member_id}", lambda: self._tick(member_id, incarnation)
        )

    def _tick(self, member_id: NodeId, incarnation: int) -> None:
        member = self.members[member_id]
        if not member.up or member.incarnation != incarnation:
            return  # the timer of an incarnation that has died
        member.tick()
        self._after_input(member)
        self.loop.schedule(
            self.tick_us[member_id], f"tick {member_id}", lambda: self._tick(member_id, incarnation)
        )

    def redraw_tick(self, member: NodeId) -> None:
        drift = self.knobs.faults.drift_fraction_max
        factor = 1.0 + self._life_rng.uniform(-drift, drift)
        self.tick_us[member] = max(1, round(TICK_US * factor))

    def crash(self, member: NodeId, reason: str) -> None:
        self.members[member].crash(reason)

    def compact(self, member: NodeId) -> None:
        if self.members[member].compact():
            self.scheduler.count("compaction")
            self.loop.note(
                f"member {member} compacted through slot "
                f"{self.members[member].storage.snapshot_slot}"
            )
        self._after_input(self.members[member])

    def transfer_leadership(self, rng: random.Random) -> bool:
        leader = self._leader()
        if leader is None:
            return False
        target = rng.choice([member for member in self.ids if member != leader.node_id])
        self.loop.note(f"leader {leader.node_id} asked to transfer leadership to {target}")
        try:
            leader.transfer_leadership(target)
        except (NotLeader, TransferRefused) as refused:
            self.loop.note(f"transfer refused: {refused}")
        self._after_input(leader)
        return True

    def _after_input(self, member: Member) -> None:
        node = member.node
        if node is not None and self.monitor.check_node(member.node_id, node):
            self.leaders.append((self.loop.now_us, member.node_id, node.ballot))
            self.loop.note(f"member {member.node_id} leads ballot {node.ballot}")

    def _deliver(self, message: Message) -> None:
        member = self.members[message.dst]
        if member.up:
            member.receive(message)
            self._after_input(member)

    # -- MemberObserver ---------------------------------------------------------------------

    def on_applied(
        self, member: Member, entry: Entry, outcomes: tuple[Outcome, ...], machine: KeyValueMachine
    ) -> None:
        self.monitor.on_applied(member.node_id, entry, outcomes, machine.digest())

    def on_restored(self, member: Member, meta: SnapshotMeta, machine: KeyValueMachine) -> None:
        self.monitor.on_restored(member.node_id, meta.last_slot, machine.digest())

    def on_write_answered(self, member: Member, client: int, seq: int, result: object) -> None:
        if client >= len(self.clients):
            return  # a write a directed scenario made itself: nobody waits for it

        def answer() -> None:
            if self.clients[client].on_reply(seq, result):
                self.monitor.on_acknowledged(client, seq)

        self.loop.schedule(self._client_latency_us(), f"client {client} hears seq {seq}", answer)

    def on_read_answered(self, member: Member, client: int, seq: int, value: str | None) -> None:
        def answer() -> None:
            self.clients[client].on_reply(seq, value)

        self.loop.schedule(
            self._client_latency_us(), f"client {client} hears read seq {seq}", answer
        )

    def on_read_failed(self, member: Member, client: int, seq: int) -> None:
        self.loop.schedule(
            self._client_latency_us(),
            f"client {client} read seq {seq} failed",
            lambda: self.clients[client].on_read_failed(seq),
        )

    def on_crashed(self, member: Member, reason: str) -> None:
        self.loop.note(f"member {member.node_id} crashed ({reason})")
        self.life_events.append((self.loop.now_us, f"member {member.node_id} crashed ({reason})"))
        down_us_max = self.knobs.faults.down_us_max or RESTART_US_DEFAULT
        if self._healed_us is not None:
            down_us_max = 1_000  # the liveness phase restarts members at once
        down_us = self._life_rng.randint(1, down_us_max)
        member_id = member.node_id
        self.loop.schedule(down_us, f"restart {member_id}", lambda: self._restart(member_id))

    def _restart(self, member_id: NodeId) -> None:
        if not self.members[member_id].up:
            self.restarts += 1
            self._reconnect_slowly(member_id)
            self._boot(member_id)
            slot = self.members[member_id].storage.snapshot_slot
            text = f"member {member_id} restarted from its storage (snapshot at slot {slot})"
            self.life_events.append((self.loop.now_us, text))

    def _reconnect_slowly(self, member_id: NodeId) -> None:
        """Peers reach a restarted member one at a time (safety phase only)."""
        reconnect_us_max = self.knobs.faults.reconnect_us_max
        if reconnect_us_max == 0 or self._healed_us is not None:
            return
        rng = self.streams.stream("reconnect")
        for peer in self.ids:
            if peer != member_id:
                until_us = self.loop.now_us + rng.randint(0, reconnect_us_max)
                self.network.clog(peer, member_id, until_us)

    def _client_latency_us(self) -> int:
        return self._life_rng.randint(1, self.knobs.clients.latency_us_max)

    # -- Door -------------------------------------------------------------------------------

    def submit(self, member_id: NodeId, request: Request) -> Submitted:
        member = self.members[member_id]
        if not member.up:
            return Submitted(Answer.UNAVAILABLE)
        try:
            if request.kind is OpKind.GET:
                self._read_ids += 1
                member.read(request.client, request.seq, request.key, self._read_ids)
            else:
                member.propose(request.client, request.seq, _encode(request))
        except NotLeader as error:
            return Submitted(Answer.NOT_LEADER, error.leader_hint)
        except ProposalDropped:
            return Submitted(Answer.DROPPED)
        finally:
            self._after_input(member)
        return Submitted(Answer.ACCEPTED)

    # -- liveness ---------------------------------------------------------------------------

    def _heal(self) -> None:
        self._healed_us = self.loop.now_us
        self.loop.note("heal: partitions and clogs removed, loss off, members restarted")
        self.scheduler.stop()
        self.network.heal_partitions()
        self.network.unclog_all()
        self.network.knobs = self.knobs.network.calm()
        for member in self.members.values():
            member.storage.crash_during_save_probability = 0.0
        for member_id in self.ids:
            self._restart(member_id)
        self.loop.schedule(LIVENESS_CHECK_EVERY_US, "liveness check", self._liveness_check)

    def leader_id(self) -> NodeId | None:
        leader = self._leader()
        return None if leader is None else leader.node_id

    def _leader(self) -> Member | None:
        """The member leading the highest ballot (a deposed leader may not know it yet)."""
        best: Member | None = None
        for member_id in self.ids:
            member = self.members[member_id]
            node = member.node
            if node is None or node.role is not Role.LEADER:
                continue
            if best is None or (best.node is not None and node.ballot > best.node.ballot):
                best = member
        return best

    def _liveness_check(self) -> None:
        assert self._healed_us is not None
        healed_us = self._healed_us
        if not self._clients_stopped:
            served = all(
                client.last_success_us is not None and client.last_success_us > healed_us
                for client in self.clients
            )
            if served and self._leader() is not None:
                self._clients_stopped = True
                for client in self.clients:
                    client.stop()
        elif self._converged():
            self._finished = True
            self.loop.note("liveness: leader, clients served, all members caught up")
            return
        self.loop.schedule(LIVENESS_CHECK_EVERY_US, "liveness check", self._liveness_check)

    def _converged(self) -> bool:
        leader = self._leader()
        if leader is None or leader.node is None:
            return False
        if not all(client.idle for client in self.clients):
            return False
        commit_slot = leader.node.commit_slot
        # Members outside the configuration (spares, removed members) owe nothing.
        in_config = leader.node.membership.members
        return all(
            member.up and member.machine.applied_slot >= commit_slot
            for member_id, member in self.members.items()
            if member_id in in_config
        )

    def _liveness_shortfall(self) -> str:
        leader = self._leader()
        parts = [f"no progress within {self.options.liveness_us_max}us of healing"]
        parts.append(f"leader {leader.node_id if leader else None}")
        waiting = [client.client_id for client in self.clients if not client.idle]
        unserved = [
            client.client_id
            for client in self.clients
            if client.last_success_us is None or client.last_success_us <= (self._healed_us or 0)
        ]
        parts.append(f"clients without a success since heal {unserved}, still waiting {waiting}")
        for member_id in self.ids:
            member = self.members[member_id]
            if member.node is None:
                parts.append(f"member {member_id} down")
                continue
            node = member.node
            parts.append(
                f"member {member_id} {node.role.value} ballot {node.ballot} leader {node.leader} "
                f"commit {node.commit_slot} applied {member.machine.applied_slot}"
            )
        return "\n  ".join(parts)


def _encode(request: Request) -> bytes:
    if request.kind is OpKind.PUT:
        assert isinstance(request.argument, str)
        command = Command(request.client, request.seq, "put", request.key, request.argument)
    elif request.kind is OpKind.CAS:
        assert isinstance(request.argument, tuple)
        expected, new = request.argument
        command = Command(request.client, request.seq, "cas", request.key, expected, new)
    else:
        assert request.kind is OpKind.DELETE
        command = Command(request.client, request.seq, "delete", request.key)
    return command.encode()


def run(options: RunOptions) -> RunResult:
    return World(options).run()

"""What can go wrong in a run, drawn per seed (swarm testing), and when it goes wrong.

`draw_knobs` turns a seed's "knobs" stream into the run's whole configuration: the core's
`Config` (batch size 1 or large, pipelining window 1 or large, short or long election
timeouts, heartbeat period, pre-vote, check-quorum), the network's fault rates, which
partition styles and which member faults are enabled and how often, the crash-during-save
probability, compaction frequency, clock drift and the clients. Drawing a different mix per
seed (rather than every fault at once) is what lets rare interleavings show up: a seed with
only one-way partitions and a window of 1 explores different corners than one with
everything on. A named profile restricts the mix, so that tests cover every fault model.

`FaultScheduler` injects the drawn faults during the safety phase and stops when the
simulator heals the cluster for the liveness phase. Partitions come in five styles:
isolate one member, one-way cuts, a majority/minority split, a bridge member that sees both
sides, and a gray failure (nobody hears the victim, one member cannot reach it); a share of
partitions, clogs and crashes is aimed at the current leader.

Invariants: every knob is drawn from the two knobs streams only (knobs added later draw from
the second, so that older seeds keep their draws); the core's config is validated
before any member starts; no more than `crashed_members_max` members are down at once by the
scheduler's doing.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Protocol

from synod.paxos.config import Config
from synod.paxos.types import NodeId
from synod.sim.client import ClientKnobs
from synod.sim.loop import EventLoop
from synod.sim.network import Network, NetworkKnobs

# "gray" came later and is drawn from the later stream (see `draw_knobs`).
PARTITION_STYLES_FIRST = ("isolate", "one-way", "split", "bridge")
PARTITION_STYLES = (*PARTITION_STYLES_FIRST, "gray")
PROFILES = ("calm", "lossy", "partition", "clog", "crash", "disk", "swarm")
TICK_US = 1_000
STORAGE_KINDS = ("model", "wal")


@dataclass(frozen=True, slots=True)
class FaultKnobs:
    """How often each member and partition fault strikes (0: never)."""

    partition_styles: tuple[str, ...] = ()
    partition_every_us: int = 0
    partition_us_max: int = 0
    clog_every_us: int = 0
    clog_us_max: int = 0
    crash_every_us: int = 0
    down_us_max: int = 0
    crashed_members_max: int = 0
    crash_during_save_probability: float = 0.0
    compact_every_us: int = 0
    drift_fraction_max: float = 0.0
    drift_every_us: int = 0
    transfer_every_us: int = 0
    leader_target_rate: float = 0.0
    reconnect_us_max: int = 0

    def __post_init__(self) -> None:
        assert all(style in PARTITION_STYLES for style in self.partition_styles)
        assert 0.0 <= self.crash_during_save_probability < 1.0
        assert 0.0 <= self.drift_fraction_max < 0.5
        assert 0.0 <= self.leader_target_rate <= 1.0


@dataclass(frozen=True, slots=True)
class Knobs:
    """Everything a seed decides about its run."""

    profile: str
    config: Config
    network: NetworkKnobs
    faults: FaultKnobs
    clients: ClientKnobs
    client_count: int
    storage: str = "model"

    def describe(self) -> list[str]:
        """One line per group, printed before the run starts."""
        return [
            f"profile {self.profile}, {self.client_count} clients, storage {self.storage}",
            "config " + _fields_text(self.config),
            "network " + _fields_text(self.network),
            "faults " + _fields_text(self.faults),
            "clients " + _fields_text(self.clients),
        ]


def _fields_text(value: object) -> str:
    return " ".join(f"{f.name}={getattr(value, f.name)}" for f in fields(value))  # type: ignore[arg-type]


def draw_knobs(
    rng: random.Random, member_count: int, profile: str, later_rng: random.Random | None = None
) -> Knobs:
    """Draw the run's configuration; `profile` says which faults may be enabled.

    Knobs added after seeds were kept as regression tests draw from `later_rng`, so that the
    older knobs of those seeds stay what they were.
    """
    assert profile in PROFILES, f"unknown fault profile {profile!r}"
    assert member_count >= 1
    config = _draw_config(rng)
    config.validate()
    enabled = _enabled_faults(rng, profile)
    network = _draw_network(rng, enabled)
    faults = _draw_faults(rng, member_count, enabled)
    if later_rng is not None and member_count > 1 and profile in ("swarm", "crash"):
        # Leadership transfer (TimeoutNow) is a disruption a careful operator causes.
        transfer_every_us = later_rng.choice((0, 0, 50_000, 300_000))
        faults = replace(faults, transfer_every_us=transfer_every_us)
    if later_rng is not None:
        faults = _draw_later_faults(later_rng, member_count, faults)
    clients = ClientKnobs(
        timeout_us=rng.choice((50_000, 150_000, 400_000)),
        latency_us_max=rng.choice((50, 300, 1_000)),
        think_us_max=rng.choice((2_000, 5_000, 20_000)),
        retry_backoff_us_max=rng.choice((1_000, 10_000)),
        key_count=rng.choice((1, 2, 4)),
    )
    client_count = rng.randint(1, 4)
    # The record-level model tears at record boundaries; the production WAL on a simulated
    # disk tears bytes, flips bits and loses directory entries. Both are worth a share.
    storage = rng.choice(STORAGE_KINDS)
    if later_rng is not None:
        # Clients that talk to any member (not only the leader they last heard of) are the
        # ones that meet a deposed leader still serving; more clients mean more overlap.
        clients = replace(clients, wander_rate=later_rng.choice((0.0, 0.2, 0.5)))
        client_count = max(client_count, later_rng.choice((1, 3, 6)))
    return Knobs(profile, config, network, faults, clients, client_count, storage)


def _draw_config(rng: random.Random) -> Config:
    heartbeat_ticks = rng.choice((1, 1, 2, 3))
    election_ticks = rng.choice((2 * heartbeat_ticks + 1, 10, 10 + 2 * heartbeat_ticks, 20))
    large = rng.random() < 0.5
    return Config(
        heartbeat_ticks=heartbeat_ticks,
        election_ticks=election_ticks,
        pre_vote=rng.random() < 0.7,
        check_quorum=rng.random() < 0.7,
        batch_commands_max=1024 if large else rng.choice((1, 2)),
        batch_bytes_max=rng.choice((1 << 20, 256)),
        window_messages_max=rng.choice((1, 2, 64)),
        window_bytes_max=rng.choice((8 << 20, 4096)),
        accept_entries_max=rng.choice((1, 4, 64)),
        proposal_queue_max=rng.choice((4, 100_000)),
        uncommitted_slots_max=rng.choice((2, 16, 4096)),
        reads_pending_max=rng.choice((4, 100_000)),
        retransmit_ticks=rng.choice((1, 3, 10)),
        snapshot_retry_ticks=rng.choice((3, 20)),
    )


def _enabled_faults(rng: random.Random, profile: str) -> frozenset[str]:
    """Which fault families this run uses: one family per profile, a random mix for swarm."""
    families = ("lossy", "partition", "clog", "crash", "disk")
    if profile == "swarm":
        chosen = [family for family in families if rng.random() < 0.5]
        return frozenset([*chosen, "compaction", "drift"])
    if profile == "calm":
        return frozenset({"compaction"})
    return frozenset({profile, "compaction", "drift"})


def _draw_network(rng: random.Random, enabled: frozenset[str]) -> NetworkKnobs:
    delay_us_min = rng.choice((20, 100, 500))
    delay_us_max = delay_us_min + rng.choice((0, 200, 2_000))
    if "lossy" not in enabled:
        return NetworkKnobs(delay_us_min=delay_us_min, delay_us_max=delay_us_max)
    return NetworkKnobs(
        loss_rate=rng.choice((0.0, 0.01, 0.05, 0.2)),
        duplicate_rate=rng.choice((0.0, 0.01, 0.1)),
        delay_us_min=delay_us_min,
        delay_us_max=delay_us_max,
        reorder_rate=rng.choice((0.0, 0.02, 0.2)),
        reorder_delay_us_max=rng.choice((1_000, 20_000)),
    )


def _draw_faults(rng: random.Random, member_count: int, enabled: frozenset[str]) -> FaultKnobs:
    values: dict[str, object] = {}
    if "partition" in enabled and member_count > 1:
        styles = [style for style in PARTITION_STYLES_FIRST if rng.random() < 0.6]
        values["partition_styles"] = tuple(styles or [rng.choice(PARTITION_STYLES_FIRST)])
        values["partition_every_us"] = rng.choice((20_000, 100_000, 300_000))
        values["partition_us_max"] = rng.choice((10_000, 100_000, 500_000))
    if "clog" in enabled and member_count > 1:
        values["clog_every_us"] = rng.choice((5_000, 30_000, 100_000))
        values["clog_us_max"] = rng.choice((5_000, 50_000, 200_000))
    if "crash" in enabled or "disk" in enabled:
        values["crash_every_us"] = rng.choice((30_000, 100_000, 300_000))
        values["down_us_max"] = rng.choice((5_000, 50_000, 300_000))
        values["crashed_members_max"] = rng.choice((1, max(1, member_count // 2), member_count))
    if "disk" in enabled:
        values["crash_during_save_probability"] = rng.choice((0.002, 0.01, 0.05))
    if "compaction" in enabled:
        values["compact_every_us"] = rng.choice((0, 5_000, 50_000, 200_000))
    if "drift" in enabled:
        values["drift_fraction_max"] = rng.choice((0.0, 0.02, 0.05, 0.2))
        values["drift_every_us"] = rng.choice((0, 100_000))
    return FaultKnobs(**values)  # type: ignore[arg-type]


def _draw_later_faults(rng: random.Random, member_count: int, faults: FaultKnobs) -> FaultKnobs:
    """Knobs added later, drawn from their own stream (see `draw_knobs`).

    Faults aimed at the leader find the bugs that matter most: a deposed leader that still
    serves reads, a value only the leader holds when its followers lose their copies. Torn
    saves that strike often and members that come back at once make a lost acknowledgement
    (a reply sent before its persist) meet the election that would expose it.
    """
    if member_count == 1:
        return faults
    changes: dict[str, object] = {"leader_target_rate": rng.choice((0.0, 0.5, 0.9))}
    if faults.crash_every_us > 0:
        # A restarted member's peers reconnect one by one (transport backoff), so it hears
        # from some before others: an old leader may reach it before the new one does.
        changes["reconnect_us_max"] = rng.choice((0, 5_000, 50_000))
    if faults.partition_styles and rng.random() < 0.5:
        changes["partition_styles"] = (*faults.partition_styles, "gray")
    if faults.crash_during_save_probability > 0:
        changes["crash_during_save_probability"] = rng.choice(
            (faults.crash_during_save_probability, 0.1, 0.2)
        )
        changes["down_us_max"] = rng.choice((faults.down_us_max, 2_000))
    return replace(faults, **changes)  # type: ignore[arg-type]


class Cluster(Protocol):
    """What the scheduler may do to the members."""

    def member_ids(self) -> Sequence[NodeId]: ...
    def is_up(self, member: NodeId) -> bool: ...
    def leader_id(self) -> NodeId | None: ...
    def crash(self, member: NodeId, reason: str) -> None: ...
    def compact(self, member: NodeId) -> None: ...
    def redraw_tick(self, member: NodeId) -> None: ...
    def transfer_leadership(self, rng: random.Random) -> bool: ...


class FaultScheduler:
    """Injects the drawn faults at random times until `stop()`; counts them by kind."""

    def __init__(
        self,
        loop: EventLoop,
        rng: random.Random,
        network: Network,
        cluster: Cluster,
        knobs: FaultKnobs,
        transfer_rng: random.Random | None = None,
        leader_rng: random.Random | None = None,
    ) -> None:
        self._loop = loop
        self._rng = rng
        self._transfer_rng = transfer_rng or rng
        self._leader_rng = leader_rng or rng
        self._network = network
        self._cluster = cluster
        self._knobs = knobs
        self._stopped = False
        self._members = tuple(sorted(cluster.member_ids()))
        self.counters: dict[str, int] = {}

    def start(self) -> None:
        knobs = self._knobs
        recurring = [
            (knobs.partition_every_us, "partition", self._partition),
            (knobs.clog_every_us, "clog", self._clog),
            (knobs.crash_every_us, "crash", self._crash),
            (knobs.compact_every_us, "compact", self._compact),
            (knobs.drift_every_us, "drift", self._drift),
        ]
        for every_us, name, action in recurring:
            if every_us > 0:
                self._schedule(every_us, name, action, self._rng)
        if knobs.transfer_every_us > 0:
            self._schedule(knobs.transfer_every_us, "transfer", self._transfer, self._transfer_rng)

    def stop(self) -> None:
        self._stopped = True

    def count(self, kind: str) -> None:
        self.counters[kind] = self.counters.get(kind, 0) + 1

    def _schedule(
        self, every_us: int, name: str, action: Callable[[], None], rng: random.Random
    ) -> None:
        def fire() -> None:
            if self._stopped:
                return
            action()
            self._schedule(every_us, name, action, rng)

        self._loop.schedule(rng.randint(1, 2 * every_us), f"fault {name}", fire)

    # -- partitions -------------------------------------------------------------------------

    def _aim_at_leader(self) -> NodeId | None:
        """The leader, when this fault should strike it (drawn at `leader_target_rate`)."""
        rate = self._knobs.leader_target_rate
        if rate == 0.0 or self._leader_rng.random() >= rate:
            return None
        return self._cluster.leader_id()

    def _partition(self) -> None:
        style = self._rng.choice(self._knobs.partition_styles)
        members = list(self._members)
        self._rng.shuffle(members)
        leader = self._aim_at_leader()
        if leader is not None:
            # The leader is the isolated member, the one-way victim, or on the smaller side.
            members.remove(leader)
            members.insert(0, leader)
        if style == "isolate":
            self._network.cut_between(members[:1], members[1:])
        elif style == "one-way":
            victim, others = members[0], members[1:]
            for other in others:
                if self._rng.random() < 0.5:
                    self._network.cut(victim, other)
                else:
                    self._network.cut(other, victim)
        elif style == "gray":
            # A gray failure: the victim still hears everyone but nobody hears it, and one
            # member cannot reach it either. A leader in this state keeps leading (without
            # check-quorum) while the others elect a successor behind its back.
            victim, deaf = members[0], members[1]
            for other in members[1:]:
                self._network.cut(victim, other)
            self._network.cut(deaf, victim)
        elif style == "split":
            size = self._rng.randint(1, len(members) - 1)
            self._network.cut_between(members[:size], members[size:])
        else:
            if len(members) < 3:
                self._network.cut_between(members[:1], members[1:])
            else:
                bridge, rest = members[0], members[1:]
                size = self._rng.randint(1, len(rest) - 1)
                # The bridge keeps both sides; the sides lose each other.
                self._network.cut_between(rest[:size], rest[size:])
                self._loop.note(f"bridge member {bridge}")
        self.count(f"partition {style}")
        self._loop.note(f"partition {style}: cut {self._network.cut_links()}")
        heal_us = self._rng.randint(1, self._knobs.partition_us_max)
        self._loop.schedule(heal_us, "fault heal partitions", self._heal_partitions)

    def _heal_partitions(self) -> None:
        if not self._stopped:
            self._network.heal_partitions()

    def _clog(self) -> None:
        source, destination = self._rng.sample(self._members, 2)
        leader = self._aim_at_leader()
        if leader is not None and leader != destination:
            source = leader
        elif leader is not None:
            source, destination = leader, source
        until_us = self._loop.now_us + self._rng.randint(1, self._knobs.clog_us_max)
        self._network.clog(source, destination, until_us)
        self.count("clog")
        self._loop.note(f"clog {source}->{destination} until {until_us}us")

    # -- members ----------------------------------------------------------------------------

    def _crash(self) -> None:
        up = [member for member in self._members if self._cluster.is_up(member)]
        down_count = len(self._members) - len(up)
        if not up or down_count >= self._knobs.crashed_members_max:
            return
        victim = self._rng.choice(up)
        leader = self._aim_at_leader()
        if leader is not None and leader in up:
            victim = leader
        self.count("crash")
        self._cluster.crash(victim, "crash fault")

    def _compact(self) -> None:
        up = [member for member in self._members if self._cluster.is_up(member)]
        if up:
            self._cluster.compact(self._rng.choice(up))

    def _transfer(self) -> None:
        if self._cluster.transfer_leadership(self._transfer_rng):
            self.count("leader transfer")

    def _drift(self) -> None:
        self.count("drift")
        self._cluster.redraw_tick(self._rng.choice(self._members))

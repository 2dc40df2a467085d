"""The virtual network between members: delay, loss, duplication, reordering, partitions and
clogged links, all drawn from the network's own seeded stream.

A message sent at time t is delivered at t + delay unless it is lost, its link is cut when it
is sent or when it arrives, or its receiver is down (the receiver decides that). Reordering
comes from the delay jitter and from an occasional long extra delay. A clogged link holds
everything sent on it until the clog ends (FoundationDB's "swizzle-clogging"). Partitions
are a set of cut directed links `(source, destination)`, so one-way partitions are as easy as
symmetric ones.

Invariants: links are between distinct known members; no link carries more than
`link_in_flight_max` messages at once (beyond that the sender's buffer overflows and the
message is lost, as a full socket buffer would).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from synod.paxos.messages import Message
from synod.paxos.types import NodeId
from synod.sim.loop import EventLoop

LINK_IN_FLIGHT_MAX = 10_000

Link = tuple[NodeId, NodeId]
Deliver = Callable[[Message], None]


@dataclass(frozen=True, slots=True)
class NetworkKnobs:
    """Fault rates and delays of every link; drawn per seed, set to calm when faults heal."""

    loss_rate: float = 0.0
    duplicate_rate: float = 0.0
    delay_us_min: int = 100
    delay_us_max: int = 500
    reorder_rate: float = 0.0
    reorder_delay_us_max: int = 0

    def __post_init__(self) -> None:
        assert 0.0 <= self.loss_rate < 1.0
        assert 0.0 <= self.duplicate_rate < 1.0
        assert 0.0 <= self.reorder_rate < 1.0
        assert 0 <= self.delay_us_min <= self.delay_us_max
        assert self.reorder_delay_us_max >= 0

    def calm(self) -> NetworkKnobs:
        """The same delays with no loss, duplication or reordering: the liveness phase."""
        return NetworkKnobs(0.0, 0.0, self.delay_us_min, self.delay_us_max, 0.0, 0)


def describe_message(message: Message) -> str:
    """A one-line name of a message for traces: its type, link, ballot and slot span."""
    text = f"{type(message).__name__} {message.src}->{message.dst} b{message.ballot}"
    entries = getattr(message, "entries", ())
    if entries:
        text += f" slots {entries[0].slot}..{entries[-1].slot}"
    commit_slot = getattr(message, "commit_slot", None)
    if commit_slot is not None:
        text += f" c{commit_slot}"
    return text


class Network:
    """Carries messages between members through the event loop, injecting faults."""

    def __init__(
        self,
        loop: EventLoop,
        rng: random.Random,
        members: Sequence[NodeId],
        knobs: NetworkKnobs,
        deliver: Deliver,
        link_in_flight_max: int = LINK_IN_FLIGHT_MAX,
    ) -> None:
        assert len(set(members)) == len(members), "member ids are unique"
        assert link_in_flight_max >= 1
        self.loop = loop
        self.knobs = knobs
        self._rng = rng
        self._members = tuple(sorted(members))
        self._deliver = deliver
        self._cut: set[Link] = set()
        self._clogged_until_us: dict[Link, int] = {}
        self._in_flight: dict[Link, int] = {}
        self._link_in_flight_max = link_in_flight_max
        self.counters: dict[str, int] = {
            "sent": 0,
            "delivered": 0,
            "lost": 0,
            "duplicated": 0,
            "reordered": 0,
            "cut": 0,
            "overflowed": 0,
        }

    # -- faults -----------------------------------------------------------------------------

    def cut(self, source: NodeId, destination: NodeId) -> None:
        """Drop everything from `source` to `destination` until healed (a one-way cut)."""
        assert source != destination
        assert source in self._members and destination in self._members
        self._cut.add((source, destination))

    def cut_between(self, group_a: Iterable[NodeId], group_b: Iterable[NodeId]) -> None:
        """Cut every link between the two groups in both directions."""
        side_b = sorted(group_b)
        for a in sorted(group_a):
            for b in side_b:
                if a != b:
                    self.cut(a, b)
                    self.cut(b, a)

    def heal_partitions(self) -> None:
        self._cut.clear()

    def clog(self, source: NodeId, destination: NodeId, until_us: int) -> None:
        """Hold everything sent from `source` to `destination` until `until_us`."""
        assert source != destination
        assert until_us >= self.loop.now_us
        link = (source, destination)
        self._clogged_until_us[link] = max(until_us, self._clogged_until_us.get(link, 0))

    def unclog_all(self) -> None:
        self._clogged_until_us.clear()

    def is_cut(self, source: NodeId, destination: NodeId) -> bool:
        return (source, destination) in self._cut

    def cut_links(self) -> list[Link]:
        return sorted(self._cut)

    # -- traffic ----------------------------------------------------------------------------

    def send(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self._send_one(message)

    def _send_one(self, message: Message) -> None:
        assert message.src != message.dst, "a member never sends to itself"
        assert message.src in self._members and message.dst in self._members
        self.counters["sent"] += 1
        link = (message.src, message.dst)
        if link in self._cut:
            self.counters["cut"] += 1
            return
        knobs = self.knobs
        if knobs.loss_rate and self._rng.random() < knobs.loss_rate:
            self.counters["lost"] += 1
            return
        copies = 1
        if knobs.duplicate_rate and self._rng.random() < knobs.duplicate_rate:
            self.counters["duplicated"] += 1
            copies = 2
        for _ in range(copies):
            self._schedule_delivery(link, message)

    def _schedule_delivery(self, link: Link, message: Message) -> None:
        if self._in_flight.get(link, 0) >= self._link_in_flight_max:
            self.counters["overflowed"] += 1
            return
        knobs = self.knobs
        delay_us = self._rng.randint(knobs.delay_us_min, knobs.delay_us_max)
        if knobs.reorder_rate and self._rng.random() < knobs.reorder_rate:
            self.counters["reordered"] += 1
            delay_us += self._rng.randint(0, knobs.reorder_delay_us_max)
        arrival_us = self.loop.now_us + delay_us
        clogged_until_us = self._clogged_until_us.get(link, 0)
        if clogged_until_us > arrival_us:
            arrival_us = clogged_until_us + delay_us
        self._in_flight[link] = self._in_flight.get(link, 0) + 1
        self.loop.schedule_at(
            arrival_us, "deliver " + describe_message(message), lambda: self._arrive(message)
        )

    def _arrive(self, message: Message) -> None:
        link = (message.src, message.dst)
        self._in_flight[link] -= 1
        assert self._in_flight[link] >= 0
        if link in self._cut:
            # A link cut while the message was on the wire loses it, as a reset connection does.
            self.counters["cut"] += 1
            return
        self.counters["delivered"] += 1
        self._deliver(message)

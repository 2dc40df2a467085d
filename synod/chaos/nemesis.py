"""The nemesis: injects one fault at a time into a `ChaosCluster` for a bounded time, heals
it, and keeps a timeline of what it did and when.

Faults (names for --faults): kill (SIGKILL of a random member, restart), kill-leader,
kill-two (two members at once, one of them the leader; five members or more), pause-leader
(SIGSTOP longer than the election timeout, then SIGCONT: a stale leader that resumes),
partition-leader (the leader cut off both ways), partition-oneway (the leader's outgoing
links cut: others stop hearing it while it hears them), partition-halves (a random minority
cut from the majority), flaky-links (delay and drop on random directed links), slow-disk
(fsync delay on the leader or on every member), clock-jump (the leader's lease clock jumped
backwards or forwards). Every fault is undone before the next one starts; `ChaosCluster.heal`
undoes anything left at the end.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from synod.chaos.cluster import ChaosCluster
from synod.chaos.proxy import LinkFault

FAULTS = (
    "kill",
    "kill-leader",
    "kill-two",
    "pause-leader",
    "partition-leader",
    "partition-oneway",
    "partition-halves",
    "flaky-links",
    "slow-disk",
    "clock-jump",
)
FAULT_S_MIN = 1.0
FAULT_S_MAX = 2.5
GAP_S_MIN = 0.3
GAP_S_MAX = 1.0
LEADER_WAIT_S = 10.0
CLOCK_JUMP_MS = (-5000, -1000, 1000, 3000)  # forward jumps stay under the lock lease TTL


@dataclass
class Timeline:
    """(seconds since start, what happened), in order."""

    started: float = field(default_factory=time.monotonic)
    events: list[tuple[float, str]] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.events.append((time.monotonic() - self.started, text))

    def render(self) -> str:
        return "\n".join(f"  {at:7.2f}s  {text}" for at, text in self.events)


class Nemesis:
    def __init__(
        self, cluster: ChaosCluster, faults: list[str], seed: int, timeline: Timeline
    ) -> None:
        unknown = sorted(set(faults) - set(FAULTS))
        assert not unknown, f"unknown faults {unknown}"
        if cluster.size < 5:
            faults = [f for f in faults if f != "kill-two"]
        assert faults, "at least one fault"
        self.cluster = cluster
        self.faults = faults
        self.rng = random.Random(seed)
        self.timeline = timeline
        self.injected: dict[str, int] = {}

    def run(self, duration_s: float, stop: threading.Event) -> None:
        """Inject faults one after another until `duration_s` passed (or `stop` is set)."""
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline and not stop.is_set():
            fault = self.rng.choice(self.faults)
            hold_s = min(self.rng.uniform(FAULT_S_MIN, FAULT_S_MAX), deadline - time.monotonic())
            self.inject(fault, max(hold_s, 0.2))
            stop.wait(self.rng.uniform(GAP_S_MIN, GAP_S_MAX))

    def inject(self, fault: str, hold_s: float) -> None:
        self.injected[fault] = self.injected.get(fault, 0) + 1
        handler: Callable[[float], None] = getattr(self, "_" + fault.replace("-", "_"))
        handler(hold_s)

    def _leader(self) -> str:
        """The current leader, or a random member when none is agreed on quickly."""
        deadline = time.monotonic() + LEADER_WAIT_S
        while time.monotonic() < deadline:
            leader = self.cluster.leader()
            if leader is not None:
                return leader
            time.sleep(0.05)
        return self.rng.choice(self.cluster.names)

    def _kill_members(self, names: list[str], hold_s: float, why: str) -> None:
        for name in names:
            self.cluster.kill(name)
        self.timeline.note(f"SIGKILL {', '.join(names)} ({why})")
        time.sleep(hold_s)
        for name in names:
            self.cluster.start_member(name)
        self.timeline.note(f"restarted {', '.join(names)}")

    def _kill(self, hold_s: float) -> None:
        self._kill_members([self.rng.choice(self.cluster.names)], hold_s, "random member")

    def _kill_leader(self, hold_s: float) -> None:
        self._kill_members([self._leader()], hold_s, "leader")

    def _kill_two(self, hold_s: float) -> None:
        leader = self._leader()
        other = self.rng.choice([n for n in self.cluster.names if n != leader])
        self._kill_members([leader, other], hold_s, "leader and one more")

    def _pause_leader(self, hold_s: float) -> None:
        leader = self._leader()
        self.cluster.pause(leader)
        self.timeline.note(f"SIGSTOP {leader} (leader) for {hold_s:.1f}s")
        time.sleep(hold_s)
        self.cluster.resume(leader)
        self.timeline.note(f"SIGCONT {leader}")

    def _cut(self, links: list[tuple[str, str]], hold_s: float, what: str) -> None:
        for source, destination in links:
            self.cluster.proxies.set_link(source, destination, LinkFault(cut=True))
        self.timeline.note(f"partition: {what} for {hold_s:.1f}s")
        time.sleep(hold_s)
        self.cluster.proxies.heal()
        self.timeline.note("partition healed")

    def _partition_leader(self, hold_s: float) -> None:
        leader = self._leader()
        others = [n for n in self.cluster.names if n != leader]
        links = [(leader, o) for o in others] + [(o, leader) for o in others]
        self._cut(links, hold_s, f"{leader} (leader) isolated")

    def _partition_oneway(self, hold_s: float) -> None:
        leader = self._leader()
        links = [(leader, o) for o in self.cluster.names if o != leader]
        self._cut(links, hold_s, f"{leader} (leader) -> others cut, others -> {leader} open")

    def _partition_halves(self, hold_s: float) -> None:
        names = list(self.cluster.names)
        self.rng.shuffle(names)
        minority, majority = names[: len(names) // 2], names[len(names) // 2 :]
        links = [(a, b) for a in minority for b in majority]
        links += [(b, a) for a in minority for b in majority]
        self._cut(links, hold_s, f"{{{', '.join(minority)}}} | {{{', '.join(majority)}}}")

    def _flaky_links(self, hold_s: float) -> None:
        names = self.cluster.names
        links = [(a, b) for a in names for b in names if a != b]
        chosen = self.rng.sample(links, k=max(1, len(links) // 2))
        for source, destination in chosen:
            fault = LinkFault(delay_ms=self.rng.randint(10, 80), drop_fraction=0.2)
            self.cluster.proxies.set_link(source, destination, fault)
        shown = ", ".join(f"{s}->{d}" for s, d in chosen)
        self.timeline.note(f"flaky links (delay 10-80 ms, 20% drop): {shown} for {hold_s:.1f}s")
        time.sleep(hold_s)
        self.cluster.proxies.heal()
        self.timeline.note("links healed")

    def _slow_disk(self, hold_s: float) -> None:
        delay_ms = self.rng.choice((20, 50, 150))
        targets = [self._leader()] if self.rng.random() < 0.5 else list(self.cluster.names)
        for name in targets:
            self.cluster.set_fsync_delay(name, delay_ms)
        self.timeline.note(f"slow fsync {delay_ms} ms on {', '.join(targets)} for {hold_s:.1f}s")
        time.sleep(hold_s)
        for name in targets:
            self.cluster.set_fsync_delay(name, 0)
        self.timeline.note("fsync delay off")

    def _clock_jump(self, hold_s: float) -> None:
        leader = self._leader()
        offset_ms = self.rng.choice(CLOCK_JUMP_MS)
        self.cluster.set_clock_offset(leader, offset_ms)
        self.timeline.note(f"clock jump {offset_ms:+d} ms on {leader} (leader) for {hold_s:.1f}s")
        time.sleep(hold_s)
        self.cluster.set_clock_offset(leader, 0)
        self.timeline.note(f"clock of {leader} back")

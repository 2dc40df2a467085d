"""Virtual time: an integer-microsecond clock and a heap of scheduled events.

The loop owns the only clock of a simulated run. Events fire in order of time and, at equal
times, in the order they were scheduled (a sequence number breaks ties), so a run depends on
nothing but its seed. Each fired event is appended to a bounded trace for failure reports and
folded into a digest that two runs of one seed must share.

Invariants: time never runs backwards; the heap never holds more than `events_pending_max`.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import deque
from collections.abc import Callable

Action = Callable[[], None]

TRACE_LINES_MAX = 50
EVENTS_PENDING_MAX = 2_000_000


# (time, sequence, label, action): a plain tuple, because the heap compares millions of them
# and tuple comparison runs in C; the unique sequence number means labels and actions are
# never compared.
_Scheduled = tuple[int, int, str, Action]


class EventLoop:
    """Runs actions at virtual times; `now_us` only moves forward, and only here."""

    def __init__(
        self, events_pending_max: int = EVENTS_PENDING_MAX, quiet_labels: tuple[str, ...] = ()
    ) -> None:
        """Events whose label starts with one of `quiet_labels` (timer ticks, say) count in
        the digest but stay out of the trace, which then shows the last events that say
        something."""
        assert events_pending_max >= 1
        self.now_us = 0
        self.events_fired = 0
        self._heap: list[_Scheduled] = []
        self._sequence = 0
        self._events_pending_max = events_pending_max
        self._trace: deque[str] = deque(maxlen=TRACE_LINES_MAX)
        self._quiet_labels = quiet_labels
        self._digest = hashlib.blake2b(digest_size=16)

    def schedule(self, delay_us: int, label: str, action: Action) -> None:
        """Run `action` `delay_us` from now; `label` names it in the trace."""
        assert delay_us >= 0, "events cannot be scheduled in the past"
        self.schedule_at(self.now_us + delay_us, label, action)

    def schedule_at(self, time_us: int, label: str, action: Action) -> None:
        assert time_us >= self.now_us, "events cannot be scheduled in the past"
        assert len(self._heap) < self._events_pending_max, "event heap is full: a runaway"
        self._sequence += 1
        heapq.heappush(self._heap, (time_us, self._sequence, label, action))

    def next_time_us(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def run_one(self) -> bool:
        """Fire the earliest event; False if there is none."""
        if not self._heap:
            return False
        time_us, _, label, action = heapq.heappop(self._heap)
        assert time_us >= self.now_us, "virtual time never runs backwards"
        self.now_us = time_us
        self.events_fired += 1
        line = f"{time_us:>10}us {label}"
        if not label.startswith(self._quiet_labels):
            self._trace.append(line)
        self._digest.update(line.encode())
        action()
        return True

    def note(self, text: str) -> None:
        """Add a line to the trace (and the digest) about something an event did."""
        line = f"{self.now_us:>10}us   {text}"
        self._trace.append(line)
        self._digest.update(line.encode())

    @property
    def pending_count(self) -> int:
        return len(self._heap)

    def trace(self) -> list[str]:
        """The last `TRACE_LINES_MAX` lines, oldest first."""
        return list(self._trace)

    def digest(self) -> str:
        """A digest of every event fired so far: equal runs have equal digests."""
        return self._digest.hexdigest()

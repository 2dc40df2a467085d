"""What a leader knows of one follower: how far it matches, what is in flight to it.

`match_slot` only grows during a leadership (a follower's report survives its restarts, see
`Node._advance_commit`). `next_slot` is optimistic (pipelining) and falls back to
`match_slot + 1` when the follower reports a gap or stops making progress; while `probing`, at
most one Accept with entries is in flight.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from synod.paxos.types import Slot


@dataclass(slots=True)
class PeerProgress:
    next_slot: Slot
    match_slot: Slot = Slot(0)  # noqa: RUF009 - NewType call is free
    probing: bool = True
    recently_active: bool = False
    read_round: int = 0
    commit_sent: Slot = Slot(0)  # noqa: RUF009 - NewType call is free
    ticks_since_progress: int = 0
    snapshot_pending: bool = False
    snapshot_elapsed: int = 0
    in_flight: deque[tuple[Slot, int]] = field(default_factory=deque)
    in_flight_bytes: int = 0

    def window_open(self, messages_max: int, bytes_max: int) -> bool:
        if self.snapshot_pending:
            return False
        if self.probing:
            return not self.in_flight
        return len(self.in_flight) < messages_max and self.in_flight_bytes < bytes_max

    def sent(self, last_slot: Slot, size_bytes: int) -> None:
        assert last_slot >= self.next_slot
        self.in_flight.append((last_slot, size_bytes))
        self.in_flight_bytes += size_bytes
        self.next_slot = Slot(last_slot + 1)

    def acknowledged(self, match_slot: Slot) -> bool:
        """Record a match; True if it advanced."""
        advanced = match_slot > self.match_slot
        if advanced:
            self.match_slot = match_slot
            self.ticks_since_progress = 0
        while self.in_flight and self.in_flight[0][0] <= self.match_slot:
            _, size_bytes = self.in_flight.popleft()
            self.in_flight_bytes -= size_bytes
        if self.next_slot <= self.match_slot:
            self.next_slot = Slot(self.match_slot + 1)
        return advanced

    def rewind(self) -> None:
        """Resend from the first slot the follower may lack, one message at a time."""
        self.next_slot = Slot(self.match_slot + 1)
        self.in_flight.clear()
        self.in_flight_bytes = 0
        self.probing = True
        self.ticks_since_progress = 0

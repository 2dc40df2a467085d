"""Tuning knobs of the core, validated before a node starts.

Time is counted in ticks (calls to `Node.tick`); the runtime decides how long a tick is.
"""

from __future__ import annotations

from dataclasses import dataclass


class ConfigError(ValueError):
    """A knob is out of range: the operator's mistake, reported before anything starts."""


@dataclass(frozen=True, slots=True)
class Config:
    heartbeat_ticks: int = 1
    election_ticks: int = 10
    pre_vote: bool = True
    check_quorum: bool = True
    batch_commands_max: int = 1024
    batch_bytes_max: int = 1 << 20
    window_messages_max: int = 64
    window_bytes_max: int = 8 << 20
    accept_entries_max: int = 64
    proposal_queue_max: int = 100_000
    uncommitted_slots_max: int = 4096
    reads_pending_max: int = 100_000
    retransmit_ticks: int = 3
    snapshot_retry_ticks: int = 20

    def validate(self) -> None:
        checks = [
            (self.heartbeat_ticks >= 1, "heartbeat_ticks must be at least 1"),
            (
                self.election_ticks > 2 * self.heartbeat_ticks,
                "election_ticks must exceed twice heartbeat_ticks",
            ),
            (self.batch_commands_max >= 1, "batch_commands_max must be at least 1"),
            (self.batch_bytes_max >= 1, "batch_bytes_max must be at least 1"),
            (self.window_messages_max >= 1, "window_messages_max must be at least 1"),
            (self.window_bytes_max >= 1, "window_bytes_max must be at least 1"),
            (self.accept_entries_max >= 1, "accept_entries_max must be at least 1"),
            (self.proposal_queue_max >= 1, "proposal_queue_max must be at least 1"),
            (self.uncommitted_slots_max >= 1, "uncommitted_slots_max must be at least 1"),
            (self.reads_pending_max >= 1, "reads_pending_max must be at least 1"),
            (self.retransmit_ticks >= 1, "retransmit_ticks must be at least 1"),
            (self.snapshot_retry_ticks >= 1, "snapshot_retry_ticks must be at least 1"),
        ]
        for holds, message in checks:
            if not holds:
                raise ConfigError(message)

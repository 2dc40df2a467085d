"""A follower's learned commit slot is synced with the next save, not by its own fsync.

The core asks a follower to make a learned commit slot durable before the reply that
follows it (docs/paxos.md, seed 24062). Under a lone put that is a second fsync per put on
every follower, after the one for the accepted entry: five fsyncs per put in the cluster,
where etcd makes three. The reply to a commit hint is not on any client's path (the leader
already answered), so a member may hold it until its next sync, which the next accepted
entry brings within a round trip, or until `DELAY_S` passes. The rule itself is kept: the
reply leaves only once its save is durable.

What does not wait is applying: the hint's committed entries are chosen, so a follower
applies them at once (as etcd's followers do) and answers the writes it forwarded. Only a
Ready that an earlier Ready does not hold up may be applied ahead of its save, so entries are
applied in order.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable

from synod.paxos.messages import AcceptReply
from synod.paxos.ready import Ready
from synod.paxos.types import Ballot, HardState

DELAY_S = 0.002


def is_commit_hint_save(ready: Ready, saved: HardState) -> bool:
    """Whether `ready` needs its sync only for a learned commit slot: no entries, no
    snapshot, the promise it saves is the one already saved (`saved`), and nothing to
    release but replies to accepts."""
    hard_state = ready.hard_state
    return (
        ready.must_sync
        and not ready.entries
        and ready.snapshot is None
        and hard_state is not None
        and hard_state.promised == saved.promised
        and not ready.reads
        and not ready.failed_reads
        and not ready.snapshot_requests
        and bool(ready.persisted_messages)
        and all(type(m) is AcceptReply and m.ok for m in ready.persisted_messages)
    )


class ReadRounds:
    """The newest read round this member acknowledged to each leader's ballot: a reply that
    acknowledges a newer one releases linearizable reads, so it is never held back."""

    def __init__(self) -> None:
        self._ballot: Ballot | None = None
        self._round = -1

    def all_answered(self, messages: Iterable[object]) -> bool:
        return all(
            type(m) is AcceptReply and m.ballot == self._ballot and m.read_round <= self._round
            for m in messages
        )

    def note(self, messages: Iterable[object]) -> None:
        for message in messages:
            if type(message) is not AcceptReply or not message.ok:
                continue
            if message.ballot != self._ballot:
                self._ballot = message.ballot
                self._round = message.read_round
            elif message.read_round > self._round:
                self._round = message.read_round


def settle(
    waiting: list[concurrent.futures.Future[None]], outcome: concurrent.futures.Future[None]
) -> None:
    """Give every held save the outcome of the sync that covered it (the log is synced as
    a prefix: a later sync makes every earlier write durable, or fails)."""
    failure = outcome.exception()
    for future in waiting:
        if failure is not None:
            future.set_exception(failure)
        else:
            future.set_result(None)
    waiting.clear()

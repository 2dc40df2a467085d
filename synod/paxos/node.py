"""The Multi-Paxos node: a deterministic state machine with no I/O, no clock and no threads.

Theory of operation
-------------------
Every member is an acceptor; one voter at a time acts as the stable leader (proposer).

* Ballots `(round, node_id)` are unique per proposer. A would-be leader first asks for
  pre-votes (no state changes: a member that was cut off cannot depose a healthy leader),
  then runs phase 1 once, for every slot after its commit slot. Acceptors answer with all
  they accepted in that range. The leader re-proposes, per slot, the value with the highest
  ballot it saw, fills holes with no-ops, and from then on runs phase 2 only.
* A follower counts a slot as accepted in the leader's ballot only as part of a contiguous
  prefix (`_match_slot`); it learns a slot is chosen when the leader's piggybacked commit slot
  covers it and its own entry there carries the leader's ballot. The leader knows a slot is
  chosen when a quorum of voters match it in its ballot.
* Persistence contract: any message that reveals acceptor state (a promise, an accept reply,
  a vote) is placed in `Ready.persisted_messages` and leaves only after the Ready's persist
  is durable. The leader's own Accepts leave at once; its own acceptance counts only after
  `persisted()`.
* Reads (read-index): a read is tagged with a read round begun after it arrived; it is
  confirmed when a quorum of voters acknowledged that round in the leader's ballot, and
  released once the entries up to the commit slot of its arrival were handed for apply.
* Election restriction: an acceptor promises (or pre-votes) only if it still holds every slot
  the candidate asks about (after the candidate's commit slot): it never compacted what a
  candidate needs. A candidate that knows less than the acceptor learns the missing chosen
  slots from the promises (a chosen value is always the one of the highest ballot there).
* A follower's `match_slot` counts slots it knows chosen (its commit slot) besides entries of
  the leader's ballot, so a follower makes its commit slot durable (a synced hard state)
  before any reply that reveals it: a restarted member must never report less than it did.
  Restart trusts the durable commit hint because storage is prefix-durable: a hard state
  that survived a crash implies every entry saved before it survived.
"""

from __future__ import annotations

import enum
import random
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate

from synod.paxos.config import Config
from synod.paxos.errors import MembershipChangeRefused, NotLeader, ProposalDropped
from synod.paxos.log import AcceptorLog
from synod.paxos.messages import (
    Accept,
    AcceptReply,
    InstallSnapshot,
    Message,
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
    TimeoutNow,
)
from synod.paxos.progress import PeerProgress
from synod.paxos.ready import ReadState, Ready, SnapshotInstall, SnapshotRequest
from synod.paxos.types import (
    BALLOT_ZERO,
    Ballot,
    Entry,
    EntryKind,
    HardState,
    Membership,
    NodeId,
    Slot,
    SnapshotMeta,
)


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class TransferRefused(Exception):
    """A leadership transfer named a member that cannot take over."""


@dataclass(frozen=True, slots=True)
class Restore:
    """What a member recovered from storage.

    Bootstrap: empty hard state, a snapshot at slot 0 carrying the initial membership, no
    entries.
    """

    hard_state: HardState
    snapshot: SnapshotMeta
    entries: tuple[Entry, ...]

    @staticmethod
    def bootstrap(voters: Sequence[int]) -> Restore:
        membership = Membership(tuple(sorted(NodeId(v) for v in voters)))
        return Restore(HardState(), SnapshotMeta(Slot(0), membership), ())


@dataclass(frozen=True, slots=True)
class _PendingRead:
    read_id: int
    read_round: int
    slot: Slot


class Node:
    """One member's consensus state. Feed it inputs; carry out the `Ready` it returns."""

    def __init__(
        self, node_id: NodeId, config: Config, rng: random.Random, restore: Restore
    ) -> None:
        config.validate()
        assert restore.snapshot.last_slot >= 0
        self.node_id = node_id
        self.config = config
        self._rng = rng
        # A save torn after its entries but before its hard state leaves accepted entries of
        # a ballot whose promise was lost: accepting implies promising, so adopt it (no reply
        # revealing either left before the save completed).
        self._promised = max(
            [restore.hard_state.promised, *(entry.ballot for entry in restore.entries)]
        )
        self._max_round_seen = self._promised.round
        self._snapshot = restore.snapshot
        self._log = AcceptorLog(restore.snapshot.last_slot, restore.entries)
        self._config_slots: list[Slot] = []
        self._membership = restore.snapshot.membership
        self._rebuild_configs()
        # The commit hint is trusted: storage keeps saves in order (a surviving hard state
        # implies every entry saved before it survived), see the module docstring.
        self._commit_slot = Slot(
            max(
                restore.snapshot.last_slot,
                min(restore.hard_state.commit_slot, self._log.last_slot),
            )
        )
        self._handed_slot = restore.snapshot.last_slot
        self._applied_slot = restore.snapshot.last_slot
        self._role = Role.FOLLOWER
        self._leader: NodeId | None = None
        self._leader_ballot = BALLOT_ZERO
        self._match_slot = self._commit_slot
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._election_timeout = self._draw_election_timeout()
        self._votes: dict[NodeId, bool] = {}
        self._pre_vote_ballot = BALLOT_ZERO
        self._promises: dict[NodeId, tuple[Entry, ...]] = {}
        self._prepared: set[NodeId] = set()
        self._transfer_campaign = False
        # Leader state.
        self._peers: dict[NodeId, PeerProgress] = {}
        self._proposals: list[bytes] = []
        self._own_match_slot = Slot(0)
        self._recovery_end = Slot(0)
        self._unpersisted: deque[tuple[int, Ballot, Slot]] = deque()
        self._read_round_sent = 0
        self._read_round_wanted = False
        self._reads_unconfirmed: deque[_PendingRead] = deque()
        self._reads_confirmed: deque[_PendingRead] = deque()
        self._transfer_target: NodeId | None = None
        self._transfer_elapsed = 0
        self._transfer_timeout_sent = False
        self._stepping_down = False
        # While a commit that passes a configuration entry is not durable here, peers hear
        # of commits only below that entry (see `_shared_commit`).
        self._commit_share_cap: Slot | None = None
        self._commit_cap_ready: int | None = None
        # Output buffers, drained by `ready()`.
        self._ready_number = 0
        self._unstable_from: Slot | None = None
        self._hard_state_dirty = False
        self._must_sync = False
        self._snapshot_install: SnapshotInstall | None = None
        self._messages: list[Message] = []
        self._persisted_messages: list[Message] = []
        self._reads_released: list[ReadState] = []
        self._reads_failed: list[int] = []
        self._snapshot_requests: list[SnapshotRequest] = []

    # ------------------------------------------------------------------ introspection

    @property
    def role(self) -> Role:
        return self._role

    @property
    def ballot(self) -> Ballot:
        """The highest ballot this acceptor promised (the leader's own ballot when leading)."""
        return self._promised

    @property
    def leader(self) -> NodeId | None:
        return self._leader

    @property
    def commit_slot(self) -> Slot:
        return self._commit_slot

    @property
    def applied_slot(self) -> Slot:
        return self._applied_slot

    @property
    def last_slot(self) -> Slot:
        return self._log.last_slot

    @property
    def membership(self) -> Membership:
        """The newest configuration in the log (in force for this node, maybe uncommitted)."""
        return self._membership

    @property
    def committed_membership(self) -> Membership:
        """The newest configuration known chosen."""
        return self._membership_at(self._commit_slot)

    def peer_match(self, node_id: NodeId) -> Slot | None:
        """How far `node_id`'s log matches the leader's (None: not leading, or no such peer)."""
        if self._role is not Role.LEADER:
            return None
        if node_id == self.node_id:
            return self._own_match_slot
        progress = self._peers.get(node_id)
        return None if progress is None else progress.match_slot

    @property
    def snapshot_meta(self) -> SnapshotMeta:
        return self._snapshot

    def entry(self, slot: Slot) -> Entry | None:
        return self._log.entry(slot)

    # ------------------------------------------------------------------ inputs

    def tick(self) -> None:
        """One unit of logical time passed."""
        if self._role is Role.LEADER:
            self._tick_leader()
        else:
            self._tick_follower()

    def step(self, message: Message) -> None:
        """Handle one message from a peer."""
        assert message.dst == self.node_id, "message delivered to the wrong member"
        assert message.src != self.node_id, "a member never messages itself"
        self._max_round_seen = max(self._max_round_seen, message.ballot.round)
        if isinstance(message, (PreVoteReply, Promise, AcceptReply)):
            # A refusal names the ballot that beat ours: the next campaign must go above it,
            # or a member that never asks us (another configuration) outbids us forever.
            self._max_round_seen = max(self._max_round_seen, message.promised.round)
        match message:
            case PreVote():
                self._on_pre_vote(message)
            case PreVoteReply():
                self._on_pre_vote_reply(message)
            case Prepare():
                self._on_prepare(message)
            case Promise():
                self._on_promise(message)
            case Accept():
                self._on_accept(message)
            case AcceptReply():
                self._on_accept_reply(message)
            case InstallSnapshot():
                self._on_install_snapshot(message)
            case TimeoutNow():
                self._on_timeout_now(message)

    def propose(self, commands: Sequence[bytes]) -> None:
        """Queue client commands for the log. Raises NotLeader or ProposalDropped; a command
        that was queued may still be lost if leadership is lost (outcome unknown)."""
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if self._transfer_target is not None:
            raise ProposalDropped("leadership transfer in progress")
        if len(self._proposals) + len(commands) > self.config.proposal_queue_max:
            raise ProposalDropped("proposal queue full")
        self._proposals.extend(commands)

    def read_index(self, read_id: int) -> None:
        """Begin a linearizable read; `Ready.reads` releases it. Raises NotLeader."""
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        pending = len(self._reads_unconfirmed) + len(self._reads_confirmed)
        if pending >= self.config.reads_pending_max:
            raise ProposalDropped("too many reads pending")
        slot = max(self._commit_slot, self._recovery_end)
        self._reads_unconfirmed.append(_PendingRead(read_id, self._read_round_sent + 1, slot))
        self._read_round_wanted = True

    def transfer_leadership(self, target: NodeId) -> None:
        """Hand leadership to `target` once it holds every slot the leader holds."""
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if target == self.node_id:
            return
        if target not in self._membership.voters:
            raise TransferRefused(f"member {target} is not a voter")
        self._transfer_target = target
        self._transfer_elapsed = 0
        self._transfer_timeout_sent = False
        self._maybe_send_timeout_now()

    def change_membership(self, membership: Membership, context: bytes = b"") -> Slot:
        """Propose `membership` as the next configuration; returns the slot of its entry.

        One change at a time, each adding or removing at most one voter: then any quorum of
        the old configuration meets any quorum of the new one, and a candidate that learns
        the chain of configurations from its promises holds a quorum of each (see
        docs/paxos.md, "Membership changes"). Raises NotLeader or MembershipChangeRefused.
        """
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader)
        if self._transfer_target is not None or self._stepping_down:
            raise MembershipChangeRefused("leadership transfer in progress")
        if self._commit_slot < self._recovery_end:
            raise MembershipChangeRefused("the new leader has not committed its first slots yet")
        if self._config_slots and self._config_slots[-1] > self._commit_slot:
            raise MembershipChangeRefused("an earlier membership change is not committed yet")
        current = self._membership
        changed_voters = set(current.voters) ^ set(membership.voters)
        if len(changed_voters) > 1:
            raise MembershipChangeRefused(
                "a change may add or remove only one voter at a time "
                f"(voters {list(current.voters)} -> {list(membership.voters)})"
            )
        if membership == current:
            raise MembershipChangeRefused("the membership is unchanged")
        # Commands queued before the change go ahead of it, as far as the window allows.
        if self._proposals:
            self._cut_proposals()
        slot = Slot(self._log.last_slot + 1)
        commands = (context,) if context else ()
        self._store(Entry(slot, self._promised, EntryKind.MEMBERSHIP, commands, membership))
        self._sync_peers()
        self._maybe_commit()
        return slot

    def persisted(self, number: int) -> None:
        """The Ready numbered `number` (and every earlier one) is durable."""
        assert number <= self._ready_number
        while self._unpersisted and self._unpersisted[0][0] <= number:
            _, ballot, last_slot = self._unpersisted.popleft()
            if self._role is Role.LEADER and ballot == self._promised:
                self._own_match_slot = max(self._own_match_slot, last_slot)
        if self._commit_cap_ready is not None and number >= self._commit_cap_ready:
            self._commit_share_cap = None
            self._commit_cap_ready = None
        if self._role is Role.LEADER:
            self._maybe_commit()
            self._maybe_send_timeout_now()

    def applied(self, slot: Slot) -> None:
        """The state machine applied every entry up to `slot`."""
        assert slot <= self._handed_slot, "applied an entry that was never handed out"
        assert slot >= self._applied_slot, "applied slot went backwards"
        self._applied_slot = slot

    def compact(self, meta: SnapshotMeta) -> None:
        """A durable state-machine snapshot covers every slot up to `meta.last_slot`."""
        assert meta.last_slot <= self._applied_slot, "snapshot beyond what was applied"
        if meta.last_slot <= self._snapshot.last_slot:
            return
        self._snapshot = meta
        self._log.compact(meta.last_slot)
        self._config_slots = [slot for slot in self._config_slots if slot > meta.last_slot]
        if self._unstable_from is not None and self._unstable_from < self._log.first_slot:
            self._unstable_from = self._log.first_slot

    # ------------------------------------------------------------------ outputs

    def has_ready(self) -> bool:
        self._prepare_output()
        return bool(
            self._messages
            or self._persisted_messages
            or self._unstable_from is not None
            or self._hard_state_dirty
            or self._snapshot_install is not None
            or self._handed_slot < self._commit_slot
            or self._reads_released
            or self._reads_failed
            or self._snapshot_requests
            or self._releasable_reads()
        )

    def ready(self) -> Ready:
        self._prepare_output()
        self._ready_number += 1
        if self._commit_share_cap is not None and self._commit_cap_ready is None:
            self._commit_cap_ready = self._ready_number
        entries: tuple[Entry, ...] = ()
        if self._unstable_from is not None:
            entries = tuple(self._log.from_slot(self._unstable_from))
            if entries and self._role is Role.LEADER:
                self._unpersisted.append((self._ready_number, self._promised, entries[-1].slot))
        hard_state = None
        if self._hard_state_dirty:
            hard_state = HardState(self._promised, self._commit_slot)
        committed: tuple[Entry, ...] = ()
        if self._handed_slot < self._commit_slot:
            committed = tuple(self._log.slice(Slot(self._handed_slot + 1), self._commit_slot))
            self._handed_slot = self._commit_slot
        self._release_reads()
        ready = Ready(
            number=self._ready_number,
            hard_state=hard_state,
            snapshot=self._snapshot_install,
            entries=entries,
            must_sync=self._must_sync or bool(entries) or self._snapshot_install is not None,
            messages=tuple(self._messages),
            persisted_messages=tuple(self._persisted_messages),
            committed=committed,
            reads=tuple(self._reads_released),
            failed_reads=tuple(self._reads_failed),
            snapshot_requests=tuple(self._snapshot_requests),
        )
        self._unstable_from = None
        self._hard_state_dirty = False
        self._must_sync = False
        self._snapshot_install = None
        self._messages = []
        self._persisted_messages = []
        self._reads_released = []
        self._reads_failed = []
        self._snapshot_requests = []
        return ready

    def check_invariants(self) -> None:
        """Assert what must hold between any two inputs."""
        self._log.check()
        assert self._log.first_slot == self._snapshot.last_slot + 1
        assert self._applied_slot <= self._handed_slot <= self._commit_slot
        assert self._commit_slot <= self._log.last_slot
        assert self._snapshot.last_slot <= self._applied_slot
        assert self._membership == self._membership_at(self._log.last_slot)
        if self._role is Role.LEADER:
            assert self._leader == self.node_id
            assert self._promised.node_id == self.node_id
            assert self._own_match_slot <= self._log.last_slot
            for progress in self._peers.values():
                assert progress.match_slot <= self._log.last_slot
        else:
            assert not self._proposals, "only a leader queues proposals"
            assert self._commit_slot <= self._match_slot

    # ------------------------------------------------------------------ timers

    def _draw_election_timeout(self) -> int:
        ticks = self.config.election_ticks
        return ticks + self._rng.randrange(ticks)

    def _tick_follower(self) -> None:
        self._election_elapsed += 1
        if self._election_elapsed < self._election_timeout:
            return
        if not self._is_voter() and self._election_elapsed < 2 * self._election_timeout:
            return  # a learner stands only if no voter did first
        if not self._may_campaign():
            # Never campaign, but let the lease lapse: a learner that still believed in a
            # departed leader would refuse every candidate's pre-vote forever.
            return
        if self.config.pre_vote:
            self._start_pre_vote()
        else:
            self._start_campaign(transfer=False)

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()
        if self._transfer_target is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self.config.election_ticks:
                self._transfer_target = None
                if self._stepping_down:
                    # The chosen successor did not take over in time: stop leading anyway;
                    # the remaining voters elect one of themselves.
                    self._become_follower(leader=None)
                    return
        for peer, progress in self._peers.items():
            self._tick_peer(peer, progress)
        if self._election_elapsed >= self.config.election_ticks:
            self._election_elapsed = 0
            if self.config.check_quorum and not self._quorum_recently_active():
                self._become_follower(leader=None)

    def _tick_peer(self, peer: NodeId, progress: PeerProgress) -> None:
        if progress.snapshot_pending:
            progress.snapshot_elapsed += 1
            if progress.snapshot_elapsed >= self.config.snapshot_retry_ticks:
                progress.snapshot_pending = False
                progress.rewind()
            return
        if progress.match_slot >= self._log.last_slot:
            progress.ticks_since_progress = 0
            return
        progress.ticks_since_progress += 1
        if progress.ticks_since_progress >= self.config.retransmit_ticks:
            progress.rewind()

    def _quorum_recently_active(self) -> bool:
        active = {self.node_id}
        if self._stepping_down:
            return False
        for peer, progress in self._peers.items():
            if progress.recently_active:
                active.add(peer)
            progress.recently_active = False
        return self._membership.is_quorum(active)

    def _in_leader_lease(self) -> bool:
        """True while a leader was heard from within the minimum election timeout."""
        if self._role is Role.LEADER:
            return True
        return self._leader is not None and self._election_elapsed < self.config.election_ticks

    # ------------------------------------------------------------------ elections

    def _start_pre_vote(self) -> None:
        self._role = Role.PRE_CANDIDATE
        self._leader = None
        self._reset_election_timer()
        round_next = max(self._max_round_seen, self._promised.round) + 1
        self._pre_vote_ballot = Ballot(round_next, self.node_id)
        self._votes = {self.node_id: True}
        for voter in self._campaign_voters():
            self._messages.append(
                PreVote(self.node_id, voter, self._pre_vote_ballot, self._commit_slot)
            )
        self._tally_pre_votes()

    def _on_pre_vote(self, message: PreVote) -> None:
        granted = (
            not self._in_leader_lease()
            and message.ballot > self._promised
            and message.commit_slot + 1 >= self._log.first_slot
        )
        self._persisted_messages.append(
            PreVoteReply(self.node_id, message.src, message.ballot, granted, self._promised)
        )

    def _on_pre_vote_reply(self, message: PreVoteReply) -> None:
        if self._role is not Role.PRE_CANDIDATE or message.ballot != self._pre_vote_ballot:
            return
        self._votes[message.src] = message.granted
        self._tally_pre_votes()

    def _tally_pre_votes(self) -> None:
        granted = {voter for voter, vote in self._votes.items() if vote}
        refused = {voter for voter, vote in self._votes.items() if not vote}
        configs = (self.committed_membership, self._membership)
        if all(config.is_quorum(granted) for config in configs):
            self._start_campaign(transfer=False)
        elif any(config.is_quorum(refused) for config in configs):
            self._become_follower(leader=None)

    def _start_campaign(self, transfer: bool) -> None:
        """Phase 1: promise ourselves a fresh ballot, then ask the other voters."""
        self._role = Role.CANDIDATE
        self._leader = None
        self._reset_election_timer()
        round_next = max(self._max_round_seen, self._promised.round) + 1
        self._set_promised(Ballot(round_next, self.node_id))
        self._transfer_campaign = transfer
        self._promises = {self.node_id: tuple(self._log.from_slot(Slot(self._commit_slot + 1)))}
        self._prepared = {self.node_id}
        self._tally_promises()

    def _send_prepares(self, voters: Iterable[NodeId]) -> None:
        from_slot = Slot(self._commit_slot + 1)
        for voter in sorted(set(voters) - self._prepared):
            self._prepared.add(voter)
            self._persisted_messages.append(
                Prepare(
                    self.node_id,
                    voter,
                    self._promised,
                    from_slot,
                    self._commit_slot,
                    self._transfer_campaign,
                )
            )

    def _on_prepare(self, message: Prepare) -> None:
        refuse = (
            message.ballot < self._promised
            or (not message.transfer and self._in_leader_lease() and self._leader != message.src)
            or message.from_slot < self._log.first_slot
        )
        if refuse:
            self._persisted_messages.append(
                Promise(self.node_id, message.src, message.ballot, False, self._promised)
            )
            return
        if message.ballot > self._promised:
            self._set_promised(message.ballot)
            self._become_follower(leader=None)
        self._reset_election_timer()
        entries = tuple(self._log.from_slot(message.from_slot))
        self._persisted_messages.append(
            Promise(self.node_id, message.src, message.ballot, True, self._promised, entries)
        )

    def _on_promise(self, message: Promise) -> None:
        if self._role is not Role.CANDIDATE or message.ballot != self._promised:
            return
        if not message.granted:
            if message.promised > self._promised:
                self._become_follower(leader=None)
            return
        self._promises[message.src] = message.entries
        self._tally_promises()

    def _tally_promises(self) -> None:
        """Win once the promises form a quorum of every configuration they reveal.

        The chain starts at the newest configuration known chosen and follows, slot by slot,
        the configuration entries of the highest ballot among the promises (what the new
        leader will re-propose). Each chosen configuration was chosen by a quorum of itself,
        which meets a quorum of its predecessor (they differ by one voter), so a candidate
        holding a quorum of every configuration it learns cannot miss a chosen one, nor a
        value chosen under it. Voters newly revealed are asked too.
        """
        chain = [self.committed_membership] + [
            entry.membership
            for entry in self._merged_promises().values()
            if entry.membership is not None
        ]
        chain.append(self._membership)
        self._send_prepares(voter for config in chain for voter in config.voters)
        promised = set(self._promises)
        if all(config.is_quorum(promised) for config in chain):
            self._become_leader()

    def _merged_promises(self) -> dict[Slot, Entry]:
        """Per slot after the commit slot, the promised entry of the highest ballot."""
        start = self._commit_slot + 1
        merged: dict[Slot, Entry] = {}
        for node in sorted(self._promises):
            for entry in self._promises[node]:
                if entry.slot < start:
                    continue
                seen = merged.get(entry.slot)
                if seen is None or entry.ballot > seen.ballot:
                    merged[entry.slot] = entry
        return dict(sorted(merged.items()))

    def _on_timeout_now(self, message: TimeoutNow) -> None:
        if message.src != self._leader or message.ballot != self._leader_ballot:
            return
        if self.node_id not in self._membership.voters:
            return
        self._advance_commit(min(message.commit_slot, self._match_slot))
        self._start_campaign(transfer=True)

    # ------------------------------------------------------------------ role changes

    def _become_follower(self, leader: NodeId | None) -> None:
        if self._role is Role.LEADER:
            self._abandon_leadership()
        self._role = Role.FOLLOWER
        self._leader = leader
        self._votes = {}
        self._promises = {}
        self._prepared = set()

    def _abandon_leadership(self) -> None:
        """Forget leader state. Queued proposals never entered the log; reads fail."""
        self._peers = {}
        self._proposals.clear()
        self._unpersisted.clear()
        self._transfer_target = None
        self._stepping_down = False
        self._commit_share_cap = None
        self._commit_cap_ready = None
        for read in list(self._reads_unconfirmed) + list(self._reads_confirmed):
            self._reads_failed.append(read.read_id)
        self._reads_unconfirmed.clear()
        self._reads_confirmed.clear()
        self._read_round_wanted = False
        self._leader_ballot = BALLOT_ZERO
        self._match_slot = self._commit_slot

    def _become_leader(self) -> None:
        """Re-propose, per slot, the value with the highest accepted ballot; fill holes."""
        ballot = self._promised
        start = Slot(self._commit_slot + 1)
        chosen_candidates = self._merged_promises()
        end = Slot(max(chosen_candidates, default=self._commit_slot))
        for slot_number in range(start, end + 1):
            slot = Slot(slot_number)
            found = chosen_candidates.get(slot)
            if found is None:
                self._store(Entry(slot, ballot, EntryKind.NOOP))
            else:
                self._store(found.with_ballot(ballot))
        self._role = Role.LEADER
        self._leader = self.node_id
        self._leader_ballot = ballot
        self._promises = {}
        self._prepared = set()
        self._votes = {}
        self._stepping_down = False
        self._recovery_end = end
        self._own_match_slot = self._commit_slot
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._peers = {}
        self._sync_peers(next_slot=start)
        self._broadcast_heartbeat()
        self._maybe_hand_over()

    # ------------------------------------------------------------------ phase 2: follower

    def _on_accept(self, message: Accept) -> None:
        if message.ballot < self._promised:
            self._reply_refused(message.src, message.ballot)
            return
        self._follow(message.src, message.ballot)
        gap = False
        if message.entries:
            gap = not self._store_accepted(message.entries)
        self._advance_commit(min(message.commit_slot, self._match_slot))
        self._persisted_messages.append(
            AcceptReply(
                self.node_id,
                message.src,
                message.ballot,
                True,
                self._match_slot,
                message.read_round,
                self._promised,
                gap,
            )
        )

    def _follow(self, leader: NodeId, ballot: Ballot) -> None:
        """Adopt `ballot`'s proposer as leader: an accept is an implicit promise."""
        if ballot > self._promised:
            self._set_promised(ballot)
        if self._role is not Role.FOLLOWER:
            self._become_follower(leader)
        self._leader = leader
        if self._leader_ballot != ballot:
            self._leader_ballot = ballot
            self._match_slot = self._commit_slot
            self._advance_match()
        self._reset_election_timer()

    def _store_accepted(self, entries: tuple[Entry, ...]) -> bool:
        """Store a contiguous run of accepted entries; False if a gap precedes them."""
        first = entries[0].slot
        if first > self._match_slot + 1:
            return False
        for entry in entries:
            assert entry.ballot == self._leader_ballot
            held = self._log.entry(entry.slot)
            if entry.slot <= self._commit_slot:
                assert held is None or held.same_value(entry), "a chosen value changed"
                continue
            if held is not None and held.ballot == entry.ballot:
                continue
            self._store(entry)
        self._advance_match()
        return True

    def _advance_match(self) -> None:
        log = self._log
        while True:
            entry = log.entry(Slot(self._match_slot + 1))
            if entry is None or entry.ballot != self._leader_ballot:
                return
            self._match_slot = entry.slot

    def _reply_refused(self, leader: NodeId, ballot: Ballot) -> None:
        self._persisted_messages.append(
            AcceptReply(self.node_id, leader, ballot, False, Slot(0), 0, self._promised)
        )

    def _on_install_snapshot(self, message: InstallSnapshot) -> None:
        if message.ballot < self._promised:
            self._reply_refused(message.src, message.ballot)
            return
        self._follow(message.src, message.ballot)
        meta = message.meta
        if meta.last_slot > self._commit_slot:
            self._install_snapshot(meta, message.data)
        self._persisted_messages.append(
            AcceptReply(
                self.node_id,
                message.src,
                message.ballot,
                True,
                self._match_slot,
                0,
                self._promised,
            )
        )

    def _install_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """Everything up to `meta.last_slot` is chosen; later accepted entries are kept."""
        self._snapshot = meta
        self._log.compact(meta.last_slot)
        self._snapshot_install = SnapshotInstall(meta, data)
        self._commit_slot = meta.last_slot
        self._handed_slot = meta.last_slot
        self._applied_slot = meta.last_slot
        self._hard_state_dirty = True
        self._rebuild_configs()
        self._match_slot = meta.last_slot
        self._advance_match()
        # Storage replaces its log with the snapshot: write the retained tail back.
        if len(self._log):
            self._unstable_from = self._log.first_slot
        else:
            self._unstable_from = None

    # ------------------------------------------------------------------ phase 2: leader

    def _on_accept_reply(self, message: AcceptReply) -> None:
        if self._role is not Role.LEADER or message.ballot != self._promised:
            return
        if not message.ok:
            if message.promised > self._promised:
                self._become_follower(leader=None)
            return
        progress = self._peers.get(message.src)
        if progress is None:
            return
        progress.recently_active = True
        progress.read_round = max(progress.read_round, message.read_round)
        advanced = progress.acknowledged(message.match_slot)
        if progress.snapshot_pending and message.match_slot >= self._snapshot.last_slot:
            progress.snapshot_pending = False
        if message.gap:
            if message.match_slot >= progress.match_slot and not advanced:
                progress.rewind()
        elif not progress.in_flight:
            progress.probing = False
        if advanced:
            self._maybe_commit()
        self._maybe_confirm_reads()
        self._maybe_send_timeout_now()

    def _maybe_commit(self) -> None:
        """Commit what a quorum of the newest configuration matches (a leader that removed
        itself still counts the others until that change is chosen)."""
        matches = [self._own_match_slot] if self.node_id in self._membership.voters else []
        for voter in self._other_voters():
            progress = self._peers.get(voter)
            matches.append(progress.match_slot if progress is not None else Slot(0))
        matches.sort(reverse=True)
        self._advance_commit(matches[self._membership.quorum() - 1])

    def _advance_commit(self, slot: Slot) -> None:
        if slot > self._commit_slot:
            assert slot <= self._log.last_slot
            previous = self._commit_slot
            passed_config = any(
                previous < config_slot <= slot for config_slot in self._config_slots
            )
            self._commit_slot = slot
            self._hard_state_dirty = True
            if self._role is not Role.LEADER:
                # Durable before any reply: our replies count known-chosen slots in
                # `match_slot`, and a member that forgot a commit (a crash losing an unsynced
                # hint) may need slots the others compacted, which they refuse to a candidate:
                # with the only members that knew gone, no leader (simulator seed 24062 with
                # --reconfig, when this sync was skipped).
                self._must_sync = True
                return
            if passed_config:
                # Nobody may learn that a configuration is chosen before our own commit hint
                # says so durably: a restarted leader that forgot it would need a quorum of
                # the previous configuration, whose removed members may refuse it forever.
                first_passed = min(c for c in self._config_slots if c > previous)
                cap = Slot(first_passed - 1)
                if self._commit_share_cap is None or cap < self._commit_share_cap:
                    self._commit_share_cap = cap
                self._commit_cap_ready = None
                self._must_sync = True
                self._sync_peers()  # stop replicating to removed members
            self._maybe_hand_over()

    def _maybe_hand_over(self) -> None:
        """A leader that is a voter of neither its newest nor its committed configuration (it
        removed itself, or it is a learner that stood because no voter could) hands leadership
        to the most caught-up voter once the slots it recovered are chosen."""
        if self._stepping_down or self._commit_slot < self._recovery_end:
            return
        if self._is_voter():
            return
        self._stepping_down = True
        voters = self._other_voters()
        if voters:
            best = max(voters, key=lambda voter: (self._peers[voter].match_slot, -voter))
            self._transfer_target = best
            self._transfer_elapsed = 0
            self._transfer_timeout_sent = False
            self._maybe_send_timeout_now()

    def _cut_proposals(self) -> None:
        """Batch queued commands into new slots, bounded by the uncommitted-slot window.

        Slicing and `accumulate` keep the per-command cost in C: this is the hot path.
        """
        config = self.config
        queued = self._proposals
        head = 0
        while head < len(queued):
            if self._log.last_slot - self._commit_slot >= config.uncommitted_slots_max:
                break
            candidates = queued[head : head + config.batch_commands_max]
            cumulative = list(accumulate(map(len, candidates)))
            count = max(1, bisect_right(cumulative, config.batch_bytes_max))
            slot = Slot(self._log.last_slot + 1)
            commands = tuple(candidates[:count])
            self._store(
                Entry(
                    slot,
                    self._promised,
                    EntryKind.COMMANDS,
                    commands,
                    None,
                    32 + cumulative[count - 1],
                )
            )
            head += count
        del queued[:head]

    def _send_accepts(self, peer: NodeId, progress: PeerProgress) -> None:
        config = self.config
        log = self._log
        while progress.next_slot <= log.last_slot and progress.window_open(
            config.window_messages_max, config.window_bytes_max
        ):
            if progress.next_slot < log.first_slot:
                progress.snapshot_pending = True
                progress.snapshot_elapsed = 0
                self._snapshot_requests.append(SnapshotRequest(peer, self._promised))
                return
            last = Slot(min(log.last_slot, progress.next_slot + config.accept_entries_max - 1))
            entries = log.slice(progress.next_slot, last)
            size_bytes = 0
            for count, entry in enumerate(entries):
                size_bytes += entry.size_bytes
                if size_bytes >= config.batch_bytes_max and count > 0:
                    entries = entries[: count + 1]
                    break
            ballot = self._promised
            if entries[0].ballot != ballot:
                # Slots chosen before this leadership keep their old ballot in our log; the
                # follower counts only entries of our ballot, and proposing a chosen value
                # again in a higher ballot is always safe.
                entries = [e if e.ballot == ballot else e.with_ballot(ballot) for e in entries]
            progress.commit_sent = self._shared_commit()
            self._messages.append(
                Accept(
                    self.node_id,
                    peer,
                    ballot,
                    tuple(entries),
                    progress.commit_sent,
                    self._read_round_sent,
                )
            )
            progress.sent(entries[-1].slot, size_bytes)

    def _shared_commit(self) -> Slot:
        """The commit slot a leader tells its peers (see `_commit_share_cap`)."""
        cap = self._commit_share_cap
        return self._commit_slot if cap is None else min(self._commit_slot, cap)

    def _broadcast_heartbeat(self) -> None:
        for peer in sorted(self._peers):
            self._send_heartbeat(peer, self._peers[peer])

    def _send_heartbeat(self, peer: NodeId, progress: PeerProgress) -> None:
        progress.commit_sent = self._shared_commit()
        self._messages.append(
            Accept(
                self.node_id,
                peer,
                self._promised,
                (),
                progress.commit_sent,
                self._read_round_sent,
            )
        )

    def _maybe_send_timeout_now(self) -> None:
        target = self._transfer_target
        if target is None or self._transfer_timeout_sent:
            return
        progress = self._peers.get(target)
        if progress is None or progress.match_slot < self._log.last_slot:
            return
        # Proposals stay refused until the transfer times out, so that the target's commit
        # slot is not overtaken while it runs phase 1.
        if self._commit_share_cap is not None:
            return  # sent once our commit hint is durable (`persisted`)
        self._messages.append(TimeoutNow(self.node_id, target, self._promised, self._commit_slot))
        self._transfer_timeout_sent = True

    # ------------------------------------------------------------------ reads

    def _maybe_confirm_reads(self) -> None:
        if not self._reads_unconfirmed:
            return
        rounds = [self._read_round_sent] if self.node_id in self._membership.voters else []
        for voter in self._other_voters():
            progress = self._peers.get(voter)
            rounds.append(progress.read_round if progress is not None else 0)
        rounds.sort(reverse=True)
        confirmed_round = rounds[self._membership.quorum() - 1]
        while self._reads_unconfirmed and self._reads_unconfirmed[0].read_round <= confirmed_round:
            self._reads_confirmed.append(self._reads_unconfirmed.popleft())

    def _releasable_reads(self) -> bool:
        return bool(self._reads_confirmed) and self._reads_confirmed[0].slot <= self._commit_slot

    def _release_reads(self) -> None:
        while self._reads_confirmed and self._reads_confirmed[0].slot <= self._handed_slot:
            read = self._reads_confirmed.popleft()
            self._reads_released.append(ReadState(read.read_id, read.slot))

    # ------------------------------------------------------------------ plumbing

    def _prepare_output(self) -> None:
        """Turn queued work into messages: new slots, accepts within windows, read rounds."""
        if self._role is not Role.LEADER:
            return
        if self._proposals:
            self._cut_proposals()
        if self._read_round_wanted:
            self._read_round_wanted = False
            self._read_round_sent += 1
            self._broadcast_heartbeat()
            self._maybe_confirm_reads()
        for peer in sorted(self._peers):
            progress = self._peers[peer]
            if progress.next_slot <= self._log.last_slot:
                self._send_accepts(peer, progress)
            if progress.commit_sent < self._shared_commit():
                # Tell followers at once (not at the next heartbeat) that slots are chosen:
                # a write forwarded by a follower is answered when the follower applies it.
                self._send_heartbeat(peer, progress)

    def _store(self, entry: Entry) -> None:
        held = self._log.entry(entry.slot)
        self._log.store(entry)
        if self._unstable_from is None or entry.slot < self._unstable_from:
            self._unstable_from = entry.slot
        was_config = held is not None and held.kind is EntryKind.MEMBERSHIP
        if was_config or entry.kind is EntryKind.MEMBERSHIP:
            # A configuration is in force from the moment it is stored (and stops being so
            # if a higher ballot overwrites its slot with another value).
            self._rebuild_configs()

    def _rebuild_configs(self) -> None:
        """Index the configuration entries held, and adopt the newest one."""
        self._config_slots = [
            entry.slot
            for entry in self._log.from_slot(self._log.first_slot)
            if entry.kind is EntryKind.MEMBERSHIP
        ]
        self._membership = self._membership_at(self._log.last_slot)

    def _membership_at(self, slot: Slot) -> Membership:
        """The configuration of the newest configuration entry held at or below `slot`."""
        for config_slot in reversed(self._config_slots):
            if config_slot <= slot:
                entry = self._log.entry(config_slot)
                assert entry is not None and entry.membership is not None
                return entry.membership
        return self._snapshot.membership

    def _sync_peers(self, next_slot: Slot | None = None) -> None:
        """A leader replicates to every member of the committed and the newest configuration."""
        wanted = set(self._membership.members) | set(self.committed_membership.members)
        wanted.discard(self.node_id)
        for member in set(self._peers) - wanted:
            del self._peers[member]
        start = Slot(self._commit_slot + 1) if next_slot is None else next_slot
        for member in sorted(wanted - set(self._peers)):
            self._peers[member] = PeerProgress(next_slot=start)

    def _is_voter(self) -> bool:
        return (
            self.node_id in self._membership.voters
            or self.node_id in self.committed_membership.voters
        )

    def _may_campaign(self) -> bool:
        """Any member of the newest or the committed configuration may stand (a proposer
        need not be an acceptor; safety depends only on the quorums a candidate must win).
        A voter may be the only one able to finish its own removal; a learner may be the only
        one whose log reaches the slots the remaining voters need (they may have been
        compacted everywhere else). A member that knows it was removed never stands."""
        return (
            self._is_voter()
            or self.node_id in self._membership.learners
            or (self.node_id in self.committed_membership.learners)
        )

    def _campaign_voters(self) -> list[NodeId]:
        voters = set(self._membership.voters) | set(self.committed_membership.voters)
        voters.discard(self.node_id)
        return sorted(voters)

    def _set_promised(self, ballot: Ballot) -> None:
        assert ballot > self._promised, "promises only grow"
        self._promised = ballot
        self._hard_state_dirty = True
        self._must_sync = True

    def _reset_election_timer(self) -> None:
        self._election_elapsed = 0
        self._election_timeout = self._draw_election_timeout()

    def _other_voters(self) -> list[NodeId]:
        return [voter for voter in self._membership.voters if voter != self.node_id]

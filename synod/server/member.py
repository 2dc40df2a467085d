"""The member runtime: the only owner of an event loop. Moves bytes and timers around the
synchronous driver; decides nothing about consensus.

Client writes become log commands wrapped in an envelope `[origin member, sequence,
payload]`; the origin member resolves its waiting future when it applies that command, so a
write that reached a follower is forwarded to the leader and still answered by the follower.
Linearizable reads take a read-index at the leader (directly, or through a forwarded request
from a follower) and wait until the local state machine applied the slot it names.

Frames between members carry core messages (type codes below 100) and the runtime's own
forwarding messages (codes 100 and up), defined here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import os
import random
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgpack

from synod.paxos.errors import NotLeader, ProposalDropped
from synod.paxos.messages import InstallSnapshot, Message
from synod.paxos.node import Node, Role, TransferRefused
from synod.paxos.ready import Ready
from synod.paxos.types import (
    Entry,
    EntryKind,
    Membership,
    NodeId,
    Slot,
    SnapshotMeta,
)
from synod.server import deferred_sync
from synod.server.config import ConfigError, ServerConfig, Url
from synod.server.driver import READY_ROUNDS_MAX, Driver, needs_persist
from synod.server.errors import NoLeader, Overloaded, RequestTimeout
from synod.server.members import (
    TABLE_COMMAND,
    MemberTable,
    TableError,
    bootstrap_table,
    decode_context,
    decode_table_command,
    encode_machine_snapshot,
    machine_snapshot_view,
    table_digest,
)
from synod.server.reconfig import MEMBER_CHANGE, MEMBER_CHANGE_ANSWER, Reconfigurer
from synod.server.snapshot_saver import SnapshotSaver, collector_paused, service_pieces
from synod.server.snapshot_transfer import (
    SNAPSHOT_ACK,
    SNAPSHOT_BEGIN,
    SNAPSHOT_CHUNK,
    FileShippingMachine,
    SnapshotReceiver,
    SnapshotSender,
)
from synod.storage.errors import StorageError
from synod.storage.storage import DurableStorage
from synod.storage.wal import Ticket, WalOptions
from synod.transport.codec import WireError, decode_messages, encode_messages
from synod.transport.peer import PeerTransport

log = logging.getLogger(__name__)

FORWARD_PROPOSALS = 100
FORWARD_REFUSED = 101
READ_INDEX_REQUEST = 102
READ_INDEX_GRANTED = 103
READ_INDEX_REFUSED = 104
MEMBER_REMOVED = 107  # "the cluster removed you", to a removed member that still talks
# A question only the leader answers (`Member.ask_leader`), its answer, and its refusal:
# [LEADER_QUERY, query_id, name, argument], [LEADER_ANSWER, query_id, answer],
# [LEADER_REFUSED, query_id, message].
LEADER_QUERY = 108
LEADER_ANSWER = 109
LEADER_REFUSED = 113
WAITERS_MAX = 100_000
STORAGE_FAILED_EXIT = 70
DEBUG_KNOB_REREAD_S = 0.2
HANDOVER_POLL_S = 0.01
REMOVED_PEER_GRACE_S = 5.0  # a removed peer stays addressed this long (hears its removal)


class _DebugKnob:
    """A fault-testing number, 0 (off) unless `NAME` sets it or the file named by `NAME_FILE`
    holds it (re-read at most every 0.2 s, so a harness can change it while the member runs).
    SYNOD_DEBUG_FSYNC_DELAY_MS slows every synced save; SYNOD_DEBUG_CLOCK_OFFSET_MS shifts the
    leader's lease clock. See docs/chaos.md."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fixed = float(os.environ.get(name, "") or 0)
        self.path = os.environ.get(name + "_FILE") or None
        self.value = self.fixed
        self.read_at = float("-inf")
        if self.fixed or self.path:
            log.warning(
                "debug fault knob %s is on (fixed %s, file %s)", name, self.fixed, self.path
            )

    def get(self) -> float:
        if self.path is None:
            return self.fixed
        now = time.monotonic()
        if now - self.read_at >= DEBUG_KNOB_REREAD_S:
            self.read_at = now
            try:
                self.value = float(Path(self.path).read_text().strip() or 0)
            except (OSError, ValueError):
                self.value = self.fixed
        return self.value


class Observer(Protocol):
    """Where the runtime reports durations (the Prometheus metrics, for instance)."""

    def observe_fsync(self, seconds: float) -> None: ...

    def observe_apply(self, seconds: float) -> None: ...

    def observe_proposal(self, seconds: float) -> None: ...

    def observe_snapshot_save(self, seconds: float) -> None: ...

    def observe_snapshot_install(self, seconds: float) -> None: ...


class _NullObserver:
    def observe_fsync(self, seconds: float) -> None:
        pass

    def observe_apply(self, seconds: float) -> None:
        pass

    def observe_proposal(self, seconds: float) -> None:
        pass

    def observe_snapshot_save(self, seconds: float) -> None:
        pass

    def observe_snapshot_install(self, seconds: float) -> None:
        pass


@dataclass
class _Persisting:
    """A Ready whose save is under way; Readys complete strictly in the order made."""

    ready: Ready
    future: concurrent.futures.Future[None] | None = None
    started: float = 0.0
    complete_at: float | None = None
    applied: bool = False  # applied ahead of its save (synod.server.deferred_sync)


class ReplicatedService(Protocol):
    """A deterministic state machine behind the log (the KV store, for instance)."""

    def apply(self, payload: bytes, slot: int) -> object:
        """Apply one command; return its response (an Exception instance for a rejection)."""

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes | memoryview) -> None:
        """Replace the state with a snapshot's; `data` may be a view into a larger buffer
        (read it in place rather than copy it: at a million keys the copy is ~290 MB)."""

    def leader_duties(self, now_ms: int, became_leader: bool) -> list[bytes]:
        """Commands the leader must propose now (lease expiry, for instance)."""

    def leader_query(self, name: str, argument: Any, now_ms: int) -> Any:
        """Answer a question only the leader can (a lease keep-alive answered without a
        log entry, for instance) on the leader's lease clock `now_ms`; the answer travels
        in msgpack. Raise ValueError for a question it does not know."""


@dataclass
class _PendingRead:
    future: asyncio.Future[None]
    slot: Slot | None = None


def _time_out(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class _Machine:
    """Adapts the service to the driver's StateMachine protocol and resolves waiters.

    Besides the service it keeps the replicated member table (synod/server/members.py):
    each MEMBERSHIP entry carries the table after the change as its context.
    """

    def __init__(
        self, member: Member, service: ReplicatedService, membership: Membership, table: MemberTable
    ):
        self.member = member
        self.service = service
        self.applied_slot = Slot(0)
        self.membership = membership
        self.table = table

    def apply(self, entry: Entry) -> None:
        assert entry.slot == self.applied_slot + 1, "entries apply in order, once"
        started = time.perf_counter()
        if entry.kind is EntryKind.MEMBERSHIP:
            assert entry.membership is not None
            self._apply_membership(entry.membership, entry.commands)
        else:
            for command in entry.commands:
                origin, sequence, payload = msgpack.unpackb(command)
                if origin == TABLE_COMMAND:
                    self._apply_table_command(sequence, payload)
                    continue
                result = self.service.apply(payload, entry.slot)
                if origin == self.member.member_id:
                    self.member._resolve_write(sequence, result)
        self.applied_slot = entry.slot
        self.member.observer.observe_apply(time.perf_counter() - started)

    def _apply_membership(self, membership: Membership, commands: tuple[bytes, ...]) -> None:
        """The new configuration and its table; a missing or unreadable table (a change
        made without one) keeps the old table made to agree with the configuration."""
        change_id: int | None = None
        table: MemberTable | None = None
        if commands:
            try:
                change_id, carried = decode_context(commands[0])
            except TableError as error:
                log.error("membership entry with an unreadable member table: %s", error)
            else:
                if carried.membership() == membership:
                    table = carried
                else:
                    log.error("membership entry whose table disagrees with its configuration")
        if table is None:
            table = self.table.conform(membership)
        self.membership = membership
        self.table = table
        self.member._on_table_applied(change_id, table)

    def _apply_table_command(self, change_id: int, payload: object) -> None:
        """A change of names or URLs: applied only on the table it was planned on, so two
        changes planned at once cannot undo each other (the later one is retried)."""
        try:
            base, table = decode_table_command(payload)
        except TableError as error:
            log.error("table command with an unreadable member table: %s", error)
            return
        if base != table_digest(self.table) or table.membership() != self.membership:
            self.member.reconfig.on_applied(change_id, None)
            return
        self.table = table
        self.member._on_table_applied(change_id, table)

    def snapshot(self) -> tuple[SnapshotMeta, bytes]:
        meta = SnapshotMeta(self.applied_slot, self.membership)
        return meta, encode_machine_snapshot(self.table, self.service.snapshot())

    def snapshot_stream(self) -> tuple[SnapshotMeta, Iterator[bytes]]:
        """The state as of now, as pieces that join to `snapshot()`'s bytes; applying may go
        on between pieces (see synod.server.snapshot_saver)."""
        meta = SnapshotMeta(self.applied_slot, self.membership)
        table_prefix = encode_machine_snapshot(self.table, b"")
        return meta, itertools.chain([table_prefix], service_pieces(self.service))

    def restore(self, meta: SnapshotMeta, data: bytes) -> None:
        started = time.perf_counter()
        table, service_bytes = machine_snapshot_view(data)
        with collector_paused():
            self.service.restore(service_bytes)
        self.member.observer.observe_snapshot_install(time.perf_counter() - started)
        self.applied_slot = meta.last_slot
        self.membership = meta.membership
        if table is None or table.membership() != meta.membership:
            table = (table or self.table).conform(meta.membership)
        self.table = table
        self.member._on_table_applied(None, table)


class Member:
    def __init__(self, config: ServerConfig, service: ReplicatedService) -> None:
        self.config = config
        self.service = service
        self.member_id = config.member_id
        self.cluster_id = config.cluster_id
        # Random start: sequences of an earlier incarnation, replayed from the log after a
        # restart, must never resolve this incarnation's waiters.
        self._sequence = itertools.count(int.from_bytes(os.urandom(6), "big") << 16)
        self._writes: dict[int, asyncio.Future[object]] = {}
        self._reads: dict[int, _PendingRead] = {}
        self._remote_reads: dict[int, tuple[int, int]] = {}
        # leader: read rounds of followers' questions -> (follower, query id, name, argument)
        self._remote_queries: dict[int, tuple[int, int, str, Any]] = {}
        self._process_scheduled = False
        self._tasks: list[asyncio.Task[None]] = []
        self._was_leader = False
        self._last_snapshot_slot = Slot(0)
        self.leader_changes = 0
        self.observer: Observer = _NullObserver()
        self._persisting: deque[_Persisting] = deque()
        # Saves of learned commit slots waiting for the next sync (deferred_sync), the
        # timer that syncs them if nothing else does, and what decides which may wait.
        self._held: list[concurrent.futures.Future[None]] = []
        self._held_ticket: Ticket | None = None
        self._held_timer: asyncio.TimerHandle | None = None
        self._read_rounds = deferred_sync.ReadRounds()
        self._deadlines: deque[tuple[float, int]] = deque()  # (deadline, waiter)
        self._received_snapshot: InstallSnapshot | None = None
        self._fsync_delay_ms = _DebugKnob("SYNOD_DEBUG_FSYNC_DELAY_MS")
        self.proposals_received = 0
        self.proposals_failed = 0
        self.started = asyncio.Event()
        self.removed = asyncio.Event()
        self._extra_peers: dict[int, tuple[str, int]] = {}
        self._removed_addresses: dict[int, tuple[str, int]] = {}
        self._forwarded_to: dict[int, int] = {}  # write sequence -> leader it went to
        self._known_leader: int | None = None
        self.reconfig = Reconfigurer(self)
        self.last_heard: dict[int, float] = {}
        self._clock_offset_ms = _DebugKnob("SYNOD_DEBUG_CLOCK_OFFSET_MS")

    # ------------------------------------------------------------------ lifecycle

    def bootstrap_table(self) -> MemberTable:
        """The table before any MEMBERSHIP entry: the joined cluster's (a member that
        joined a running cluster), else the one --initial-cluster (and
        --initial-cluster-client-urls) describes. Only flags every member shares go in, so
        that every member starts from the same table; a member's own client URLs reach the
        others through the log (Reconfigurer.publish_loop)."""
        if self.config.joined is not None:
            return MemberTable.decode(self.config.joined.table)
        return bootstrap_table(
            ((p.member_id, p.name, str(p.peer_url)) for p in self.config.initial_cluster),
            dict(self.config.client_urls_of),
        )

    def _bootstrap_membership(self, table: MemberTable) -> Membership:
        """A joining member starts as a learner of the configuration it learned, whatever
        the cluster made it: it must not campaign before its log holds its own addition."""
        membership = table.membership()
        if self.config.joined is None or self.member_id not in membership.voters:
            return membership
        voters = tuple(v for v in membership.voters if v != self.member_id)
        learners = tuple(sorted((*membership.learners, NodeId(self.member_id))))
        return Membership(voters, learners)

    async def start(self) -> None:
        table = self.bootstrap_table()
        bootstrap = SnapshotMeta(Slot(0), self._bootstrap_membership(table))
        self.storage = DurableStorage.open(
            self.config.data_dir,
            bootstrap=bootstrap,
            options=WalOptions(sync_thread=self.config.wal_fsync == "thread"),
        )
        restore, snapshot_data = self.storage.load()
        self.node = Node(
            NodeId(self.member_id), self.config.core, random.Random(self.member_id), restore
        )
        self._loop = asyncio.get_running_loop()
        self.machine = _Machine(self, self.service, restore.snapshot.membership, table)
        if snapshot_data is not None:
            self.machine.restore(restore.snapshot, snapshot_data)
        self.storage.release_loaded()
        del snapshot_data
        # Each member snapshots at its own phase of the interval: members that all snapshot
        # at the same slot slowed every write of the quorum at the same time. The phase
        # delays the first snapshot after a start (never brings it sooner).
        self._last_snapshot_slot = Slot(restore.snapshot.last_slot + self._snapshot_phase())
        self.snapshots = SnapshotSaver(self.storage, self._on_snapshot_saved, self._storage_failed)
        shipping = FileShippingMachine(self.machine, self.storage)
        self.driver = Driver(
            self.node, self.storage, self, shipping, self._on_read, self._on_read_failed
        )
        listen = self.config.listen_peer_url
        self.transport = PeerTransport(
            self.member_id,
            self.cluster_id,
            (listen.host, listen.port),
            self._peer_addresses(),
            self._on_frame,
        )
        self.transport.on_join_query = self._on_join_query
        advertised = self.config.me.peer_url  # the URL the cluster knows this member by
        self.transport.advertise = (advertised.host, advertised.port)
        self.snapshot_sender = SnapshotSender(self.transport.send)
        self.snapshot_receiver = SnapshotReceiver(
            self.member_id, self.config.data_dir, self.transport.send, self._on_snapshot_received
        )
        await self.transport.start()
        self._tasks.append(asyncio.create_task(self._tick_loop()))
        self._tasks.append(asyncio.create_task(self.reconfig.publish_loop()))
        self.started.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.transport.stop()
        self.snapshot_sender.close()
        self.snapshot_receiver.close()
        await self.snapshots.close()
        if self._held_timer is not None:
            self._held_timer.cancel()  # closing the log syncs what it held
        self.storage.close()
        for future in list(self._writes.values()):
            if not future.done():
                future.set_exception(RequestTimeout("member stopping"))

    async def _tick_loop(self) -> None:
        interval_s = self.config.tick_ms / 1000
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + interval_s
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            next_tick += interval_s
            self.node.tick()
            self._expire_requests()
            self.snapshot_sender.tick()
            self._leader_duties()
            self._schedule_process()

    # ------------------------------------------------------------------ driver seams

    def send(self, messages: Sequence[Message]) -> None:
        """Outbox: group the core's messages per receiver; the transport batches frames."""
        by_peer: dict[int, list[Message]] = {}
        for message in messages:
            if isinstance(message, InstallSnapshot):
                self._offer_snapshot(message)
                continue
            by_peer.setdefault(message.dst, []).append(message)
        for peer, batch in by_peer.items():
            self.transport.send(peer, encode_messages(batch))

    def _schedule_process(self) -> None:
        if not self._process_scheduled:
            self._process_scheduled = True
            asyncio.get_running_loop().call_soon(self._process)

    def _process(self) -> None:
        self._process_scheduled = False
        self._run_readys()
        self.transport.flush()  # replies that waited for a sync leave now, not next turn
        self._release_remote_reads()
        self._maybe_snapshot()
        if self.node.leader != self._known_leader:
            self._known_leader = self.node.leader
            self._fail_forwarded_writes()
        is_leader = self.node.role is Role.LEADER
        if is_leader != self._was_leader:
            self._was_leader = is_leader
            if is_leader:
                self.leader_changes += 1
                self._leader_duties(became_leader=True)
                self._run_readys()

    def _run_readys(self) -> None:
        """Carry out the core's Readys without waiting for the disk on the event loop.

        Each Ready's messages leave and its save is queued at once (the WAL keeps saves in
        order and syncs them in groups); the rest of the Ready (replies that reveal acceptor
        state, the persist acknowledgement, applying, reads) runs when its save is durable,
        in the order the Readys were made: the driver's contract, spread over time.
        """
        for _ in range(READY_ROUNDS_MAX):
            self._complete_durable()
            if self._install_waits():
                return
            if not self.node.has_ready():
                return
            ready = self.node.ready()
            if self._answer_first(ready):
                continue
            self.driver.begin(ready)
            persisting = _Persisting(ready)
            if needs_persist(ready):
                hold = self._may_hold(ready)
                if ready.must_sync and not hold and not self.storage.wal.commit_thread:
                    self.transport.flush()  # this Ready's messages leave before the write
                ticket = self.storage.save_async(
                    ready.snapshot,
                    ready.entries,
                    ready.hard_state,
                    lazy=hold or not ready.must_sync,
                )
                if hold:
                    self._hold(persisting, ticket)
                elif ready.must_sync:
                    persisting.started = time.perf_counter()
                    if self.storage.wal.commit_thread:
                        persisting.future = self.storage.wal.durable_future(ticket)
                        persisting.future.add_done_callback(self._on_durable)
                    else:
                        persisting.future = self._sync_on_loop(ticket)
                        self._release_held(persisting.future)
            if not persisting.applied:
                self._read_rounds.note(ready.persisted_messages)
            self._persisting.append(persisting)
        self._schedule_process()  # more output than one round allows: continue next turn

    def _sync_on_loop(self, ticket: Ticket) -> concurrent.futures.Future[None]:
        """Make `ticket` durable now, on the loop (--wal-fsync loop); a done future, so
        completion goes the same way as with the committer thread."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        try:
            self.storage.wait_durable(ticket)
        except StorageError as failure:
            done.set_exception(failure)
        else:
            done.set_result(None)
        return done

    def _answer_first(self, ready: Ready) -> bool:
        """Carry out a leader's Ready that waits for nothing (no sync, no Ready before it)
        answer first: its clients' answers are queued before its messages (commit hints),
        whose receivers would otherwise take the CPU from the answers (2 cores, 4 busy
        processes under a lone put). Its save, lazy, is written first: it keeps its place
        in the log, and a failed log refuses it before anything is answered."""
        if ready.must_sync or self._persisting or self.node.role is not Role.LEADER:
            return False
        if needs_persist(ready):
            self.storage.save_async(ready.snapshot, ready.entries, ready.hard_state, lazy=True)
        self._read_rounds.note(ready.persisted_messages)
        self.driver.complete(ready)
        self.driver.begin(ready)
        return True

    def _may_hold(self, ready: Ready) -> bool:
        """Whether `ready`'s sync may wait for the next one (synod.server.deferred_sync):
        only on the loop's fsync, only a follower's learned commit slot, only when every
        earlier Ready is applied (this one is applied now), never a reply that releases
        reads."""
        return (
            not self.storage.wal.commit_thread
            and self.node.role is not Role.LEADER
            and deferred_sync.is_commit_hint_save(ready, self.storage.saved_hard_state)
            and all(p.applied for p in self._persisting)
            and self._read_rounds.all_answered(ready.persisted_messages)
        )

    def _hold(self, persisting: _Persisting, ticket: Ticket) -> None:
        persisting.future = concurrent.futures.Future()
        persisting.started = time.perf_counter()
        self._held.append(persisting.future)
        self._held_ticket = ticket
        if self._held_timer is None:
            self._held_timer = self._loop.call_later(deferred_sync.DELAY_S, self._sync_held)
        self.driver.apply(persisting.ready)
        persisting.applied = True

    def _sync_held(self) -> None:
        """Nothing else synced the held saves in time: sync them now."""
        self._held_timer = None
        ticket = self._held_ticket
        if ticket is not None:
            self._release_held(self._sync_on_loop(ticket))
            self._schedule_process()

    def _release_held(self, outcome: concurrent.futures.Future[None]) -> None:
        if not self._held:
            return
        deferred_sync.settle(self._held, outcome)
        self._held_ticket = None
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None

    def _on_durable(self, _: concurrent.futures.Future[None]) -> None:
        """Called on the WAL's thread."""
        with contextlib.suppress(RuntimeError):  # the loop closed: the member stopped
            self._loop.call_soon_threadsafe(self._schedule_process)

    def _complete_durable(self) -> None:
        while self._persisting:
            head = self._persisting[0]
            if head.future is not None:
                if not head.future.done():
                    return
                failure = head.future.exception()
                if failure is not None:
                    self._storage_failed(failure)
                if head.complete_at is None:
                    self.observer.observe_fsync(time.perf_counter() - head.started)
                    delay_s = self._fsync_delay_ms.get() / 1000
                    head.complete_at = self._loop.time() + delay_s
                if self._loop.time() < head.complete_at:
                    self._loop.call_at(head.complete_at, self._schedule_process)
                    return
            self._persisting.popleft()
            if head.applied:
                self.driver.acknowledge(head.ready)
            else:
                self.driver.complete(head.ready)

    def _storage_failed(self, failure: BaseException) -> None:
        """An fsync failed: the page cache can no longer be trusted, so the member stops
        at once rather than retry (issue 3); it recovers from disk when restarted."""
        log.critical("storage failed, stopping this member: %s", failure)
        logging.shutdown()
        os._exit(STORAGE_FAILED_EXIT)

    def _maybe_snapshot(self) -> None:
        """Start a snapshot every `snapshot_every_slots`; it is taken in short turns of the
        loop and written on a thread (synod.server.snapshot_saver)."""
        applied = self.machine.applied_slot
        if applied - self._last_snapshot_slot < self.config.snapshot_every_slots:
            return
        if not self.snapshots.busy:
            self.snapshots.start(*self.machine.snapshot_stream())

    def _snapshot_phase(self) -> int:
        """This member's share of the snapshot interval: the members of the table, in id
        order, spread evenly over it (ids alone collided: three members once drew the
        same id modulo 40)."""
        every = self.config.snapshot_every_slots
        ids = sorted({info.member_id for info in self.machine.table.members} | {self.member_id})
        return ids.index(self.member_id) * every // len(ids)

    def _on_snapshot_saved(self, meta: SnapshotMeta, seconds: float) -> None:
        self.node.compact(meta)
        self._last_snapshot_slot = max(self._last_snapshot_slot, meta.last_slot)
        self.observer.observe_snapshot_save(seconds)
        self._schedule_process()

    def lease_clock_ms(self) -> int:
        """The leader's lease clock: wall time (shifted by the fault-testing knob)."""
        return int(time.time() * 1000 + self._clock_offset_ms.get())

    def _leader_duties(self, became_leader: bool = False) -> None:
        if self.node.role is not Role.LEADER:
            return
        now_ms = self.lease_clock_ms()
        commands = self.service.leader_duties(now_ms, became_leader)
        if commands:
            envelopes = [msgpack.packb([0, 0, command]) for command in commands]
            with contextlib.suppress(NotLeader, ProposalDropped):
                self.node.propose(envelopes)

    # ------------------------------------------------------------------ client requests

    @property
    def leader_id(self) -> int | None:
        return self.node.leader

    @property
    def is_leader(self) -> bool:
        return self.node.role is Role.LEADER

    async def write(self, payload: bytes) -> object:
        """Replicate one command and return the service's response once applied here."""
        outcome = self.write_nowait(payload)
        try:
            return await outcome
        except TimeoutError as error:
            raise RequestTimeout("etcdserver: request timed out") from error

    def write_nowait(self, payload: bytes) -> asyncio.Future[object]:
        """`write` without a coroutine (a task and its coroutines per put cost 5-14% of the
        native door's put throughput): the future of the service's response, or of
        TimeoutError, NoLeader or ProposalDropped. Cancelling it forgets the write here (it
        may still be applied). Raises Overloaded, NoLeader or ProposalDropped when the
        write cannot even start."""
        if len(self._writes) >= WAITERS_MAX:
            raise Overloaded("too many requests in flight")
        self.proposals_received += 1
        sequence = next(self._sequence)
        envelope = msgpack.packb([self.member_id, sequence, payload])
        future: asyncio.Future[object] = self._loop.create_future()
        self._writes[sequence] = future
        try:
            self._submit(sequence, envelope)
        except (NoLeader, ProposalDropped):
            self.proposals_failed += 1
            self._writes.pop(sequence, None)
            self._forwarded_to.pop(sequence, None)
            raise
        self._deadlines.append((self._loop.time() + self.config.request_timeout_s, sequence))
        future.add_done_callback(functools.partial(self._write_done, sequence, time.perf_counter()))
        return future

    def _write_done(self, sequence: int, started: float, future: asyncio.Future[object]) -> None:
        self._writes.pop(sequence, None)
        self._forwarded_to.pop(sequence, None)
        if future.cancelled():
            return
        if future.exception() is None:
            self.observer.observe_proposal(time.perf_counter() - started)
        else:
            self.proposals_failed += 1

    async def _outcome(self, future: asyncio.Future[Any], waiter: int) -> Any:
        """`future`'s outcome, or TimeoutError after the request timeout (give or take a
        tick). `waiter` is its key in `_writes` or `_reads`: the deadline joins a queue
        the tick checks, as every request has the same timeout (a timer handle per request
        cost ~5% of a busy leader), and the queue holds no finished request's result."""
        self._deadlines.append((self._loop.time() + self.config.request_timeout_s, waiter))
        return await future

    def _expire_requests(self) -> None:
        now = self._loop.time()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            waiter = deadlines.popleft()[1]
            write = self._writes.get(waiter)
            if write is not None:
                _time_out(write)
                continue
            read = self._reads.get(waiter)
            if read is not None:
                _time_out(read.future)

    def _submit(self, sequence: int, envelope: bytes) -> None:
        leader = self.node.leader
        if self.node.role is Role.LEADER:
            try:
                self.node.propose([envelope])
            except NotLeader as error:
                raise NoLeader("etcdserver: no leader") from error
            self._schedule_process()
        elif leader is None:
            raise NoLeader("etcdserver: no leader")
        else:
            self._forwarded_to[sequence] = leader
            self.transport.send(leader, [[FORWARD_PROPOSALS, [envelope]]])

    def _fail_forwarded_writes(self) -> None:
        """The leader changed: writes forwarded to an earlier leader get etcd's "leader
        changed" (their outcome is unknown: the old leader may have passed them on) now,
        rather than a timeout after the whole request timeout."""
        for sequence, leader in list(self._forwarded_to.items()):
            if leader == self._known_leader:
                continue
            del self._forwarded_to[sequence]
            future = self._writes.get(sequence)
            if future is not None and not future.done():
                future.set_exception(NoLeader("etcdserver: leader changed"))

    def _resolve_write(self, sequence: int, result: object) -> None:
        future = self._writes.get(sequence)
        if future is not None and not future.done():
            future.set_result(result)

    async def read_barrier(self) -> None:
        """Return once this member's state reflects every write acknowledged before the
        call (read-index; linearizable)."""
        if len(self._reads) >= WAITERS_MAX:
            raise Overloaded("too many reads in flight")
        read_id = next(self._sequence)
        pending = _PendingRead(asyncio.get_running_loop().create_future())
        self._reads[read_id] = pending
        try:
            if self.node.role is Role.LEADER:
                try:
                    self.node.read_index(read_id)
                except (NotLeader, ProposalDropped) as error:
                    raise NoLeader("etcdserver: no leader") from error
                self._schedule_process()
            elif self.node.leader is None:
                raise NoLeader("etcdserver: no leader")
            else:
                self.transport.send(self.node.leader, [[READ_INDEX_REQUEST, read_id]])
            await self._outcome(pending.future, read_id)
        except TimeoutError as error:
            raise RequestTimeout("etcdserver: request timed out") from error
        finally:
            self._reads.pop(read_id, None)

    async def ask_leader(self, name: str, argument: Any) -> Any:
        """The leader's answer to `service.leader_query(name, argument, ...)`, given once a
        read round confirmed its leadership after the call began. A leader deposed before
        that cannot confirm it; the ones elected after it promote every lease afresh, so a
        lease renewed this way lives at least as long as the answer says."""
        if self.node.role is Role.LEADER:
            await self.read_barrier()  # as leader: the round is this member's own
            return self._leader_answer(name, argument)
        leader = self.node.leader
        if leader is None:
            raise NoLeader("etcdserver: no leader")
        if len(self._writes) >= WAITERS_MAX:
            raise Overloaded("too many requests in flight")
        query_id = next(self._sequence)
        future: asyncio.Future[object] = self._loop.create_future()
        self._writes[query_id] = future  # answered, refused or timed out like a write
        self._forwarded_to[query_id] = leader
        self.transport.send(leader, [[LEADER_QUERY, query_id, name, argument]])
        try:
            return await self._outcome(future, query_id)
        except TimeoutError as error:
            raise RequestTimeout("etcdserver: request timed out") from error
        finally:
            self._writes.pop(query_id, None)
            self._forwarded_to.pop(query_id, None)

    def _on_leader_query(self, sender: int, item: list[Any]) -> None:
        if len(item) != 4 or not isinstance(item[1], int) or not isinstance(item[2], str):
            log.warning("dropping a malformed leader query from member %x", sender)
            return
        local_id = next(self._sequence)
        try:
            self.node.read_index(local_id)
        except (NotLeader, ProposalDropped):
            self.transport.send(sender, [[LEADER_REFUSED, item[1], "etcdserver: no leader"]])
            return
        self._remote_queries[local_id] = (sender, item[1], item[2], item[3])

    def _leader_answer(self, name: str, argument: Any) -> Any:
        """The service's answer on the lease clock; a question it refuses is NoLeader, on
        the leader as on the follower that asked."""
        try:
            return self.service.leader_query(name, argument, self.lease_clock_ms())
        except (ValueError, TypeError) as error:
            raise NoLeader(f"synod: bad query: {error}") from error

    def _answer_query(self, sender: int, query_id: int, name: str, argument: Any) -> None:
        try:
            answer = self._leader_answer(name, argument)
        except NoLeader as refusal:
            log.warning("refusing member %x's query %r: %s", sender, name, refusal)
            self.transport.send(sender, [[LEADER_REFUSED, query_id, str(refusal)]])
            return
        self.transport.send(sender, [[LEADER_ANSWER, query_id, answer]])

    def _on_leader_answer(self, item: list[Any]) -> None:
        future = self._writes.get(item[1]) if len(item) == 3 else None
        if future is None or future.done():
            return
        if item[0] == LEADER_ANSWER:
            future.set_result(item[2])
        else:
            future.set_exception(NoLeader(str(item[2])))

    def _on_read(self, read_id: int) -> None:
        query = self._remote_queries.pop(read_id, None)
        if query is not None:
            self._answer_query(*query)
            return
        remote = self._remote_reads.pop(read_id, None)
        if remote is not None:
            follower, follower_read_id = remote
            slot = self.node.commit_slot
            self.transport.send(follower, [[READ_INDEX_GRANTED, follower_read_id, slot]])
            return
        pending = self._reads.get(read_id)
        if pending is not None and not pending.future.done():
            pending.future.set_result(None)

    def _on_read_failed(self, read_id: int) -> None:
        query = self._remote_queries.pop(read_id, None)
        if query is not None:
            refusal = [LEADER_REFUSED, query[1], "etcdserver: leader changed"]
            self.transport.send(query[0], [refusal])
            return
        remote = self._remote_reads.pop(read_id, None)
        if remote is not None:
            self.transport.send(remote[0], [[READ_INDEX_REFUSED, remote[1]]])
            return
        pending = self._reads.get(read_id)
        if pending is not None and not pending.future.done():
            pending.future.set_exception(NoLeader("etcdserver: leader changed"))

    def _release_remote_reads(self) -> None:
        applied = self.machine.applied_slot
        for pending in self._reads.values():
            if pending.slot is not None and pending.slot <= applied and not pending.future.done():
                pending.future.set_result(None)

    # ------------------------------------------------------------------ peer frames

    def _on_frame(self, sender: int, items: list[Any]) -> None:
        if sender in self.machine.table.removed:
            self._address_for_a_while(sender)
            self._tell_removed(sender)
            return
        self.last_heard[sender] = time.monotonic()
        core_items = []
        for item in items:
            if isinstance(item, list) and item and isinstance(item[0], int) and item[0] >= 100:
                self._on_runtime_item(sender, item)
            else:
                core_items.append(item)
        if core_items:
            try:
                messages = decode_messages(core_items)
            except WireError as error:
                log.warning("dropping a bad frame from member %x: %s", sender, error)
                return
            for message in messages:
                if message.src != sender or message.dst != self.member_id:
                    log.warning("dropping a misaddressed message from member %x", sender)
                    continue
                self.node.step(message)
        self._schedule_process()

    def _offer_snapshot(self, message: InstallSnapshot) -> None:
        """The core wants `message.dst` to get a snapshot: stream the durable file."""
        file = self.storage.snapshot_file()
        if file is None:
            log.warning("member %x needs a snapshot but none is on disk", message.dst)
            return
        self.snapshot_sender.offer(message.dst, message.ballot, file)

    def _on_snapshot_received(self, message: InstallSnapshot) -> None:
        self._received_snapshot = message
        self._schedule_process()

    def _install_waits(self) -> bool:
        """A received snapshot enters the core only once every Ready in flight is complete:
        the core counts everything up to the snapshot as applied at once, so committed
        entries of an earlier Ready applied after it would move the applied slot back.
        Until then no new Ready is taken, so the Readys in flight drain."""
        message = self._received_snapshot
        if message is None:
            return False
        if self._persisting:
            return True
        self._received_snapshot = None
        self.node.step(message)
        return False

    def _on_runtime_item(self, sender: int, item: list[Any]) -> None:
        code = item[0]
        if code == SNAPSHOT_BEGIN:
            self.snapshot_receiver.on_begin(sender, item)
        elif code == SNAPSHOT_CHUNK:
            self.snapshot_receiver.on_chunk(sender, item)
        elif code == SNAPSHOT_ACK:
            self.snapshot_sender.on_ack(sender, item)
        elif code == FORWARD_PROPOSALS:
            envelopes = [e for e in item[1] if isinstance(e, bytes)]
            try:
                self.node.propose(envelopes)
            except (NotLeader, ProposalDropped) as error:
                sequences = [msgpack.unpackb(e)[1] for e in envelopes]
                self.transport.send(sender, [[FORWARD_REFUSED, sequences, str(error)]])
        elif code == FORWARD_REFUSED:
            for sequence in item[1]:
                future = self._writes.get(sequence)
                if future is not None and not future.done():
                    future.set_exception(NoLeader("etcdserver: no leader"))
        elif code == READ_INDEX_REQUEST:
            local_id = next(self._sequence)
            try:
                self.node.read_index(local_id)
                self._remote_reads[local_id] = (sender, item[1])
            except (NotLeader, ProposalDropped):
                self.transport.send(sender, [[READ_INDEX_REFUSED, item[1]]])
        elif code == READ_INDEX_GRANTED:
            pending = self._reads.get(item[1])
            if pending is not None:
                pending.slot = Slot(item[2])
                self._release_remote_reads()
        elif code == LEADER_QUERY:
            self._on_leader_query(sender, item)
        elif code in (LEADER_ANSWER, LEADER_REFUSED):
            self._on_leader_answer(item)
        elif code == MEMBER_REMOVED:
            if self.machine.table.get(sender) is not None:
                self._on_removed()
        elif code in (MEMBER_CHANGE, MEMBER_CHANGE_ANSWER):
            self.reconfig.on_item(sender, item)
        elif code == READ_INDEX_REFUSED:
            pending = self._reads.get(item[1])
            if pending is not None and not pending.future.done():
                pending.future.set_exception(NoLeader("etcdserver: no leader"))

    # ------------------------------------------------------------------ member table

    @property
    def table(self) -> MemberTable:
        """The member table as applied on this member."""
        return self.machine.table

    def peer_ids(self) -> list[int]:
        """The other members of the applied table."""
        return [m.member_id for m in self.machine.table.members if m.member_id != self.member_id]

    def _peer_addresses(self) -> dict[int, tuple[str, int]]:
        """The peer transport's address book: every member of the applied table but this
        one, plus members leaving or being added (see `_extra_peers`)."""
        addresses = dict(self._extra_peers)
        for info in self.machine.table.members:
            if info.member_id != self.member_id and info.peer_urls:
                try:
                    url = Url.parse(info.peer_urls[0])
                except ConfigError:
                    log.error("member %x has a bad peer URL %r", info.member_id, info.peer_urls)
                    continue
                addresses[info.member_id] = (url.host, url.port)
        return addresses

    def _on_table_applied(self, change_id: int | None, table: MemberTable) -> None:
        """A new table is in force here: the address book follows it. A removed peer
        stays addressed for a grace period, so it still hears of the entry removing it."""
        for peer_id in [p for p in self._extra_peers if table.get(p) is not None]:
            del self._extra_peers[peer_id]  # the table addresses it now
        transport = getattr(self, "transport", None)
        if transport is not None:
            leaving = [
                p for p in transport.peer_ids if table.get(p) is None and p not in self._extra_peers
            ]
            for peer_id in leaving:
                self._removed_addresses[peer_id] = transport.address_of(peer_id)
                self._address_for_a_while(peer_id, refresh=False)
            transport.set_peers(self._peer_addresses())
            for peer_id in transport.peer_ids:
                if peer_id in table.removed:
                    self._tell_removed(peer_id)
        self.reconfig.proposed_table = None
        if change_id is not None:
            self.reconfig.on_applied(change_id, table)
        if self.member_id in table.removed:
            self._on_removed()

    def _address_for_a_while(self, peer_id: int, refresh: bool = True) -> None:
        """Keep a peer that left the table addressed for a grace period (to tell it);
        `refresh`: update the transport's address book now."""
        address = self._removed_addresses.get(peer_id) or self.transport.advertised.get(peer_id)
        if address is None or peer_id in self._extra_peers:
            return
        self._extra_peers[peer_id] = address
        self._loop.call_later(REMOVED_PEER_GRACE_S, self._forget_peer, peer_id)
        if refresh:
            self.transport.set_peers(self._peer_addresses())

    def _tell_removed(self, peer_id: int) -> None:
        """A removed member no longer receives the log (the configuration without it took
        effect when its entry was appended): tell it, as etcd's peers answer 410 Gone."""
        self.transport.send(peer_id, [[MEMBER_REMOVED]])

    def _forget_peer(self, peer_id: int) -> None:
        if self._extra_peers.pop(peer_id, None) is not None:
            self.transport.set_peers(self._peer_addresses())

    def expect_peer(self, member_id: int, peer_urls: tuple[str, ...]) -> None:
        """Address a member being added before its entry applies: the leader replicates
        to it from the moment the entry is in its log."""
        try:
            url = Url.parse(peer_urls[0])
        except (ConfigError, IndexError):
            return
        self._extra_peers[member_id] = (url.host, url.port)
        self.transport.set_peers(self._peer_addresses())

    async def hand_over_leadership(self) -> bool:
        """Before a graceful stop: hand leadership to the most caught-up voter and wait
        (at most an election timeout) until it took over. True when handed over."""
        if not self.is_leader:
            return False
        heard_since = (
            time.monotonic() - self.config.tick_ms * self.config.core.election_ticks / 1000
        )
        others = [
            v
            for v in self.node.membership.voters
            if v != self.member_id and self.last_heard.get(v, float("-inf")) >= heard_since
        ]
        matches = [(self.node.peer_match(v) or 0, v) for v in others]
        if not matches:
            return False
        _, target = max(matches)
        try:
            self.node.transfer_leadership(target)
        except (NotLeader, TransferRefused):
            return False
        self._schedule_process()
        deadline = self._loop.time() + self.config.tick_ms * self.config.core.election_ticks / 1000
        while self._loop.time() < deadline:
            if self.node.leader == target:
                log.info("handed leadership to %x before stopping", target)
                return True
            await asyncio.sleep(HANDOVER_POLL_S)
        log.warning("leadership hand-over to %x did not finish before stopping", target)
        return False

    def _on_removed(self) -> None:
        if not self.removed.is_set():
            log.warning("the member has been permanently removed from the cluster")
            self.removed.set()

    def _on_join_query(self, peer_url: str) -> object:
        """A member that wants to join asks who we are: the cluster id and the table."""
        log.info("member with peer URL %s asks to join", peer_url)
        table = self.machine.table
        pending = self.reconfig.proposed_table
        if pending is not None and len(pending.members) > len(table.members):
            # an addition this leader proposed that needs the newcomer's vote to commit
            # (a one-voter cluster adding a voter): the newcomer must learn it to join
            table = pending
        return [self.cluster_id, table.encode()]

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, int]:
        return {
            "member_id": self.member_id,
            "leader": self.node.leader or 0,
            "ballot_round": self.node.ballot.round,
            "commit_slot": self.node.commit_slot,
            "applied_slot": self.machine.applied_slot,
            "last_slot": self.node.last_slot,
        }

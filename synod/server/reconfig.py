"""Member changes at run time: add, remove, update, promote, and a member publishing its
own name and client URLs once started.

Every change is planned and proposed by the leader, one at a time: the leader plans it
against the table it applied (synod/server/members.py refuses what etcd refuses), proposes
the new configuration with the new table as the entry's context
(`Node.change_membership`), and answers once the entry is applied. A change that reaches a
follower is forwarded to the leader (runtime items MEMBER_CHANGE / MEMBER_CHANGE_ANSWER on
the peer connections) and answered by the follower.

What it keeps: a change is planned only when the leader's applied table is the newest
configuration in its log (nothing committed is left unapplied), so no change is planned
against a stale table; the core refuses overlapping changes and more than one voter at
once.

One change is answered before it commits: a voter added to a one-voter cluster. Its entry
needs the newcomer's vote, and the newcomer is started with what the answer says, so
waiting for the commit would wait for the caller (etcd answers at once too). It is answered
once durable on the leader: the one voter of the old configuration holds it, so every
later leader, which needs that voter's promise, carries it on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from synod.paxos.errors import MembershipChangeRefused, NotLeader, ProposalDropped
from synod.paxos.types import NodeId
from synod.server.errors import NoLeader, RequestTimeout
from synod.server.members import (
    MemberChangeError,
    MemberTable,
    PeerHealth,
    Refusal,
    TableError,
    encode_context,
    encode_table_command,
    new_member_id,
    plan_add,
    plan_promote,
    plan_publish,
    plan_remove,
    plan_update,
)

if TYPE_CHECKING:
    from synod.server.member import Member

log = logging.getLogger(__name__)

MEMBER_CHANGE = 105
MEMBER_CHANGE_ANSWER = 106
CHANGE_RETRY_S = 0.05
APPLIED_POLL_S = 0.01
PUBLISH_RETRY_S = 1.0
PUBLISH_POLL_S = 0.05  # waiting for a leader before the first try
HEALTH_ELECTIONS = 3  # a peer unheard for this many election timeouts is down
CHANGES_IN_FLIGHT_MAX = 64
KINDS = ("add", "remove", "update", "promote", "publish")


@dataclass(frozen=True, slots=True)
class MemberOp:
    """One requested change. `member_id` is 0 for an add (the leader draws the id)."""

    kind: str
    member_id: int = 0
    peer_urls: tuple[str, ...] = ()
    is_learner: bool = False
    name: str = ""
    client_urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assert self.kind in KINDS

    def encode(self) -> list[Any]:
        return [
            self.kind,
            self.member_id,
            list(self.peer_urls),
            self.is_learner,
            self.name,
            list(self.client_urls),
        ]

    @staticmethod
    def decode(item: Any) -> MemberOp:
        kind, member_id, peer_urls, is_learner, name, client_urls = item
        if kind not in KINDS:
            raise ValueError(f"unknown member change {kind!r}")
        return MemberOp(
            str(kind),
            int(member_id),
            tuple(map(str, peer_urls)),
            bool(is_learner),
            str(name),
            tuple(map(str, client_urls)),
        )


@dataclass(frozen=True, slots=True)
class ChangeResult:
    table: MemberTable  # the table once the change applied
    member_id: int  # the member changed (for an add: its new id)
    applied_slot: int = 0  # a slot at or after the change's


class Reconfigurer:
    """The member's side of member changes (one per Member)."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self._applied: dict[int, asyncio.Future[MemberTable | None]] = {}
        self._forwarded: dict[int, asyncio.Future[ChangeResult]] = {}
        self._ids = itertools.count(int.from_bytes(os.urandom(6), "big") << 16)
        self._serving: set[asyncio.Task[None]] = set()
        # the configuration this leader proposed and has not applied yet (join queries)
        self.proposed_table: MemberTable | None = None

    # ------------------------------------------------------------------ entry points

    async def change(self, op: MemberOp) -> ChangeResult:
        """Carry out `op` (on the leader, or forwarded to it); raise MemberChangeError,
        NoLeader or RequestTimeout."""
        if len(self._applied) + len(self._forwarded) >= CHANGES_IN_FLIGHT_MAX:
            raise RequestTimeout("etcdserver: too many requests")
        if self.member.is_leader:
            return await self._lead(op)
        leader = self.member.leader_id
        if leader is None:
            raise NoLeader("etcdserver: no leader")
        request_id = next(self._ids)
        future: asyncio.Future[ChangeResult] = asyncio.get_running_loop().create_future()
        self._forwarded[request_id] = future
        try:
            self.member.transport.send(leader, [[MEMBER_CHANGE, request_id, op.encode()]])
            result = await asyncio.wait_for(future, self.member.config.request_timeout_s)
            with contextlib.suppress(TimeoutError):  # the change is done either way
                await asyncio.wait_for(
                    self._applied_here(result.applied_slot), self.member.config.request_timeout_s
                )
            return result
        except TimeoutError as error:
            raise RequestTimeout("etcdserver: request timed out") from error
        finally:
            self._forwarded.pop(request_id, None)

    def pending_addition(self) -> MemberTable | None:
        """The table with a voter this leader added to its one-voter cluster, while that
        waits for the newcomer's vote (answered already: member lists show it, as etcd's
        show a member added and not started yet)."""
        proposed = self.proposed_table
        if proposed is not None and _needs_the_newcomer(self.member.table, proposed):
            return proposed
        return None

    def on_applied(self, change_id: int, table: MemberTable | None) -> None:
        """A change this member proposed is applied here (None: a table-only change found
        the table changed since it was planned, and did nothing)."""
        future = self._applied.get(change_id)
        if future is not None and not future.done():
            future.set_result(table)

    def on_item(self, sender: int, item: list[Any]) -> None:
        """A runtime item MEMBER_CHANGE or MEMBER_CHANGE_ANSWER from a peer."""
        if item[0] == MEMBER_CHANGE:
            try:
                op = MemberOp.decode(item[2])
            except (ValueError, TypeError) as error:
                log.warning("dropping a bad member change from %x: %s", sender, error)
                return
            task = asyncio.get_running_loop().create_task(self._serve(sender, item[1], op))
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)
        elif item[0] == MEMBER_CHANGE_ANSWER:
            future = self._forwarded.get(item[1])
            if future is not None and not future.done():
                self._settle(future, item[2], item[3])

    async def _applied_here(self, slot: int) -> None:
        """Wait until this member applied `slot`, so that its own MemberList shows the
        change it answered for (the leader applied it first)."""
        member = self.member
        # a member that removed itself may never receive the entry's commit: it is told
        while member.machine.applied_slot < slot and not member.removed.is_set():
            await asyncio.sleep(APPLIED_POLL_S)

    async def publish_loop(self) -> None:
        """Once started, put this member's name and client URLs into its table entry (etcd
        publishes them too; an added member is "unstarted" until then). Tried as soon as a
        leader is known, then every PUBLISH_RETRY_S until done."""
        config = self.member.config
        client_urls = tuple(str(u) for u in config.advertise_client_urls)
        while True:
            table = self.member.table
            if plan_publish(table, self.member.member_id, config.name, client_urls) is None:
                if table.get(self.member.member_id) is not None:
                    return
            elif self.member.leader_id is not None:
                op = MemberOp(
                    "publish", self.member.member_id, name=config.name, client_urls=client_urls
                )
                try:
                    await self.change(op)
                except (MemberChangeError, NoLeader, RequestTimeout) as error:
                    log.info("publishing this member's name and URLs failed: %s", error)
                else:
                    log.info("published name %s and client URLs %s", config.name, client_urls)
                    continue
            wait_s = PUBLISH_RETRY_S if self.member.leader_id is not None else PUBLISH_POLL_S
            await asyncio.sleep(wait_s)

    # ------------------------------------------------------------------ leader side

    async def _serve(self, sender: int, request_id: int, op: MemberOp) -> None:
        """Carry out a change a follower forwarded; send it the outcome."""
        try:
            result = await self._lead(op)
            payload = [result.table.encode(), result.member_id, self.member.node.commit_slot]
            answer: list[Any] = [True, payload]
        except MemberChangeError as error:
            answer = [False, ["refusal", error.refusal.name]]
        except NoLeader as error:
            answer = [False, ["no-leader", str(error)]]
        except RequestTimeout as error:
            answer = [False, ["timeout", str(error)]]
        self.member.transport.send(sender, [[MEMBER_CHANGE_ANSWER, request_id, *answer]])

    @staticmethod
    def _settle(future: asyncio.Future[ChangeResult], ok: Any, payload: Any) -> None:
        try:
            if ok:
                table_bytes, member_id, slot = payload
                table = MemberTable.decode(table_bytes)
                future.set_result(ChangeResult(table, int(member_id), int(slot)))
                return
            kind, detail = payload
            if kind == "refusal":
                future.set_exception(MemberChangeError(Refusal[detail]))
            elif kind == "no-leader":
                future.set_exception(NoLeader(str(detail)))
            else:
                future.set_exception(RequestTimeout(str(detail)))
        except (TableError, ValueError, TypeError, KeyError) as error:
            future.set_exception(RequestTimeout(f"etcdserver: bad answer from leader: {error}"))

    async def _lead(self, op: MemberOp) -> ChangeResult:
        """Plan, propose and wait for the change, retrying while an earlier change is still
        settling; raise NoLeader once this member is no longer the leader."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.member.config.request_timeout_s
        while True:
            if not self.member.is_leader:
                raise NoLeader("etcdserver: leader changed")
            if self._settled():
                base = self.member.table
                table, member_id = self._plan(op)
                proposed = self._propose(base, table)
                if proposed is not None:
                    if op.kind == "add":
                        self.member.expect_peer(member_id, op.peer_urls)
                    if _needs_the_newcomer(base, table):
                        # proposed just now, with no await since: the log's last entry
                        entry_slot = self.member.node.last_slot
                        self._applied.pop(proposed[0], None)
                        await self._await_durable(entry_slot, deadline)
                        return ChangeResult(table, member_id)
                    applied = await self._await_applied(proposed, deadline)
                    if applied is not None:
                        return ChangeResult(applied, member_id)
                    continue  # planned on a table that changed meanwhile: plan again
            if loop.time() > deadline:
                raise RequestTimeout("etcdserver: request timed out")
            await asyncio.sleep(CHANGE_RETRY_S)

    def _settled(self) -> bool:
        """Whether the applied table is the newest configuration in the leader's log."""
        node = self.member.node
        machine = self.member.machine
        return machine.applied_slot >= node.commit_slot and (
            machine.table.membership() == node.membership
        )

    def _plan(self, op: MemberOp) -> tuple[MemberTable, int]:
        table = self.member.table
        if op.kind == "add":
            member_id = new_member_id(table, int.from_bytes(os.urandom(8), "big"))
            return plan_add(
                table, member_id, op.peer_urls, op.is_learner, self._health()
            ), member_id
        if op.kind == "remove":
            return plan_remove(table, op.member_id, self._health()), op.member_id
        if op.kind == "update":
            return plan_update(table, op.member_id, op.peer_urls), op.member_id
        if op.kind == "promote":
            node = self.member.node
            match = node.peer_match(NodeId(op.member_id))
            promoted = plan_promote(table, op.member_id, self._health(), match, node.last_slot)
            return promoted, op.member_id
        published = plan_publish(table, op.member_id, op.name, op.client_urls)
        return (published or table), op.member_id

    def _health(self) -> PeerHealth:
        member = self.member
        window_s = HEALTH_ELECTIONS * member.config.tick_ms * member.config.core.election_ticks
        now = time.monotonic()
        active = {member.member_id}
        active.update(p for p, at in member.last_heard.items() if now - at <= window_s / 1000)
        return PeerHealth(member.member_id, frozenset(active))

    def _propose(
        self, base: MemberTable, table: MemberTable
    ) -> tuple[int, asyncio.Future[MemberTable | None]] | None:
        """Propose `table` (a configuration entry, or a table command when only names or
        URLs change); None when the core refuses for now (an earlier change or the new
        leader's first commit is pending: retry)."""
        change_id = next(self._ids)
        node = self.member.node
        try:
            if table.membership() == base.membership():
                node.propose([encode_table_command(change_id, base, table)])
            else:
                node.change_membership(table.membership(), encode_context(change_id, table))
                self.proposed_table = table
        except NotLeader as error:
            raise NoLeader("etcdserver: leader changed") from error
        except ProposalDropped as error:
            raise NoLeader("etcdserver: leader changed") from error
        except MembershipChangeRefused as error:
            log.debug("member change deferred: %s", error)
            return None
        future: asyncio.Future[MemberTable | None] = asyncio.get_running_loop().create_future()
        self._applied[change_id] = future
        self.member._schedule_process()
        return change_id, future

    async def _await_durable(self, slot: int, deadline: float) -> None:
        """Return once the leader's own log holds `slot` durably; NoLeader if it stops
        leading first (the entry's fate is then the next leader's)."""
        node = self.member.node
        loop = asyncio.get_running_loop()
        while True:
            match = node.peer_match(node.node_id)
            if match is None:
                raise NoLeader("etcdserver: leader changed")
            if match >= slot:
                return
            if loop.time() > deadline:
                raise RequestTimeout("etcdserver: request timed out")
            await asyncio.sleep(APPLIED_POLL_S)

    async def _await_applied(
        self, proposed: tuple[int, asyncio.Future[MemberTable | None]], deadline: float
    ) -> MemberTable | None:
        change_id, future = proposed
        timeout_s = max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError as error:
            raise RequestTimeout("etcdserver: request timed out") from error
        finally:
            self._applied.pop(change_id, None)


def _needs_the_newcomer(base: MemberTable, table: MemberTable) -> bool:
    """A voter added to a configuration of one voter: only the newcomer's vote commits it."""
    before, after = base.membership().voters, table.membership().voters
    return len(before) == 1 and len(after) == 2

"""The replicated member table: who is in the cluster, by what names and URLs.

The core only knows ids (`Membership`: voters and learners). The table adds what operators
and clients need (name, peer URLs, client URLs) and travels as the opaque `context` of each
MEMBERSHIP entry, so every member applies the same table at the same slot. It is part of
the state machine: kept in the member's snapshot bytes (`encode_machine_snapshot`), next to
the service's own snapshot.

What it keeps:
- the table's voters and learners are exactly the Membership of the entry carrying it
  (`MemberTable.membership()`), checked when it is applied;
- an id once removed is remembered in `removed` and never used again, so a removed member
  that comes back learns it is out rather than rejoining under its old id;
- planning a change (`plan_add`, `plan_remove`, ...) is a pure function of the table and of
  what the leader sees of its peers; it refuses with etcd's reasons (`MemberChangeError`).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import msgpack

from synod.paxos.types import Membership, NodeId

SNAPSHOT_MAGIC = b"synod-machine-1\n"
TABLE_VERSION = 1
LEARNERS_MAX = 1  # etcd 3.4's maxLearners
LEARNER_READY_FRACTION = 0.9  # etcd's learnerReadyPercent: match >= 90% of the leader's
ID_MASK = 0x7FFF_FFFF_FFFF_FFFF
URLS_MAX = 16
TABLE_COMMAND = -1  # the origin of a command envelope that carries a table-only change


class TableError(ValueError):
    """Bytes that do not hold a member table (corrupt snapshot or entry context)."""


class Refusal(enum.Enum):
    """Why a change is refused; the api maps each to etcd's code and message."""

    MEMBER_NOT_FOUND = "etcdserver: member not found"
    MEMBER_EXISTS = "etcdserver: member ID already exist"
    PEER_URLS_EXIST = "etcdserver: Peer URLs already exists"
    BAD_URLS = "etcdserver: given member URLs are invalid"
    NOT_ENOUGH_STARTED = "etcdserver: re-configuration failed due to not enough started members"
    UNHEALTHY = "etcdserver: unhealthy cluster"
    NOT_LEARNER = "etcdserver: can only promote a learner member"
    LEARNER_NOT_READY = "etcdserver: can only promote a learner member which is in sync with leader"
    TOO_MANY_LEARNERS = "etcdserver: too many learner members in cluster"


class MemberChangeError(Exception):
    """A member change refused before it reached the log: nothing changed."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One member. `name` is empty until the member started and published it (etcd calls
    such a member "unstarted")."""

    member_id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...] = ()
    is_learner: bool = False

    @property
    def started(self) -> bool:
        return bool(self.name)


@dataclass(frozen=True, slots=True)
class MemberTable:
    members: tuple[MemberInfo, ...]  # sorted by id
    removed: tuple[int, ...] = ()  # sorted ids, never reused

    def __post_init__(self) -> None:
        ids = [m.member_id for m in self.members]
        assert ids == sorted(set(ids)), "members sorted by id, unique"
        assert list(self.removed) == sorted(set(self.removed)), "removed ids sorted, unique"
        assert not set(ids) & set(self.removed), "a removed id is not a member"

    @staticmethod
    def of(members: Iterable[MemberInfo], removed: Iterable[int] = ()) -> MemberTable:
        return MemberTable(
            tuple(sorted(members, key=lambda m: m.member_id)), tuple(sorted(set(removed)))
        )

    def get(self, member_id: int) -> MemberInfo | None:
        for member in self.members:
            if member.member_id == member_id:
                return member
        return None

    def by_peer_url(self, url: str) -> MemberInfo | None:
        for member in self.members:
            if url in member.peer_urls:
                return member
        return None

    @property
    def voters(self) -> tuple[MemberInfo, ...]:
        return tuple(m for m in self.members if not m.is_learner)

    def membership(self) -> Membership:
        voters = tuple(NodeId(m.member_id) for m in self.members if not m.is_learner)
        learners = tuple(NodeId(m.member_id) for m in self.members if m.is_learner)
        return Membership(voters, learners)

    def with_member(self, member: MemberInfo) -> MemberTable:
        """Add or replace `member` (by id)."""
        assert member.member_id not in self.removed, "a removed id never comes back"
        others = [m for m in self.members if m.member_id != member.member_id]
        return MemberTable.of([*others, member], self.removed)

    def without(self, member_id: int) -> MemberTable:
        assert self.get(member_id) is not None
        others = [m for m in self.members if m.member_id != member_id]
        return MemberTable.of(others, [*self.removed, member_id])

    def conform(self, membership: Membership) -> MemberTable:
        """This table made to agree with a Membership that came without a table (an entry
        with no context): unknown ids get empty entries, missing ids count as removed."""
        wanted = set(membership.members)
        kept = [
            replace(m, is_learner=m.member_id in membership.learners)
            for m in self.members
            if m.member_id in wanted
        ]
        known = {m.member_id for m in kept}
        added = [
            MemberInfo(member_id, "", (), (), member_id in membership.learners)
            for member_id in sorted(wanted - known)
        ]
        gone = [m.member_id for m in self.members if m.member_id not in wanted]
        # a member replaying old entries (one that joined later) may meet ids its newer
        # starting table counts as removed: the configuration wins
        removed = [r for r in (*self.removed, *gone) if r not in wanted]
        return MemberTable.of([*kept, *added], removed)

    def encode(self) -> bytes:
        rows = [
            [m.member_id, m.name, list(m.peer_urls), list(m.client_urls), m.is_learner]
            for m in self.members
        ]
        packed: bytes = msgpack.packb([TABLE_VERSION, rows, list(self.removed)])
        return packed

    @staticmethod
    def decode(data: bytes) -> MemberTable:
        try:
            version, rows, removed = msgpack.unpackb(data)
            if version != TABLE_VERSION:
                raise TableError(f"member table version {version!r} is not {TABLE_VERSION}")
            members = [
                MemberInfo(int(i), str(n), tuple(map(str, p)), tuple(map(str, c)), bool(learner))
                for i, n, p, c, learner in rows
            ]
            return MemberTable.of(members, (int(r) for r in removed))
        except TableError:
            raise
        except (ValueError, TypeError, AssertionError, msgpack.UnpackException) as error:
            raise TableError(f"not a member table: {error}") from error


# ---------------------------------------------------------------------- entry context


def encode_context(change_id: int, table: MemberTable) -> bytes:
    """The context of a MEMBERSHIP entry: which change it is (so the member that proposed
    it can answer its client) and the whole table after it."""
    packed: bytes = msgpack.packb([change_id, table.encode()])
    return packed


def decode_context(data: bytes) -> tuple[int, MemberTable]:
    try:
        change_id, table = msgpack.unpackb(data)
        return int(change_id), MemberTable.decode(table)
    except TableError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise TableError(f"not a membership context: {error}") from error


def table_digest(table: MemberTable) -> bytes:
    """Names one table: a table-only change applies only on the table it was planned on."""
    return hashlib.sha256(table.encode()).digest()[:16]


def encode_table_command(change_id: int, base: MemberTable, table: MemberTable) -> bytes:
    """A change of names or URLs only (no change of voters or learners) travels as an
    ordinary command `[TABLE_COMMAND, change_id, [digest of base, table]]`: the core accepts
    configuration entries only when the configuration changes."""
    packed: bytes = msgpack.packb([TABLE_COMMAND, change_id, [table_digest(base), table.encode()]])
    return packed


def decode_table_command(payload: object) -> tuple[bytes, MemberTable]:
    """(digest of the base table, new table) from a TABLE_COMMAND's payload."""
    try:
        if not isinstance(payload, list | tuple) or len(payload) != 2:
            raise TableError("a table command holds [digest, table]")
        digest, table_bytes = payload
        return bytes(digest), MemberTable.decode(bytes(table_bytes))
    except TableError:
        raise
    except (ValueError, TypeError) as error:
        raise TableError(f"not a table command: {error}") from error


# ---------------------------------------------------------------------- snapshot layout


def encode_machine_snapshot(table: MemberTable, service_bytes: bytes) -> bytes:
    """The member's state-machine snapshot: magic, the table, then the service's bytes."""
    table_bytes = table.encode()
    return SNAPSHOT_MAGIC + len(table_bytes).to_bytes(4, "big") + table_bytes + service_bytes


def decode_machine_snapshot(data: bytes) -> tuple[MemberTable | None, bytes]:
    """(table, service bytes). A snapshot written before the table existed has no magic:
    it is all service bytes and the table is None (the caller keeps its bootstrap table)."""
    table, service = machine_snapshot_view(data)
    return table, data if table is None else bytes(service)


def machine_snapshot_view(data: bytes) -> tuple[MemberTable | None, memoryview]:
    """`decode_machine_snapshot` with the service's part as a view of `data`, not a copy:
    a restore that reads it in place (`KvService.restore`) then never holds the snapshot
    twice, which at 1,000,000 keys is 290 MB less at the peak of a restart (issue 8)."""
    view = memoryview(data)
    if not data.startswith(SNAPSHOT_MAGIC):
        return None, view
    start = len(SNAPSHOT_MAGIC)
    length = int.from_bytes(data[start : start + 4], "big")
    table_end = start + 4 + length
    if table_end > len(data):
        raise TableError("machine snapshot truncated inside the member table")
    return MemberTable.decode(data[start + 4 : table_end]), view[table_end:]


# ---------------------------------------------------------------------- planning changes


@dataclass(frozen=True, slots=True)
class PeerHealth:
    """What the leader sees of its peers when it plans a change (etcd's transport view):
    `active` holds the members heard from recently, the leader itself included."""

    leader_id: int
    active: frozenset[int]


def new_member_id(table: MemberTable, draw: int) -> int:
    """A fresh id from random bits `draw`: never 0, never a member's or a removed one's."""
    taken = {m.member_id for m in table.members} | set(table.removed)
    candidate = draw & ID_MASK
    while candidate == 0 or candidate in taken:
        candidate = (candidate * 6364136223846793005 + 1442695040888963407) & ID_MASK
    return candidate


def _check_urls(table: MemberTable, urls: tuple[str, ...], ignore_id: int | None) -> None:
    if not urls or len(urls) > URLS_MAX or any(not _url_ok(u) for u in urls):
        raise MemberChangeError(Refusal.BAD_URLS)
    for member in table.members:
        if member.member_id != ignore_id and set(member.peer_urls) & set(urls):
            raise MemberChangeError(Refusal.PEER_URLS_EXIST)


def _url_ok(url: str) -> bool:
    scheme, sep, rest = url.partition("://")
    host, colon, port = rest.rpartition(":")
    return (
        bool(sep)
        and scheme in ("http", "https")
        and bool(colon and host)
        and port.isdigit()
        and 0 < int(port) < 65536
    )


def _started_voters(table: MemberTable, excluding: int | None = None) -> int:
    return sum(1 for m in table.voters if m.started and m.member_id != excluding)


def plan_add(
    table: MemberTable,
    member_id: int,
    peer_urls: tuple[str, ...],
    is_learner: bool,
    health: PeerHealth,
) -> MemberTable:
    """Add an unstarted member. A voter is refused when the started voters would not form a
    quorum of the new configuration, or when the leader does not hear every voter (etcd's
    strict reconfiguration check): adding a voter raises the quorum."""
    _check_urls(table, peer_urls, None)
    if table.get(member_id) is not None or member_id in table.removed:
        raise MemberChangeError(Refusal.MEMBER_EXISTS)
    if is_learner:
        if sum(1 for m in table.members if m.is_learner) >= LEARNERS_MAX:
            raise MemberChangeError(Refusal.TOO_MANY_LEARNERS)
    else:
        members_after = len(table.voters) + 1
        started = _started_voters(table)
        single = started == 1 and members_after == 2
        if not single and started < members_after // 2 + 1:
            raise MemberChangeError(Refusal.NOT_ENOUGH_STARTED)
    if any(m.member_id not in health.active for m in table.voters):
        raise MemberChangeError(Refusal.UNHEALTHY)
    return table.with_member(MemberInfo(member_id, "", peer_urls, (), is_learner))


def plan_remove(table: MemberTable, member_id: int, health: PeerHealth) -> MemberTable:
    """Remove a member. Removing a voter is refused when the started voters left would not
    form a quorum, or when the active voters left would not (a member that is down is safe
    to remove: it is not part of the active quorum)."""
    member = table.get(member_id)
    if member is None:
        raise MemberChangeError(Refusal.MEMBER_NOT_FOUND)
    if member.is_learner:
        return table.without(member_id)
    voters_left = len(table.voters) - 1
    if voters_left < 1 or _started_voters(table, member_id) < voters_left // 2 + 1:
        raise MemberChangeError(Refusal.NOT_ENOUGH_STARTED)
    down = member_id != health.leader_id and member_id not in health.active
    if not down:
        active_left = sum(
            1 for m in table.voters if m.member_id in health.active and m.member_id != member_id
        )
        if active_left < voters_left // 2 + 1:
            raise MemberChangeError(Refusal.UNHEALTHY)
    return table.without(member_id)


def plan_update(table: MemberTable, member_id: int, peer_urls: tuple[str, ...]) -> MemberTable:
    member = table.get(member_id)
    if member is None:
        raise MemberChangeError(Refusal.MEMBER_NOT_FOUND)
    _check_urls(table, peer_urls, member_id)
    return table.with_member(replace(member, peer_urls=peer_urls))


def plan_promote(
    table: MemberTable,
    member_id: int,
    health: PeerHealth,
    learner_match: int | None,
    leader_match: int,
) -> MemberTable:
    """Promote a learner that is in sync: its log matches at least 90% of the leader's (as
    etcd), and the started voters plus it form a quorum of the new configuration."""
    member = table.get(member_id)
    if member is None:
        raise MemberChangeError(Refusal.MEMBER_NOT_FOUND)
    if not member.is_learner:
        raise MemberChangeError(Refusal.NOT_LEARNER)
    members_after = len(table.voters) + 1
    started = _started_voters(table) + 1  # etcd counts the learner as started
    if started < members_after // 2 + 1:
        raise MemberChangeError(Refusal.NOT_ENOUGH_STARTED)
    ready = (
        learner_match is not None
        and member_id in health.active
        and learner_match >= leader_match * LEARNER_READY_FRACTION
    )
    if not ready:
        raise MemberChangeError(Refusal.LEARNER_NOT_READY)
    return table.with_member(replace(member, is_learner=False))


def plan_publish(
    table: MemberTable, member_id: int, name: str, client_urls: tuple[str, ...]
) -> MemberTable | None:
    """A started member's name and client URLs into its entry; None when nothing changes
    (or the member is not in the table)."""
    member = table.get(member_id)
    if member is None or (member.name, member.client_urls) == (name, client_urls):
        return None
    return table.with_member(replace(member, name=name, client_urls=client_urls))


def bootstrap_table(
    members: Iterable[tuple[int, str, str]], client_urls: Mapping[str, tuple[str, ...]]
) -> MemberTable:
    """The table of a new cluster, from --initial-cluster (id, name, peer URL) and the
    client URLs known for each name."""
    return MemberTable.of(
        MemberInfo(member_id, name, (peer_url,), tuple(client_urls.get(name, ())))
        for member_id, name, peer_url in members
    )

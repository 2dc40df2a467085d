"""The lease table: granted TTLs, deadlines on the leader's clock, and each lease's keys.

Time never enters from inside: every deadline is `now_ms + TTL` where `now_ms` is the
logical time of the leader that proposed the command (carried in `Command.now_ms`). Only the
leader reads deadlines (`due`), and it turns what it finds into `LeaseExpireRequest`
commands. A new leader's clock is unrelated to its predecessor's, so its first lease command
is `LeasePromoteRequest`, which restarts every countdown on the new clock with the full TTL
plus an extension (etcd's lessor `Promote`): leases then outlive a leader change instead of
all expiring at once.

Each lease has two deadlines. `deadline_ms` is replicated: grants, promotions and logged
keep-alives set it, the same on every member. `renewed_ms` is this member's own: the
deadline a keep-alive it answered as leader without a log entry gave (`renew`, as etcd's
lessor does). The lease expires at the later of the two (`expiry_ms`): that is what `due`
reads. Applying an expiry reads `deadline_ms`, which is never later, so every member applies
it alike; a promotion restarts `deadline_ms` past anything a former leader renewed (it
renewed before this leader was elected).

Lease ids the store chooses come from a counter scrambled by an odd multiplier (a bijection
on 63 bits), so they are deterministic, positive, unique and look like etcd's.

Invariants: `_expiries` holds exactly one `(expiry_ms, id)` per lease; a key is in the
key set of at most one lease, the one its live KeyValue names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sortedcontainers import SortedDict, SortedList, SortedSet

from synod.kv import errors
from synod.kv.messages import LeaseId

LEASE_TTL_S_MAX = 9_000_000_000
LEASE_ID_PROBES_MAX = 1024
_ID_MULTIPLIER = 0x5851F42D4C957F2D  # odd: multiplication mod 2**63 is a bijection
_ID_MASK = 2**63 - 1


@dataclass(slots=True)
class Lease:
    id: LeaseId
    ttl_s: int
    deadline_ms: int
    keys: SortedSet = field(default_factory=SortedSet)
    renewed_ms: int = -1  # this member's renewal as leader; -1: none

    @property
    def expiry_ms(self) -> int:
        return max(self.deadline_ms, self.renewed_ms)


class LeaseTable:
    """Leases by id; pure bookkeeping, the store decides when keys change."""

    def __init__(self, ttl_s_min: int) -> None:
        assert ttl_s_min >= 1
        self.ttl_s_min = ttl_s_min
        self.id_counter = 0
        self._leases: SortedDict = SortedDict()
        self._expiries: SortedList = SortedList()

    def __len__(self) -> int:
        return len(self._leases)

    def __contains__(self, lease_id: int) -> bool:
        return lease_id in self._leases

    def get(self, lease_id: int) -> Lease | None:
        lease: Lease | None = self._leases.get(lease_id)
        return lease

    def ids(self) -> list[LeaseId]:
        return list(self._leases.keys())

    def check_grant(self, ttl_s: int, lease_id: int) -> None:
        if ttl_s > LEASE_TTL_S_MAX:
            raise errors.LeaseTTLTooLarge()
        if lease_id != 0 and lease_id in self._leases:
            raise errors.LeaseExists()

    def grant(self, ttl_s: int, lease_id: int, now_ms: int) -> Lease:
        """Add a lease (validated by `check_grant`); id 0 draws the next generated id."""
        self.check_grant(ttl_s, lease_id)
        if lease_id == 0:
            lease_id = self._next_id()
        ttl_s = max(ttl_s, self.ttl_s_min)
        lease = Lease(LeaseId(lease_id), ttl_s, now_ms + ttl_s * 1000)
        self.insert(lease)
        return lease

    def insert(self, lease: Lease) -> None:
        assert lease.id not in self._leases
        assert lease.id != 0
        self._leases[lease.id] = lease
        self._expiries.add((lease.expiry_ms, lease.id))

    def remove(self, lease_id: int) -> Lease:
        lease: Lease = self._leases.pop(lease_id)
        self._expiries.remove((lease.expiry_ms, lease.id))
        return lease

    def refresh(self, lease_id: int, deadline_ms: int) -> None:
        """A logged keep-alive (or promotion): the replicated deadline moves."""
        lease: Lease = self._leases[lease_id]
        self._expiries.remove((lease.expiry_ms, lease.id))
        lease.deadline_ms = deadline_ms
        self._expiries.add((lease.expiry_ms, lease.id))

    def renew(self, lease_id: int, now_ms: int) -> int:
        """The leader's own keep-alive, kept off the log: the lease's granted TTL, or 0 for
        a lease that is unknown or whose expiry has passed (its expiry may be on its way
        through the log; a renewal now could be undone by it)."""
        lease: Lease | None = self._leases.get(lease_id)
        if lease is None or lease.expiry_ms <= now_ms:
            return 0
        renewed_ms = now_ms + lease.ttl_s * 1000
        if renewed_ms > lease.expiry_ms:
            self._expiries.remove((lease.expiry_ms, lease.id))
            lease.renewed_ms = renewed_ms
            self._expiries.add((lease.expiry_ms, lease.id))
        return lease.ttl_s

    def extend_all(self, now_ms: int, extend_ms: int) -> None:
        """Restart every lease on a new leader's clock: deadline = now + extend + TTL (a
        renewal made here since the promotion was proposed may still reach further)."""
        assert extend_ms >= 0
        expiries = []
        for lease in self._leases.values():
            lease.deadline_ms = now_ms + extend_ms + lease.ttl_s * 1000
            expiries.append((lease.expiry_ms, lease.id))
        self._expiries = SortedList(expiries)

    def due(self, now_ms: int, limit: int) -> tuple[LeaseId, ...]:
        """Up to `limit` leases whose expiry is at or before `now_ms`, earliest first."""
        assert limit >= 0
        found: list[LeaseId] = []
        for expiry_ms, lease_id in self._expiries:
            if expiry_ms > now_ms or len(found) >= limit:
                break
            found.append(lease_id)
        return tuple(found)

    def _next_id(self) -> int:
        for _ in range(LEASE_ID_PROBES_MAX):
            self.id_counter += 1
            candidate = (self.id_counter * _ID_MULTIPLIER) & _ID_MASK
            if candidate != 0 and candidate not in self._leases:
                return candidate
        raise AssertionError("no free lease id after LEASE_ID_PROBES_MAX probes")

    def check_invariants(self) -> None:
        assert len(self._expiries) == len(self._leases)
        for expiry_ms, lease_id in self._expiries:
            assert self._leases[lease_id].expiry_ms == expiry_ms

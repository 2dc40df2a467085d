"""Prometheus metrics of one member: what an operator of a consensus system watches.

Two kinds of values:

- Events the runtime reports as they happen, through `SynodMetrics` methods: WAL fsync,
  apply and proposal durations, snapshot saves and installs (histograms).
- State read from the member at scrape time: a `collect` callback returns a
  `MemberSample` (leader, ballot round, commit/applied slot, proposal counters, per-peer
  lag, connection and round trip, bytes in/out, watchers, leases, keys, db size).
  `member_sampler(member, service)` builds that callback for the real runtime.

Every `SynodMetrics` has its own `CollectorRegistry`: nothing is registered globally, so
several members (or tests) in one process do not collide. Names follow etcd where etcd has
the metric (`etcd_server_has_leader`, `etcd_disk_wal_fsync_duration_seconds`, ...);
Paxos-specific values are `synod_*`.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from synod.server.kv_service import KvService
    from synod.server.member import Member

log = logging.getLogger(__name__)

# etcd's buckets: disk latencies from 1 ms doubling to ~8 s; requests from 0.1 ms.
DISK_BUCKETS = tuple(0.001 * 2**i for i in range(14))
REQUEST_BUCKETS = tuple(0.0001 * 2**i for i in range(16))
SNAPSHOT_BUCKETS = tuple(0.01 * 2**i for i in range(14))


@dataclass(frozen=True)
class PeerSample:
    """What this member knows of one peer (None: not known)."""

    peer_id: int
    connected: bool | None = None
    lag_slots: int | None = None  # leader only: commit slot minus the peer's matched slot
    round_trip_seconds: float | None = None
    bytes_sent: int | None = None


@dataclass(frozen=True)
class MemberSample:
    """The member's state at one scrape (None: not known, the metric is left out)."""

    member_id: int
    leader_id: int  # 0 when no leader is known
    is_leader: bool
    ballot_round: int
    commit_slot: int
    applied_slot: int
    last_slot: int
    leader_changes: int = 0
    proposals_received: int = 0
    proposals_failed: int = 0
    proposals_pending: int = 0
    bytes_received: int | None = None
    bytes_sent: int | None = None
    watchers: int | None = None
    leases: int | None = None
    keys: int | None = None
    revision: int | None = None
    compact_revision: int | None = None
    db_size_bytes: int | None = None
    peers: tuple[PeerSample, ...] = field(default_factory=tuple)


Sampler = Callable[[], MemberSample | None]


class _SampleCollector(Collector):
    """Turns a MemberSample into metric families at scrape time."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def describe(self) -> Iterable[Metric]:
        return ()  # the families depend on what the sample knows

    def collect(self) -> Iterable[Metric]:
        try:
            sample = self.sampler()
        except Exception:
            log.exception("metrics: the member sampler failed")
            return
        if sample is None:
            return
        yield from _families(sample)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _families(s: MemberSample) -> Iterator[Metric]:
    yield _gauge(
        "etcd_server_has_leader", "1 if a leader is known to this member, else 0", s.leader_id != 0
    )
    yield _gauge("etcd_server_is_leader", "1 if this member is the leader, else 0", s.is_leader)
    server_id = GaugeMetricFamily(
        "etcd_server_id", "This member's id (label), value always 1", labels=["server_id"]
    )
    server_id.add_metric([f"{s.member_id:x}"], 1)
    yield server_id
    yield _counter(
        "etcd_server_leader_changes_seen_total",
        "Leader changes seen by this member",
        s.leader_changes,
    )
    yield _counter(
        "etcd_server_proposals_committed_total",
        "Slots committed (chosen) as known by this member",
        s.commit_slot,
    )
    yield _counter(
        "etcd_server_proposals_applied_total",
        "Slots applied to this member's state machine",
        s.applied_slot,
    )
    yield _gauge(
        "etcd_server_proposals_pending",
        "Proposals accepted into the log but not yet committed",
        s.proposals_pending,
    )
    yield _counter(
        "etcd_server_proposals_failed_total", "Client proposals that failed", s.proposals_failed
    )
    yield _counter(
        "synod_proposals_received_total",
        "Client write proposals received by this member",
        s.proposals_received,
    )
    yield _gauge(
        "synod_ballot_round", "Highest ballot round promised by this member", s.ballot_round
    )
    yield _gauge("synod_leader_id", "Id of the leader this member follows (0: none)", s.leader_id)
    yield _gauge("synod_commit_slot", "Highest slot known chosen", s.commit_slot)
    yield _gauge("synod_applied_slot", "Highest slot applied to the state machine", s.applied_slot)
    yield _gauge("synod_last_slot", "Highest slot in this member's log", s.last_slot)
    yield _gauge(
        "synod_apply_lag_slots", "Slots chosen but not yet applied", s.commit_slot - s.applied_slot
    )
    if s.bytes_received is not None:
        yield _counter(
            "synod_peer_received_bytes_total", "Bytes received from peers", s.bytes_received
        )
    if s.bytes_sent is not None:
        yield _counter("synod_peer_sent_bytes_total", "Bytes sent to peers", s.bytes_sent)
    if s.watchers is not None:
        yield _gauge("etcd_debugging_mvcc_watcher_total", "Watchers on this member", s.watchers)
    if s.keys is not None:
        yield _gauge("etcd_debugging_mvcc_keys_total", "Live keys in the store", s.keys)
    if s.leases is not None:
        yield _gauge("synod_leases", "Leases alive in the store", s.leases)
    if s.revision is not None:
        yield _gauge("synod_mvcc_revision", "The store's current revision", s.revision)
    if s.compact_revision is not None:
        yield _gauge(
            "synod_mvcc_compact_revision", "The store's compacted revision", s.compact_revision
        )
    if s.db_size_bytes is not None:
        yield _gauge(
            "etcd_mvcc_db_total_size_in_bytes", "Size of the store's snapshot", s.db_size_bytes
        )
    yield from _peer_families(s.peers)


def _peer_families(peers: tuple[PeerSample, ...]) -> Iterator[Metric]:
    connected = GaugeMetricFamily(
        "synod_peer_connected", "1 if the connection to the peer is up", labels=["peer"]
    )
    lag = GaugeMetricFamily(
        "synod_peer_lag_slots",
        "Leader only: slots the peer is behind the commit slot",
        labels=["peer"],
    )
    rtt = GaugeMetricFamily(
        "synod_peer_round_trip_seconds", "Last measured round trip to the peer", labels=["peer"]
    )
    sent = CounterMetricFamily(
        "synod_peer_sent_bytes_by_peer", "Bytes sent to the peer", labels=["peer"]
    )
    for peer in peers:
        label = [f"{peer.peer_id:x}"]
        if peer.connected is not None:
            connected.add_metric(label, peer.connected)
        if peer.lag_slots is not None:
            lag.add_metric(label, peer.lag_slots)
        if peer.round_trip_seconds is not None:
            rtt.add_metric(label, peer.round_trip_seconds)
        if peer.bytes_sent is not None:
            sent.add_metric(label, peer.bytes_sent)
    for family in (connected, lag, rtt, sent):
        if family.samples:
            yield family


class _LoopHistogram(Collector):
    """A histogram observed only from the event loop's thread: one bucket count and the sum
    move, with no lock. prometheus_client's Histogram takes a lock per sum and bucket and
    walks its bounds in Python (2-8 µs an observation on the 2-core VM), paid on every
    client write. Scraped with the samples that Histogram exposes (buckets, count, sum,
    created), so the metric's name and meaning do not change."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        assert list(buckets) == sorted(buckets), "bucket bounds ascend"
        self.name = name
        self.documentation = documentation
        self.bounds = (*buckets, math.inf)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        # the first bucket whose bound is >= amount, as prometheus_client's `le` buckets
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1
        self.sum += amount

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        family = Metric(self.name, self.documentation, "histogram")
        cumulative = 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            cumulative += count
            le = floatToGoString(bound)  # type: ignore[no-untyped-call]
            family.add_sample(f"{self.name}_bucket", {"le": le}, float(cumulative))
        family.add_sample(f"{self.name}_count", {}, float(cumulative))
        family.add_sample(f"{self.name}_sum", {}, self.sum)
        family.add_sample(f"{self.name}_created", {}, self.created)
        yield family


class SynodMetrics:
    """One member's metrics, in their own registry.

    The runtime calls the `observe_*` methods; `collect` (optional, settable later with
    `set_sampler`) is read at every scrape.
    """

    def __init__(self, collect: Sampler | None = None, *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if process:
            ProcessCollector(registry=self.registry)
        r = self.registry
        self._fsync = Histogram(
            "etcd_disk_wal_fsync_duration_seconds",
            "Latency of WAL fsyncs (one per group commit)",
            buckets=DISK_BUCKETS,
            registry=r,
        )
        # observed on the event loop for every applied entry and every client write
        self._apply = _LoopHistogram(
            "synod_apply_duration_seconds",
            "Time to apply one committed entry to the state machine",
            REQUEST_BUCKETS,
        )
        self._proposal = _LoopHistogram(
            "synod_proposal_duration_seconds",
            "Time from receiving a client write to answering it (replicated and applied)",
            REQUEST_BUCKETS,
        )
        r.register(self._apply)
        r.register(self._proposal)
        self._snapshot_save = Histogram(
            "synod_snapshot_save_duration_seconds",
            "Time to take and persist a snapshot",
            buckets=SNAPSHOT_BUCKETS,
            registry=r,
        )
        self._snapshot_install = Histogram(
            "synod_snapshot_install_duration_seconds",
            "Time to install a snapshot received from the leader",
            buckets=SNAPSHOT_BUCKETS,
            registry=r,
        )
        self._sampler: Sampler | None = None
        self.registry.register(_SampleCollector(self._sample))
        if collect is not None:
            self.set_sampler(collect)

    def set_sampler(self, collect: Sampler | None) -> None:
        """The callback read at every scrape (None: no member state is exported)."""
        self._sampler = collect

    def _sample(self) -> MemberSample | None:
        return self._sampler() if self._sampler is not None else None

    # ------------------------------------------------------------------ events

    def observe_fsync(self, seconds: float) -> None:
        self._fsync.observe(seconds)

    def observe_apply(self, seconds: float) -> None:
        self._apply.observe(seconds)

    def observe_proposal(self, seconds: float) -> None:
        self._proposal.observe(seconds)

    def observe_snapshot_save(self, seconds: float) -> None:
        self._snapshot_save.observe(seconds)

    def observe_snapshot_install(self, seconds: float) -> None:
        self._snapshot_install.observe(seconds)

    # ------------------------------------------------------------------ exposition

    def render(self) -> tuple[bytes, str]:
        """(body, content type) of the Prometheus text exposition."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """One sample's current value (for tests and `synod status`)."""
        result: Any = self.registry.get_sample_value(name, labels or {})
        return None if result is None else float(result)


def _peer_progress(member: Member) -> dict[int, Any]:
    """The leader's per-follower progress (match slot). The core has no public accessor
    yet: `node.peer_progress()` is used when it exists, else the core's own table."""
    node = member.node
    accessor = getattr(node, "peer_progress", None)
    table = accessor() if callable(accessor) else getattr(node, "_peers", None)
    return dict(table) if isinstance(table, dict) else {}


def member_sampler(member: Member, service: KvService | None = None) -> Sampler:
    """The scrape-time view of a running member (synod.server.member.Member) and its KV
    service. Reads public attributes; values the runtime does not expose yet are None."""

    def sample() -> MemberSample | None:
        if getattr(member, "node", None) is None:
            return None  # not started
        status = member.status()
        transport = getattr(member, "transport", None)
        outgoing: dict[int, Any] = getattr(transport, "_outgoing", {}) or {}
        progress = _peer_progress(member) if member.is_leader else {}
        commit_slot = status["commit_slot"]
        peers = []
        for peer_id in member.peer_ids():
            out = outgoing.get(peer_id)
            connected = transport.connected(peer_id) if transport is not None else None
            match = getattr(progress.get(peer_id), "match_slot", None)
            peers.append(
                PeerSample(
                    peer_id=peer_id,
                    connected=connected,
                    lag_slots=max(0, commit_slot - match) if match is not None else None,
                    bytes_sent=getattr(out, "bytes_sent", None),
                )
            )
        sent = [p.bytes_sent for p in peers if p.bytes_sent is not None]
        keys = leases = revision = compact = watchers = None
        if service is not None:
            store = service.store
            live = getattr(store, "_live", None)
            keys = len(live) if live is not None else None
            leases = len(store.leases)
            revision = store.revision
            compact = store.compact_revision
            watchers = service.watchers
        commit, last = status["commit_slot"], status["last_slot"]
        return MemberSample(
            member_id=status["member_id"],
            leader_id=status["leader"],
            is_leader=member.is_leader,
            ballot_round=status["ballot_round"],
            commit_slot=commit,
            applied_slot=status["applied_slot"],
            last_slot=last,
            leader_changes=member.leader_changes,
            proposals_received=member.proposals_received,
            proposals_failed=member.proposals_failed,
            proposals_pending=max(0, last - commit) if member.is_leader else 0,
            bytes_received=getattr(transport, "bytes_received", None),
            bytes_sent=sum(sent) if sent else None,
            watchers=watchers,
            leases=leases,
            keys=keys,
            revision=revision,
            compact_revision=compact,
            peers=tuple(peers),
        )

    return sample

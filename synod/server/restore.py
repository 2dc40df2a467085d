"""`synod snapshot restore`: a new member's data directory from a backup file.

Run once per member of the NEW cluster with the same file and the same
`--initial-cluster`/`--initial-cluster-token`: every member gets the same state (the
backup's KV store, revisions and leases intact) and the same membership (the new cluster's
voters), so they start as one cluster that never shared a log with the old one. The new
cluster's id is derived from the token and the new members (as `synod serve` derives it) and
must differ from the backup's: a restored cluster is never mistaken for the old one.

The old member table in the snapshot is replaced by the new cluster's (names, peer URLs,
and client URLs when given), so the members find each other at their new addresses.

The directory is written through `DurableStorage` (a snapshot installed at the backup's
slot, the commit hint at that slot, no log entries), the way a follower installs a leader's
snapshot, plus the identity record `synod serve` checks at start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from synod.kv.messages import RangeRequest
from synod.kv.store import KVStore
from synod.paxos.ready import SnapshotInstall
from synod.paxos.types import HardState, Membership, NodeId, Slot, SnapshotMeta
from synod.server import snapshot_file
from synod.server.config import ConfigError, PeerSpec, Url, cluster_id_of, parse_initial_cluster
from synod.server.main import MEMBER_FILE
from synod.server.members import (
    MemberTable,
    TableError,
    bootstrap_table,
    decode_machine_snapshot,
    encode_machine_snapshot,
)
from synod.storage.errors import StorageError
from synod.storage.storage import DurableStorage


class RestoreRefused(Exception):
    """The restore cannot or must not run; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class NewCluster:
    """The cluster a restore or a recovery creates, and which of its members this is."""

    me: PeerSpec
    peers: tuple[PeerSpec, ...]
    token: str
    client_urls: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def cluster_id(self) -> int:
        return cluster_id_of(self.token, [peer.member_id for peer in self.peers])

    @property
    def membership(self) -> Membership:
        return Membership(tuple(sorted(NodeId(peer.member_id) for peer in self.peers)))

    def table(self) -> MemberTable:
        """The new cluster's member table, as `synod serve` bootstraps it from the flags."""
        return bootstrap_table(
            ((peer.member_id, peer.name, str(peer.peer_url)) for peer in self.peers),
            dict(self.client_urls),
        )


@dataclass(frozen=True, slots=True)
class Restored:
    data_dir: str
    cluster: NewCluster
    slot: int
    source_cluster_id: int
    source_member_id: int


def new_cluster(
    name: str,
    initial_cluster: str,
    token: str,
    advertise_peer_url: str = "",
    client_urls: str = "",
) -> NewCluster:
    """The new cluster from etcd-style flags; RestoreRefused if they do not fit together.
    `client_urls` (NAME=URL,...) fills the member table's client URLs, which clients such
    as Patroni read from MemberList."""
    token = token.strip()
    if not token:
        raise RestoreRefused("--initial-cluster-token must not be empty")
    try:
        peers = parse_initial_cluster(initial_cluster, token)
        advertised = Url.parse(advertise_peer_url) if advertise_peer_url.strip() else None
        urls_of = _parse_client_urls(client_urls)
    except ConfigError as error:
        raise RestoreRefused(str(error)) from error
    unknown = sorted(set(urls_of) - {peer.name for peer in peers})
    if unknown:
        raise RestoreRefused(f"client URLs for {', '.join(unknown)}, not in --initial-cluster")
    mine = [peer for peer in peers if peer.name == name]
    if not mine:
        raise RestoreRefused(f"--name {name!r} is not in --initial-cluster {initial_cluster!r}")
    if advertised is not None and advertised != mine[0].peer_url:
        raise RestoreRefused(
            f"--initial-cluster gives {name!r} the peer URL {mine[0].peer_url}, but "
            f"--initial-advertise-peer-urls is {advertised}"
        )
    return NewCluster(mine[0], peers, token, tuple(sorted(urls_of.items())))


def _parse_client_urls(text: str) -> dict[str, tuple[str, ...]]:
    found: dict[str, list[str]] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, url = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"bad --initial-cluster-client-urls item {item!r}: NAME=URL")
        found.setdefault(name.strip(), []).append(str(Url.parse(url)))
    return {name: tuple(urls) for name, urls in found.items()}


def read_backup(path: str) -> snapshot_file.SnapshotFile:
    """The backup in `path`, checksum verified; RestoreRefused if it is not intact."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise RestoreRefused(f"cannot read {path}: {error.strerror}") from error
    try:
        return snapshot_file.decode(data)
    except snapshot_file.SnapshotFileError as error:
        raise RestoreRefused(f"{path}: {error}") from error


def service_bytes(machine: bytes) -> bytes:
    """The replicated service's part of state-machine snapshot bytes."""
    try:
        return decode_machine_snapshot(machine)[1]
    except TableError as error:
        raise RestoreRefused(f"the snapshot's member table does not decode: {error}") from error


def describe(path: str) -> dict[str, object]:
    """What `synod snapshot status` prints: where the backup came from and what it holds."""
    backup = read_backup(path)
    store = KVStore.restore(service_bytes(backup.machine))
    size = os.path.getsize(path)
    return {
        "cluster_id": f"{backup.cluster_id:x}",
        "member_id": f"{backup.member_id:x}",
        "slot": backup.meta.last_slot,
        "revision": store.revision,
        "keys": store.range(RangeRequest(b"\0", b"\0", count_only=True)).count,
        "leases": len(store.lease_leases().leases),
        "size": size,
    }


def rewrite_machine(machine: bytes, cluster: NewCluster) -> bytes:
    """The state-machine snapshot bytes for a member of `cluster`: the service state kept,
    the old member table replaced by the new cluster's (the peer address book follows it)."""
    return encode_machine_snapshot(cluster.table(), service_bytes(machine))


def restore(
    path: str,
    data_dir: str,
    cluster: NewCluster,
) -> Restored:
    """Create `data_dir` for `cluster.me` from the backup at `path`."""
    backup = read_backup(path)
    if cluster.cluster_id == backup.cluster_id:
        raise RestoreRefused(
            f"the new cluster would have the old cluster's id ({backup.cluster_id:016x}): "
            "give a new --initial-cluster-token"
        )
    slot = Slot(max(1, backup.meta.last_slot))
    write_member_dir(data_dir, cluster, slot, rewrite_machine(backup.machine, cluster))
    return Restored(data_dir, cluster, slot, backup.cluster_id, backup.member_id)


def check_empty(data_dir: str) -> None:
    """RestoreRefused unless `data_dir` is absent or an empty directory."""
    path = Path(data_dir)
    if not path.exists():
        return
    if not path.is_dir():
        raise RestoreRefused(f"--data-dir {data_dir} exists and is not a directory")
    if any(path.iterdir()):
        raise RestoreRefused(
            f"--data-dir {data_dir} is not empty: a restore creates a new member; give an "
            "empty or absent directory (nothing was changed)"
        )


def write_member_dir(data_dir: str, cluster: NewCluster, slot: Slot, machine: bytes) -> None:
    """A new member's data directory: the state at `slot` as its snapshot, every slot up to
    it chosen, no log after it, and the identity record of `cluster.me`."""
    check_empty(data_dir)
    membership = cluster.membership
    try:
        storage = DurableStorage.open(data_dir, bootstrap=SnapshotMeta(Slot(0), membership))
        try:
            install = SnapshotInstall(SnapshotMeta(slot, membership), machine)
            storage.save(install, [], HardState(commit_slot=slot), sync=True)
        finally:
            storage.close()
    except (StorageError, OSError) as error:
        raise RestoreRefused(f"cannot write {data_dir}: {error}") from error
    _write_identity(data_dir, cluster)


def _write_identity(data_dir: str, cluster: NewCluster) -> None:
    """The record `synod serve` checks (synod.server.main.check_data_dir), so the directory
    is refused to flags that name another cluster or member."""
    identity = f"cluster_id={cluster.cluster_id:016x}\nmember_id={cluster.me.member_id:016x}\n"
    record = os.path.join(data_dir, MEMBER_FILE)
    temporary = record + ".tmp"
    with open(temporary, "w") as out:
        out.write(identity)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, record)
    descriptor = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)

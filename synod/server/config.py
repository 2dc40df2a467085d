"""A member's configuration: etcd-style flags, validated into one frozen value.

Member and cluster ids are derived deterministically from names, peer URLs and the cluster
token (as etcd does), so every member computes the same ids without talking.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from synod.paxos.config import Config as CoreConfig


class ConfigError(ValueError):
    """The operator's configuration is wrong; the message says how."""


@dataclass(frozen=True, slots=True)
class Url:
    scheme: str
    host: str
    port: int

    @staticmethod
    def parse(text: str) -> Url:
        parts = urlsplit(text.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
            raise ConfigError(f"bad URL {text!r}: expected http://HOST:PORT")
        return Url(parts.scheme, parts.hostname, parts.port)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PeerSpec:
    name: str
    member_id: int
    peer_url: Url


@dataclass(frozen=True, slots=True)
class JoinedCluster:
    """What a joining member learned from the running cluster: its ids (assigned by
    MemberAdd, found by peer URL) and the member table (encoded) to start from."""

    cluster_id: int
    member_id: int
    table: bytes


@dataclass(frozen=True, slots=True)
class ServerConfig:
    name: str
    data_dir: str
    listen_client_urls: tuple[Url, ...]
    advertise_client_urls: tuple[Url, ...]
    listen_peer_url: Url
    initial_cluster: tuple[PeerSpec, ...]
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "synod-cluster"
    tick_ms: int = 100
    request_timeout_s: float = 5.0
    snapshot_every_slots: int = 10_000
    core: CoreConfig = field(default_factory=CoreConfig)
    client_urls_of: tuple[tuple[str, tuple[str, ...]], ...] = ()
    native_port: int | None = None
    # Where the log is fsynced: "loop" (on the event loop, after the Ready's messages left:
    # no thread hand-off and no GIL ping-pong per round, as etcd's raft loop saves) or
    # "thread" (a committer thread; the loop keeps running during the fsync, which suits a
    # disk whose fsync takes milliseconds).
    wal_fsync: str = "loop"
    # Processes serving the gRPC door beside the member (synod.api.grpc_workers); 0: the
    # member serves gRPC in its own process.
    grpc_workers: int = 1
    # Set when this member joined a running cluster (--initial-cluster-state existing):
    # the ids the cluster assigned and the member table it had then (encoded).
    joined: JoinedCluster | None = None
    # The cluster id a restarting member's data dir records (see main._with_recorded_cluster)
    recorded_cluster_id: int | None = None

    @property
    def member_id(self) -> int:
        if self.joined is not None:
            return self.joined.member_id
        return self.me.member_id

    @property
    def me(self) -> PeerSpec:
        for peer in self.initial_cluster:
            if peer.name == self.name:
                return peer
        raise ConfigError(f"--name {self.name!r} is not in --initial-cluster")

    @property
    def cluster_id(self) -> int:
        if self.joined is not None:
            return self.joined.cluster_id
        if self.recorded_cluster_id is not None:
            return self.recorded_cluster_id
        return cluster_id_of(
            self.initial_cluster_token, [p.member_id for p in self.initial_cluster]
        )

    def peers(self) -> dict[int, PeerSpec]:
        return {p.member_id: p for p in self.initial_cluster if p.name != self.name}


def member_id_of(token: str, name: str, peer_url: Url) -> int:
    digest = hashlib.sha256(f"{token}|{name}|{peer_url}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def cluster_id_of(token: str, member_ids: list[int]) -> int:
    text = token + "|" + ",".join(str(m) for m in sorted(member_ids))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def parse_initial_cluster(text: str, token: str) -> tuple[PeerSpec, ...]:
    """`name1=http://host:port,name2=...` into peer specs, sorted by name."""
    peers: dict[str, PeerSpec] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, url = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"bad --initial-cluster item {item!r}: expected NAME=URL")
        name = name.strip()
        if name in peers:
            raise ConfigError(f"member {name!r} appears twice in --initial-cluster")
        peer_url = Url.parse(url)
        peers[name] = PeerSpec(name, member_id_of(token, name, peer_url), peer_url)
    if not peers:
        raise ConfigError("--initial-cluster names no member")
    return tuple(peers[name] for name in sorted(peers))


def parse_urls(text: str, flag: str) -> tuple[Url, ...]:
    urls = tuple(Url.parse(item) for item in text.split(",") if item.strip())
    if not urls:
        raise ConfigError(f"{flag} needs at least one URL")
    return urls

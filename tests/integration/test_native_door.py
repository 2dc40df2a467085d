"""The native door on a real three-member cluster: Synod's client over
synod.client.native_transport reaches the same handlers as over gRPC (DESIGN.md, api: the
native door; client: the native transport).

Goal: KV, txn, leases (with keep-alive streams) and watches work through the native
transport; a write sent to a follower is applied (forwarded to the leader); when the
leader is SIGKILLed the client fails over to a surviving member, writes succeed there,
and a watch resumes without losing the write made after the kill; `auto` picks the native
door on Synod.

Method: `synod serve` processes (tests/integration/cluster.py) each given an explicit
`--listen-native-url` on a free port; clients with transport="native" (or "auto") and
those native endpoints.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from synod.client import Client, OutcomeUnknown, txn
from synod.client.native_transport import AutoTransport
from tests.integration.cluster import MemberProcess, SynodCluster, free_ports

pytestmark = pytest.mark.slow


class NativeCluster(SynodCluster):
    """A SynodCluster whose members also serve the native door on ports picked here."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.native_ports = dict(
            zip((m.name for m in self.members), free_ports(self.size), strict=True)
        )

    def command(self, member: MemberProcess) -> list[str]:
        native = f"http://127.0.0.1:{self.native_ports[member.name]}"
        return [*super().command(member), "--listen-native-url", native]

    @property
    def native_endpoints(self) -> list[str]:
        return [f"127.0.0.1:{self.native_ports[m.name]}" for m in self.members]


def launch_native(root: Path, attempts: int = 3) -> NativeCluster:
    """A started cluster with a leader (new ports when one was taken before binding)."""
    for attempt in range(attempts):
        cluster = NativeCluster(root / f"try{attempt}", token="native")
        cluster.root.mkdir(parents=True, exist_ok=True)
        cluster.start_all()
        try:
            cluster.wait_leader()
            return cluster
        except AssertionError as error:
            cluster.stop_all()
            if "address already in use" not in str(error) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeCluster]:
    running = launch_native(tmp_path_factory.mktemp("native-cluster"))
    try:
        yield running
    finally:
        running.stop_all()


def native_client(
    cluster: NativeCluster, indexes: list[int] | None = None, timeout_s: float = 5.0
) -> Client:
    chosen = indexes if indexes is not None else list(range(cluster.size))
    return Client(
        [cluster.endpoints[i] for i in chosen],
        timeout_s=timeout_s,
        transport="native",
        native_endpoints=[cluster.native_endpoints[i] for i in chosen],
    )


def test_put_get_txn_lease_and_watch_through_the_native_transport(
    cluster: NativeCluster,
) -> None:
    with native_client(cluster) as client:
        watcher = client.watch("native/", prefix=True)
        put = client.put("native/a", "1")
        assert client.get_one("native/a").value == b"1"  # type: ignore[union-attr]
        swapped = client.txn(
            [txn.value("native/a") == "1"], [txn.put("native/a", "2")], [txn.get("native/a")]
        )
        assert swapped.succeeded
        assert client.get_one("native/a").value == b"2"  # type: ignore[union-attr]
        lease = client.lease(2)
        client.put("native/leased", "x", lease=lease.id)
        assert client.aio.transport.__class__.__name__ == "NativeTransport"
        assert lease.time_to_live().TTL > 0
        lease.revoke()
        assert client.get_one("native/leased") is None
        seen: list[tuple[bytes, bytes, int]] = []
        while len(seen) < 4:
            events = watcher.events(timeout_s=5.0)
            assert events, f"the watch delivered only {seen}"
            seen += [(e.kv.key, e.kv.value, e.type) for e in events]
        assert seen[0] == (b"native/a", b"1", 0)
        assert put.header.revision > 0
        assert [s[1] for s in seen[:3]] == [b"1", b"2", b"x"]
        assert seen[3][:1] == (b"native/leased",) and seen[3][2] == 1  # DELETE by the revoke
        watcher.cancel()


def test_a_write_through_a_follower_is_applied(cluster: NativeCluster) -> None:
    leader = cluster.wait_leader()
    follower = next(i for i in cluster.live() if i != leader)
    with native_client(cluster, [follower]) as client:
        response = client.put("native/through-follower", "v")
        status = client.status()
        assert status.leader != status.header.member_id, "the member asked was the leader"
        assert response.header.revision > 0
        assert client.get_one("native/through-follower").value == b"v"  # type: ignore[union-attr]


def test_auto_picks_the_native_door_of_a_synod_cluster(cluster: NativeCluster) -> None:
    with Client(
        cluster.endpoints, transport="auto", native_endpoints=cluster.native_endpoints
    ) as client:
        client.put("native/auto", "1")
        transport = client.aio.transport
        assert isinstance(transport, AutoTransport)
        assert transport.chosen == "native"


def test_the_client_fails_over_when_the_leader_is_killed(cluster: NativeCluster) -> None:
    """Runs last in this module: it kills the leader (the cluster keeps a majority)."""
    leader = cluster.wait_leader()
    order = [leader, *(i for i in cluster.live() if i != leader)]
    with native_client(cluster, order, timeout_s=10.0) as client:
        client.put("native/failover", "before")
        watcher = client.watch("native/failover", start_revision=0)
        cluster.kill(leader)
        written = None
        for _ in range(5):
            try:
                written = client.put("native/failover", "after")
                break
            except OutcomeUnknown:  # the put may have been in flight to the dead leader
                continue
        assert written is not None
        assert client.get_one("native/failover").value == b"after"  # type: ignore[union-attr]
        values: list[bytes] = []
        while b"after" not in values:
            events = watcher.events(timeout_s=10.0)
            assert events, f"the watch did not resume; saw {values}"
            values += [e.kv.value for e in events]
        watcher.cancel()
    assert cluster.wait_leader() != leader

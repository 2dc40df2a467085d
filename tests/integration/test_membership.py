"""Online membership changes on real member processes (issue 7).

Goal: an operator grows and shrinks a running cluster, replaces a dead member, adds a
learner and promotes it, and removes the leader, while clients keep writing: no write that
was acknowledged is lost, the clients' history stays linearizable, and writes stop for no
longer than an election. Method: `synod serve` processes (tests/integration/cluster.py,
50 ms heartbeat, 500 ms election timeout); changes through the etcd Cluster API over gRPC;
client threads put and get a few keys through the Synod client and record every call;
the history is checked with synod.sim.linearizability.
"""

from __future__ import annotations

import functools
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from synod.api.proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.client import Client
from synod.client.errors import ClientError
from synod.sim.history import Operation, OpKind
from synod.sim.linearizability import check_history
from tests.integration.cluster import MemberProcess, SynodCluster, launch

pytestmark = pytest.mark.slow

TIMEOUT_S = 10.0
CATCH_UP_TIMEOUT_S = 30.0
KEYS = ("k0", "k1", "k2")
WRITE_GAP_S_MAX = 3.0  # an election (0.5-1 s) plus a client's failover, on a loaded machine
NO_NATIVE = ("--listen-native-url", "off")


# ---------------------------------------------------------------------------- helpers


def cluster_stub(cluster: SynodCluster, index: int) -> rpc_pb2_grpc.ClusterStub:
    channel = grpc.insecure_channel(cluster.members[index].endpoint)
    return rpc_pb2_grpc.ClusterStub(channel)


def status(cluster: SynodCluster, index: int) -> rpc_pb2.StatusResponse:
    with grpc.insecure_channel(cluster.members[index].endpoint) as channel:
        stub = rpc_pb2_grpc.MaintenanceStub(channel)
        response: rpc_pb2.StatusResponse = stub.Status(rpc_pb2.StatusRequest(), timeout=2)
        return response


def snapshots_installed(cluster: SynodCluster, index: int) -> float:
    """How many snapshots the member installed (its /metrics)."""
    url = f"http://{cluster.members[index].endpoint}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith("synod_snapshot_install_duration_seconds_count"):
            return float(line.split()[-1])
    raise AssertionError("no snapshot install metric")


def retry(call: Callable[[], object], timeout_s: float = TIMEOUT_S) -> object:
    """`call` until it answers: a change can be refused while an earlier one settles."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def client_retry(call: Callable[[], object], timeout_s: float = TIMEOUT_S) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except ClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def member_list(cluster: SynodCluster, index: int) -> list[rpc_pb2.Member]:
    response = cluster_stub(cluster, index).MemberList(rpc_pb2.MemberListRequest(), timeout=5)
    return list(response.members)


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)


def caught_up(cluster: SynodCluster, index: int, leader: int) -> bool:
    """The member applied everything the leader had committed when asked."""
    try:
        target = status(cluster, leader).raftIndex
        return status(cluster, index).raftAppliedIndex >= target
    except grpc.RpcError:
        return False


def started(cluster: SynodCluster, index: int, name: str) -> bool:
    try:
        return any(m.name == name for m in member_list(cluster, index))
    except grpc.RpcError:
        return False


def add_and_start(
    cluster: SynodCluster, via: int, name: str, learner: bool = False
) -> tuple[int, int]:
    """MemberAdd a new member, start it (it joins), wait until it published its name;
    (its index in the launcher, its member id)."""
    index = cluster.new_member(name)
    request = rpc_pb2.MemberAddRequest(
        peerURLs=[cluster.members[index].peer_url], isLearner=learner
    )
    added = retry(lambda: cluster_stub(cluster, via).MemberAdd(request, timeout=TIMEOUT_S))
    assert isinstance(added, rpc_pb2.MemberAddResponse)
    assert added.member.isLearner == learner
    cluster.start(index)
    wait_until(lambda: started(cluster, via, name), CATCH_UP_TIMEOUT_S, f"{name} started")
    return index, added.member.ID


def replace_dead(cluster: SynodCluster, dead: int, name: str) -> tuple[int, int, int]:
    """Member `dead` died for good: kill it, remove it through a survivor, add `name` in
    its place and wait until the newcomer caught up with the leader; (the newcomer's index,
    its member id, the survivor's index)."""
    dead_id = status(cluster, dead).header.member_id
    cluster.kill(dead)
    survivor = next(i for i in range(3) if i != dead)
    remove(cluster, survivor, dead_id)
    cluster.members[dead].removed = True
    index, new_id = add_and_start(cluster, survivor, name)
    leader = cluster.wait_leader()
    caught = functools.partial(caught_up, cluster, index, leader)
    wait_until(caught, CATCH_UP_TIMEOUT_S, f"{name} caught up")
    return index, new_id, survivor


def remove(cluster: SynodCluster, via: int, member_id: int) -> rpc_pb2.MemberRemoveResponse:
    request = rpc_pb2.MemberRemoveRequest(ID=member_id)
    removed = retry(lambda: cluster_stub(cluster, via).MemberRemove(request, timeout=TIMEOUT_S))
    assert isinstance(removed, rpc_pb2.MemberRemoveResponse)
    assert member_id not in [m.ID for m in removed.members]
    return removed


@dataclass
class Load:
    """Client threads writing and reading KEYS through the original members, recording
    every call for the linearizability check and every acknowledged write."""

    endpoints: list[str]
    threads_count: int = 3
    operations: list[Operation] = field(default_factory=list)
    acked: dict[str, int] = field(default_factory=dict)  # value -> ack time (monotonic ns)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)
    origin_ns: int = field(default_factory=time.monotonic_ns)

    def start(self) -> None:
        for number in range(self.threads_count):
            thread = threading.Thread(target=self._run, args=(number,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _now_us(self) -> int:
        return (time.monotonic_ns() - self.origin_ns) // 1000

    def _run(self, number: int) -> None:
        with Client(self.endpoints, timeout_s=5.0, transport="grpc") as client:
            sequence = 0
            while not self.stop.is_set():
                key = KEYS[sequence % len(KEYS)]
                sequence += 1
                if sequence % 3:
                    self._put(client, number, key, f"c{number}-{sequence}")
                else:
                    self._get(client, number, key)

    def _put(self, client: Client, number: int, key: str, value: str) -> None:
        call_us = self._now_us()
        try:
            client.put(key, value)
        except ClientError:
            self._record(Operation(number, OpKind.PUT, key, value, call_us, None))
            return
        self._record(Operation(number, OpKind.PUT, key, value, call_us, self._now_us()))
        with self.lock:
            self.acked[value] = time.monotonic_ns()

    def _get(self, client: Client, number: int, key: str) -> None:
        call_us = self._now_us()
        try:
            found = client.get_one(key)
        except ClientError:
            return  # an unknown read changes nothing
        value = None if found is None else found.value.decode()
        self._record(Operation(number, OpKind.GET, key, None, call_us, self._now_us(), value))

    def _record(self, operation: Operation) -> None:
        with self.lock:
            self.operations.append(operation)

    def longest_gap_s(self) -> float:
        times = sorted(self.acked.values())
        gaps = [b - a for a, b in itertools.pairwise(times)]
        return max(gaps, default=0) / 1e9

    def check(self, cluster: SynodCluster, via: int) -> None:
        """Linearizable history; the acknowledged writes kept coming; the last value of
        every key is one a client wrote."""
        assert len(self.acked) > 50, f"too few writes acknowledged: {len(self.acked)}"
        gap_s = self.longest_gap_s()
        assert gap_s < WRITE_GAP_S_MAX, f"writes stalled for {gap_s:.2f} s"
        verdict = check_history(self.operations)
        assert verdict.ok, verdict.explanation


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SynodCluster]:
    running = launch(tmp_path, token="membership", extra_flags=NO_NATIVE)
    try:
        yield running
    finally:
        running.stop_all()


# ---------------------------------------------------------------------------- tests


def test_grow_three_to_five_and_back_under_load(cluster: SynodCluster) -> None:
    """3 -> 5 voters one at a time, then back to the 3 originals, while clients write and
    read: every acknowledged write survives, the history is linearizable, no stall."""
    load = Load(cluster.endpoints)
    load.start()
    try:
        added = [add_and_start(cluster, 0, name) for name in ("m3", "m4")]
        voters = [m for m in member_list(cluster, 1) if not m.isLearner]
        assert len(voters) == 5
        for index, _ in added:
            leader = cluster.wait_leader()
            done = functools.partial(caught_up, cluster, index, leader)
            wait_until(done, CATCH_UP_TIMEOUT_S, "catch up")
        for index, member_id in added:
            remove(cluster, 1, member_id)
            cluster.members[index].removed = True
            assert cluster.wait_exit(index) == 0
        time.sleep(1.0)  # keep writing on the shrunk cluster
    finally:
        load.finish()
    assert len(member_list(cluster, 2)) == 3
    load.check(cluster, 0)


def test_replace_a_killed_member(cluster: SynodCluster) -> None:
    """A member dies for good: remove it, add a new one; it joins, catches up and votes."""
    leader = cluster.wait_leader()
    victim = (leader + 1) % 3
    victim_id = status(cluster, victim).header.member_id
    with Client(cluster.endpoints, transport="grpc") as client:
        for number in range(50):
            client.put(f"before/{number}", "x")
    index, new_id, survivor = replace_dead(cluster, victim, "m3")
    with Client(cluster.members[index].endpoint, transport="grpc") as client:
        found = client.get("before/", prefix=True, serializable=True)
        assert len(found.kvs) == 50
    # restarts use what the data dir recorded, not --initial-cluster (which now names other
    # members than at first start): the joined member, then an original one
    for restarted in (index, survivor):
        member = cluster.members[restarted]
        assert member.popen is not None
        member.popen.terminate()
        member.popen.wait(timeout=10)
        member.popen = None
        cluster.start(restarted)
        cluster.wait_leader()
    leader = cluster.wait_leader()
    wait_until(lambda: caught_up(cluster, index, leader), CATCH_UP_TIMEOUT_S, "caught up again")
    listed = {m.ID: m for m in member_list(cluster, index)}
    assert victim_id not in listed
    assert not listed[new_id].isLearner and listed[new_id].name == "m3"
    # the new member counts for the quorum: with the leader (an original) gone, the other
    # original and the new member elect a leader and take writes
    leader = cluster.wait_leader()
    if leader == index:
        leader = next(i for i in range(3) if i != victim)
    cluster.kill(leader)
    rest = [cluster.members[i].endpoint for i in range(4) if cluster.members[i].popen]
    with Client(rest, transport="grpc") as client:
        client_retry(lambda: client.put("after", "y", timeout_s=5))
        assert client.get_one("after") is not None


def test_learner_catches_up_from_a_snapshot_then_is_promoted(tmp_path: Path) -> None:
    """With snapshots every 20 slots, a learner added after 300 writes gets a snapshot, serves
    serializable reads, is refused promotion while it has not started, and is promoted once
    caught up."""
    cluster = launch(tmp_path, token="learner", extra_flags=(*NO_NATIVE, "--snapshot-count", "20"))
    try:
        with Client(cluster.endpoints, transport="grpc") as client:
            for number in range(300):
                client.put(f"key/{number:03d}", str(number))
        index = cluster.new_member("m3")
        request = rpc_pb2.MemberAddRequest(
            peerURLs=[cluster.members[index].peer_url], isLearner=True
        )
        added = cluster_stub(cluster, 0).MemberAdd(request, timeout=TIMEOUT_S)
        promote = rpc_pb2.MemberPromoteRequest(ID=added.member.ID)
        with pytest.raises(grpc.RpcError) as refused:
            cluster_stub(cluster, 1).MemberPromote(promote, timeout=TIMEOUT_S)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert refused.value.details() == (
            "etcdserver: can only promote a learner member which is in sync with leader"
        )
        cluster.start(index)
        leader = cluster.wait_leader()
        wait_until(lambda: caught_up(cluster, index, leader), CATCH_UP_TIMEOUT_S, "catch up")
        assert status(cluster, index).isLearner
        with Client(cluster.members[index].endpoint, transport="grpc") as learner:
            assert len(learner.get("key/", prefix=True, serializable=True).kvs) == 300
        assert snapshots_installed(cluster, index) >= 1
        promoted = retry(lambda: cluster_stub(cluster, 2).MemberPromote(promote, timeout=5))
        assert isinstance(promoted, rpc_pb2.MemberPromoteResponse)
        assert [m.isLearner for m in promoted.members] == [False] * 4
        wait_until(lambda: not status(cluster, index).isLearner, TIMEOUT_S, "voter")
        again = pytest.raises(grpc.RpcError)
        with again as not_learner:
            cluster_stub(cluster, 0).MemberPromote(promote, timeout=TIMEOUT_S)
        assert not_learner.value.details() == "etcdserver: can only promote a learner member"
    finally:
        cluster.stop_all()


def test_removing_the_leader(cluster: SynodCluster) -> None:
    """The leader removes itself: the answer arrives, it exits saying it was removed, the
    other two elect a leader and keep serving."""
    leader = cluster.wait_leader()
    leader_id = status(cluster, leader).header.member_id
    with Client(cluster.endpoints, transport="grpc") as client:
        client.put("before", "1")
    remove(cluster, leader, leader_id)
    cluster.members[leader].removed = True
    assert cluster.wait_exit(leader) == 0
    log = cluster.members[leader].log_path.read_text()
    assert "the member has been permanently removed from the cluster" in log
    new_leader = cluster.wait_leader()
    assert new_leader != leader
    others = [cluster.members[i].endpoint for i in range(3) if i != leader]
    with Client(others, transport="grpc") as client:
        client.put("after", "2")
        assert client.get_one("before") is not None
    assert leader_id not in [m.ID for m in member_list(cluster, new_leader)]


def test_changes_that_would_lose_availability_are_refused(cluster: SynodCluster) -> None:
    """With one voter down, adding a voter or removing a live voter would leave no quorum
    of live members: refused as etcd refuses (unhealthy cluster); nothing changes."""
    leader = cluster.wait_leader()
    down = (leader + 1) % 3
    live = (leader + 2) % 3
    cluster.kill(down)
    time.sleep(2.0)  # longer than the health window (3 election timeouts)
    stub = cluster_stub(cluster, leader)
    with pytest.raises(grpc.RpcError) as add_refused:
        stub.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=["http://127.0.0.1:1"]), timeout=5)
    assert add_refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert add_refused.value.details() == "etcdserver: unhealthy cluster"
    live_id = status(cluster, live).header.member_id
    with pytest.raises(grpc.RpcError) as remove_refused:
        stub.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=live_id), timeout=5)
    assert remove_refused.value.details() == "etcdserver: unhealthy cluster"
    assert len(member_list(cluster, live)) == 3
    with pytest.raises(grpc.RpcError) as missing:
        stub.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=12345), timeout=5)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert missing.value.details() == "etcdserver: member not found"


def test_graceful_stop_of_the_leader_hands_over(cluster: SynodCluster) -> None:
    """SIGTERM on the leader: it hands leadership to a caught-up voter before it stops, so
    the others have a leader at once instead of after an election timeout."""
    leader = cluster.wait_leader()
    member = cluster.members[leader]
    assert member.popen is not None
    member.popen.terminate()
    member.popen.wait(timeout=10)
    member.popen = None
    assert "handed leadership to" in member.log_path.read_text()
    new_leader = cluster.wait_leader(timeout_s=5)
    assert new_leader != leader


def test_member_calls_through_the_json_gateway(cluster: SynodCluster) -> None:
    """curl-style: add a learner and remove it through /v3/cluster/member/* on a follower
    (the change is forwarded to the leader)."""
    leader = cluster.wait_leader()
    follower = (leader + 1) % 3
    base = f"http://{cluster.members[follower].endpoint}/v3/cluster/member"

    def post(path: str, body: dict[str, object]) -> dict[str, object]:
        request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, object] = json.loads(response.read())
            return answer

    added = post("/add", {"peerURLs": ["http://127.0.0.1:1"], "isLearner": True})
    member = added["member"]
    assert isinstance(member, dict) and member["isLearner"] is True
    listed = post("/list", {})["members"]
    assert isinstance(listed, list) and len(listed) == 4
    post("/remove", {"ID": member["ID"]})
    listed = post("/list", {})["members"]
    assert isinstance(listed, list) and len(listed) == 3
    with pytest.raises(urllib.error.HTTPError) as missing:
        post("/remove", {"ID": member["ID"]})
    assert missing.value.code == 404
    assert json.loads(missing.value.read())["error"] == "etcdserver: member not found"


def test_leader_killed_between_changes_under_load(cluster: SynodCluster) -> None:
    """Grow to 4, kill the leader, replace it by a fifth member, all under client load:
    the history stays linearizable and writes stall no longer than an election."""
    endpoints = list(cluster.endpoints)
    load = Load(endpoints)
    load.start()
    try:
        index, _ = add_and_start(cluster, 0, "m3")
        leader = cluster.wait_leader()
        if leader == index:
            leader = 0
        _, _, survivor = replace_dead(cluster, leader, "m4")
        time.sleep(1.0)
    finally:
        load.finish()
    assert len([m for m in member_list(cluster, survivor) if not m.isLearner]) == 4
    load.check(cluster, survivor)


def test_member_removed_while_down_learns_it_when_it_comes_back(tmp_path: Path) -> None:
    """A member removed while it was down, after every other member restarted from a
    snapshot taken after the removal (so no one remembers its address): when it starts
    again the others tell it (its hello gave its address), and it exits."""
    flags = (*NO_NATIVE, "--snapshot-count", "5")
    cluster = launch(tmp_path, token="removed-while-down", extra_flags=flags)
    try:
        leader = cluster.wait_leader()
        gone = (leader + 1) % 3
        gone_id = status(cluster, gone).header.member_id
        cluster.kill(gone)
        survivor = next(i for i in range(3) if i != gone)
        remove(cluster, survivor, gone_id)
        with Client(cluster.members[survivor].endpoint, transport="grpc") as client:
            for number in range(20):
                client.put(f"after/{number}", "x")
        for index in range(3):
            member = cluster.members[index]
            if index != gone and member.popen is not None:
                member.popen.terminate()
                member.popen.wait(timeout=10)
                member.popen = None
                cluster.start(index)
        cluster.wait_leader()
        cluster.start(gone)
        assert cluster.wait_exit(gone, timeout_s=20) == 0
        log = cluster.members[gone].log_path.read_text()
        assert "the member has been permanently removed from the cluster" in log
    finally:
        cluster.stop_all()


class _NoClientUrlsCluster(SynodCluster):
    """Members started without --initial-cluster-client-urls: each knows only its own."""

    def command(self, member: MemberProcess) -> list[str]:
        command = super().command(member)
        at = command.index("--initial-cluster-client-urls")
        return command[:at] + command[at + 2 :]


def test_members_publish_their_client_urls_through_the_log(tmp_path: Path) -> None:
    """Without --initial-cluster-client-urls every member publishes its own client URLs
    (as etcd members publish their attributes): every member lists every member's URLs,
    and later table changes (a member update) apply on all of them alike."""
    cluster = _NoClientUrlsCluster(tmp_path, size=3, token="publish", extra_flags=NO_NATIVE)
    cluster.start_all()
    try:
        cluster.wait_leader()
        expected = {f"http://{m.endpoint}" for m in cluster.members}

        def all_published() -> bool:
            return all(
                {url for m in member_list(cluster, i) for url in m.clientURLs} == expected
                for i in range(3)
            )

        wait_until(all_published, TIMEOUT_S, "every member lists every client URL")
        learner = rpc_pb2.MemberAddRequest(peerURLs=["http://127.0.0.1:1"], isLearner=True)
        added = cluster_stub(cluster, 0).MemberAdd(learner, timeout=TIMEOUT_S)
        update = rpc_pb2.MemberUpdateRequest(ID=added.member.ID, peerURLs=["http://127.0.0.1:2"])
        cluster_stub(cluster, 1).MemberUpdate(update, timeout=TIMEOUT_S)

        def same_everywhere() -> bool:
            tables = [member_list(cluster, i) for i in range(3)]
            return all(t == tables[0] for t in tables) and any(
                list(m.peerURLs) == ["http://127.0.0.1:2"] for m in tables[0]
            )

        wait_until(same_everywhere, TIMEOUT_S, "the same table on every member")
    finally:
        cluster.stop_all()


def test_a_follower_removes_itself(cluster: SynodCluster) -> None:
    """MemberRemove of a follower sent to that follower: it answers with the new list, then
    exits as removed; the two others keep serving."""
    leader = cluster.wait_leader()
    follower = (leader + 1) % 3
    follower_id = status(cluster, follower).header.member_id
    started_s = time.monotonic()
    removed = remove(cluster, follower, follower_id)
    assert time.monotonic() - started_s < 3.0
    assert len(removed.members) == 2
    cluster.members[follower].removed = True
    assert cluster.wait_exit(follower) == 0
    assert cluster.wait_leader() != follower


def test_a_member_not_added_first_cannot_join(cluster: SynodCluster) -> None:
    """`--initial-cluster-state existing` without a MemberAdd of its peer URL: the start is
    refused with a message saying what to do, and the cluster is unchanged."""
    cluster.wait_leader()
    index = cluster.new_member("stranger")
    cluster.start(index)
    assert cluster.wait_exit(index, timeout_s=30) == 1
    log = cluster.members[index].log_path.read_text()
    assert "cannot join" in log and "add it first" in log
    assert len(member_list(cluster, 0)) == 3


def test_one_member_cluster_grows_by_a_voter(tmp_path: Path) -> None:
    """Adding a voter to a one-member cluster is answered at once, as etcd answers it: the
    caller needs the answer to start the newcomer, whose vote alone can commit the change.
    Told of the pending addition when it asks to join, the newcomer starts and votes; then
    both are voters and writes go on."""
    cluster = launch(tmp_path, size=1, token="grow-one", extra_flags=NO_NATIVE)
    try:
        cluster.wait_leader()
        index = cluster.new_member("m1")
        request = rpc_pb2.MemberAddRequest(peerURLs=[cluster.members[index].peer_url])
        started_at = time.monotonic()
        answer = cluster_stub(cluster, 0).MemberAdd(request, timeout=15)
        assert time.monotonic() - started_at < 5
        assert list(answer.member.peerURLs) == [cluster.members[index].peer_url]
        assert not answer.member.isLearner and answer.member.ID != 0
        assert len(answer.members) == 2
        listed = member_list(cluster, 0)
        assert answer.member.ID in [m.ID for m in listed] and len(listed) == 2
        cluster.start(index)
        wait_until(lambda: started(cluster, 0, "m1"), CATCH_UP_TIMEOUT_S, "m1 started")
        voters = [m for m in member_list(cluster, index) if not m.isLearner]
        assert len(voters) == 2
        assert answer.member.ID in [m.ID for m in voters]
        with Client(cluster.endpoints, transport="grpc") as client:
            client.put("two", "voters")
    finally:
        cluster.stop_all()


def test_every_original_member_replaced_then_one_more_joins(cluster: SynodCluster) -> None:
    """Replace all three original members one by one, then add a fourth: the last joiner
    replays entries whose tables name none of its peers and still catches up."""
    alive = [0, 1, 2]
    for number in range(3):
        index, _ = add_and_start(cluster, alive[-1], f"n{number}")
        leader = cluster.wait_leader()
        wait_until(functools.partial(caught_up, cluster, index, leader), CATCH_UP_TIMEOUT_S, "")
        alive.append(index)
        victim = alive.pop(0)
        victim_id = status(cluster, victim).header.member_id
        cluster.kill(victim)
        remove(cluster, alive[-1], victim_id)
        cluster.members[victim].removed = True
    index, _ = add_and_start(cluster, alive[-1], "n3")
    leader = cluster.wait_leader()
    wait_until(functools.partial(caught_up, cluster, index, leader), CATCH_UP_TIMEOUT_S, "n3")
    with Client(cluster.members[index].endpoint, transport="grpc") as client:
        client.put("last", "joiner")
        assert client.get_one("last") is not None
    assert len(member_list(cluster, index)) == 4

"""The checks after a chaos run, once the cluster healed: every member's full change history
(a watch from revision 1) is read at one final revision and compared; the acknowledged writes
must all be in it; the Maintenance HashKV of every member at that revision must agree; the
fencing tokens written under the lock must only go up; no two lock holders may overlap.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import grpc

from synod.api.proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.api.proto.mvccpb import kv_pb2
from synod.chaos.cluster import ChaosCluster
from synod.chaos.workload import FENCE_KEY, LOCK_TTL_S, AckedWrite, Holding

SYNC_KEY = b"chaos/sync"
RECOVERY_TIMEOUT_S = 60.0
WATCH_TIMEOUT_S = 60.0
LEASE_MARGIN_US = 2_000_000

Event = tuple[int, str, str | None]  # (mod revision, key, value; None for a delete)


def sync_revision(cluster: ChaosCluster) -> int:
    """Write the sync key through whichever member takes it; the revision it got."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while time.monotonic() < deadline:
        for endpoint in cluster.endpoints:
            try:
                with grpc.insecure_channel(endpoint) as channel:
                    response = rpc_pb2_grpc.KVStub(channel).Put(
                        rpc_pb2.PutRequest(key=SYNC_KEY, value=b"sync"), timeout=2.0
                    )
                    return int(response.header.revision)
            except grpc.RpcError:
                continue
        time.sleep(0.1)
    raise AssertionError("the healed cluster took no write")


def wait_applied(cluster: ChaosCluster, revision: int) -> None:
    """Until every member's store reached `revision` (serializable reads, no quorum)."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    waiting = list(cluster.endpoints)
    while waiting and time.monotonic() < deadline:
        for endpoint in list(waiting):
            try:
                with grpc.insecure_channel(endpoint) as channel:
                    response = rpc_pb2_grpc.KVStub(channel).Range(
                        rpc_pb2.RangeRequest(key=SYNC_KEY, serializable=True), timeout=1.0
                    )
                if response.header.revision >= revision:
                    waiting.remove(endpoint)
            except grpc.RpcError:
                pass
        time.sleep(0.05)
    if waiting:
        raise AssertionError(f"members {waiting} did not catch up to revision {revision}")


def changes(endpoint: str, revision: int) -> list[Event]:
    """Every change to every key up to `revision`, from a watch starting at revision 1."""
    done = threading.Event()

    def requests() -> Iterator[rpc_pb2.WatchRequest]:
        create = rpc_pb2.WatchCreateRequest(key=b"\0", range_end=b"\0", start_revision=1)
        yield rpc_pb2.WatchRequest(create_request=create)
        done.wait(WATCH_TIMEOUT_S)

    events: list[Event] = []
    with grpc.insecure_channel(endpoint) as channel:
        call = rpc_pb2_grpc.WatchStub(channel).Watch(requests(), timeout=WATCH_TIMEOUT_S)
        try:
            for response in call:
                for event in response.events:
                    value = None if event.type == kv_pb2.Event.DELETE else event.kv.value.decode()
                    events.append((event.kv.mod_revision, event.kv.key.decode(), value))
                if events and events[-1][0] >= revision:
                    break
        finally:
            done.set()
            call.cancel()
    return [event for event in events if event[0] <= revision]


def hash_kv(endpoint: str, revision: int) -> int:
    with grpc.insecure_channel(endpoint) as channel:
        response = rpc_pb2_grpc.MaintenanceStub(channel).HashKV(
            rpc_pb2.HashKVRequest(revision=revision), timeout=5.0
        )
    return int(response.hash)


@dataclass
class StateCheck:
    """What the members' final states say; `problems` empty when all is well."""

    revision: int
    events: int
    problems: list[str]


def check_state(cluster: ChaosCluster, acked: list[AckedWrite], revision: int) -> StateCheck:
    problems: list[str] = []
    histories = {m.name: changes(m.endpoint, revision) for m in cluster.members}
    reference_name = cluster.names[0]
    reference = histories[reference_name]
    for name, history in histories.items():
        if history != reference:
            diverged = next(
                (i for i, (a, b) in enumerate(zip(history, reference, strict=False)) if a != b),
                min(len(history), len(reference)),
            )
            problems.append(
                f"{name}'s history differs from {reference_name}'s at change {diverged} "
                f"({len(history)} vs {len(reference)} changes)"
            )
    hashes = {m.name: hash_kv(m.endpoint, revision) for m in cluster.members}
    if len(set(hashes.values())) != 1:
        problems.append(f"HashKV at revision {revision} differs: {hashes}")
    present = set(reference)
    missing = [w for w in acked if (w.revision, w.key, w.value) not in present]
    for write in missing[:10]:
        problems.append(f"acknowledged write missing: {write}")
    if len(missing) > 10:
        problems.append(f"... {len(missing) - 10} more acknowledged writes missing")
    problems.extend(check_fence(reference))
    return StateCheck(revision, len(reference), problems)


def check_fence(events: Sequence[Event]) -> list[str]:
    """The tokens written to the fence key, in revision order, only go up."""
    tokens = [int(value) for _, key, value in events if key == FENCE_KEY.decode() and value]
    return [
        f"fencing token went backwards: {earlier} then {later}"
        for earlier, later in itertools.pairwise(tokens)
        if later <= earlier
    ]


def check_holdings(holdings: list[Holding]) -> list[str]:
    """No two holders believed they held the lock at once, within their lease's TTL."""
    ttl_us = LOCK_TTL_S * 1_000_000 - LEASE_MARGIN_US
    trusted = [h for h in holdings if h.released_us - h.lease_granted_us < ttl_us]
    trusted.sort(key=lambda h: h.acquired_us)
    problems = []
    for earlier, later in itertools.pairwise(trusted):
        if later.token <= earlier.token:
            problems.append(f"later holder has an older token: {earlier} then {later}")
    longest: Holding | None = None  # of the holders so far, the one that released last
    for holding in trusted:
        if longest is not None and holding.acquired_us < longest.released_us:
            problems.append(f"lock holders overlap: {longest} and {holding}")
        if longest is None or holding.released_us > longest.released_us:
            longest = holding
    return problems

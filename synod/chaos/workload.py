"""Client workloads against a real cluster, recording what each client asked, when, and what
it was told, for the linearizability checker and the durability and fencing checks.

Each client is a thread with its own gRPC channels and one attempt per operation (no retry:
a retried write would blur the history). Operations map onto the checker's register model
per key: put, get (linearizable range), compare-and-set on the value or on the mod revision
(values are unique, so "mod revision r" and "the value written at r" name the same state),
delete, and multi-key txns recorded as one operation per key over the same interval (a
linearizable history stays linearizable projected on each key). A write whose answer is lost
is recorded as unknown; one refused with "no leader" never reached the log and is dropped.

Every acknowledged write is remembered with the revision it was given, and every lock holder
with its fencing token and the interval it believed it held the lock.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import grpc

from synod.api.proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.api.proto.v3lockpb import v3lock_pb2, v3lock_pb2_grpc
from synod.sim.history import History, OpKind

REGISTER_PREFIX = "chaos/r/"
FENCE_KEY = b"chaos/fence"
LOCK_NAME = b"chaos/lock"
OPERATION_TIMEOUT_S = 1.0
LOCK_TIMEOUT_S = 3.0
LOCK_TTL_S = 10
HOLD_S_MAX = 0.1
BACKOFF_S = 0.05
DEFINITE_FAILURES = ("etcdserver: no leader",)  # refused before the log


@dataclass(frozen=True, slots=True)
class AckedWrite:
    """A write the cluster acknowledged: `value` None for a delete."""

    key: str
    value: str | None
    revision: int


@dataclass(frozen=True, slots=True)
class Holding:
    """One lock holder: its token and the interval (harness clock, us) it believed it held."""

    client: int
    token: int
    acquired_us: int
    released_us: int
    lease_granted_us: int


@dataclass
class Recorder:
    """Thread-safe history plus the acknowledged writes and lock holdings."""

    started: float = field(default_factory=time.monotonic)
    history: History = field(default_factory=History)
    acked: list[AckedWrite] = field(default_factory=list)
    holdings: list[Holding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now_us(self) -> int:
        return int((time.monotonic() - self.started) * 1_000_000)

    def invoke(self, client: int, kind: OpKind, key: str, argument: object) -> int:
        with self.lock:
            return self.history.invoke(client, kind, key, argument, self.now_us())

    def complete(self, op_id: int, result: object) -> None:
        with self.lock:
            self.history.complete(op_id, result, self.now_us())

    def unknown(self, op_id: int) -> None:
        with self.lock:
            self.history.unknown(op_id)

    def ack(self, key: str, value: str | None, revision: int) -> None:
        with self.lock:
            self.acked.append(AckedWrite(key, value, revision))

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1


def _definite(error: grpc.RpcError) -> bool:
    details = error.details() if isinstance(error, grpc.Call) else ""
    return any(text in (details or "") for text in DEFINITE_FAILURES)


class _Endpoints:
    """Channels to every member; a client sticks to one and moves on after an error."""

    def __init__(self, endpoints: list[str], rng: random.Random) -> None:
        self.channels = [grpc.insecure_channel(endpoint) for endpoint in endpoints]
        self.current = rng.randrange(len(endpoints))

    def kv(self) -> rpc_pb2_grpc.KVStub:
        return rpc_pb2_grpc.KVStub(self.channels[self.current])

    def lease(self) -> rpc_pb2_grpc.LeaseStub:
        return rpc_pb2_grpc.LeaseStub(self.channels[self.current])

    def locks(self) -> v3lock_pb2_grpc.LockStub:
        return v3lock_pb2_grpc.LockStub(self.channels[self.current])

    def rotate(self) -> None:
        self.current = (self.current + 1) % len(self.channels)

    def close(self) -> None:
        for channel in self.channels:
            channel.close()


class RegisterClient:
    """Random register operations on a few keys until `stop` is set."""

    def __init__(
        self, client: int, endpoints: list[str], recorder: Recorder, keys: int, seed: int
    ) -> None:
        assert keys >= 1
        self.client = client
        self.recorder = recorder
        self.keys = [f"{REGISTER_PREFIX}{index}" for index in range(keys)]
        self.rng = random.Random(seed)
        self.endpoints = _Endpoints(endpoints, self.rng)
        self.written = 0
        self.seen: dict[str, tuple[str | None, int]] = {}

    def _fresh(self) -> str:
        self.written += 1
        return f"c{self.client}-{self.written}"

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                if not self.step():
                    self.endpoints.rotate()
                    time.sleep(BACKOFF_S)
        finally:
            self.endpoints.close()

    def step(self) -> bool:
        """One operation; False after an error."""
        key = self.rng.choice(self.keys)
        roll = self.rng.random()
        if roll < 0.3:
            return self.get([key])
        if roll < 0.5:
            return self.put([(key, self._fresh())])
        if roll < 0.65:
            return self.cas_value(key)
        if roll < 0.75:
            return self.cas_revision(key)
        if roll < 0.82:
            return self.delete(key)
        others = [k for k in self.keys if k != key]
        pair = [key, self.rng.choice(others)] if others else [key]
        if roll < 0.91:
            return self.get(pair)
        return self.put([(k, self._fresh()) for k in pair])

    def get(self, keys: list[str]) -> bool:
        """A linearizable read of `keys` in one txn (a plain range for one key)."""
        ids = [self.recorder.invoke(self.client, OpKind.GET, key, None) for key in keys]
        try:
            if len(keys) == 1:
                response = self.endpoints.kv().Range(
                    rpc_pb2.RangeRequest(key=keys[0].encode()), timeout=OPERATION_TIMEOUT_S
                )
                ranges = [response]
            else:
                txn = rpc_pb2.TxnRequest(
                    success=[
                        rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key.encode()))
                        for key in keys
                    ]
                )
                answer = self.endpoints.kv().Txn(txn, timeout=OPERATION_TIMEOUT_S)
                ranges = [op.response_range for op in answer.responses]
        except grpc.RpcError:
            for op_id in ids:
                self.recorder.unknown(op_id)
            self.recorder.count("get failed")
            return False
        for key, op_id, found in zip(keys, ids, ranges, strict=True):
            value = found.kvs[0].value.decode() if found.kvs else None
            self.seen[key] = (value, found.kvs[0].mod_revision if found.kvs else 0)
            self.recorder.complete(op_id, value)
        self.recorder.count("get")
        return True

    def put(self, pairs: list[tuple[str, str]]) -> bool:
        """Put one key, or several atomically in one txn."""
        ids = [self.recorder.invoke(self.client, OpKind.PUT, k, v) for k, v in pairs]
        ops = [
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k.encode(), value=v.encode()))
            for k, v in pairs
        ]
        try:
            if len(pairs) == 1:
                request = ops[0].request_put
                revision = self.endpoints.kv().Put(request, timeout=OPERATION_TIMEOUT_S)
            else:
                request_txn = rpc_pb2.TxnRequest(success=ops)
                revision = self.endpoints.kv().Txn(request_txn, timeout=OPERATION_TIMEOUT_S)
        except grpc.RpcError as error:
            return self._failed(ids, error, "put")
        for (key, value), op_id in zip(pairs, ids, strict=True):
            self.recorder.complete(op_id, None)
            self.recorder.ack(key, value, revision.header.revision)
        self.recorder.count("put" if len(pairs) == 1 else "txn put")
        return True

    def cas_value(self, key: str) -> bool:
        """Txn: if the value is (or the key is absent, for None) what we last saw, put."""
        expected = self.seen.get(key, (None, 0))[0]
        if expected is None:
            compare = rpc_pb2.Compare(
                key=key.encode(),
                target=rpc_pb2.Compare.CREATE,
                result=rpc_pb2.Compare.EQUAL,
                create_revision=0,
            )
        else:
            compare = rpc_pb2.Compare(
                key=key.encode(),
                target=rpc_pb2.Compare.VALUE,
                result=rpc_pb2.Compare.EQUAL,
                value=expected.encode(),
            )
        return self._cas(key, expected, compare, "cas value")

    def cas_revision(self, key: str) -> bool:
        """Txn: if the mod revision is the one we last saw, put."""
        expected, mod_revision = self.seen.get(key, (None, 0))
        compare = rpc_pb2.Compare(
            key=key.encode(),
            target=rpc_pb2.Compare.MOD,
            result=rpc_pb2.Compare.EQUAL,
            mod_revision=mod_revision,
        )
        return self._cas(key, expected, compare, "cas revision")

    def _cas(self, key: str, expected: str | None, compare: rpc_pb2.Compare, what: str) -> bool:
        new = self._fresh()
        op_id = self.recorder.invoke(self.client, OpKind.CAS, key, (expected, new))
        put = rpc_pb2.PutRequest(key=key.encode(), value=new.encode())
        request = rpc_pb2.TxnRequest(
            compare=[compare], success=[rpc_pb2.RequestOp(request_put=put)]
        )
        try:
            response = self.endpoints.kv().Txn(request, timeout=OPERATION_TIMEOUT_S)
        except grpc.RpcError as error:
            return self._failed([op_id], error, what)
        self.recorder.complete(op_id, response.succeeded)
        if response.succeeded:
            self.recorder.ack(key, new, response.header.revision)
            self.seen[key] = (new, response.header.revision)
        self.recorder.count(f"{what} {'ok' if response.succeeded else 'refused'}")
        return True

    def delete(self, key: str) -> bool:
        op_id = self.recorder.invoke(self.client, OpKind.DELETE, key, None)
        try:
            response = self.endpoints.kv().DeleteRange(
                rpc_pb2.DeleteRangeRequest(key=key.encode()), timeout=OPERATION_TIMEOUT_S
            )
        except grpc.RpcError as error:
            return self._failed([op_id], error, "delete")
        self.recorder.complete(op_id, response.deleted > 0)
        if response.deleted > 0:
            self.recorder.ack(key, None, response.header.revision)
        self.recorder.count("delete")
        return True

    def _failed(self, ids: list[int], error: grpc.RpcError, what: str) -> bool:
        """A write with no answer is unknown. So is one refused with "no leader": it never
        reached the log, but the register model has no "did nothing" result, and an unknown
        write of a fresh value nobody reads costs the checker little."""
        for op_id in ids:
            self.recorder.unknown(op_id)
        self.recorder.count(f"{what} {'refused' if _definite(error) else 'unknown'}")
        return False


class LockClient:
    """Takes the chaos lock with a lease, writes its fencing token to FENCE_KEY under the
    lock (a txn that checks the lock key still exists), holds briefly, releases."""

    def __init__(self, client: int, endpoints: list[str], recorder: Recorder, seed: int) -> None:
        self.client = client
        self.recorder = recorder
        self.rng = random.Random(seed)
        self.endpoints = _Endpoints(endpoints, self.rng)

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                if not self.cycle():
                    self.endpoints.rotate()
                    time.sleep(BACKOFF_S)
        finally:
            self.endpoints.close()

    def cycle(self) -> bool:
        granted_us = self.recorder.now_us()
        try:
            lease = self.endpoints.lease().LeaseGrant(
                rpc_pb2.LeaseGrantRequest(TTL=LOCK_TTL_S), timeout=OPERATION_TIMEOUT_S
            )
        except grpc.RpcError:
            self.recorder.count("lock lease failed")
            return False
        try:
            return self._hold(lease.ID, granted_us)
        finally:
            try:
                self.endpoints.lease().LeaseRevoke(
                    rpc_pb2.LeaseRevokeRequest(ID=lease.ID), timeout=OPERATION_TIMEOUT_S
                )
            except grpc.RpcError:
                self.recorder.count("lock revoke failed")

    def _hold(self, lease_id: int, granted_us: int) -> bool:
        try:
            locked = self.endpoints.locks().Lock(
                v3lock_pb2.LockRequest(name=LOCK_NAME, lease=lease_id), timeout=LOCK_TIMEOUT_S
            )
        except grpc.RpcError:
            self.recorder.count("lock failed")
            return False
        acquired_us = self.recorder.now_us()
        token = 0
        try:
            found = self.endpoints.kv().Range(
                rpc_pb2.RangeRequest(key=locked.key), timeout=OPERATION_TIMEOUT_S
            )
            if not found.kvs:
                self.recorder.count("lock lost before fencing")
                return False
            token = found.kvs[0].create_revision
            fence = rpc_pb2.TxnRequest(
                compare=[
                    rpc_pb2.Compare(
                        key=locked.key,
                        target=rpc_pb2.Compare.CREATE,
                        result=rpc_pb2.Compare.EQUAL,
                        create_revision=token,
                    )
                ],
                success=[
                    rpc_pb2.RequestOp(
                        request_put=rpc_pb2.PutRequest(key=FENCE_KEY, value=str(token).encode())
                    )
                ],
            )
            self.endpoints.kv().Txn(fence, timeout=OPERATION_TIMEOUT_S)
            time.sleep(self.rng.uniform(0, HOLD_S_MAX))
        except grpc.RpcError:
            self.recorder.count("lock use failed")
            return False
        finally:
            released_us = self.recorder.now_us()
            if token:
                with self.recorder.lock:
                    self.recorder.holdings.append(
                        Holding(self.client, token, acquired_us, released_us, granted_us)
                    )
            try:
                self.endpoints.locks().Unlock(
                    v3lock_pb2.UnlockRequest(key=locked.key), timeout=OPERATION_TIMEOUT_S
                )
            except grpc.RpcError:
                self.recorder.count("unlock failed")
        self.recorder.count("lock held")
        return True

"""The workloads, as run inside one client process. Each one is a class with `setup()`, an
`one(task)` that does one timed operation (False: this task is done), optional background
tasks (watch receivers) and `teardown()`.

| workload        | one operation                                                          |
|-----------------|------------------------------------------------------------------------|
| put             | put of a 256-byte value to a random key out of 10,000                  |
| get-lin/get-ser | linearizable / serializable get of a random preloaded key              |
| txn             | compare-and-set: txn(mod_revision == last seen) put, else get; 8 keys |
| watch           | one delivered event (one writer, 1,000 watchers; latency put→delivery) |
| lease-grant     | one lease grant (10,000 leases in all, count-bound)                    |
| lease-keepalive | one keep-alive round trip on a stream, over the granted leases         |
| lock            | acquire + release of a lock (4 names, contenders wait on predecessors) |
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from typing import Any, ClassVar

from synod.client import AsyncClient, Stream, kv_pb2, rpc_pb2, txn
from synod.client.errors import ClientError

PRELOAD_BATCH = 64
PRELOAD_CONCURRENCY = 8
WATCH_CREATE_TIMEOUT_S = 30.0
WRITES_PENDING_MAX = 100


class Recorder:
    """Latencies of the operations that started and finished inside [start, end]."""

    def __init__(self, start: float, end: float) -> None:
        assert start <= end
        self.start = start
        self.end = end
        self.latencies_s: list[float] = []
        self.ops_total = 0

    def add(self, started: float, finished: float) -> None:
        self.ops_total += 1
        if started >= self.start and finished <= self.end:
            self.latencies_s.append(finished - started)

    def add_event(self, sent: float, received: float) -> None:
        """A delivered event counts when it was sent inside the window."""
        self.ops_total += 1
        if self.start <= sent < self.end:
            self.latencies_s.append(max(0.0, received - sent))


class Workload:
    counts_own_ops: ClassVar[bool] = True

    def __init__(
        self, clients: list[AsyncClient], spec: dict[str, Any], state: dict[str, Any]
    ) -> None:
        assert clients
        self.clients = clients
        self.spec = spec
        self.state = state
        self.rng = random.Random(spec["worker"] * 7919 + 1)
        self.prefix: str = spec["prefix"]
        self.key_count: int = spec["key_count"]
        self.value = os.urandom(spec["value_bytes"])
        self.extra: Counter[str] = Counter()

    def client(self, task: int) -> AsyncClient:
        return self.clients[task % len(self.clients)]

    def key(self, index: int) -> str:
        return f"{self.prefix}k/{index:05d}"

    def random_key(self) -> str:
        return self.key(self.rng.randrange(self.key_count))

    async def setup(self) -> None:
        return None

    async def one(self, task: int) -> bool:
        raise NotImplementedError

    async def background(self, recorder: Recorder) -> None:
        return None

    async def teardown(self) -> None:
        return None


class Put(Workload):
    async def one(self, task: int) -> bool:
        await self.client(task).put(self.random_key(), self.value)
        return True


class GetLinearizable(Workload):
    serializable = False

    async def setup(self) -> None:
        if not self.spec.get("preload") or self.spec["worker"] != 0:
            return
        batches = [
            range(first, min(first + PRELOAD_BATCH, self.key_count))
            for first in range(0, self.key_count, PRELOAD_BATCH)
        ]

        async def load(part: int) -> None:
            for batch in batches[part::PRELOAD_CONCURRENCY]:
                ops = [txn.put(self.key(index), self.value) for index in batch]
                await self.clients[0].txn((), ops, retry_safe=True, timeout_s=30.0)

        await asyncio.gather(*(load(part) for part in range(PRELOAD_CONCURRENCY)))

    async def one(self, task: int) -> bool:
        await self.client(task).get(self.random_key(), serializable=self.serializable)
        return True


class GetSerializable(GetLinearizable):
    serializable = True


class CompareAndSet(Workload):
    """Contended compare-and-set: every task updates one of `cas_keys` keys guarded by the
    mod revision it last saw; a failed compare returns the key's current state."""

    async def setup(self) -> None:
        self.cas_keys = [f"{self.prefix}cas/{index}" for index in range(self.spec["cas_keys"])]
        self.seen: dict[str, int] = dict.fromkeys(self.cas_keys, 0)

    async def one(self, task: int) -> bool:
        key = self.rng.choice(self.cas_keys)
        response = await self.client(task).txn(
            [txn.mod_revision(key) == self.seen[key]],
            [txn.put(key, self.value)],
            [txn.get(key)],
        )
        if response.succeeded:
            self.extra["cas_succeeded"] += 1
            self.seen[key] = response.header.revision
        else:
            self.extra["cas_failed"] += 1
            kvs = response.responses[0].response_range.kvs
            self.seen[key] = kvs[0].mod_revision if kvs else 0
        return True


class WatchFanOut(Workload):
    """One writer (task 0 of worker 0) puts its send time at `watch_rate` puts/s; this
    process's share of the watchers, multiplexed over `watch_streams` streams, records the
    delay from each put's send to each delivery."""

    counts_own_ops = False

    async def setup(self) -> None:
        self.watch_key = f"{self.prefix}watch"
        self.streams: list[Stream[rpc_pb2.WatchRequest, rpc_pb2.WatchResponse]] = []
        watchers: int = self.spec["watchers_here"]
        stream_count = max(1, min(self.spec["watch_streams"], watchers))
        for index in range(stream_count):
            share = watchers // stream_count + (1 if index < watchers % stream_count else 0)
            if share == 0:
                continue
            stream = self.client(index).transport.watch()
            self.streams.append(stream)
            for _ in range(share):
                create = rpc_pb2.WatchCreateRequest(key=self.watch_key.encode())
                await stream.send(rpc_pb2.WatchRequest(create_request=create))
            created = 0
            async with asyncio.timeout(WATCH_CREATE_TIMEOUT_S):
                while created < share:
                    response = await stream.receive()
                    if response.canceled:
                        raise ClientError(f"watch refused: {response.cancel_reason}")
                    created += 1 if response.created else 0
        self.next_put_at = 0.0
        self.pending: set[asyncio.Task[Any]] = set()

    async def one(self, task: int) -> bool:
        """The writer is open-loop: a put leaves every 1/watch_rate s whether or not the
        previous one was answered (at most WRITES_PENDING_MAX outstanding), so a slow put
        does not lower the event rate the watchers see."""
        if self.spec["worker"] != 0 or task != 0:
            return False
        now = time.monotonic()
        self.next_put_at = max(self.next_put_at, now)
        if len(self.pending) < WRITES_PENDING_MAX:
            stamp = str(time.monotonic_ns()).encode()
            put = asyncio.get_running_loop().create_task(self.clients[0].put(self.watch_key, stamp))
            self.pending.add(put)
            put.add_done_callback(self._put_done)
        else:
            self.extra["puts_skipped"] += 1
        self.next_put_at += 1.0 / self.spec["watch_rate"]
        await asyncio.sleep(max(0.0, self.next_put_at - time.monotonic()))
        return True

    def _put_done(self, put: asyncio.Task[Any]) -> None:
        self.pending.discard(put)
        if put.cancelled() or put.exception() is not None:
            self.extra["puts_failed"] += 1
        else:
            self.extra["puts"] += 1

    async def background(self, recorder: Recorder) -> None:
        async def receive(stream: Stream[rpc_pb2.WatchRequest, rpc_pb2.WatchResponse]) -> None:
            while True:
                response = await stream.receive()
                received = time.monotonic_ns()
                for event in response.events:
                    sent = int(event.kv.value)
                    recorder.add_event(sent / 1e9, received / 1e9)

        async def drain() -> None:
            await asyncio.gather(*(receive(stream) for stream in self.streams))

        grace_s = self.spec["drain_s"]
        remaining_s = recorder.end - time.monotonic() + grace_s
        try:
            async with asyncio.timeout(max(0.0, remaining_s)):
                await drain()
        except TimeoutError:
            pass
        except ClientError as error:
            self.extra["watch_broken"] += 1
            raise error

    async def teardown(self) -> None:
        for put in list(self.pending):
            put.cancel()
        for stream in self.streams:
            stream.cancel()


class LeaseGrant(Workload):
    """Grants this process's share of `leases` (count-bound), kept for lease-keepalive."""

    async def setup(self) -> None:
        self.granted: list[int] = self.state.setdefault("leases", [])
        self.share: int = self.spec["leases_here"]
        self.reserved = len(self.granted)

    async def one(self, task: int) -> bool:
        if self.reserved >= self.share:
            return False
        self.reserved += 1
        try:
            response = await self.client(task).lease_grant(self.spec["lease_ttl_s"])
        except ClientError:
            self.reserved -= 1
            raise
        self.granted.append(response.ID)
        return self.reserved < self.share


class LeaseKeepAlive(Workload):
    """Keep-alive round trips, one stream per task, cycling over the granted leases."""

    async def setup(self) -> None:
        leases: list[int] = self.state.get("leases", [])
        if not leases:
            raise ClientError("lease-keepalive needs the leases of lease-grant")
        tasks = self.spec["concurrency"]
        self.slices = [leases[task::tasks] or leases for task in range(tasks)]
        self.positions = [0] * tasks
        self.streams = [self.client(task).transport.keep_alive() for task in range(tasks)]

    async def one(self, task: int) -> bool:
        leases = self.slices[task]
        lease_id = leases[self.positions[task] % len(leases)]
        self.positions[task] += 1
        stream = self.streams[task]
        await stream.send(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
        response = await stream.receive()
        if response.TTL <= 0:
            self.extra["lease_gone"] += 1
        return True

    async def teardown(self) -> None:
        for stream in self.streams:
            stream.cancel()


class LockCycle(Workload):
    """Acquire then release a lock the way etcd's concurrency package does: create
    `<name>/<lease>-<task>` with the process's lease, then wait until no key under the name
    is older, watching only the newest older key. `lock_names` names shared by all tasks."""

    async def setup(self) -> None:
        lease = await self.clients[0].lease(self.spec["lease_ttl_s"])
        self.lease = lease
        self.names = [f"{self.prefix}lock/{index}/" for index in range(self.spec["lock_names"])]

    async def one(self, task: int) -> bool:
        client = self.client(task)
        global_task = self.spec["worker"] * 1000 + task
        name = self.names[global_task % len(self.names)]
        key = f"{name}{self.lease.id:x}-{task}"
        created = await client.txn(
            [txn.create_revision(key) == 0], [txn.put(key, b"", lease=self.lease.id)], []
        )
        assert created.succeeded, "a contender's key is its own"
        my_revision = created.header.revision
        while True:
            older = await client.get(
                name,
                prefix=True,
                sort_target=rpc_pb2.RangeRequest.CREATE,
                sort_order=rpc_pb2.RangeRequest.DESCEND,
                max_create_revision=my_revision - 1,
                limit=1,
            )
            if not older.kvs:
                break
            self.extra["lock_waits"] += 1
            await self._wait_deleted(client, older.kvs[0].key, older.header.revision + 1)
        await client.delete(key)
        return True

    @staticmethod
    async def _wait_deleted(client: AsyncClient, key: bytes, from_revision: int) -> None:
        watcher = client.watch(key, start_revision=from_revision)
        try:
            async for response in watcher:
                if any(event.type == kv_pb2.Event.DELETE for event in response.events):
                    return
        finally:
            watcher.cancel()

    async def teardown(self) -> None:
        await self.lease.revoke()


WORKLOADS: dict[str, type[Workload]] = {
    "put": Put,
    "get-lin": GetLinearizable,
    "get-ser": GetSerializable,
    "txn": CompareAndSet,
    "watch": WatchFanOut,
    "lease-grant": LeaseGrant,
    "lease-keepalive": LeaseKeepAlive,
    "lock": LockCycle,
}

"""Benchmark: the longest event-loop stall while a member snapshots a large KV store.

A one-member cluster runs in this process over real files. Its KV store is filled directly
with `--keys` keys of `--value-bytes` bytes (no log: the fill is not what is measured), then
clients keep writing through the member while a monitor task wakes every millisecond and
records how late it woke. A snapshot is due every `--every` slots, so one starts during the
writes; the run ends once a snapshot newer than the fill is durable. Printed: the snapshot's
duration, the longest and 99.9th percentile loop stall, and the writes acknowledged meanwhile.
Not part of the test suite; needs a quiet machine for exact figures.

    .venv/bin/python bench/snapshot_stall.py [--keys 1000000] [--value-bytes 256]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import time

from synod.kv.codec import encode_command
from synod.kv.messages import Command, PutRequest
from synod.paxos.config import Config as CoreConfig
from synod.server.config import ServerConfig, Url, parse_initial_cluster
from synod.server.kv_service import KvService
from synod.server.member import Member

MONITOR_INTERVAL_S = 0.001
WRITERS = 8


def fill(service: KvService, keys: int, value_bytes: int) -> None:
    value = b"v" * value_bytes
    for index in range(keys):
        service.store.apply(Command(PutRequest(b"key-%09d" % index, value), 0))


def config(directory: str, every: int) -> ServerConfig:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cluster = parse_initial_cluster(f"m0=http://127.0.0.1:{port}", "bench")
    return ServerConfig(
        name="m0",
        data_dir=directory,
        listen_client_urls=(Url("http", "127.0.0.1", 1),),
        advertise_client_urls=(Url("http", "127.0.0.1", 1),),
        listen_peer_url=cluster[0].peer_url,
        initial_cluster=cluster,
        tick_ms=100,
        snapshot_every_slots=every,
        core=CoreConfig(heartbeat_ticks=1, election_ticks=10),
    )


async def monitor(lags: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(MONITOR_INTERVAL_S)
        lags.append(loop.time() - before - MONITOR_INTERVAL_S)


async def writer(member: Member, index: int, acked: list[int], stop: asyncio.Event) -> None:
    sequence = 0
    while not stop.is_set():
        key = b"w-%d-%d" % (index, sequence)
        payload = encode_command(Command(PutRequest(key, b"x" * 64), 0))
        await member.write(payload)
        acked[0] += 1
        sequence += 1


async def run(keys: int, value_bytes: int, every: int) -> None:
    with tempfile.TemporaryDirectory(prefix="synod-stall-") as directory:
        service = KvService()
        started = time.perf_counter()
        fill(service, keys, value_bytes)
        print(f"filled {keys} keys in {time.perf_counter() - started:.1f} s")
        member = Member(config(directory, every), service)
        await member.start()
        while not member.is_leader:
            await asyncio.sleep(0.05)
        stop = asyncio.Event()
        lags: list[float] = []
        acked = [0]
        tasks = [asyncio.create_task(monitor(lags, stop))]
        tasks += [asyncio.create_task(writer(member, i, acked, stop)) for i in range(WRITERS)]
        started = time.perf_counter()
        first_snapshot = member.storage._snapshot.meta.last_slot
        while member.storage._snapshot.meta.last_slot == first_snapshot:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*tasks)
        await member.stop()
        lags.sort()
        p999 = lags[int(len(lags) * 0.999)] if lags else 0.0
        print(
            f"snapshot of {keys} keys durable after {elapsed:.2f} s; writes acknowledged "
            f"meanwhile {acked[0]}; loop stall max {lags[-1] * 1000:.1f} ms, "
            f"p99.9 {p999 * 1000:.1f} ms over {len(lags)} samples"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--value-bytes", type=int, default=256)
    parser.add_argument("--every", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(run(args.keys, args.value_bytes, args.every))


if __name__ == "__main__":
    main()

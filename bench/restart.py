"""Benchmark: how long a member takes to serve again after a restart, and its memory.

Two data directories are built with the real storage code, for a one-member cluster:
- `keys`: a snapshot of `--keys` keys of `--value-bytes` bytes and an empty log tail
  (issue 8: serving again in under 10 s; RSS under 1.5 GB for 1,000,000 keys of 256 bytes);
- `log`: a snapshot of `--log-snapshot-keys` keys plus `--log-mb` MB of log after it,
  puts of `--log-value-bytes` bytes, all committed (issue 3: state the restart time with a
  1 GB log plus snapshot).
Each is then started in a fresh process (`--measure DIR`), which reports the seconds until
the storage is open, until the state machine is restored, and until the member is serving
(leader, everything committed applied, a linearizable read barrier passed) in wall-clock
and in CPU time of the process (the figure to trust on a busy machine), plus its resident
memory then and at its peak, and the load average around it (CPU seconds are the figure
to trust when other processes share the machine). `--json FILE` keeps the results. Not part
of the test suite.

    .venv/bin/python bench/restart.py [--keys 1000000] [--log-mb 1024] [--dir DIR]
        [--only keys|log] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import msgpack

from synod.kv.codec import encode_command
from synod.kv.messages import Command, PutRequest
from synod.kv.store import KVStore
from synod.paxos.config import Config as CoreConfig
from synod.paxos.types import Ballot, Entry, EntryKind, HardState, NodeId, Slot, SnapshotMeta
from synod.server.config import ServerConfig, Url, parse_initial_cluster
from synod.server.kv_service import KvService
from synod.server.member import Member
from synod.server.members import encode_machine_snapshot
from synod.storage.storage import DurableStorage

SAVE_BATCH_ENTRIES = 256
PEER_PORT_FILE = "bench-peer-port"


def config(directory: str, port: int) -> ServerConfig:
    cluster = parse_initial_cluster(f"m0=http://127.0.0.1:{port}", "bench")
    return ServerConfig(
        name="m0",
        data_dir=directory,
        listen_client_urls=(Url("http", "127.0.0.1", 1),),
        advertise_client_urls=(Url("http", "127.0.0.1", 1),),
        listen_peer_url=cluster[0].peer_url,
        initial_cluster=cluster,
        initial_cluster_token="bench",
        snapshot_every_slots=10**9,
        core=CoreConfig(heartbeat_ticks=1, election_ticks=10),
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def build(directory: str, keys: int, value_bytes: int, log_bytes: int, log_value: int) -> None:
    """A data directory as a member that ran a while leaves it: snapshot, then a log tail."""
    port = free_port()
    member = Member(config(directory, port), KvService())
    table = member.bootstrap_table()
    me = NodeId(member.member_id)
    membership = table.membership()
    storage = DurableStorage.open(directory, bootstrap=SnapshotMeta(Slot(0), membership))
    ballot = Ballot(1, me)
    started = time.perf_counter()
    store = KVStore()
    value = b"v" * value_bytes
    for index in range(keys):
        store.apply(Command(PutRequest(b"key-%09d" % index, value), 0))
    noop = Entry(Slot(1), ballot, EntryKind.NOOP)
    storage.save(None, [noop], HardState(ballot, Slot(1)), sync=True)
    pieces = [encode_machine_snapshot(table, b""), *store.snapshot_stream()]
    storage.compact(SnapshotMeta(Slot(1), membership), pieces)
    del store, pieces
    print(f"  snapshot of {keys} keys written in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    slot, written, batch = 1, 0, []
    put_value = b"w" * log_value
    while written < log_bytes:
        slot += 1
        payload = encode_command(Command(PutRequest(b"log-%09d" % (slot % 100_000), put_value), 0))
        envelope = msgpack.packb([0, 0, payload])
        batch.append(Entry(Slot(slot), ballot, EntryKind.COMMANDS, (envelope,)))
        written += len(envelope)
        if len(batch) == SAVE_BATCH_ENTRIES:
            storage.save(None, batch, None, sync=False)
            batch = []
    storage.save(None, batch, HardState(ballot, Slot(slot)), sync=True)
    storage.close()
    with open(os.path.join(directory, PEER_PORT_FILE), "w") as file:
        file.write(str(port))
    if log_bytes:
        print(
            f"  log of {written >> 20} MB ({slot - 1} slots) "
            f"in {time.perf_counter() - started:.1f} s"
        )


def rss_mb() -> tuple[float, float]:
    """(resident, peak resident) MB of this process."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            fields[name] = rest.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def measure(directory: str) -> dict[str, float]:
    started = time.perf_counter()
    with open(os.path.join(directory, PEER_PORT_FILE)) as file:
        port = int(file.read())
    member = Member(config(directory, port), KvService())
    await member.start()
    opened = time.perf_counter() - started
    opened_cpu_s = time.process_time()
    while not member.is_leader:
        await asyncio.sleep(0.005)
    await member.read_barrier()
    serving = time.perf_counter() - started
    serving_cpu_s = time.process_time()
    rss, peak = rss_mb()
    service = member.service
    assert isinstance(service, KvService)
    result = {
        "started_s": opened,
        "started_cpu_s": opened_cpu_s,
        "serving_s": serving,
        "serving_cpu_s": serving_cpu_s,
        "rss_mb": rss,
        "peak_rss_mb": peak,
        "revision": service.store.revision,
        "applied_slot": member.machine.applied_slot,
    }
    await member.stop()
    return result


def run_measure(directory: str) -> dict[str, float]:
    load_before = os.getloadavg()[0]
    output = subprocess.run(
        [sys.executable, __file__, "--measure", directory],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    result["load_before"] = load_before
    result["load_after"] = os.getloadavg()[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--value-bytes", type=int, default=256)
    parser.add_argument("--log-mb", type=int, default=1024)
    parser.add_argument("--log-snapshot-keys", type=int, default=100_000)
    parser.add_argument("--log-value-bytes", type=int, default=4096)
    parser.add_argument("--dir", default=None, help="where to build (default: a temp dir)")
    parser.add_argument("--only", choices=["keys", "log"], default=None)
    parser.add_argument("--json", default=None, help="write the results to this file")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(asyncio.run(measure(args.measure))))
        return
    root = tempfile.mkdtemp(prefix="synod-restart-", dir=args.dir)
    results: dict[str, object] = {"arguments": vars(args)}
    try:
        if args.only in (None, "keys"):
            directory = os.path.join(root, "keys")
            print(f"building {args.keys} keys of {args.value_bytes} bytes")
            build(directory, args.keys, args.value_bytes, 0, 0)
            results["keys"] = run_measure(directory)
            print(f"  restart: {results['keys']}")
            shutil.rmtree(directory)
        if args.only in (None, "log"):
            directory = os.path.join(root, "log")
            print(
                f"building a snapshot of {args.log_snapshot_keys} keys plus {args.log_mb} MB of log"
            )
            build(
                directory,
                args.log_snapshot_keys,
                args.value_bytes,
                args.log_mb << 20,
                args.log_value_bytes,
            )
            results["log"] = run_measure(directory)
            print(f"  restart: {results['log']}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()

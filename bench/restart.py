"""Benchmark: how long a member takes to serve again after a restart, and its memory.

Data directories are built with the real storage code:
- `keys`: for each of `--members` members (default 1), a snapshot of `--keys` keys of
  `--value-bytes` bytes and an empty log tail (issue 8: serving again in under 10 s, 3
  members; RSS under 1.5 GB for 1,000,000 keys of 256 bytes);
- `log`: for one member, a snapshot of `--log-snapshot-keys` keys plus `--log-mb` MB of log
  after it, puts of `--log-value-bytes` bytes, all committed (issue 3: state the restart
  time with a 1 GB log plus snapshot).
Every member but the last is started first, each in its own process (`--serve DIR`), and
serves; the last is then started in a fresh process (`--measure DIR`), which reports the
seconds until the storage is open and the state machine restored, and until the member is
serving (a leader known, itself when alone; everything committed applied; a linearizable
read barrier passed), in wall-clock and in CPU time of the process (the figure to trust on
a busy machine), plus its resident memory then and at its peak, and the load average
around it. `--json FILE` keeps the results. Not part of the test suite.

    .venv/bin/python bench/restart.py [--keys 1000000] [--members 3] [--shuffle]
        [--log-mb 1024] [--dir DIR] [--only keys|log] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
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
from synod.server.errors import NoLeader, RequestTimeout
from synod.server.kv_service import KvService
from synod.server.member import Member
from synod.server.members import encode_machine_snapshot
from synod.storage.storage import DurableStorage

SAVE_BATCH_ENTRIES = 256
CLUSTER_FILE = "bench-cluster"  # the --initial-cluster text, then this member's name
SERVE_ATTEMPTS_MAX = 100


def config(directory: str, cluster_text: str, name: str) -> ServerConfig:
    cluster = parse_initial_cluster(cluster_text, "bench")
    (me,) = [peer for peer in cluster if peer.name == name]
    return ServerConfig(
        name=name,
        data_dir=directory,
        listen_client_urls=(Url("http", "127.0.0.1", 1),),
        advertise_client_urls=(Url("http", "127.0.0.1", 1),),
        listen_peer_url=me.peer_url,
        initial_cluster=cluster,
        initial_cluster_token="bench",
        snapshot_every_slots=10**9,
        core=CoreConfig(heartbeat_ticks=1, election_ticks=10),
    )


def config_of(directory: str) -> ServerConfig:
    with open(os.path.join(directory, CLUSTER_FILE)) as file:
        cluster_text, name = file.read().split()
    return config(directory, cluster_text, name)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def build(
    root: str,
    members: int,
    keys: int,
    value_bytes: int,
    log_bytes: int,
    log_value: int,
    shuffle: bool = False,
) -> list[str]:
    """Data directories, one per member, as members that ran a while leave them: the same
    snapshot, then the same log tail. The keys are put in key order, or in a random order
    (`shuffle`: revision order then differs from key order, as in most stores). Returns the
    directories in name order."""
    names = [f"m{index}" for index in range(members)]
    cluster_text = ",".join(f"{name}=http://127.0.0.1:{free_port()}" for name in names)
    directories = [os.path.join(root, name) for name in names]
    first = Member(config(directories[0], cluster_text, names[0]), KvService())
    table = first.bootstrap_table()
    membership = table.membership()
    ballot = Ballot(1, NodeId(first.member_id))
    started = time.perf_counter()
    store = KVStore()
    value = b"v" * value_bytes
    order = list(range(keys))
    if shuffle:
        random.Random(keys).shuffle(order)
    for index in order:
        store.apply(Command(PutRequest(b"key-%09d" % index, value), 0))
    pieces = [encode_machine_snapshot(table, b""), *store.snapshot_stream()]
    del store
    print(f"  snapshot of {keys} keys made in {time.perf_counter() - started:.1f} s")
    for directory, name in zip(directories, names, strict=True):
        storage = DurableStorage.open(directory, bootstrap=SnapshotMeta(Slot(0), membership))
        noop = Entry(Slot(1), ballot, EntryKind.NOOP)
        storage.save(None, [noop], HardState(ballot, Slot(1)), sync=True)
        storage.compact(SnapshotMeta(Slot(1), membership), pieces)
        write_log(storage, ballot, log_bytes, log_value)
        storage.close()
        with open(os.path.join(directory, CLUSTER_FILE), "w") as file:
            file.write(f"{cluster_text} {name}")
    return directories


def write_log(storage: DurableStorage, ballot: Ballot, log_bytes: int, log_value: int) -> None:
    """Committed puts after the snapshot's slot 1, about `log_bytes` of them."""
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
    if log_bytes:
        print(
            f"  log of {written >> 20} MB ({slot - 1} slots) "
            f"in {time.perf_counter() - started:.1f} s"
        )


async def wait_serving(member: Member) -> None:
    """Until the member knows a leader and a linearizable read barrier passed through it."""
    for _ in range(SERVE_ATTEMPTS_MAX):
        while member.leader_id is None:
            await asyncio.sleep(0.005)
        try:
            await member.read_barrier()
            return
        except (NoLeader, RequestTimeout):
            await asyncio.sleep(0.05)
    raise RuntimeError(f"no read barrier passed in {SERVE_ATTEMPTS_MAX} attempts")


async def serve(directory: str) -> None:
    """Run a member of a cluster until stdin closes; print "serving" once it serves."""
    member = Member(config_of(directory), KvService())
    await member.start()
    await wait_serving(member)
    print("serving", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await member.stop()


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
    member = Member(config_of(directory), KvService())
    await member.start()
    opened = time.perf_counter() - started
    opened_cpu_s = time.process_time()
    await wait_serving(member)
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
        "leader": member.is_leader,
    }
    await member.stop()
    return result


def measure_restart(directories: list[str]) -> dict[str, float]:
    """Run every member but the last, each in its own process, until they serve; then
    measure the last one starting into that cluster (alone if it is the only one)."""
    servers = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve", directory],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for directory in directories[:-1]
    ]
    try:
        for server in servers:
            assert server.stdout is not None
            line = server.stdout.readline()
            if line.strip() != "serving":
                raise RuntimeError(f"a member of the cluster did not start: {line!r}")
        return run_measure(directories[-1])
    finally:
        for server in servers:
            assert server.stdin is not None
            server.stdin.close()
        for server in servers:
            server.wait(timeout=120)


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
    parser.add_argument("--members", type=int, default=1, help="cluster size (keys case)")
    parser.add_argument("--shuffle", action="store_true", help="put the keys in random order")
    parser.add_argument("--log-mb", type=int, default=1024)
    parser.add_argument("--log-snapshot-keys", type=int, default=100_000)
    parser.add_argument("--log-value-bytes", type=int, default=4096)
    parser.add_argument("--dir", default=None, help="where to build (default: a temp dir)")
    parser.add_argument("--only", choices=["keys", "log"], default=None)
    parser.add_argument("--json", default=None, help="write the results to this file")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(asyncio.run(measure(args.measure))))
        return
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    root = tempfile.mkdtemp(prefix="synod-restart-", dir=args.dir)
    results: dict[str, object] = {"arguments": vars(args)}
    try:
        if args.only in (None, "keys"):
            print(f"building {args.members} members' {args.keys} keys of {args.value_bytes} bytes")
            directory = os.path.join(root, "keys")
            members = build(
                directory, args.members, args.keys, args.value_bytes, 0, 0, args.shuffle
            )
            results["keys"] = measure_restart(members)
            print(f"  restart: {results['keys']}")
            shutil.rmtree(directory)
        if args.only in (None, "log"):
            print(
                f"building a snapshot of {args.log_snapshot_keys} keys plus {args.log_mb} MB of log"
            )
            members = build(
                os.path.join(root, "log"),
                1,
                args.log_snapshot_keys,
                args.value_bytes,
                args.log_mb << 20,
                args.log_value_bytes,
            )
            results["log"] = measure_restart(members)
            print(f"  restart: {results['log']}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()

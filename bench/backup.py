"""Backup and restore times: how long `synod ctl snapshot save` and `synod snapshot restore`
take for a store of N keys, and how large the file is.

Starts one `synod serve` (the test harness's timers), fills it with `--keys` keys of
`--value-bytes` bytes through transactions of 128 puts, then times the save (the member
builds the snapshot in memory and streams it) and one restore into an empty directory, and
reports the slowest read answered during the save (how long the member stopped serving).

    .venv/bin/python -m bench.backup [--keys 20000] [--value-bytes 100]

Not part of the test suite; the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

from synod.api.proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.client.sync import Client
from tests.integration.cluster import launch

TXN_OPS_MAX = 128
PROBE_GAP_S = 0.01


def fill(client: Client, keys: int, value: bytes) -> None:
    for start in range(0, keys, TXN_OPS_MAX):
        ops = [
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k/%08d" % n, value=value))
            for n in range(start, min(keys, start + TXN_OPS_MAX))
        ]
        client.txn(success=ops, timeout_s=30)


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


class ReadProbe:
    """Serializable reads from the member back to back while a save runs: the slowest
    answer is how long the member stopped serving. (Not Status: it serializes the store
    itself every 10 s to report its size.)"""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.slowest_s = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with grpc.insecure_channel(self.endpoint) as channel:
            stub = rpc_pb2_grpc.KVStub(channel)
            request = rpc_pb2.RangeRequest(key=b"k/00000000", serializable=True)
            while not self.stop.is_set():
                started = time.perf_counter()
                stub.Range(request, timeout=60)
                self.slowest_s = max(self.slowest_s, time.perf_counter() - started)
                time.sleep(PROBE_GAP_S)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="synod-bench-backup-") as root:
        cluster = launch(Path(root), size=1, token="bench-backup")
        try:
            with Client(cluster.endpoints, timeout_s=30) as client:
                fill(client, args.keys, b"v" * args.value_bytes)
            backup = os.path.join(root, "backup.db")
            synod = [sys.executable, "-m", "synod.cli"]
            ctl = [*synod, "ctl", "--endpoints", cluster.endpoints[0]]
            probe = ReadProbe(cluster.endpoints[0])
            probe.thread.start()
            save_s = timed([*ctl, "snapshot", "save", backup])
            probe.stop.set()
            probe.thread.join()
        finally:
            cluster.stop_all()
        restore_s = timed(
            [
                *synod,
                "snapshot",
                "restore",
                backup,
                "--name",
                "r1",
                "--data-dir",
                os.path.join(root, "restored"),
                "--initial-cluster",
                "r1=http://127.0.0.1:1",
                "--initial-cluster-token",
                "bench-restored",
            ]
        )
        size = os.path.getsize(backup)
    print(f"load average before exit: {os.getloadavg()[0]:.1f}")
    print(f"keys {args.keys} of {args.value_bytes} B: file {size / 1e6:.1f} MB")
    print(f"snapshot save {save_s:.2f} s, restore {restore_s:.2f} s (each a new process)")
    print(f"slowest read from the member during the save: {probe.slowest_s:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

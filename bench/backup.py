"""Backup and restore times: how long `synod ctl snapshot save` and `synod snapshot restore`
take for a store of N keys, and how large the file is.

Starts one `synod serve` (the test harness's timers), fills it with `--keys` keys of
`--value-bytes` bytes through transactions of 128 puts, then times the save (the member
builds the snapshot in memory and streams it) and one restore into an empty directory.

    .venv/bin/python -m bench.backup [--keys 20000] [--value-bytes 100]

Not part of the test suite; the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from synod.api.proto.etcdserverpb import rpc_pb2
from synod.client.sync import Client
from tests.integration.cluster import launch

TXN_OPS_MAX = 128


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
            save_s = timed([*ctl, "snapshot", "save", backup])
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
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`etcdctl snapshot save` (etcd 3.4) against Synod: it stores Synod's backup file
unchanged (its sha256 trailer is where etcdctl looks for one), and `synod snapshot
restore` accepts that file; etcdctl cannot restore it (etcd's snapshot is a bolt database,
Synod's is its own), which docs/operator-guide.md says. Skipped only when no `etcdctl`
binary is on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from synod.cli import main as synod_main
from synod.client.sync import Client
from tests.integration.cluster import launch

ETCDCTL = shutil.which("etcdctl")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        ETCDCTL is None,
        reason="etcdctl binary not on PATH (install Debian's etcd-client to run)",
    ),
]


def etcdctl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert ETCDCTL is not None
    return subprocess.run(
        [ETCDCTL, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "ETCDCTL_API": "3"},
    )


def test_etcdctl_saves_synods_snapshot_and_synod_restores_it(tmp_path: Path) -> None:
    cluster = launch(tmp_path / "old", size=1, token="etcdctl-old")
    try:
        with Client(cluster.endpoints, timeout_s=10) as client:
            client.put("saved/by", "etcdctl")
        saved = etcdctl(
            "--endpoints", cluster.endpoints[0], "snapshot", "save", "backup.db", cwd=tmp_path
        )
    finally:
        cluster.stop_all()
    assert saved.returncode == 0, saved.stderr
    assert "Snapshot saved at backup.db" in saved.stdout
    backup = tmp_path / "backup.db"
    assert backup.stat().st_size % 512 == 32

    restored = synod_main(
        [
            "snapshot",
            "restore",
            str(backup),
            "--name",
            "n1",
            "--data-dir",
            str(tmp_path / "n1"),
            "--initial-cluster",
            "n1=http://127.0.0.1:1",
            "--initial-cluster-token",
            "etcdctl-new",
        ]
    )
    assert restored == 0

    refused = etcdctl("snapshot", "restore", str(backup), "--data-dir", "etcd", cwd=tmp_path)
    assert refused.returncode != 0, "etcd cannot read Synod's format (not a bolt database)"

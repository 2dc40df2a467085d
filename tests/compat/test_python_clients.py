"""Python etcd clients from PyPI against a real 3-member Synod (issue 4): `etcd3` over gRPC
and `etcd3gw` over the JSON gateway, each run as a user's program in its own process (etcd3
bundles its own etcdserverpb stubs, which may not share a process with ours)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import SynodCluster, launch

PROGRAMS = Path(__file__).parent / "programs"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynodCluster]:
    started = launch(tmp_path_factory.mktemp("python-clients"))
    try:
        yield started
    finally:
        started.stop_all()


def run_program(name: str, endpoint: str) -> None:
    host, port = endpoint.rsplit(":", 1)
    env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    completed = subprocess.run(
        [sys.executable, str(PROGRAMS / name), host, port],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.strip().endswith("OK")


def test_etcd3_client_over_grpc(cluster: SynodCluster) -> None:
    run_program("etcd3_program.py", cluster.endpoints[1])


def test_etcd3gw_client_over_the_json_gateway(cluster: SynodCluster) -> None:
    run_program("etcd3gw_program.py", cluster.endpoints[2])

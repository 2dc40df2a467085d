"""A real Synod cluster for tests: `synod serve` processes on free loopback ports in a temp
dir, with fast timeouts (50 ms heartbeat, 500 ms election), and the faults tests inject
(SIGKILL, SIGSTOP/SIGCONT, restart). Shared by the integration tests that drive members
through a client; it uses no client of its own beyond a status probe over gRPC.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from synod.api.proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.bench import procstat

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports free at the time of the call."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class MemberProcess:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    initial_state: str = "new"  # "existing": joins a running cluster (added first)
    removed: bool = False  # removed from the cluster: never named to later joiners

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


@dataclass
class SynodCluster:
    """`size` members; `start_all()`, then `wait_leader()` before use."""

    root: Path
    size: int = 3
    token: str = "test-cluster"
    members: list[MemberProcess] = field(default_factory=list)
    extra_flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        ports = free_ports(2 * self.size)
        for index in range(self.size):
            name = f"m{index}"
            self.members.append(
                MemberProcess(
                    name,
                    ports[2 * index],
                    ports[2 * index + 1],
                    self.root / name,
                    self.root / f"{name}.log",
                )
            )

    @property
    def endpoints(self) -> list[str]:
        return [member.endpoint for member in self.members]

    def command(self, member: MemberProcess) -> list[str]:
        named = [m for m in self.members if not m.removed or m is member]
        peers = ",".join(f"{m.name}={m.peer_url}" for m in named)
        clients = ",".join(f"{m.name}=http://{m.endpoint}" for m in named)
        return [
            sys.executable,
            "-m",
            "synod.cli",
            "serve",
            "--name",
            member.name,
            "--data-dir",
            str(member.data_dir),
            "--listen-client-urls",
            f"http://{member.endpoint}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{member.peer_port}",
            "--initial-cluster",
            peers,
            "--initial-cluster-token",
            self.token,
            "--initial-cluster-client-urls",
            clients,
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--initial-cluster-state",
            member.initial_state,
            *self.extra_flags,
        ]

    def new_member(self, name: str) -> int:
        """A member to be added (MemberAdd with its `peer_url`) and then started: it joins
        the running cluster. Its index."""
        client_port, peer_port = free_ports(2)
        member = MemberProcess(
            name,
            client_port,
            peer_port,
            self.root / name,
            self.root / f"{name}.log",
            initial_state="existing",
        )
        self.members.append(member)
        return len(self.members) - 1

    def wait_exit(self, index: int, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Wait for a member to exit by itself (removed from the cluster); its status."""
        member = self.members[index]
        assert member.popen is not None
        status = member.popen.wait(timeout=timeout_s)
        member.popen = None
        return status

    def start(self, index: int) -> None:
        member = self.members[index]
        assert member.popen is None, f"{member.name} is already running"
        with open(member.log_path, "ab") as log:
            member.popen = subprocess.Popen(
                self.command(member), stdout=log, stderr=subprocess.STDOUT
            )

    def start_all(self) -> None:
        for index in range(self.size):
            self.start(index)

    def signal(self, index: int, number: signal.Signals) -> None:
        popen = self.members[index].popen
        assert popen is not None, f"member {index} is not running"
        popen.send_signal(number)

    def kill(self, index: int) -> None:
        member = self.members[index]
        assert member.popen is not None
        member.popen.send_signal(signal.SIGKILL)
        member.popen.wait()
        member.popen = None

    def stop_all(self) -> None:
        for member in self.members:
            if member.popen is not None:
                member.popen.send_signal(signal.SIGCONT)
                member.popen.send_signal(signal.SIGTERM)
        for member in self.members:
            if member.popen is not None:
                try:
                    member.popen.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    member.popen.kill()
                    member.popen.wait()
                member.popen = None

    def _with_workers(self) -> list[int]:
        """Live members expected to run a gRPC worker: waited for, so that the tests'
        gRPC connections (made after wait_leader) reach the member through it."""
        expected: list[int] = []
        if os.environ.get("SYNOD_GRPC_WORKERS", "").strip() == "0":
            return expected
        for index in self.live():
            flags = " ".join(self.command(self.members[index]))
            if "--grpc-workers 0" not in flags and "--listen-native-url off" not in flags:
                expected.append(index)
        return expected

    def worker_pids(self, index: int) -> list[int]:
        popen = self.members[index].popen
        assert popen is not None, f"member {index} is not running"
        return procstat.with_descendants([popen.pid])[1:]

    def worker_address(self, index: int) -> str | None:
        """Where member `index`'s gRPC worker serves; None while none does."""
        text = self.members[index].log_path.read_text(errors="replace")
        for pid in self.worker_pids(index):
            found = re.search(rf"gRPC worker \d+ \(pid {pid}\) serving on (\S+)", text)
            if found is not None:
                return found.group(1)
        return None

    def live(self) -> list[int]:
        return [i for i, m in enumerate(self.members) if m.popen is not None]

    def _status(self, index: int) -> rpc_pb2.StatusResponse:
        with grpc.insecure_channel(self.members[index].endpoint) as channel:
            stub = rpc_pb2_grpc.MaintenanceStub(channel)
            status = stub.Status(rpc_pb2.StatusRequest(), timeout=1)
            rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(key=b"\0"), timeout=1)
            return status

    def wait_leader(self, timeout_s: float = READY_TIMEOUT_S) -> int:
        """Index of the member every live member names as leader, once reads work."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for index in self.live():
                popen = self.members[index].popen
                assert popen is not None
                if popen.poll() is not None:
                    raise AssertionError(
                        f"{self.members[index].name} exited:\n"
                        + self.members[index].log_path.read_text()[-2000:]
                    )
            try:
                leaders = set()
                ids = {}
                for index in self.live():
                    status = self._status(index)
                    leaders.add(status.leader)
                    ids[status.header.member_id] = index
                agreed = len(leaders) == 1 and 0 not in leaders and leaders <= set(ids)
                if agreed and all(self.worker_address(i) for i in self._with_workers()):
                    return ids[leaders.pop()]
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        # A member whose native door lost its port to another process keeps serving without
        # it (and so without gRPC workers): name the conflict, so that `launch` retries.
        conflicts = [
            member.name
            for member in self.members
            if member.log_path.exists()
            and "address already in use" in member.log_path.read_text(errors="replace")
        ]
        detail = f": address already in use at {', '.join(conflicts)}" if conflicts else ""
        raise AssertionError("no leader answered in time" + detail)


C = TypeVar("C", bound=SynodCluster)


def launch(
    root: Path,
    attempts: int = 3,
    kind: type[C] = SynodCluster,
    **options: Any,
) -> C:
    """A started cluster of `kind` (`options`: its fields, size, token, extra_flags...)
    with a leader. Free ports are only free when picked: another process (or an outgoing
    connection's ephemeral port) may take one before the member binds it, so a start that
    fails with 'address already in use' is retried on new ports."""
    for attempt in range(attempts):
        cluster = kind(root / f"try{attempt}", **options)
        cluster.root.mkdir(parents=True, exist_ok=True)
        cluster.start_all()
        try:
            cluster.wait_leader()
            return cluster
        except AssertionError as error:
            cluster.stop_all()
            if "address already in use" not in str(error) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def launched(root: Path, **options: Any) -> Iterator[SynodCluster]:
    """`launch(root, **options)`, stopped at the end of the block."""
    cluster = launch(root, **options)
    try:
        yield cluster
    finally:
        cluster.stop_all()

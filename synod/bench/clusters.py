"""Clusters the benchmark starts itself: 3-member etcd and 3-member Synod on free loopback
ports in temporary directories, and the null gRPC server. Each `start()` returns once a
linearizable read succeeds; `stop()` ends every process it started (also after a failure)."""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
START_ATTEMPTS_MAX = 3


PORT_BLOCK = 3  # client, peer, and Synod's native door (client port + 2 by default)
PORT_LOW = 10_000  # below Linux's ephemeral range (32768-60999): no outgoing socket takes them
PORT_HIGH = 32_000
PORT_TRIES_MAX = 1000


def free_port_blocks(count: int, rng: random.Random | None = None) -> list[int]:
    """First ports of `count` blocks of PORT_BLOCK consecutive loopback ports, all free at
    the time of the call (Synod's native door defaults to the client port + 2)."""
    assert 0 < count <= 16
    rng = rng or random.Random()
    bases: list[int] = []
    for _ in range(PORT_TRIES_MAX):
        base = rng.randrange(PORT_LOW, PORT_HIGH - PORT_BLOCK)
        if any(abs(base - other) < PORT_BLOCK for other in bases):
            continue
        if all(_free(port) for port in range(base, base + PORT_BLOCK)):
            bases.append(base)
            if len(bases) == count:
                return bases
    raise RuntimeError("no free blocks of loopback ports")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def answers(endpoint: str, timeout_s: float, *, kv_only: bool = False) -> bool:
    """True once `endpoint` knows a leader and serves a linearizable read."""
    import grpc

    from synod.api.proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc

    with grpc.insecure_channel(endpoint) as channel:
        try:
            if not kv_only:
                status = rpc_pb2_grpc.MaintenanceStub(channel).Status(
                    rpc_pb2.StatusRequest(), timeout=timeout_s
                )
                if status.leader == 0:
                    return False
                rpc_pb2_grpc.KVStub(channel).Range(
                    rpc_pb2.RangeRequest(key=b"\0"), timeout=timeout_s
                )
            else:
                rpc_pb2_grpc.KVStub(channel).Put(rpc_pb2.PutRequest(key=b"k"), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return True


@dataclass
class LocalCluster:
    """Processes on loopback: `kind` is 'etcd', 'synod' or 'null-grpc'."""

    kind: str
    size: int = 3
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="synod-bench-")))
    endpoints: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def _commands(self, ports: list[int], root: Path) -> list[list[str]]:
        names = [f"{self.kind}{index}" for index in range(self.size)]
        clients = [f"http://127.0.0.1:{ports[2 * i]}" for i in range(self.size)]
        peers = [f"http://127.0.0.1:{ports[2 * i + 1]}" for i in range(self.size)]
        cluster = ",".join(f"{n}={p}" for n, p in zip(names, peers, strict=True))
        token = f"bench-{self.root.name}"
        commands = []
        for index, name in enumerate(names):
            data_dir = str(root / name)
            if self.kind == "etcd":
                command = [
                    shutil.which("etcd") or "etcd",
                    "--name", name, "--data-dir", data_dir,
                    "--listen-client-urls", clients[index],
                    "--advertise-client-urls", clients[index],
                    "--listen-peer-urls", peers[index],
                    "--initial-advertise-peer-urls", peers[index],
                    "--initial-cluster", cluster,
                    "--initial-cluster-token", token,
                    "--initial-cluster-state", "new",
                    "--logger", "zap", "--log-outputs", "stderr",
                ]  # fmt: skip
            elif self.kind == "synod":
                client_urls = ",".join(f"{n}={c}" for n, c in zip(names, clients, strict=True))
                command = [
                    sys.executable, "-m", "synod.cli", "serve",
                    "--name", name, "--data-dir", data_dir,
                    "--listen-client-urls", clients[index],
                    "--advertise-client-urls", clients[index],
                    "--listen-peer-urls", peers[index],
                    "--initial-advertise-peer-urls", peers[index],
                    "--initial-cluster", cluster,
                    "--initial-cluster-token", token,
                    "--initial-cluster-client-urls", client_urls,
                ]  # fmt: skip
            else:
                assert self.kind == "null-grpc", self.kind
                command = [
                    sys.executable, "-m", "synod.bench.null_grpc",
                    "--listen", f"127.0.0.1:{ports[2 * index]}",
                ]  # fmt: skip
            commands.append(command)
        return commands

    def start(self) -> None:
        assert not self.processes, "already started"
        for attempt in range(START_ATTEMPTS_MAX):
            bases = free_port_blocks(self.size)
            ports = [base + offset for base in bases for offset in (0, 1)]
            self.endpoints = [f"127.0.0.1:{base}" for base in bases]
            attempt_root = self.root / f"try{attempt}"
            attempt_root.mkdir(parents=True, exist_ok=True)
            for index, command in enumerate(self._commands(ports, attempt_root)):
                log_path = attempt_root / f"{self.kind}{index}.log"
                self.logs.append(log_path)
                with open(log_path, "ab") as log_file:
                    self.processes.append(
                        subprocess.Popen(
                            command,
                            stdout=log_file,
                            stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL,
                            start_new_session=True,
                        )
                    )
            failure = self._wait_ready()
            if failure is None:
                return
            self.stop(remove=False)
            if "address already in use" not in failure or attempt == START_ATTEMPTS_MAX - 1:
                raise RuntimeError(f"{self.kind} cluster did not start: {failure}")
        raise AssertionError("unreachable")

    def _wait_ready(self) -> str | None:
        """None once the cluster serves, else why not."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        kv_only = self.kind == "null-grpc"
        while time.monotonic() < deadline:
            for process, log_path in zip(self.processes, self.logs[-self.size :], strict=True):
                if process.poll() is not None:
                    tail = log_path.read_text(errors="replace")[-1500:]
                    return f"{log_path.name} exited with {process.returncode}: {tail}"
            if all(answers(endpoint, 1.0, kv_only=kv_only) for endpoint in self.endpoints):
                return None
            time.sleep(0.1)
        return f"no leader answered within {READY_TIMEOUT_S:g} s (logs in {self.root})"

    def stop(self, *, remove: bool = True) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

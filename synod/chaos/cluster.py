"""A real cluster for fault testing: `synod serve` processes on loopback, each behind a
fault-injecting peer proxy, with the process faults (SIGKILL and restart, SIGSTOP/SIGCONT)
and the debug knobs (fsync delay, lease clock offset) the nemesis drives.

Each member listens for peers on its own port but advertises its proxy's port in
--initial-cluster, so every peer frame to it passes through `PeerProxies`. The knobs are
files named by SYNOD_DEBUG_FSYNC_DELAY_MS_FILE and SYNOD_DEBUG_CLOCK_OFFSET_MS_FILE that the
member re-reads while it runs. `stop()` leaves no process or listener behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from synod.api.proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.chaos.proxy import PeerProxies
from synod.server.config import Url, member_id_of

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 1.0
HEARTBEAT_MS = 50
ELECTION_TIMEOUT_MS = 500


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
class ChaosMember:
    name: str
    client_port: int
    peer_port: int
    proxy_port: int
    native_port: int
    root: Path
    popen: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def data_dir(self) -> Path:
        return self.root / self.name

    @property
    def log_path(self) -> Path:
        return self.root / f"{self.name}.log"

    @property
    def fsync_knob(self) -> Path:
        return self.root / f"{self.name}.fsync-delay-ms"

    @property
    def clock_knob(self) -> Path:
        return self.root / f"{self.name}.clock-offset-ms"

    @property
    def running(self) -> bool:
        return self.popen is not None


@dataclass
class ChaosCluster:
    """`size` members behind proxies under `root`; `start()`, then `wait_leader()`."""

    root: Path
    size: int = 3
    seed: int = 1
    token: str = "synod-chaos"
    extra_env: dict[str, str] = field(default_factory=dict)
    members: list[ChaosMember] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.size in (1, 3, 5, 7), "an odd cluster size"
        self.root.mkdir(parents=True, exist_ok=True)
        # Every port given explicitly, the native door's too: its default (client port + 2)
        # could be another member's port.
        ports = free_ports(4 * self.size)
        for index in range(self.size):
            self.members.append(
                ChaosMember(
                    f"m{index}",
                    client_port=ports[4 * index],
                    peer_port=ports[4 * index + 1],
                    proxy_port=ports[4 * index + 2],
                    native_port=ports[4 * index + 3],
                    root=self.root,
                )
            )
        ids = {
            member_id_of(self.token, m.name, Url.parse(self._peer_url(m))): m.name
            for m in self.members
        }
        self.member_ids = {name: member_id for member_id, name in ids.items()}
        self.proxies = PeerProxies(
            {m.name: m.peer_port for m in self.members},
            {m.name: m.proxy_port for m in self.members},
            ids,
            self.seed,
        )

    @staticmethod
    def _peer_url(member: ChaosMember) -> str:
        return f"http://127.0.0.1:{member.proxy_port}"

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def member(self, name: str) -> ChaosMember:
        return self.members[self.names.index(name)]

    def command(self, member: ChaosMember) -> list[str]:
        peers = ",".join(f"{m.name}={self._peer_url(m)}" for m in self.members)
        clients = ",".join(f"{m.name}=http://{m.endpoint}" for m in self.members)
        return [
            sys.executable, "-m", "synod.cli", "serve",
            "--name", member.name,
            "--data-dir", str(member.data_dir),
            "--listen-client-urls", f"http://{member.endpoint}",
            "--listen-native-url", f"http://127.0.0.1:{member.native_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{member.peer_port}",
            "--initial-advertise-peer-urls", self._peer_url(member),
            "--initial-cluster", peers,
            "--initial-cluster-token", self.token,
            "--initial-cluster-client-urls", clients,
            "--heartbeat-interval", str(HEARTBEAT_MS),
            "--election-timeout", str(ELECTION_TIMEOUT_MS),
        ]  # fmt: skip

    # ------------------------------------------------------------------ life

    def start(self) -> None:
        self.proxies.start()
        for member in self.members:
            self.set_fsync_delay(member.name, 0)
            self.set_clock_offset(member.name, 0)
            self.start_member(member.name)

    def start_member(self, name: str) -> None:
        member = self.member(name)
        assert member.popen is None, f"{name} is already running"
        env = dict(os.environ)
        env.update(self.extra_env)
        env["SYNOD_DEBUG_FSYNC_DELAY_MS_FILE"] = str(member.fsync_knob)
        env["SYNOD_DEBUG_CLOCK_OFFSET_MS_FILE"] = str(member.clock_knob)
        with open(member.log_path, "ab") as log:
            member.popen = subprocess.Popen(
                self.command(member), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        member.paused = False

    def kill(self, name: str) -> None:
        """SIGKILL: no flush, no goodbye; the data dir keeps only what was synced."""
        member = self.member(name)
        assert member.popen is not None, f"{name} is not running"
        member.popen.send_signal(signal.SIGKILL)
        member.popen.wait()
        member.popen = None
        member.paused = False

    def pause(self, name: str) -> None:
        member = self.member(name)
        assert member.popen is not None and not member.paused
        member.popen.send_signal(signal.SIGSTOP)
        member.paused = True

    def resume(self, name: str) -> None:
        member = self.member(name)
        assert member.popen is not None and member.paused
        member.popen.send_signal(signal.SIGCONT)
        member.paused = False

    def set_fsync_delay(self, name: str, delay_ms: int) -> None:
        _write_knob(self.member(name).fsync_knob, delay_ms)

    def set_clock_offset(self, name: str, offset_ms: int) -> None:
        _write_knob(self.member(name).clock_knob, offset_ms)

    def heal(self) -> None:
        """Undo every fault: links healed, paused members resumed, dead ones restarted,
        knobs back to 0."""
        self.proxies.heal()
        for member in self.members:
            self.set_fsync_delay(member.name, 0)
            self.set_clock_offset(member.name, 0)
            if member.paused:
                self.resume(member.name)
            if member.popen is None:
                self.start_member(member.name)

    def stop(self) -> None:
        """Stop every member (SIGKILL after a grace period) and the proxies; idempotent."""
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
        self.proxies.stop()

    # ------------------------------------------------------------------ probes

    def status(self, name: str) -> rpc_pb2.StatusResponse:
        with grpc.insecure_channel(self.member(name).endpoint) as channel:
            stub = rpc_pb2_grpc.MaintenanceStub(channel)
            response: rpc_pb2.StatusResponse = stub.Status(
                rpc_pb2.StatusRequest(), timeout=PROBE_TIMEOUT_S
            )
            return response

    def leader(self) -> str | None:
        """The member the running members agree is leader, if they all agree."""
        leaders = set()
        for member in self.members:
            if member.popen is None or member.paused:
                continue
            try:
                leaders.add(self.status(member.name).leader)
            except grpc.RpcError:
                return None
        if len(leaders) != 1:
            return None
        leader_id = leaders.pop()
        for name, member_id in self.member_ids.items():
            if member_id == leader_id:
                return name
        return None

    def wait_leader(self, timeout_s: float = READY_TIMEOUT_S) -> str:
        """The leader every running member names, once a linearizable read works on it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            name = self.leader()
            if name is not None:
                try:
                    with grpc.insecure_channel(self.member(name).endpoint) as channel:
                        rpc_pb2_grpc.KVStub(channel).Range(
                            rpc_pb2.RangeRequest(key=b"\0"), timeout=PROBE_TIMEOUT_S
                        )
                    return name
                except grpc.RpcError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"no leader within {timeout_s} s; logs under {self.root}")

    def _check_alive(self) -> None:
        for member in self.members:
            if member.popen is not None and member.popen.poll() is not None:
                tail = member.log_path.read_text(errors="replace")[-3000:]
                raise AssertionError(f"{member.name} exited unexpectedly:\n{tail}")


def _write_knob(path: Path, value: int) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(f"{value}\n")
    os.replace(temporary, path)

"""The native door against the gRPC door: requests per second and CPU per request.

Starts a local three-member cluster (real `synod serve` processes, the test harness's
50 ms heartbeat), then drives put and get (linearizable) through Synod's AsyncClient on
uvloop, over the native transport and over gRPC, with 1 and 64 requests in flight, every
figure in the same run against the same cluster. CPU comes from /proc: this process's
utime+stime (client) and each member's (servers), divided by the requests completed.

    .venv/bin/python -m bench.native_door [--seconds 3] [--concurrency 1,64]

Not part of the test suite; the figures depend on the machine (see docs/native.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop

from synod.client import AsyncClient
from tests.integration.cluster import MemberProcess, SynodCluster, free_ports

TICKS_S = os.sysconf("SC_CLK_TCK")


class BenchCluster(SynodCluster):
    """Members with their native door on ports picked here."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.native_ports = dict(
            zip((m.name for m in self.members), free_ports(self.size), strict=True)
        )

    def command(self, member: MemberProcess) -> list[str]:
        native = f"http://127.0.0.1:{self.native_ports[member.name]}"
        return [*super().command(member), "--listen-native-url", native]


def cpu_s(pid: int | str = "self") -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_S


@dataclass
class Figure:
    door: str
    op: str
    concurrency: int
    requests: int
    seconds: float
    client_cpu_s: float
    servers_cpu_s: float
    leader_cpu_s: float

    def row(self) -> str:
        per = 1e6 / max(1, self.requests)
        rate = self.requests / self.seconds
        return (
            f"{self.door:<7} {self.op:<4} {self.concurrency:>4} {rate:>9.0f}"
            f" {self.client_cpu_s * per:>10.1f} {self.servers_cpu_s * per:>11.1f}"
            f" {self.leader_cpu_s * per:>10.1f}"
        )


HEADER = (
    f"{'door':<7} {'op':<4} {'conc':>4} {'req/s':>9} {'client µs':>10} {'servers µs':>11}"
    f" {'leader µs':>10}"
)


async def drive(
    client: AsyncClient, op: str, concurrency: int, seconds: float, pids: list[int], leader: int
) -> tuple[int, float, float, float, float]:
    stop_at = time.monotonic() + seconds
    done = 0
    value = b"v" * 64

    async def worker(number: int) -> None:
        nonlocal done
        key = f"bench/{number}"
        while time.monotonic() < stop_at:
            if op == "put":
                await client.put(key, value)
            else:
                await client.get(key)
            done += 1

    await client.put("bench/warm", value)
    for number in range(concurrency):  # warm every key and connection
        await client.put(f"bench/{number}", value)
    client_before, servers_before = cpu_s(), [cpu_s(p) for p in pids]
    started = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    elapsed = time.monotonic() - started
    servers = [cpu_s(p) - before for p, before in zip(pids, servers_before, strict=True)]
    return done, elapsed, cpu_s() - client_before, sum(servers), servers[leader]


async def measure(cluster: BenchCluster, seconds: float, levels: list[int]) -> list[Figure]:
    leader = cluster.wait_leader()
    order = [leader, *(i for i in range(cluster.size) if i != leader)]
    endpoints = [cluster.endpoints[i] for i in order]
    natives = [f"127.0.0.1:{cluster.native_ports[cluster.members[i].name]}" for i in order]
    pids = []
    for member in cluster.members:
        assert member.popen is not None
        pids.append(member.popen.pid)
    figures = []
    for op in ("put", "get"):
        for concurrency in levels:
            for door in ("native", "grpc"):
                client = AsyncClient(
                    endpoints, transport=door, native_endpoints=natives, timeout_s=10.0
                )
                async with client:
                    result = await drive(client, op, concurrency, seconds, pids, leader)
                figure = Figure(door, op, concurrency, *result)
                print(figure.row(), flush=True)
                figures.append(figure)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--concurrency", default="1,64", help="requests in flight, e.g. 1,64")
    args = parser.parse_args(argv)
    levels = [int(level) for level in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="synod-native-bench-") as root:
        cluster = BenchCluster(Path(root), token="native-bench")
        cluster.start_all()
        try:
            cluster.wait_leader()
            load = " ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"3 members, {os.cpu_count()} CPUs, load average {load}, {args.seconds:g} s each")
            print("µs are CPU microseconds per request; servers = the three members summed")
            print(HEADER, flush=True)
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(measure(cluster, args.seconds, levels))
            print("load average after: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
        finally:
            cluster.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())

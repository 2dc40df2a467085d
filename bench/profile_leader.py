"""Where the leader's CPU goes under put load: a py-spy sample of the leader.

Starts a local three-member cluster (real `synod serve` processes, as bench.native_door),
drives puts of 256-byte values to random keys out of 10,000 through the native door (or
`--door grpc`: the etcd gRPC door on the client port) from a client subprocess with
`--concurrency` requests in flight, and meanwhile samples the leader with py-spy (`pip
install py-spy`; not a dependency of Synod). Prints the functions with the most samples, by
self time and by inclusive time, and keeps the raw collapsed stacks.

    .venv/bin/python -m bench.profile_leader [--seconds 8] [--concurrency 256] [--raw FILE]

Not part of the test suite; a profile of a shared machine is a guide, not a figure.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.native_door import BenchCluster

TOP_MAX = 40


def drive(native: str, endpoint: str, concurrency: int, seconds: float, door: str) -> None:
    """The client process: puts through `door` ("native" or "grpc") until `seconds` have
    passed."""
    import asyncio

    import uvloop

    from synod.client import AsyncClient

    async def run() -> None:
        client = AsyncClient([endpoint], transport=door, native_endpoints=[native])
        value = b"v" * 256
        done = 0
        stop_at = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < stop_at:
                await client.put(f"bench/{random.randrange(10_000)}", value)
                done += 1

        async with client:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        print(f"client: {done / seconds:.0f} puts/s", flush=True)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())


def summarise(raw: str) -> str:
    """Top functions by self and by inclusive samples from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples"]
    for title, counter in (("self", own), ("inclusive", inclusive)):
        lines.append(f"--- top by {title}")
        for frame, count in counter.most_common(TOP_MAX):
            lines.append(f"{100 * count / max(1, total):5.1f}%  {frame}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--raw", type=Path, default=None, help="keep collapsed stacks here")
    parser.add_argument("--follower", action="store_true", help="sample a follower instead")
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--native", action="store_true", help="with C frames (py-spy --native)")
    parser.add_argument("--door", choices=("native", "grpc"), default="native")
    parser.add_argument("--client", nargs=2, metavar=("NATIVE", "GRPC"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        drive(args.client[0], args.client[1], args.concurrency, args.seconds, args.door)
        return 0
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory(prefix="synod-profile-") as root:
        cluster = BenchCluster(Path(root), token="profile")
        cluster.start_all()
        try:
            leader = cluster.wait_leader()
            sampled = (leader + 1) % cluster.size if args.follower else leader
            member = cluster.members[sampled]
            assert member.popen is not None
            native = f"127.0.0.1:{cluster.native_ports[member.name]}"
            client = subprocess.Popen(
                [
                    *(sys.executable, "-m", "bench.profile_leader"),
                    *("--seconds", str(args.seconds + 2), "--concurrency", str(args.concurrency)),
                    *("--door", args.door),
                    *("--client", native, cluster.endpoints[sampled]),
                ]
            )
            time.sleep(1.0)  # warm up
            raw_path = args.raw or Path(root) / "stacks.txt"
            subprocess.run(
                [
                    *(py_spy, "record", "--format", "raw", "--function"),
                    *("-r", str(args.rate), "-o", str(raw_path)),
                    # py-spy reads C frames only from a stopped process
                    *(("--native",) if args.native else ("--nonblocking",)),
                    *("-d", str(int(args.seconds)), "-p", str(member.popen.pid)),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            client.wait()
            load = " ".join(f"{x:.1f}" for x in os.getloadavg())
            role = "follower" if args.follower else "leader"
            print(f"{role} {member.name}, load average {load}")
            print(summarise(raw_path.read_text()))
        finally:
            cluster.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())

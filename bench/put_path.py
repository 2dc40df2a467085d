"""Benchmark: CPU per put of the put path's pieces outside consensus, measured alone.

On the shared 2-core VM a whole-cluster run (`synod bench`) swings by ±20% from one minute
to the next, more than most single changes save; these pieces run in one process, timed
by process CPU time, best of `--repeat` passes, so an old/new comparison made minutes
apart still means something:

- `apply`: `KvService.apply` of a 256-byte put to one of 10,000 keys (every member pays it);
- `handler`: `Handlers.put` on the member the client reached, with the member stubbed out
  (answers at once): conversion, checks and encoding, no consensus;
- `observe`: one observation of the proposal-duration histogram (once per client write).

    python bench/put_path.py [--puts 20000] [--repeat 7]

Before/after: `git archive OLD | tar -x -C /tmp/old` and run this file again with
`PYTHONPATH=/tmp/old`, alternating old and new a few times.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from synod.api.handlers import Handlers
from synod.api.metrics import SynodMetrics
from synod.api.proto.etcdserverpb import rpc_pb2
from synod.kv import messages as kv
from synod.kv.codec import encode_command
from synod.server.kv_service import KvService

KEYS = 10_000
VALUE = b"v" * 256


def best_us(run: Callable[[], None], count: int, repeat: int) -> float:
    """Fewest CPU microseconds per operation over `repeat` passes of `run` (`count` ops)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return best / count * 1e6


def apply_us(puts: int, repeat: int) -> float:
    rng = random.Random(1)
    service = KvService()
    payloads = [
        encode_command(kv.Command(kv.PutRequest(f"bench/{rng.randrange(KEYS)}".encode(), VALUE)))
        for _ in range(puts)
    ]
    for payload in payloads[:KEYS]:  # the keys exist, as under steady load
        service.apply(payload, 1)

    def run() -> None:
        for payload in payloads:
            service.apply(payload, 1)

    return best_us(run, puts, repeat)


class _AnsweringMember:
    """The member as the handler sees it, answering every write at once."""

    cluster_id = 1
    member_id = 2
    node = SimpleNamespace(ballot=SimpleNamespace(round=3))
    response = kv.PutResponse(kv.ResponseHeader(revision=5))

    async def write(self, payload: bytes) -> object:
        return self.response

    def write_nowait(self, payload: bytes) -> asyncio.Future[object]:
        answered: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        answered.set_result(self.response)
        return answered


def handler_us(puts: int, repeat: int) -> float:
    handlers: Any = Handlers.__new__(Handlers)
    handlers.member = _AnsweringMember()
    handlers.service = SimpleNamespace(store=SimpleNamespace(revision=5))
    rng = random.Random(1)
    requests = [
        rpc_pb2.PutRequest(key=f"bench/{rng.randrange(KEYS)}".encode(), value=VALUE)
        for _ in range(puts)
    ]

    async def all_puts() -> None:
        for request in requests:
            await handlers.put(request)

    return best_us(lambda: asyncio.run(all_puts()), puts, repeat)


def observe_us(puts: int, repeat: int) -> float:
    metrics = SynodMetrics(process=False)

    def run() -> None:
        for index in range(puts):
            metrics.observe_proposal(0.001 + index * 1e-7)

    return best_us(run, puts, repeat)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    for name, measure in (("apply", apply_us), ("handler", handler_us), ("observe", observe_us)):
        print(f"{name:8s} {measure(args.puts, args.repeat):6.2f} us CPU per put", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

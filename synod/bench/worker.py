"""One client process: it receives phases from the parent, runs each on its own asyncio
(uvloop) event loop with many concurrent requests, and sends back what it measured.

Protocol (wire.py): parent → {"cmd": "phase", "spec": ...}; worker → {"ready": True,
"error": str | None} after setup; parent → {"cmd": "go", "start", "end"} (monotonic clock,
shared by all processes of the machine) or {"cmd": "abort"}; worker → the result. Clients
are kept per (endpoints, door) across phases until {"cmd": "close"}; {"cmd": "exit"} ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

import uvloop

from synod.bench import wire
from synod.bench.doors import make_client
from synod.bench.workloads import WORKLOADS, Recorder, Workload
from synod.client import AsyncClient
from synod.client.errors import ClientError

ERROR_PAUSE_S = 0.01
ERRORS_KEPT_MAX = 5


class Worker:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.clients: dict[tuple[tuple[str, ...], str], list[AsyncClient]] = {}
        self.state: dict[tuple[tuple[str, ...], str], dict[str, Any]] = {}

    def clients_for(self, spec: dict[str, Any]) -> list[AsyncClient]:
        """One client per endpoint, each preferring a different member first (spread as
        etcd's clients spread over endpoints)."""
        endpoints = tuple(spec["endpoints"])
        key = (endpoints, spec["door"])
        if key not in self.clients:
            shift = spec["worker"]
            rotated = [
                list(endpoints[(shift + i) % len(endpoints) :])
                + list(endpoints[: (shift + i) % len(endpoints)])
                for i in range(len(endpoints))
            ]
            self.clients[key] = [make_client(order, spec["door"]) for order in rotated]
        return self.clients[key]

    async def close_clients(self) -> None:
        for clients in self.clients.values():
            for client in clients:
                with contextlib.suppress(Exception):
                    await client.close()
        self.clients.clear()
        self.state.clear()

    async def phase(self, spec: dict[str, Any]) -> dict[str, Any]:
        key = (tuple(spec["endpoints"]), spec["door"])
        workload = WORKLOADS[spec["workload"]](
            self.clients_for(spec), spec, self.state.setdefault(key, {})
        )
        loop = asyncio.get_running_loop()
        try:
            await workload.setup()
        except Exception as error:  # reported to the parent, which aborts the phase
            wire.send(self.conn, {"ready": True, "error": f"setup: {error!r}"})
            await loop.run_in_executor(None, wire.receive, self.conn)
            return {"aborted": True}
        wire.send(self.conn, {"ready": True, "error": None})
        go = await loop.run_in_executor(None, wire.receive, self.conn)
        if go["cmd"] != "go":
            await workload.teardown()
            return {"aborted": True}
        try:
            return await self._run(workload, spec, go["start"], go["end"])
        finally:
            with contextlib.suppress(Exception):
                await workload.teardown()

    async def _run(
        self, workload: Workload, spec: dict[str, Any], start: float, end: float
    ) -> dict[str, Any]:
        recorder = Recorder(start, end)
        errors: Counter[str] = Counter()
        await asyncio.sleep(max(0.0, start - time.monotonic()))

        async def task(index: int) -> None:
            while True:
                started = time.monotonic()
                if started >= end:
                    return
                try:
                    more = await workload.one(index)
                except ClientError as error:
                    errors[f"{type(error).__name__}: {error}"[:160]] += 1
                    await asyncio.sleep(ERROR_PAUSE_S)
                    continue
                if workload.counts_own_ops:
                    recorder.add(started, time.monotonic())
                if not more:
                    return

        runs = [task(index) for index in range(spec["concurrency"])]
        results = await asyncio.gather(*runs, workload.background(recorder), return_exceptions=True)
        finished_at = time.monotonic()
        for result in results:
            if isinstance(result, BaseException):
                errors[f"{type(result).__name__}: {result}"[:160]] += 1
        return {
            "ops_total": recorder.ops_total,
            "latencies": wire.pack_floats(recorder.latencies_s),
            "errors": sum(errors.values()),
            "error_samples": [text for text, _ in errors.most_common(ERRORS_KEPT_MAX)],
            "extra": dict(workload.extra),
            "finished_at": finished_at,
        }


def worker_main(conn: Connection) -> None:
    """Entry point of a client process (multiprocessing, spawn)."""
    worker = Worker(conn)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            while True:
                message = wire.receive(conn)
                command = message["cmd"]
                if command == "exit":
                    return
                if command == "close":
                    runner.run(worker.close_clients())
                    wire.send(conn, {"closed": True})
                    continue
                assert command == "phase", command
                wire.send(conn, runner.run(worker.phase(message["spec"])))
        except (EOFError, KeyboardInterrupt):
            return
        finally:
            runner.run(worker.close_clients())

"""The parent side: a pool of client processes, one phase at a time across them, and the
figures of each phase (throughput, latency percentiles, CPU per operation, who saturated)."""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from synod.bench import procstat, wire
from synod.bench.stats import summarize
from synod.bench.worker import worker_main

SETUP_TIMEOUT_S = 300.0
RESULT_GRACE_S = 60.0
START_DELAY_S = 0.2
SATURATED_UTIL = 0.9
COUNT_BOUND_CAP_S = 120.0
CLIENT_PROCS_MAX = 16


@dataclass
class PhaseResult:
    target: str
    door: str
    workload: str
    concurrency: int
    seconds: float
    ops: int
    ops_total: int
    throughput: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    server_cpu_us_per_op: float
    client_cpu_us_per_op: float
    client_util: list[float]
    server_util: list[float]
    client_procs: int
    machine_util: float  # share of all cores busy (this run and anything else)
    other_util: float  # cores' worth used by other processes of the machine
    saturated: str
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def phase(self) -> str:
        return f"{self.workload}@{self.concurrency}"


def saturation(
    client_util: Sequence[float],
    server_util: Sequence[float],
    cpus: int,
    machine_util: float = 0.0,
) -> str:
    """Which side ran out of CPU: a client process at ~100% (the client is the bottleneck),
    a server process at ~100%, all cores busy (by this run, or with other load), or none
    (the run was latency-bound: waits, not CPU)."""
    assert cpus > 0
    assert 0.0 <= machine_util <= 1.0 + 1e-6, machine_util
    if client_util and max(client_util) >= SATURATED_UTIL:
        return "client"
    if server_util and max(server_util) >= SATURATED_UTIL:
        return "server"
    ours = sum(client_util) + sum(server_util)
    if ours >= SATURATED_UTIL * cpus:
        larger = "server" if sum(server_util) >= sum(client_util) else "client"
        return f"cores ({larger} most)"
    if machine_util >= SATURATED_UTIL:
        return "cores (other load)"
    return "none"


def per_op_us(cpu_s: float, ops: int) -> float:
    return cpu_s * 1e6 / ops if ops > 0 else float("nan")


@dataclass(frozen=True)
class PhaseRun:
    """What the client processes sent back, and the CPU seconds used meanwhile by every
    measured pid and by the whole machine, over `wall_s`; the window is [start, end]."""

    results: list[dict[str, Any]]
    cpu_s: dict[int, float]
    machine_busy_s: float
    wall_s: float
    start: float
    end: float


class Pool:
    """`count` client processes (spawned, so nothing of the parent's gRPC state is shared)."""

    def __init__(self, count: int) -> None:
        self.conns: list[Connection] = []
        self.processes: list[Any] = []
        self.grow(count)

    def grow(self, count: int) -> None:
        """Add `count` client processes."""
        assert count >= 1
        assert len(self.processes) + count <= CLIENT_PROCS_MAX
        context = multiprocessing.get_context("spawn")
        for _ in range(count):
            parent_end, child_end = context.Pipe()
            process = context.Process(target=worker_main, args=(child_end,), daemon=True)
            process.start()
            child_end.close()
            self.conns.append(parent_end)
            self.processes.append(process)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def _receive(self, conn: Connection, timeout_s: float) -> dict[str, Any]:
        if not conn.poll(timeout_s):
            raise TimeoutError("a client process did not answer in time")
        return wire.receive(conn)

    def close_clients(self) -> None:
        for conn in self.conns:
            wire.send(conn, {"cmd": "close"})
        for conn in self.conns:
            self._receive(conn, RESULT_GRACE_S)

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                wire.send(conn, {"cmd": "exit"})
        for process in self.processes:
            process.join(timeout=5.0)
            if process.is_alive():
                process.kill()
                process.join()
        for conn in self.conns:
            conn.close()

    def run_phase(
        self,
        specs: list[dict[str, Any]],
        seconds: float,
        server_pids: Sequence[int],
        *,
        count_bound: bool = False,
    ) -> PhaseRun:
        """Run one phase with specs[i] on process i."""
        assert 1 <= len(specs) <= len(self.conns)
        conns = self.conns[: len(specs)]
        for conn, spec in zip(conns, specs, strict=True):
            wire.send(conn, {"cmd": "phase", "spec": spec})
        readies = [self._receive(conn, SETUP_TIMEOUT_S) for conn in conns]
        failures = [ready["error"] for ready in readies if ready["error"]]
        if failures:
            for conn in conns:
                wire.send(conn, {"cmd": "abort"})
            for conn in conns:
                self._receive(conn, RESULT_GRACE_S)
            raise RuntimeError("; ".join(failures))
        pids = [*server_pids, *self.pids[: len(specs)]]
        before = procstat.sample(pids)
        machine_before = procstat.machine_busy_s()
        sampled_at = time.monotonic()
        start = sampled_at + START_DELAY_S
        end = start + (max(seconds, COUNT_BOUND_CAP_S) if count_bound else seconds)
        for conn in conns:
            wire.send(conn, {"cmd": "go", "start": start, "end": end})
        results = [self._receive(conn, end - time.monotonic() + RESULT_GRACE_S) for conn in conns]
        after = procstat.sample(pids)
        machine_busy_s = procstat.machine_busy_s() - machine_before
        wall_s = time.monotonic() - sampled_at
        if count_bound:
            end = min(end, max(result.get("finished_at", end) for result in results))
        return PhaseRun(results, procstat.deltas(before, after), machine_busy_s, wall_s, start, end)


def summarize_phase(
    *,
    target: str,
    door: str,
    workload: str,
    concurrency: int,
    run: PhaseRun,
    server_pids: Sequence[int],
    client_pids: Sequence[int],
    cpus: int,
) -> PhaseResult:
    results, cpu_s, wall_s = run.results, run.cpu_s, run.wall_s
    window_s = max(1e-3, run.end - run.start)
    assert wall_s > 0
    latencies: list[float] = []
    extra: dict[str, int] = {}
    samples: list[str] = []
    for result in results:
        latencies.extend(wire.unpack_floats(result["latencies"]))
        for name, count in result["extra"].items():
            extra[name] = extra.get(name, 0) + count
        samples.extend(result["error_samples"])
    summary = summarize(latencies)
    ops_total = sum(result["ops_total"] for result in results)
    server_cpu = sum(cpu_s.get(pid, 0.0) for pid in server_pids)
    client_cpu = sum(cpu_s.get(pid, 0.0) for pid in client_pids)
    client_util = [cpu_s.get(pid, 0.0) / wall_s for pid in client_pids]
    server_util = [cpu_s.get(pid, 0.0) / wall_s for pid in server_pids]
    machine_util = min(1.0, run.machine_busy_s / wall_s / cpus)
    other_util = max(0.0, (run.machine_busy_s - server_cpu - client_cpu) / wall_s)
    return PhaseResult(
        target=target,
        door=door,
        workload=workload,
        concurrency=concurrency,
        seconds=window_s,
        ops=summary.count,
        ops_total=ops_total,
        throughput=summary.count / window_s,
        p50_ms=summary.p50_s * 1e3,
        p99_ms=summary.p99_s * 1e3,
        p999_ms=summary.p999_s * 1e3,
        server_cpu_us_per_op=per_op_us(server_cpu, ops_total) if server_pids else float("nan"),
        client_cpu_us_per_op=per_op_us(client_cpu, ops_total),
        client_util=client_util,
        server_util=server_util,
        client_procs=len(client_pids),
        machine_util=machine_util,
        other_util=other_util,
        saturated=saturation(client_util, server_util, cpus, machine_util),
        errors=sum(result["errors"] for result in results),
        error_samples=samples[:5],
        extra=extra,
    )

"""`synod bench`: statistics, /proc parsing, verdicts, output, and one tiny real run."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synod.bench import procstat, wire
from synod.bench.cli import (
    Phase,
    Target,
    _grow_for,
    add_bench_parser,
    measure,
    phase_specs,
    plan,
    split,
)
from synod.bench.clusters import PORT_BLOCK, LocalCluster, free_port_blocks
from synod.bench.report import ratios, ratios_table, results_table, to_json
from synod.bench.runner import PhaseResult, Pool, saturation
from synod.bench.stats import percentile, summarize
from synod.bench.workloads import Recorder

# ---------------------------------------------------------------------- statistics


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.999) == 100.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.5) == 7.0
    assert math.isnan(percentile([], 0.5))


def test_percentile_of_a_thousand_and_one() -> None:
    values = [float(v) for v in range(1001)]  # 0..1000
    assert percentile(values, 0.999) == 1000.0 - 1  # rank ceil(999.999) = 1000 -> value 999
    assert percentile(values, 0.5) == 500.0


def test_summarize_sorts_and_counts() -> None:
    summary = summarize([0.003, 0.001, 0.002])
    assert summary.count == 3
    assert summary.p50_s == 0.002
    assert summary.p99_s == 0.003
    assert summary.max_s == 0.003
    empty = summarize([])
    assert empty.count == 0 and math.isnan(empty.p50_s)


def test_recorder_keeps_only_the_window() -> None:
    recorder = Recorder(10.0, 20.0)
    recorder.add(9.0, 10.5)  # started before the window
    recorder.add(11.0, 11.25)
    recorder.add(19.0, 21.0)  # finished after it
    assert recorder.latencies_s == [0.25]
    assert recorder.ops_total == 3
    recorder.add_event(19.5, 20.5)  # sent inside: delivery may end after the window
    recorder.add_event(20.0, 20.1)
    assert recorder.latencies_s == [0.25, 1.0]


def test_floats_cross_the_pipe_encoding() -> None:
    values = [0.5, 1e-6, 3.25]
    assert wire.unpack_floats(wire.pack_floats(values)) == values


# ---------------------------------------------------------------------- /proc


def test_parse_stat_with_parentheses_and_spaces_in_the_name() -> None:
    fields_after_name = ["S"] + [str(n) for n in range(4, 53)]
    text = "1234 (we (ird) name) " + " ".join(fields_after_name) + "\n"
    utime, stime = procstat.parse_stat(text)
    assert (utime, stime) == (14, 15)  # field n holds the number n in this fixture


def test_parse_stat_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        procstat.parse_stat("not a stat line")
    with pytest.raises(ValueError):
        procstat.parse_stat("1 (x) S 1 2")


def test_cpu_of_this_process_grows_and_a_missing_pid_is_zero(tmp_path: Path) -> None:
    before = procstat.cpu_s(os.getpid())
    total = 0
    for value in range(3_000_000):
        total += value
    after = procstat.cpu_s(os.getpid())
    assert after >= before > 0.0
    assert procstat.cpu_s(999_999_999) == 0.0
    assert procstat.deltas({1: 2.0, 2: 5.0}, {1: 3.5}) == {1: 1.5, 2: 0.0}


def test_a_server_counts_with_its_children_and_theirs() -> None:
    """Synod's gRPC workers are a member's children: their CPU is the server's."""
    sleep = "import time; time.sleep(30)"
    spawn = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {!r}]); " + sleep
    server = subprocess.Popen([sys.executable, "-c", spawn.format(spawn.format(sleep))])
    found: list[int] = []
    try:
        for _ in range(200):
            found = procstat.with_descendants([server.pid])
            if len(found) == 3:
                break
            time.sleep(0.05)
        assert found[0] == server.pid and len(found) == 3
        assert procstat.with_descendants([999_999_999]) == [999_999_999]
    finally:
        for pid in reversed(found):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        server.wait()


def test_parse_machine_stat() -> None:
    text = "cpu  100 5 20 1000 7 1 2 3 0 0\ncpu0 50 2 10 500 3 0 1 1 0 0\n"
    busy, total = procstat.parse_machine_stat(text)
    assert busy == 100 + 5 + 20 + 1 + 2 + 3
    assert total == busy + 1000 + 7
    assert procstat.machine_busy_s() > 0


# ---------------------------------------------------------------------- verdicts and plans


def test_saturation_names_the_side_that_ran_out_of_cpu() -> None:
    assert saturation([0.97, 0.5], [0.3, 0.2, 0.2], cpus=2) == "client"
    assert saturation([0.3], [0.95, 0.2, 0.2], cpus=2) == "server"
    assert saturation([0.4, 0.4], [0.5, 0.5], cpus=2) == "cores (server most)"
    assert saturation([0.1], [0.2], cpus=2, machine_util=0.95) == "cores (other load)"
    assert saturation([0.1], [0.2], cpus=2, machine_util=0.3) == "none"


def test_plan_split_and_specs() -> None:
    phases = plan(["put", "get", "lease", "watch", "lock", "txn"], [1, 16], 1000)
    names = [f"{p.workload}@{p.concurrency}" for p in phases]
    assert names == [
        "put@1",
        "put@16",
        "get-lin@64",
        "get-ser@64",
        "lease-grant@64",
        "lease-keepalive@64",
        "watch@1000",
        "lock@16",
        "txn@64",
    ]
    assert split(10, 3) == [4, 3, 3]
    assert split(1, 2) == [1, 0]
    common = {"leases": 10_000}
    one = phase_specs(Phase("put", 1), common, procs=4)
    assert [spec["concurrency"] for spec in one] == [1]
    many = phase_specs(Phase("put", 256), common, procs=4)
    assert [spec["concurrency"] for spec in many] == [64] * 4
    assert sum(spec["leases_here"] for spec in many) == 10_000
    watch = phase_specs(Phase("watch", 1000), common, procs=3)
    assert [spec["watchers_here"] for spec in watch] == [334, 333, 333]


def test_parser_defaults() -> None:
    parser = argparse.ArgumentParser(prog="synod")
    add_bench_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "--workloads", "put,get", "--seconds", "5"])
    assert args.workloads == "put,get"
    assert args.seconds == 5.0
    assert args.door == "both"
    assert not args.compare_etcd and not args.null_grpc
    assert callable(args.handler)


def test_free_port_blocks_are_disjoint() -> None:
    bases = free_port_blocks(3)
    ports = [base + offset for base in bases for offset in range(PORT_BLOCK)]
    assert len(set(ports)) == 3 * PORT_BLOCK


class _Process:
    def __init__(self, pid: int) -> None:
        self.pid = pid


class _FakePool(Pool):
    """A pool that spawns nothing and only records growth."""

    def __init__(self, count: int) -> None:
        self.conns = []
        self.processes = [_Process(pid) for pid in range(count)]

    def grow(self, count: int) -> None:
        self.processes += [_Process(1000 + n) for n in range(count)]


def test_client_processes_are_added_only_when_the_client_is_the_bottleneck() -> None:
    args = argparse.Namespace(auto_procs=True)
    bound = _result("synod", "grpc", 1000.0, 100.0)
    bound.saturated = "client"
    bound.machine_util = 0.4  # 1.2 of 2 cores idle on a 2-core machine
    pool = _FakePool(2)
    cores = os.cpu_count() or 1
    grew = _grow_for(bound, Phase("put", 256), pool, 2, args)
    assert grew == (cores * 0.6 >= 0.5)
    assert len(pool.pids) == 2 + (max(1, int(cores * 0.6)) if grew else 0)
    pool = _FakePool(2)
    assert not _grow_for(bound, Phase("lease-keepalive", 64), pool, 2, args)
    assert not _grow_for(bound, Phase("put", 1), pool, 1, args)  # a process was left unused
    bound.machine_util = 1.0
    assert not _grow_for(bound, Phase("put", 256), pool, 2, args)  # no idle core to use
    bound.saturated = "none"
    bound.machine_util = 0.4
    assert not _grow_for(bound, Phase("put", 256), pool, 2, args)
    assert not _grow_for(bound, Phase("put", 256), pool, 2, argparse.Namespace(auto_procs=False))
    assert len(pool.pids) == 2


# ---------------------------------------------------------------------- output


def _result(target: str, door: str, throughput: float, server_us: float) -> PhaseResult:
    return PhaseResult(
        target=target,
        door=door,
        workload="put",
        concurrency=256,
        seconds=2.0,
        ops=int(throughput * 2),
        ops_total=int(throughput * 2),
        throughput=throughput,
        p50_ms=2.0,
        p99_ms=8.0,
        p999_ms=20.0,
        server_cpu_us_per_op=server_us,
        client_cpu_us_per_op=math.nan,
        client_util=[0.5, 0.4],
        server_util=[0.3],
        client_procs=2,
        machine_util=0.6,
        other_util=0.1,
        saturated="none",
    )


def test_table_ratios_and_json() -> None:
    results = [
        _result("etcd", "grpc", 4000.0, 200.0),
        _result("synod", "grpc", 2000.0, 600.0),
        _result("null-grpc", "grpc", 2500.0, 150.0),
    ]
    table = results_table(results)
    assert "synod-grpc" in table and "put@256" in table and "p99.9 ms" in table
    assert "4000" in table and "-" in table  # NaN shows as '-'
    found = ratios(results)
    assert [(entry["synod"], entry["versus"]) for entry in found] == [
        ("synod-grpc", "etcd"),
        ("synod-grpc", "null-grpc"),
    ]
    assert found[0]["throughput"] == 0.5
    assert found[0]["server_cpu_us_per_op"] == 3.0
    assert found[1]["throughput"] == 0.8
    assert "synod-grpc / etcd" in ratios_table(found)
    document = json.loads(to_json(results, {"command": ["synod", "bench"]}))
    assert document["command"] == ["synod", "bench"]
    assert document["results"][1]["phase"] == "put@256"
    assert document["results"][1]["client_cpu_us_per_op"] is None  # NaN is not JSON
    assert document["ratios"][0]["throughput"] == 0.5


# ---------------------------------------------------------------------- a tiny real run


def test_tiny_put_run_against_one_synod_member_and_the_null_server() -> None:
    args = argparse.Namespace(watch_rate=20.0, leases=100, seconds=1.0, keys=100, auto_procs=False)
    phases = [Phase("put", 4), Phase("get-ser", 4)]
    pool = Pool(2)
    synod = LocalCluster("synod", size=1)
    null = LocalCluster("null-grpc", size=1)
    try:
        synod.start()
        target = Target("synod", ["grpc"], list(synod.endpoints), synod.pids)
        results = measure(target, "grpc", phases, pool, args, "test")
        null.start()
        null_target = Target("null-grpc", ["grpc"], list(null.endpoints), null.pids)
        results += measure(null_target, "grpc", phases[:1], pool, args, "test")
    finally:
        pool.close()
        synod.stop()
        null.stop()
    assert [(r.target, r.phase) for r in results] == [
        ("synod", "put@4"),
        ("synod", "get-ser@4"),
        ("null-grpc", "put@4"),
    ]
    for result in results:
        assert result.errors == 0, result.error_samples
        assert result.ops > 0 and result.throughput > 0
        assert 0 < result.p50_ms <= result.p99_ms <= result.p999_ms
        assert result.server_cpu_us_per_op > 0
        assert result.client_cpu_us_per_op > 0
        assert result.client_procs == 2

"""`synod bench`: measure an etcd-compatible cluster, and optionally etcd and a null gRPC
server in the same run, from many client processes. See docs/bench.md."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from synod.bench import procstat
from synod.bench.clusters import LocalCluster
from synod.bench.doors import door_answers, native_available
from synod.bench.report import ratios, ratios_table, results_table, to_json
from synod.bench.runner import CLIENT_PROCS_MAX, PhaseResult, Pool, summarize_phase

WORKLOAD_NAMES = ("put", "get", "txn", "watch", "lease", "lock")
PUT_CLIENTS_DEFAULT = "1,16,64,256"
GROW_ROUNDS_MAX = 2  # a client-bound phase is rerun at most this often with more processes
NULL_GRPC_TARGET = 0.8  # issue 8: the gRPC door's put@256 at least 0.8x the null server's


@dataclass(frozen=True)
class Phase:
    workload: str  # a key of workloads.WORKLOADS
    concurrency: int  # concurrent requests (watch: watchers)
    count_bound: bool = False


@dataclass
class Target:
    name: str  # 'synod', 'etcd', 'null-grpc' or 'endpoints'
    doors: list[str]
    endpoints: list[str]
    server_pids: list[int]
    cluster: LocalCluster | None = None


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `bench` to the `synod` command's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="measure throughput, latency and CPU per operation",
        description=__doc__,
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOAD_NAMES),
        help=f"comma-separated subset of {','.join(WORKLOAD_NAMES)} (default: all)",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="per phase (default 3)")
    parser.add_argument(
        "--endpoints", default="", help="measure these members instead of starting a cluster"
    )
    parser.add_argument(
        "--server-pids", default="", help="pids of the --endpoints servers, for CPU per op"
    )
    parser.add_argument(
        "--compare-etcd",
        action="store_true",
        help="start a 3-member etcd and a 3-member Synod and measure both",
    )
    parser.add_argument(
        "--null-grpc", action="store_true", help="also measure the null gRPC server (puts)"
    )
    parser.add_argument(
        "--door",
        choices=("grpc", "native", "both"),
        default="both",
        help="Synod door(s) to measure (default both; native once the client has it)",
    )
    parser.add_argument(
        "--client-procs",
        type=int,
        default=max(2, min(4, os.cpu_count() or 2)),
        help="client processes to start with (default: 2-4 by cores); more are added when "
        "a phase is client-bound while cores are idle",
    )
    parser.add_argument(
        "--fixed-procs",
        dest="auto_procs",
        action="store_false",
        help="never add client processes",
    )
    parser.add_argument("--put-clients", default=PUT_CLIENTS_DEFAULT, help="put concurrencies")
    parser.add_argument("--keys", type=int, default=10_000, help="key space of put and get")
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--watch-rate", type=float, default=20.0, help="writer puts/s")
    parser.add_argument("--leases", type=int, default=10_000)
    parser.add_argument("--json", dest="json_path", default="", help="write the figures here")
    parser.set_defaults(handler=run_bench)
    return parser


def plan(workloads: Sequence[str], put_clients: Sequence[int], watchers: int) -> list[Phase]:
    phases: list[Phase] = []
    for name in workloads:
        if name == "put":
            phases.extend(Phase("put", clients) for clients in put_clients)
        elif name == "get":
            phases += [Phase("get-lin", 64), Phase("get-ser", 64)]
        elif name == "txn":
            phases.append(Phase("txn", 64))
        elif name == "watch":
            phases.append(Phase("watch", watchers))
        elif name == "lease":
            phases += [Phase("lease-grant", 64, count_bound=True), Phase("lease-keepalive", 64)]
        else:
            assert name == "lock", name
            phases.append(Phase("lock", 16))
    return phases


def split(total: int, parts: int) -> list[int]:
    """`total` as `parts` near-equal non-negative shares."""
    assert total >= 0 and parts > 0
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


def phase_specs(phase: Phase, common: dict[str, Any], procs: int) -> list[dict[str, Any]]:
    if phase.workload == "watch":
        used = procs
        shares = [1] * used
        watchers = split(phase.concurrency, used)
    else:
        used = max(1, min(procs, phase.concurrency))
        shares = split(phase.concurrency, used)
        watchers = [0] * used
    leases = split(common["leases"], used)
    return [
        {
            **common,
            "workload": phase.workload,
            "worker": index,
            "workers": used,
            "concurrency": shares[index],
            "watchers_here": watchers[index],
            "leases_here": leases[index],
        }
        for index in range(used)
    ]


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def describe(result: PhaseResult, label: str) -> str:
    line = (
        f"[{label}] {result.phase}: {result.throughput:.0f} ops/s, p50 {result.p50_ms:.2f} ms, "
        f"p99 {result.p99_ms:.2f} ms, p99.9 {result.p999_ms:.2f} ms, "
        f"server {result.server_cpu_us_per_op:.0f} us/op, "
        f"client {result.client_cpu_us_per_op:.0f} us/op "
        f"({result.client_procs} procs, max {100 * max(result.client_util, default=0):.0f}%), "
        f"machine {100 * result.machine_util:.0f}% busy "
        f"(other processes {result.other_util:.2f} cores), saturated: {result.saturated}"
    )
    if result.saturated == "client":
        line += " (client-bound: raise --client-procs)"
    if result.errors:
        line += f", {result.errors} errors ({'; '.join(result.error_samples[:2])})"
    return line


def measure(
    target: Target,
    door: str,
    phases: Sequence[Phase],
    pool: Pool,
    args: argparse.Namespace,
    run_id: str,
) -> list[PhaseResult]:
    label = f"{target.name}-{door}"
    common = {
        "endpoints": target.endpoints,
        "door": door,
        "prefix": f"bench/{run_id}/",
        "key_count": args.keys,
        "value_bytes": 256,
        "cas_keys": 8,
        "watch_rate": args.watch_rate,
        "watch_streams": 8,
        "drain_s": 1.0,
        "leases": args.leases,
        "lease_ttl_s": 30,
        "lock_names": 4,
    }
    results: list[PhaseResult] = []
    preloaded = False
    try:
        for phase in phases:
            if target.name == "null-grpc" and phase.workload != "put":
                continue
            result = None
            for _ in range(GROW_ROUNDS_MAX + 1):
                specs = phase_specs(phase, common, len(pool.pids))
                if phase.workload.startswith("get") and not preloaded:
                    specs[0]["preload"] = preloaded = True
                # a server's children count as the server (Synod's gRPC workers)
                server_pids = procstat.with_descendants(target.server_pids)
                try:
                    run = pool.run_phase(
                        specs, args.seconds, server_pids, count_bound=phase.count_bound
                    )
                except RuntimeError as error:
                    progress(f"[{label}] {phase.workload}@{phase.concurrency}: skipped: {error}")
                    break
                result = summarize_phase(
                    target=target.name,
                    door=door,
                    workload=phase.workload,
                    concurrency=phase.concurrency,
                    run=run,
                    server_pids=server_pids,
                    client_pids=pool.pids[: len(specs)],
                    cpus=os.cpu_count() or 1,
                )
                progress(describe(result, label))
                if not _grow_for(result, phase, pool, len(specs), args):
                    break
            if result is not None:
                results.append(result)
    finally:
        pool.close_clients()
    return results


def _grow_for(
    result: PhaseResult, phase: Phase, pool: Pool, used: int, args: argparse.Namespace
) -> bool:
    """Add client processes, and say to run the phase again, when the client was the
    bottleneck with every process in use and cores left idle (more processes can only
    help then). Lease phases keep their leases in the processes that granted them: never."""
    if not args.auto_procs or result.saturated != "client" or phase.workload.startswith("lease"):
        return False
    room = CLIENT_PROCS_MAX - len(pool.pids)
    idle_cores = (1.0 - result.machine_util) * (os.cpu_count() or 1)
    if used < len(pool.pids) or room <= 0 or idle_cores < 0.5:
        return False
    added = min(room, max(1, int(idle_cores)))
    progress(f"client-bound with {idle_cores:.1f} cores idle: {added} more client process(es)")
    pool.grow(added)
    return True


def _doors(target: Target, wanted: str) -> list[str]:
    """The doors to measure: etcd and the null server have only gRPC; Synod's native door
    when the client has it and the members answer on it."""
    if target.name in ("etcd", "null-grpc"):
        return ["grpc"]
    doors = ["grpc", "native"] if wanted == "both" else [wanted]
    if "native" in doors and not native_available():
        progress("native door: the client has no native transport yet; skipped")
        doors.remove("native")
    elif "native" in doors and not door_answers(target.endpoints, "native"):
        progress(f"native door: {target.endpoints[0]} does not answer on it; skipped")
        doors.remove("native")
    return doors


class _Terminated(Exception):
    pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()


def run_bench(args: argparse.Namespace) -> int:
    workloads = [name.strip() for name in args.workloads.split(",") if name.strip()]
    unknown = sorted(set(workloads) - set(WORKLOAD_NAMES))
    if unknown or not workloads:
        progress(f"synod bench: unknown workloads {unknown}; choose from {WORKLOAD_NAMES}")
        return 2
    if args.compare_etcd and args.endpoints:
        progress("synod bench: --compare-etcd starts its own clusters; drop --endpoints")
        return 2
    if args.compare_etcd and shutil.which("etcd") is None:
        progress("synod bench: --compare-etcd needs the etcd binary on PATH")
        return 2
    if not 1 <= args.client_procs <= CLIENT_PROCS_MAX or args.seconds <= 0 or args.keys < 1:
        progress(f"synod bench: --client-procs in 1..{CLIENT_PROCS_MAX}, --seconds > 0, --keys > 0")
        return 2
    put_clients = [int(item) for item in args.put_clients.split(",") if item.strip()]
    phases = plan(workloads, put_clients, args.watchers)
    targets: list[Target] = []
    if args.endpoints:
        pids = [int(pid) for pid in args.server_pids.split(",") if pid.strip()]
        endpoints = [item.strip() for item in args.endpoints.split(",") if item.strip()]
        targets.append(Target("endpoints", [], endpoints, pids))
    else:
        if args.compare_etcd:
            targets.append(Target("etcd", [], [], []))
        targets.append(Target("synod", [], [], []))
    if args.null_grpc:
        targets.append(Target("null-grpc", [], [], []))
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    run_id = os.urandom(4).hex()
    results: list[PhaseResult] = []
    pool: Pool | None = None
    try:
        pool = Pool(args.client_procs)
        for target in targets:
            results += _run_target(target, phases, pool, args, run_id)
    except (KeyboardInterrupt, _Terminated):
        progress("synod bench: interrupted; stopping what it started")
        return 130
    finally:
        if pool is not None:
            pool.close()
        signal.signal(signal.SIGTERM, previous)
    _print_report(results, args)
    return 0


def _run_target(
    target: Target, phases: Sequence[Phase], pool: Pool, args: argparse.Namespace, run_id: str
) -> list[PhaseResult]:
    results: list[PhaseResult] = []
    if target.name != "endpoints":
        size = 1 if target.name == "null-grpc" else 3
        progress(f"starting {target.name} ({size} process{'es' if size > 1 else ''})")
        target.cluster = LocalCluster(target.name, size=size)
        target.cluster.start()
        target.endpoints = list(target.cluster.endpoints)
        target.server_pids = target.cluster.pids
    try:
        for door in _doors(target, args.door):
            results += measure(target, door, phases, pool, args, run_id)
    finally:
        if target.cluster is not None:
            target.cluster.stop()
    return results


def _print_report(results: Sequence[PhaseResult], args: argparse.Namespace) -> None:
    if not results:
        progress("synod bench: nothing measured")
        return
    print(results_table(results))
    found = ratios(results)
    if found:
        print()
        print(ratios_table(found))
    for entry in found:
        if entry["versus"] == "null-grpc" and entry["phase"] == "put@256":
            verdict = "met" if entry["throughput"] >= NULL_GRPC_TARGET else "not met"
            print(
                f"\ngRPC door put@256 / null gRPC server: {entry['throughput']:.2f} "
                f"(target >= {NULL_GRPC_TARGET}: {verdict})"
            )
    if args.json_path:
        meta = {"command": ["synod", "bench", *sys.argv[2:]], "cpus": os.cpu_count()}
        with open(args.json_path, "w") as json_file:
            json_file.write(to_json(results, meta) + "\n")
        progress(f"figures written to {args.json_path}")


def main(argv: list[str] | None = None) -> int:
    """`python -m synod.bench.cli ...` until `synod bench` is wired into synod/cli.py."""
    parser = argparse.ArgumentParser(prog="synod")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())

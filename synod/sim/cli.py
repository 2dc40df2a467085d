"""`synod sim`: run the simulator over a range of seeds and summarise.

Prints each seed's drawn configuration first (in full for a single run or with --verbose, a
one-line summary otherwise), a report for every failing seed (the violated property, the
last events and the one command that reproduces it), then a summary: runs, events, simulated
seconds, operations checked, faults injected by kind, wall time. Exits 1 if any seed failed.
"""

from __future__ import annotations

import argparse
import logging
import time  # noqa: TID251 -- wall time for the summary only; the runs use virtual time

from synod.sim.faults import PROFILES
from synod.sim.world import SAFETY_US_DEFAULT, RunOptions, RunResult, World

RUNS_MAX = 1_000_000


def add_sim_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sim", help="run the deterministic simulator", description=__doc__
    )
    parser.add_argument("--seed", type=int, default=1, help="first seed (default 1)")
    parser.add_argument("--runs", type=int, default=1, help="how many seeds, from --seed on")
    parser.add_argument("--nodes", type=int, default=3, help="members per cluster (1, 3, 5)")
    parser.add_argument(
        "--faults",
        choices=PROFILES,
        default="swarm",
        help="fault profile; swarm draws a mix per seed (default)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=SAFETY_US_DEFAULT / 1_000_000,
        help="simulated seconds of the safety phase per run",
    )
    parser.add_argument("--verbose", action="store_true", help="print every seed's knobs")
    parser.add_argument(
        "--reconfig",
        action="store_true",
        help="change the membership during the run (two spare members, random changes)",
    )
    parser.set_defaults(handler=run_sim_command)


def run_sim_command(args: argparse.Namespace) -> int:
    if args.seed < 0 or not 1 <= args.runs <= RUNS_MAX or not 1 <= args.nodes <= 9:
        print("synod sim: --seed must be >= 0, --runs in 1..1000000, --nodes in 1..9")
        return 2
    if args.seconds <= 0:
        print("synod sim: --seconds must be positive")
        return 2
    safety_us = round(args.seconds * 1_000_000)
    quiet_storage_logs()
    started = time.perf_counter()
    results: list[RunResult] = []
    for seed in range(args.seed, args.seed + args.runs):
        options = RunOptions(seed, args.nodes, args.faults, safety_us, reconfig=args.reconfig)
        world = World(options)
        if args.runs == 1 or args.verbose:
            print(f"seed {seed}, {args.nodes} members:")
            for line in world.knobs.describe():
                print("  " + line)
        result = world.run()
        results.append(result)
        if args.runs > 1:
            verdict = "ok" if result.ok else "FAILED"
            print(
                f"seed {seed}: {verdict} ({result.knobs.profile}, {result.events} events, "
                f"{result.operations_checked} operations)"
            )
        if not result.ok:
            print()
            print(result.report())
            print()
    print(summarise(results, time.perf_counter() - started))
    return 0 if all(result.ok for result in results) else 1


def quiet_storage_logs() -> None:
    """Simulated power cuts make torn WAL tails routine: the storage's warnings about them
    would bury the report, so only its errors are shown."""
    logging.getLogger("synod.storage").setLevel(logging.ERROR)


def summarise(results: list[RunResult], wall_s: float) -> str:
    """The closing summary of a batch of runs."""
    faults: dict[str, int] = {}
    for result in results:
        for kind, count in result.faults.items():
            faults[kind] = faults.get(kind, 0) + count
    failed = [result.options.seed for result in results if not result.ok]
    inconclusive = [result.options.seed for result in results if result.inconclusive]
    events = sum(result.events for result in results)
    simulated_s = sum(result.simulated_us for result in results) / 1_000_000
    lines = [
        f"runs {len(results)}, failed {len(failed)}" + (f" (seeds {failed})" if failed else ""),
        f"events {events}, simulated {simulated_s:.1f}s, "
        f"operations checked {sum(result.operations_checked for result in results)}",
        "faults injected: "
        + (", ".join(f"{kind} {faults[kind]}" for kind in sorted(faults)) or "none"),
        f"wall time {wall_s:.1f}s ({len(results) / max(wall_s, 1e-9):.2f} seeds/s)",
    ]
    if inconclusive:
        lines.append(f"linearizability check inconclusive (budget) for seeds {inconclusive}")
    return "\n".join(lines)

"""`synod chaos`: one chaos run from the command line; exit status 0 when every check
passed, 1 when a check failed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from synod.chaos.nemesis import FAULTS
from synod.chaos.runner import ChaosOptions, run_chaos


def add_chaos_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `chaos` command to `subparsers` (of `argparse.ArgumentParser.add_subparsers`)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "chaos",
        help="fault-test a real local cluster (kills, pauses, partitions, slow disk, clocks)",
        description="Start a local cluster of synod serve processes behind fault-injecting "
        "peer proxies, run client workloads while injecting faults for --duration seconds, "
        "heal, and check linearizability, acknowledged writes, convergence and lock fencing.",
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of faults")
    parser.add_argument("--members", type=int, choices=(3, 5), default=3)
    parser.add_argument("--clients", type=int, default=4, help="register clients")
    parser.add_argument("--lockers", type=int, default=2, help="lock clients")
    parser.add_argument("--keys", type=int, default=4, help="register keys")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"comma-separated subset of: {', '.join(FAULTS)}",
    )
    parser.add_argument("--dir", default="", help="keep logs and data here (default: temp)")
    parser.set_defaults(handler=run_chaos_command)
    return parser


def run_chaos_command(args: argparse.Namespace) -> int:
    faults = tuple(f.strip() for f in args.faults.split(",") if f.strip())
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown or not faults:
        print(f"synod chaos: unknown faults {unknown}; choose from {', '.join(FAULTS)}")
        return 2
    options = ChaosOptions(
        members=args.members,
        duration_s=args.duration,
        clients=args.clients,
        lockers=args.lockers,
        keys=args.keys,
        seed=args.seed,
        faults=faults,
        root=Path(args.dir) if args.dir else None,
    )
    report = run_chaos(options)
    print(report.render(), flush=True)
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    """Run `synod chaos` alone: `python -m synod.chaos.cli --duration 600 --members 5`."""
    parser = argparse.ArgumentParser(prog="synod")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_chaos_parser(subparsers)
    args = parser.parse_args(["chaos", *(argv if argv is not None else _argv())])
    code: int = args.handler(args)
    return code


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]


if __name__ == "__main__":
    raise SystemExit(main())

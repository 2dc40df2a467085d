"""The `synod` command: one entry point, a subcommand per job.

`synod sim` runs the deterministic simulator (see synod/sim/cli.py). `synod up` starts a local
cluster; until the network server exists it runs a short simulated cluster instead and says so.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synod", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from synod.sim.cli import add_sim_parser

    add_sim_parser(sub)
    up = sub.add_parser("up", help="start a local cluster (simulated until the server exists)")
    up.add_argument("--members", type=int, default=3)
    up.add_argument("--seed", type=int, default=1)
    up.set_defaults(handler=run_up)
    return parser


def run_up(args: argparse.Namespace) -> int:
    """Run the simulated demo cluster (the real server has not landed yet)."""
    if not 1 <= args.members <= 9 or args.seed < 0:
        print("synod up: --members must be in 1..9 and --seed >= 0")
        return 2
    from synod.sim.cli import quiet_storage_logs
    from synod.sim.demo import run_demo

    quiet_storage_logs()
    healthy, lines = run_demo(args.members, args.seed)
    for line in lines:
        print(line)
    return 0 if healthy else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

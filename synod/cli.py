"""The `synod` command: one entry point, a subcommand per job."""

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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

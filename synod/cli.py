"""The `synod` command: one entry point, a subcommand per job.

- `synod serve`: run one member (etcd-style flags, or SYNOD_* environment variables).
- `synod up`: a local cluster on 127.0.0.1, one `synod serve` child per member, in the
  foreground until Ctrl-C.
- `synod ctl`: the client command line (KV, leases, members, locks, elections, queues).
- `synod chaos`: the fault harness against a real cluster; `synod bench`: benchmarks.
- `synod repair`: set a damaged member's data directory aside so it re-syncs.
- `synod recover`: after losing the majority for good, a one-member cluster from a
  survivor's data directory.
- `synod snapshot restore|status`: a new cluster's member from a backup file
  (`synod ctl snapshot save` makes one).
- `synod sim`: the deterministic simulator (synod/sim/cli.py); `synod demo`: a short
  simulated cluster.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

UP_MEMBERS_MAX = 6
UP_READY_TIMEOUT_S = 30.0
UP_STOP_TIMEOUT_S = 10.0
PORT_MAX = 65535


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synod", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    from synod.server.main import add_serve_arguments
    from synod.sim.cli import add_sim_parser

    add_sim_parser(sub)
    from synod.bench.cli import add_bench_parser
    from synod.chaos.cli import add_chaos_parser
    from synod.client.ctl import add_ctl_parser

    add_ctl_parser(sub)
    add_chaos_parser(sub)
    add_bench_parser(sub)
    serve = sub.add_parser(
        "serve", help="run one member", description="Run one Synod member (etcd v3 API)."
    )
    add_serve_arguments(serve)
    serve.set_defaults(handler=run_serve)
    up = sub.add_parser(
        "up",
        help="run a local cluster in the foreground",
        description="Start a local cluster on 127.0.0.1, one `synod serve` process per "
        "member, until Ctrl-C.",
    )
    up.add_argument("--members", type=int, default=3, help="members (default 3)")
    up.add_argument("--data-dir", default="synod-data", help="parent of the members' dirs")
    up.add_argument(
        "--base-port",
        type=int,
        default=2379,
        help="first client port (default 2379: clients 2379, 22379, 32379; peers +1; "
        "native door +2)",
    )
    up.set_defaults(handler=run_up)
    repair = sub.add_parser(
        "repair",
        help="set a damaged member's data aside so it re-joins and re-syncs",
        description="Move a member's damaged data directory to DIR.damaged-N (nothing is "
        "deleted). Restart the member with the same flags afterwards: it starts empty and "
        "catches up from the leader. Refused for a healthy directory unless --force, and for "
        "a directory a running member holds.",
    )
    repair.add_argument("--data-dir", required=True, help="the member's data directory")
    repair.add_argument("--force", action="store_true", help="even if the data looks healthy")
    repair.set_defaults(handler=run_repair)
    _add_snapshot_parser(sub)
    _add_recover_parser(sub)
    demo = sub.add_parser("demo", help="run a short simulated cluster (no network)")
    demo.add_argument("--members", type=int, default=3)
    demo.add_argument("--seed", type=int, default=1)
    demo.set_defaults(handler=run_demo)
    return parser


# --------------------------------------------------------------------------- snapshot


def _add_new_cluster_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="this member's name in the NEW cluster")
    parser.add_argument("--data-dir", default="", help="new, empty data dir (default NAME.synod)")
    parser.add_argument(
        "--initial-cluster", required=True, help="NAME=PEER_URL,... of the NEW cluster"
    )
    parser.add_argument(
        "--initial-cluster-token",
        required=True,
        help="token of the NEW cluster (a new one: the cluster id must change)",
    )
    parser.add_argument(
        "--initial-advertise-peer-urls", default="", help="checked against --initial-cluster"
    )
    parser.add_argument(
        "--initial-cluster-client-urls",
        default="",
        help="NAME=CLIENT_URL,... of the NEW members, for member list (as synod serve)",
    )


def _add_snapshot_parser(sub: Any) -> None:
    snapshot = sub.add_parser(
        "snapshot",
        help="restore or inspect a backup (synod ctl snapshot save makes one)",
        description="Backup files come from `synod ctl snapshot save FILE`.",
    )
    commands = snapshot.add_subparsers(dest="snapshot_command", metavar="COMMAND", required=True)
    restore = commands.add_parser(
        "restore",
        help="create a new member's data dir from a backup",
        description="Verify FILE's sha256 and write a new member's data directory holding "
        "its state (keys, revisions, leases) and the membership of the NEW cluster. Run it "
        "once per new member with the same FILE, --initial-cluster and "
        "--initial-cluster-token, then start each member with `synod serve` and the same "
        "flags. Refuses a non-empty --data-dir and a token that gives the old cluster's id.",
    )
    restore.add_argument("file", metavar="FILE")
    _add_new_cluster_flags(restore)
    restore.set_defaults(handler=run_snapshot_restore)
    status = commands.add_parser("status", help="verify a backup and say what it holds")
    status.add_argument("file", metavar="FILE")
    status.set_defaults(handler=run_snapshot_status)


def run_snapshot_restore(args: argparse.Namespace) -> int:
    from synod.server.restore import RestoreRefused, new_cluster, restore

    data_dir = args.data_dir or f"{args.name}.synod"
    try:
        cluster = new_cluster(
            args.name,
            args.initial_cluster,
            args.initial_cluster_token,
            args.initial_advertise_peer_urls,
            args.initial_cluster_client_urls,
        )
        restored = restore(args.file, data_dir, cluster)
    except RestoreRefused as error:
        print(f"synod snapshot restore: {error}", file=sys.stderr)
        return 1
    print(
        f"restored {args.file} (cluster {restored.source_cluster_id:x}, member "
        f"{restored.source_member_id:x}, slot {restored.slot}) into {data_dir} as member "
        f"{cluster.me.name} ({cluster.me.member_id:x}) of new cluster {cluster.cluster_id:x}"
    )
    return 0


def run_snapshot_status(args: argparse.Namespace) -> int:
    from synod.server.restore import RestoreRefused, describe

    try:
        facts = describe(args.file)
    except RestoreRefused as error:
        print(f"synod snapshot status: {error}", file=sys.stderr)
        return 1
    for key, value in facts.items():
        print(f"{key}: {value}")
    return 0


# --------------------------------------------------------------------------- recover


def _add_recover_parser(sub: Any) -> None:
    recover = sub.add_parser(
        "recover",
        help="majority lost for good: a one-member cluster from a survivor's data",
        description="Rebuild a NEW one-member cluster from a stopped surviving member's data "
        "directory: its snapshot plus every entry of its log, applied in order (entries "
        "beyond its commit hint are kept unless --discard-uncommitted; see "
        "docs/operator-guide.md for exactly what can be lost). --from-data-dir is opened "
        "as its member would open it (a torn tail is truncated) and otherwise left as it "
        "was. Start the new member with `synod serve` and the same --name, "
        "--initial-cluster and --initial-cluster-token, then add members with `member add`.",
    )
    recover.add_argument("--from-data-dir", required=True, help="the survivor's data dir")
    _add_new_cluster_flags(recover)
    recover.add_argument(
        "--discard-uncommitted",
        action="store_true",
        help="drop the entries beyond the survivor's commit hint (etcd's choice)",
    )
    recover.set_defaults(handler=run_recover)


def run_recover(args: argparse.Namespace) -> int:
    from synod.server.recover import recover
    from synod.server.restore import RestoreRefused, new_cluster

    data_dir = args.data_dir or f"{args.name}.synod"
    try:
        cluster = new_cluster(
            args.name,
            args.initial_cluster,
            args.initial_cluster_token,
            args.initial_advertise_peer_urls,
            args.initial_cluster_client_urls,
        )
        recovered = recover(args.from_data_dir, data_dir, cluster, args.discard_uncommitted)
    except RestoreRefused as error:
        print(f"synod recover: {error}", file=sys.stderr)
        return 1
    for key, value in recovered.report().items():
        print(f"{key}: {value}")
    print(
        f"start it: synod serve --name {cluster.me.name} --data-dir {data_dir} "
        f"--initial-cluster {cluster.me.name}={cluster.me.peer_url} --initial-cluster-token "
        f"{cluster.token} ...; then add members with `synod ctl member add`"
    )
    return 0


# --------------------------------------------------------------------------- repair


def run_repair(args: argparse.Namespace) -> int:
    from synod.storage.repair import RepairRefused, repair

    try:
        result = repair(args.data_dir, force=args.force)
    except RepairRefused as error:
        print(f"synod repair: {error}", file=sys.stderr)
        return 1
    print(f"moved {result.data_dir} to {result.moved_to} ({result.damage})")
    print(
        "WARNING: an empty member has forgotten the ballots it promised and the values it "
        "accepted. Paxos stays safe through that only if it re-joins under a new identity:\n"
        "  synod ctl member remove <its id>\n"
        "  synod ctl member add <name> --peer-urls <its peer URL>\n"
        "  then start it with --initial-cluster-state existing (docs/operations.md, "
        "'Replacing a member').\n"
        "Restarting it in place with its usual flags is safe only one member at a time, "
        "while the others are healthy and a leader is stable."
    )
    return 0


# --------------------------------------------------------------------------- serve


def run_serve(args: argparse.Namespace) -> int:
    from synod.server.config import ConfigError
    from synod.server.main import config_from_args, serve, setup_logging

    try:
        config = config_from_args(args)
        setup_logging(args.log_level, config.name)
    except ConfigError as error:
        print(f"synod serve: error: {error}", file=sys.stderr)
        return 2
    return serve(config)


# --------------------------------------------------------------------------- up


@dataclass(frozen=True)
class LocalMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def native_url(self) -> str:
        """Synod's native client door: two above the client port (the peer port is one)."""
        return f"http://127.0.0.1:{self.client_port + 2}"


def local_members(count: int, base_port: int, data_dir: Path) -> list[LocalMember]:
    """etcd's local layout: clients on base, base+20000, base+30000, ...; peers one up."""
    members = []
    for index in range(count):
        client = base_port if index == 0 else base_port + (index + 1) * 10000
        members.append(LocalMember(f"synod{index + 1}", client, client + 1, data_dir))
    return members


def serve_command(member: LocalMember, members: list[LocalMember], token: str) -> list[str]:
    cluster = ",".join(f"{m.name}={m.peer_url}" for m in members)
    client_urls = ",".join(f"{m.name}={m.client_url}" for m in members)
    return [
        sys.executable,
        "-m",
        "synod.cli",
        "serve",
        "--name",
        member.name,
        "--data-dir",
        str(member.data_dir / member.name),
        "--listen-client-urls",
        member.client_url,
        "--advertise-client-urls",
        member.client_url,
        "--listen-peer-urls",
        member.peer_url,
        "--initial-advertise-peer-urls",
        member.peer_url,
        "--initial-cluster",
        cluster,
        "--initial-cluster-token",
        token,
        "--initial-cluster-client-urls",
        client_urls,
        "--listen-native-url",
        member.native_url,
    ]


def leader_answers(endpoint: str, timeout_s: float) -> str | None:
    """The leader's id (hex) if `endpoint` knows one and serves a linearizable read."""
    import grpc

    from synod.api.proto.etcdserverpb import rpc_pb2, rpc_pb2_grpc

    with grpc.insecure_channel(endpoint) as channel:
        try:
            status = rpc_pb2_grpc.MaintenanceStub(channel).Status(
                rpc_pb2.StatusRequest(), timeout=timeout_s
            )
            if status.leader == 0:
                return None
            rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(key=b"\0"), timeout=timeout_s)
        except grpc.RpcError:
            return None
    return f"{status.leader:x}"


class _Stop:
    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


def run_up(args: argparse.Namespace) -> int:
    if not 1 <= args.members <= UP_MEMBERS_MAX:
        print(f"synod up: --members must be in 1..{UP_MEMBERS_MAX}", file=sys.stderr)
        return 2
    data_dir = Path(args.data_dir).absolute()
    members = local_members(args.members, args.base_port, data_dir)
    if args.base_port < 1 or members[-1].client_port + 2 > PORT_MAX:
        print("synod up: --base-port leaves no room for the members' ports", file=sys.stderr)
        return 2
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"synod up: cannot create {data_dir}: {error.strerror}", file=sys.stderr)
        return 1
    stop = _Stop()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    children: list[tuple[LocalMember, subprocess.Popen[bytes]]] = []
    for member in members:
        log_path = data_dir / f"{member.name}.log"
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                serve_command(member, members, "synod-local"),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        children.append((member, process))
        print(
            f"{member.name}: client {member.client_url}  peer {member.peer_url}  "
            f"native {member.native_url}  log {log_path}"
        )
    endpoints = ",".join(f"127.0.0.1:{m.client_port}" for m in members)
    try:
        status = _wait_ready(children, stop, endpoints)
        if status != 0:
            return status
        while not stop.requested:
            for member, process in children:
                if process.returncode is None and process.poll() is not None:
                    print(f"{member.name} exited with status {process.returncode}")
            time.sleep(0.2)
        return 0
    finally:
        _stop_children(children)


def _wait_ready(
    children: list[tuple[LocalMember, subprocess.Popen[bytes]]], stop: _Stop, endpoints: str
) -> int:
    deadline = time.monotonic() + UP_READY_TIMEOUT_S
    while not stop.requested:
        for member, process in children:
            if process.poll() is not None:
                log_path = member.data_dir / f"{member.name}.log"
                tail = log_path.read_text(errors="replace").splitlines()[-5:]
                print(f"synod up: {member.name} exited with status {process.returncode}:")
                for line in tail:
                    print("  " + line)
                return 1
        leader = leader_answers(f"127.0.0.1:{children[0][0].client_port}", 1.0)
        if leader is not None:
            print(
                f"ready: leader {leader}; try: ETCDCTL_API=3 etcdctl --endpoints={endpoints} "
                "member list"
            )
            sys.stdout.flush()
            return 0
        if time.monotonic() > deadline:
            print(f"synod up: no leader answered within {UP_READY_TIMEOUT_S:.0f} s")
            return 1
        time.sleep(0.2)
    return 0


def _stop_children(children: list[tuple[LocalMember, subprocess.Popen[bytes]]]) -> None:
    for _, process in children:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + UP_STOP_TIMEOUT_S
    for member, process in children:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{member.name} did not stop in time; killing it")
            process.kill()
            process.wait()
    print("stopped")


# --------------------------------------------------------------------------- demo


def run_demo(args: argparse.Namespace) -> int:
    """Run the simulated demo cluster (no processes, no network)."""
    if not 1 <= args.members <= 9 or args.seed < 0:
        print("synod demo: --members must be in 1..9 and --seed >= 0")
        return 2
    from synod.sim.cli import quiet_storage_logs
    from synod.sim.demo import run_demo as simulate

    quiet_storage_logs()
    healthy, lines = simulate(args.members, args.seed)
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

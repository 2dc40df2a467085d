"""`synod ctl`: etcdctl-like commands and the recipes, on the Python client.

Wired into the `synod` command by `add_ctl_parser(subparsers)`. Output is etcdctl's
"simple" format where etcdctl has one (so scripts written for etcdctl keep working), or
JSON with `-w json` (protobuf messages with their .proto field names, 64-bit integers as
strings, bytes as base64; recipe results as plain JSON objects). Errors go to stderr as
`Error: <message>`; exit status 1 for a failed request, 2 for bad usage, and the child's
status for `lock NAME -- CMD` and `barrier enter NAME -- CMD`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from google.protobuf import json_format
from google.protobuf.message import Message

from synod.api.proto.etcdserverpb import rpc_pb2
from synod.api.proto.mvccpb import kv_pb2
from synod.client import errors
from synod.client import txn as txn_ops
from synod.client.aio import DEFAULT_ENDPOINTS
from synod.client.sync import Client

DESCRIPTION = """\
Talk to a Synod (or etcd v3) cluster: etcdctl's KV, lease, member, endpoint, snapshot save
and move-leader commands, and the coordination recipes (lock, elect, queue, barrier).

Output is etcdctl's "simple" format, or JSON with -w json. Errors are one line on stderr;
exit status 1 for a failed request, 2 for bad usage, 130 when interrupted, and the
command's own status for `lock NAME -- CMD` and `barrier enter NAME --n N -- CMD`.
"""

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
FENCING_ENV = "SYNOD_FENCING_TOKEN"
SNAPSHOT_TIMEOUT_S_MIN = 300.0  # a large store takes a while to stream
SNAPSHOT_PAGE_BYTES = 512
SHA256_BYTES = 32


class UsageError(Exception):
    """The command line (or stdin for txn) is wrong; exit status 2."""


# ---------------------------------------------------------------------------- parser


def add_ctl_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `ctl` and its subcommands to the `synod` command's subparsers."""
    ctl: argparse.ArgumentParser = subparsers.add_parser(
        "ctl",
        help="talk to a cluster (etcdctl-like KV, lease, member commands and recipes)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ctl.add_argument(
        "--endpoints",
        default=",".join(DEFAULT_ENDPOINTS),
        help="comma-separated host:port list (default: %(default)s)",
    )
    ctl.add_argument(
        "-w", "--write-out", choices=("simple", "json"), default="simple", help="output format"
    )
    ctl.add_argument(
        "--command-timeout", type=float, default=5.0, help="seconds per request (default 5)"
    )
    ctl.set_defaults(handler=run_ctl, ctl_command=None)
    commands = ctl.add_subparsers(dest="ctl_command", metavar="COMMAND")
    _add_kv_commands(commands)
    _add_lease_commands(commands)
    _add_cluster_commands(commands)
    _add_maintenance_commands(commands)
    _add_recipe_commands(commands)
    _accept_global_options_anywhere(ctl)
    return ctl


def _accept_global_options_anywhere(parser: argparse.ArgumentParser) -> None:
    """Let `-w json`, `--endpoints` and `--command-timeout` follow the subcommand too, as
    etcdctl allows (`synod ctl get k -w json`)."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for sub in action.choices.values():
            sub.add_argument(
                "-w",
                "--write-out",
                choices=("simple", "json"),
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
            )
            sub.add_argument("--endpoints", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            sub.add_argument(
                "--command-timeout",
                type=float,
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
            )
            _accept_global_options_anywhere(sub)


def _add_kv_commands(commands: Any) -> None:
    put = commands.add_parser("put", help="put a key")
    put.add_argument("key")
    put.add_argument("value", nargs="?", help="value (read from stdin when absent)")
    put.add_argument("--lease", default="0", help="lease ID (hex) to attach")
    put.add_argument("--prev-kv", action="store_true")
    put.set_defaults(run=cmd_put)
    get = commands.add_parser("get", help="read a key or a range")
    get.add_argument("key")
    get.add_argument("range_end", nargs="?", default="")
    get.add_argument("--prefix", action="store_true")
    get.add_argument("--rev", type=int, default=0)
    get.add_argument("--limit", type=int, default=0)
    get.add_argument("--keys-only", action="store_true")
    get.add_argument("--count-only", action="store_true")
    get.add_argument("--consistency", choices=("l", "s"), default="l")
    get.set_defaults(run=cmd_get)
    delete = commands.add_parser("del", help="delete a key or a range")
    delete.add_argument("key")
    delete.add_argument("range_end", nargs="?", default="")
    delete.add_argument("--prefix", action="store_true")
    delete.add_argument("--prev-kv", action="store_true")
    delete.set_defaults(run=cmd_del)
    txn = commands.add_parser(
        "txn",
        help="a transaction in etcdctl's format from stdin",
        description="Reads compares, a blank line, success operations, a blank line, "
        'failure operations. Compares: value("k") = "v", mod("k") > "5", create("k") = "0", '
        'version("k") != "1", lease("k") = "694d...". Operations: put k v, get k [--prefix], '
        "del k [--prefix].",
    )
    txn.add_argument("-i", "--interactive", action="store_true", help="prompt for each part")
    txn.set_defaults(run=cmd_txn)
    watch = commands.add_parser("watch", help="print changes as they happen")
    watch.add_argument("key")
    watch.add_argument("range_end", nargs="?", default="")
    watch.add_argument("--prefix", action="store_true")
    watch.add_argument("--rev", type=int, default=0, help="start from this revision")
    watch.add_argument("--prev-kv", action="store_true")
    watch.add_argument("--count", type=int, default=0, help="stop after this many events")
    watch.set_defaults(run=cmd_watch)
    compaction = commands.add_parser("compaction", help="compact history up to a revision")
    compaction.add_argument("revision", type=int)
    compaction.add_argument("--physical", action="store_true")
    compaction.set_defaults(run=cmd_compaction)


def _add_lease_commands(commands: Any) -> None:
    lease = commands.add_parser("lease", help="grant, revoke, keep-alive, timetolive, list")
    sub = lease.add_subparsers(dest="lease_command", metavar="SUBCOMMAND", required=True)
    grant = sub.add_parser("grant", help="grant a lease with a TTL in seconds")
    grant.add_argument("ttl", type=int)
    grant.set_defaults(run=cmd_lease_grant)
    revoke = sub.add_parser("revoke", help="revoke a lease (its keys are deleted)")
    revoke.add_argument("lease_id")
    revoke.set_defaults(run=cmd_lease_revoke)
    keep = sub.add_parser("keep-alive", help="keep a lease alive")
    keep.add_argument("lease_id")
    keep.add_argument("--once", action="store_true")
    keep.set_defaults(run=cmd_lease_keep_alive)
    ttl = sub.add_parser("timetolive", help="a lease's remaining time")
    ttl.add_argument("lease_id")
    ttl.add_argument("--keys", action="store_true")
    ttl.set_defaults(run=cmd_lease_timetolive)
    listing = sub.add_parser("list", help="all leases")
    listing.set_defaults(run=cmd_lease_list)


def _add_cluster_commands(commands: Any) -> None:
    member = commands.add_parser("member", help="cluster membership")
    sub = member.add_subparsers(dest="member_command", metavar="SUBCOMMAND", required=True)
    sub.add_parser("list", help="list the members").set_defaults(run=cmd_member_list)
    add = sub.add_parser(
        "add",
        help="add a member (then start it with --initial-cluster-state existing)",
        description="Add a member by its peer URLs; prints the flags to start it with.",
    )
    add.add_argument("name", help="the new member's --name")
    add.add_argument("--peer-urls", required=True, help="comma-separated peer URLs")
    add.add_argument("--learner", action="store_true", help="add as a non-voting learner")
    add.set_defaults(run=cmd_member_add)
    remove = sub.add_parser("remove", help="remove a member for good")
    remove.add_argument("member_id", help="member ID (hex)")
    remove.set_defaults(run=cmd_member_remove)
    update = sub.add_parser("update", help="change a member's peer URLs")
    update.add_argument("member_id", help="member ID (hex)")
    update.add_argument("--peer-urls", required=True, help="comma-separated peer URLs")
    update.set_defaults(run=cmd_member_update)
    promote = sub.add_parser("promote", help="make a caught-up learner a voter")
    promote.add_argument("member_id", help="member ID (hex)")
    promote.set_defaults(run=cmd_member_promote)
    endpoint = commands.add_parser("endpoint", help="per-endpoint status and health")
    sub = endpoint.add_subparsers(dest="endpoint_command", metavar="SUBCOMMAND", required=True)
    sub.add_parser("status", help="status of each endpoint").set_defaults(run=cmd_endpoint_status)
    sub.add_parser("health", help="health of each endpoint").set_defaults(run=cmd_endpoint_health)


def _add_maintenance_commands(commands: Any) -> None:
    snapshot = commands.add_parser("snapshot", help="back up one member's state to a file")
    sub = snapshot.add_subparsers(dest="snapshot_command", metavar="SUBCOMMAND", required=True)
    save = sub.add_parser(
        "save",
        help="stream a member's snapshot into FILE",
        description="Download the snapshot of the one member named by --endpoints into "
        "FILE.part, fsync it, check its sha256 trailer, then rename it to FILE. Restore it "
        "with `synod snapshot restore`.",
    )
    save.add_argument("path", metavar="FILE")
    save.set_defaults(run=cmd_snapshot_save)
    move = commands.add_parser(
        "move-leader",
        help="hand leadership to another voter",
        description="Find the leader among --endpoints and ask it to hand leadership to "
        "TARGET (a member ID in hex, as `member list` prints it).",
    )
    move.add_argument("target", metavar="TARGET")
    move.set_defaults(run=cmd_move_leader)


def _add_recipe_commands(commands: Any) -> None:
    lock = commands.add_parser(
        "lock",
        help="hold a lock while a command runs",
        description=f"Acquire NAME, run CMD with the fencing token in ${FENCING_ENV}, "
        "release. Without CMD: print the lock key and token and hold until interrupted.",
    )
    lock.add_argument("name")
    lock.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    lock.add_argument("--ttl", type=int, default=10, help="session TTL in seconds")
    lock.add_argument("--timeout", type=float, default=None, help="give up after seconds")
    lock.set_defaults(run=cmd_lock)
    elect = commands.add_parser(
        "elect",
        help="campaign for leadership, or observe it with --listen",
        description="Campaign with PROPOSAL and hold leadership until interrupted, or "
        "print each leader change with --listen.",
    )
    elect.add_argument("name")
    elect.add_argument("proposal", nargs="?")
    elect.add_argument("-l", "--listen", action="store_true")
    elect.add_argument("--ttl", type=int, default=10)
    elect.set_defaults(run=cmd_elect)
    queue = commands.add_parser("queue", help="work queue: push, pop, ack, nack, size")
    sub = queue.add_subparsers(dest="queue_command", metavar="SUBCOMMAND", required=True)
    push = sub.add_parser("push", help="append a message")
    push.add_argument("name")
    push.add_argument("payload")
    push.add_argument("--priority", type=int, default=0, help="smaller first (0..99999)")
    push.set_defaults(run=cmd_queue_push)
    pop = sub.add_parser("pop", help="take a message; prints a receipt for ack")
    pop.add_argument("name")
    pop.add_argument("--timeout", type=float, default=0.0, help="wait up to seconds")
    pop.add_argument("--visibility", type=int, default=30, help="seconds before redelivery")
    pop.add_argument("--max-deliveries", type=int, default=5)
    pop.set_defaults(run=cmd_queue_pop)
    for verb, function in (("ack", cmd_queue_ack), ("nack", cmd_queue_nack)):
        parser = sub.add_parser(verb, help=f"{verb} a popped message by its receipt")
        parser.add_argument("name")
        parser.add_argument("receipt")
        parser.set_defaults(run=function)
    size = sub.add_parser("size", help="messages waiting, in flight and dead")
    size.add_argument("name")
    size.set_defaults(run=cmd_queue_size)
    barrier = commands.add_parser(
        "barrier",
        help="barriers: create/remove/wait a gate, or enter a double barrier",
        description="create|remove|wait NAME: a single gate. enter NAME --n N [-- CMD]: "
        "wait until N participants entered, run CMD, then wait until all have left.",
    )
    sub = barrier.add_subparsers(dest="barrier_command", metavar="SUBCOMMAND", required=True)
    for verb, function in (
        ("create", cmd_barrier_create),
        ("remove", cmd_barrier_remove),
        ("wait", cmd_barrier_wait),
    ):
        parser = sub.add_parser(verb)
        parser.add_argument("name")
        parser.add_argument("--timeout", type=float, default=None)
        parser.set_defaults(run=function)
    enter = sub.add_parser("enter", help="double barrier")
    enter.add_argument("name")
    enter.add_argument("--n", type=int, default=None, help="participants (required)")
    enter.add_argument("--ttl", type=int, default=10)
    enter.add_argument("--timeout", type=float, default=None)
    enter.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    enter.set_defaults(run=cmd_barrier_enter)


# ---------------------------------------------------------------------------- running


class Output:
    """Where a command writes, in the chosen format."""

    def __init__(self, write_out: str, stream: TextIO | None = None) -> None:
        self.json = write_out == "json"
        self.stream = stream or sys.stdout

    def line(self, text: str = "") -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def message(self, message: Message) -> None:
        data = json_format.MessageToDict(message, preserving_proto_field_name=True)
        self.line(json.dumps(data, sort_keys=True))

    def obj(self, data: dict[str, Any]) -> None:
        self.line(json.dumps(data, sort_keys=True))

    def result(self, data: dict[str, Any], text: str) -> None:
        """`data` as JSON, or `text` in the simple format."""
        if self.json:
            self.obj(data)
        else:
            self.line(text)


def run_ctl(args: argparse.Namespace) -> int:
    """The `synod ctl` handler: run one subcommand; its exit status."""
    run: Callable[[Client, argparse.Namespace, Output], int] | None = getattr(args, "run", None)
    if run is None:
        print("synod ctl: error: a command is required (see synod ctl --help)", file=sys.stderr)
        return EXIT_USAGE
    if threading.current_thread() is not threading.main_thread():
        return _run_command(run, args)
    # SIGTERM ends a command like Ctrl-C: locks released, leadership resigned.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run_command(run, args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_command(
    run: Callable[[Client, argparse.Namespace, Output], int], args: argparse.Namespace
) -> int:
    output = Output(args.write_out)
    try:
        client = Client(args.endpoints, timeout_s=args.command_timeout)
    except ValueError as error:
        print(f"Error: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return run(client, args, output)
    except UsageError as error:
        print(f"Error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except errors.ClientError as error:
        print(f"Error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


def _lease_id(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        raise UsageError(f"bad lease ID {text!r} (hexadecimal expected)") from None


def _print_kvs(output: Output, kvs: Sequence[kv_pb2.KeyValue], keys_only: bool = False) -> None:
    for kv in kvs:
        output.line(kv.key.decode(errors="replace"))
        if not keys_only:
            output.line(kv.value.decode(errors="replace"))


# ---------------------------------------------------------------------------- KV


def cmd_put(client: Client, args: argparse.Namespace, output: Output) -> int:
    value = args.value if args.value is not None else sys.stdin.read()
    response = client.put(args.key, value, lease=_lease_id(args.lease), prev_kv=args.prev_kv)
    if output.json:
        output.message(response)
        return EXIT_OK
    output.line("OK")
    if args.prev_kv and response.HasField("prev_kv"):
        _print_kvs(output, [response.prev_kv])
    return EXIT_OK


def cmd_get(client: Client, args: argparse.Namespace, output: Output) -> int:
    response = client.get(
        args.key,
        prefix=args.prefix,
        range_end=args.range_end,
        revision=args.rev,
        limit=args.limit,
        keys_only=args.keys_only,
        count_only=args.count_only,
        serializable=args.consistency == "s",
    )
    if output.json:
        output.message(response)
    elif args.count_only:
        output.line(str(response.count))
    else:
        _print_kvs(output, response.kvs, args.keys_only)
    return EXIT_OK


def cmd_del(client: Client, args: argparse.Namespace, output: Output) -> int:
    response = client.delete(
        args.key, prefix=args.prefix, range_end=args.range_end, prev_kv=args.prev_kv
    )
    if output.json:
        output.message(response)
        return EXIT_OK
    output.line(str(response.deleted))
    if args.prev_kv:
        _print_kvs(output, response.prev_kvs)
    return EXIT_OK


_COMPARE = re.compile(
    r'^\s*(value|mod|create|version|lease|val|c|m|ver)\s*\(\s*"((?:[^"\\]|\\.)*)"\s*\)\s*'
    r'(=|!=|<|>)\s*"((?:[^"\\]|\\.)*)"\s*$'
)


def parse_compare(line: str) -> rpc_pb2.Compare:
    """One compare in etcdctl's syntax, e.g. `mod("key") > "5"`."""
    match = _COMPARE.match(line)
    if match is None:
        raise UsageError(f"malformed comparison: {line!r}")
    kind, key, operator, operand = match.groups()
    key = bytes(key, "utf-8").decode("unicode_escape")
    operand = bytes(operand, "utf-8").decode("unicode_escape")
    target = {
        "value": txn_ops.value,
        "val": txn_ops.value,
        "mod": txn_ops.mod_revision,
        "m": txn_ops.mod_revision,
        "create": txn_ops.create_revision,
        "c": txn_ops.create_revision,
        "version": txn_ops.version,
        "ver": txn_ops.version,
        "lease": txn_ops.lease,
    }[kind](key)
    other: int | str = operand
    if kind not in ("value", "val"):
        try:
            other = int(operand, 16) if kind == "lease" else int(operand)
        except ValueError:
            raise UsageError(f"not a number in comparison: {line!r}") from None
    if operator == "=":
        return target == other
    if operator == "!=":
        return target != other
    if operator == "<":
        return target < other
    return target > other


def parse_op(line: str) -> rpc_pb2.RequestOp:
    """One operation in etcdctl's txn syntax: `put k v`, `get k [--prefix]`, `del k`."""
    try:
        words = shlex.split(line)
    except ValueError as error:
        raise UsageError(f"malformed operation {line!r}: {error}") from None
    if not words:
        raise UsageError("empty operation")
    verb, rest = words[0], words[1:]
    prefix = "--prefix" in rest
    rest = [word for word in rest if not word.startswith("--")]
    if verb == "put" and len(rest) == 2:
        return txn_ops.put(rest[0], rest[1])
    if verb == "get" and len(rest) in (1, 2):
        if len(rest) == 2:
            return rpc_pb2.RequestOp(
                request_range=rpc_pb2.RangeRequest(key=rest[0].encode(), range_end=rest[1].encode())
            )
        return txn_ops.get(rest[0], prefix=prefix)
    if verb in ("del", "delete") and len(rest) in (1, 2):
        if len(rest) == 2:
            return rpc_pb2.RequestOp(
                request_delete_range=rpc_pb2.DeleteRangeRequest(
                    key=rest[0].encode(), range_end=rest[1].encode()
                )
            )
        return txn_ops.delete(rest[0], prefix=prefix)
    raise UsageError(f"malformed operation: {line!r}")


def parse_txn(
    text: str,
) -> tuple[list[rpc_pb2.Compare], list[rpc_pb2.RequestOp], list[rpc_pb2.RequestOp]]:
    """etcdctl's txn input: compares, blank line, success ops, blank line, failure ops."""
    sections: list[list[str]] = [[]]
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            if len(sections) < 3:
                sections.append([])
            continue
        sections[-1].append(line)
    while len(sections) < 3:
        sections.append([])
    compares = [parse_compare(line) for line in sections[0]]
    success = [parse_op(line) for line in sections[1]]
    failure = [parse_op(line) for line in sections[2]]
    return compares, success, failure


def cmd_txn(client: Client, args: argparse.Namespace, output: Output) -> int:
    text = _read_interactive() if args.interactive else sys.stdin.read()
    compares, success, failure = parse_txn(text)
    response = client.txn(compares, success, failure)
    if output.json:
        output.message(response)
        return EXIT_OK
    output.line("SUCCESS" if response.succeeded else "FAILURE")
    for op in response.responses:
        output.line()
        kind = op.WhichOneof("response")
        if kind == "response_put":
            output.line("OK")
        elif kind == "response_range":
            _print_kvs(output, op.response_range.kvs)
        elif kind == "response_delete_range":
            output.line(str(op.response_delete_range.deleted))
    return EXIT_OK


def _read_interactive() -> str:
    parts = []
    for title in (
        "compares",
        "success requests (get, put, del)",
        "failure requests (get, put, del)",
    ):
        print(f"{title}:", file=sys.stderr)
        lines = []
        for line in sys.stdin:
            if not line.strip():
                break
            lines.append(line.rstrip("\n"))
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def cmd_watch(client: Client, args: argparse.Namespace, output: Output) -> int:
    seen = 0
    with client.watch(
        args.key,
        prefix=args.prefix,
        range_end=args.range_end,
        start_revision=args.rev,
        prev_kv=args.prev_kv,
    ) as watcher:
        for response in watcher:
            if output.json:
                output.message(response)
            else:
                for event in response.events:
                    output.line("PUT" if event.type == kv_pb2.Event.PUT else "DELETE")
                    if args.prev_kv and event.HasField("prev_kv"):
                        _print_kvs(output, [event.prev_kv])
                    _print_kvs(output, [event.kv], keys_only=event.type == kv_pb2.Event.DELETE)
            seen += len(response.events)
            if args.count and seen >= args.count:
                break
    return EXIT_OK


def cmd_compaction(client: Client, args: argparse.Namespace, output: Output) -> int:
    response = client.compact(args.revision, physical=args.physical)
    if output.json:
        output.message(response)
    else:
        output.line(f"compacted revision {args.revision}")
    return EXIT_OK


# ---------------------------------------------------------------------------- leases


def cmd_lease_grant(client: Client, args: argparse.Namespace, output: Output) -> int:
    response = client.lease_grant(args.ttl)
    if output.json:
        output.message(response)
    else:
        output.line(f"lease {response.ID:x} granted with TTL({response.TTL}s)")
    return EXIT_OK


def cmd_lease_revoke(client: Client, args: argparse.Namespace, output: Output) -> int:
    lease_id = _lease_id(args.lease_id)
    response = client.lease_revoke(lease_id)
    if output.json:
        output.message(response)
    else:
        output.line(f"lease {lease_id:x} revoked")
    return EXIT_OK


def cmd_lease_keep_alive(client: Client, args: argparse.Namespace, output: Output) -> int:
    lease_id = _lease_id(args.lease_id)
    while True:
        try:
            response = client.lease_keep_alive_once(lease_id)
        except errors.LeaseNotFound:
            if output.json:
                output.obj({"ID": str(lease_id), "TTL": "0"})
            else:
                output.line(f"lease {lease_id:x} expired or revoked.")
            return EXIT_ERROR
        if output.json:
            output.message(response)
        else:
            output.line(f"lease {lease_id:x} keepalived with TTL({response.TTL})")
        if args.once:
            return EXIT_OK
        time.sleep(max(0.5, response.TTL / 3))


def cmd_lease_timetolive(client: Client, args: argparse.Namespace, output: Output) -> int:
    lease_id = _lease_id(args.lease_id)
    response = client.lease_time_to_live(lease_id, keys=args.keys)
    if output.json:
        output.message(response)
        return EXIT_OK
    if response.TTL <= 0:
        output.line(f"lease {lease_id:x} already expired")
        return EXIT_OK
    text = (
        f"lease {lease_id:x} granted with TTL({response.grantedTTL}s), remaining({response.TTL}s)"
    )
    if args.keys:
        keys = ", ".join(key.decode(errors="replace") for key in response.keys)
        text += f", attached keys([{keys}])"
    output.line(text)
    return EXIT_OK


def cmd_lease_list(client: Client, args: argparse.Namespace, output: Output) -> int:
    response = client.lease_leases()
    if output.json:
        output.message(response)
        return EXIT_OK
    output.line(f"found {len(response.leases)} leases")
    for lease in response.leases:
        output.line(f"{lease.ID:x}")
    return EXIT_OK


# ---------------------------------------------------------------------------- cluster


def cmd_member_list(client: Client, args: argparse.Namespace, output: Output) -> int:
    response = client.member_list()
    if output.json:
        output.message(response)
        return EXIT_OK
    for member in response.members:
        state = "unstarted" if not member.name else "started"
        output.line(
            f"{member.ID:x}, {state}, {member.name}, {', '.join(member.peerURLs)}, "
            f"{', '.join(member.clientURLs)}, {str(member.isLearner).lower()}"
        )
    return EXIT_OK


def _member_id(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        raise UsageError(f"bad member ID arg ({text!r}), expecting ID in Hex") from None


def _peer_urls(text: str) -> list[str]:
    urls = [url.strip() for url in text.split(",") if url.strip()]
    for url in urls:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("http", "https", "unix", "unixs") or not rest:
            raise UsageError(f"URL scheme must be http, https, unix, or unixs: {url}")
    if not urls:
        raise UsageError("member peer urls not provided")
    return urls


def cmd_member_add(client: Client, args: argparse.Namespace, output: Output) -> int:
    """As etcdctl: the new id, then (simple format) the flags to start the member with."""
    urls = _peer_urls(args.peer_urls)
    response = client.member_add(urls, is_learner=args.learner)
    if output.json:
        output.message(response)
        return EXIT_OK
    new_id = response.member.ID
    output.line(f"Member {new_id:16x} added to cluster {response.header.cluster_id:16x}")
    cluster = [
        f"{args.name if new_id == member.ID else member.name}={url}"
        for member in response.members
        for url in member.peerURLs
    ]
    output.line()
    output.line(f"ETCD_NAME={json.dumps(args.name)}")
    output.line(f"ETCD_INITIAL_CLUSTER={json.dumps(','.join(cluster))}")
    output.line(f"ETCD_INITIAL_ADVERTISE_PEER_URLS={json.dumps(','.join(urls))}")
    output.line('ETCD_INITIAL_CLUSTER_STATE="existing"')
    return EXIT_OK


def cmd_member_remove(client: Client, args: argparse.Namespace, output: Output) -> int:
    member_id = _member_id(args.member_id)
    response = client.member_remove(member_id)
    text = f"Member {member_id:16x} removed from cluster {response.header.cluster_id:16x}"
    return _member_result(output, response, text)


def cmd_member_update(client: Client, args: argparse.Namespace, output: Output) -> int:
    member_id = _member_id(args.member_id)
    response = client.member_update(member_id, _peer_urls(args.peer_urls))
    text = f"Member {member_id:16x} updated in cluster {response.header.cluster_id:16x}"
    return _member_result(output, response, text)


def cmd_member_promote(client: Client, args: argparse.Namespace, output: Output) -> int:
    member_id = _member_id(args.member_id)
    response = client.member_promote(member_id)
    text = f"Member {member_id:16x} promoted in cluster {response.header.cluster_id:16x}"
    return _member_result(output, response, text)


def _member_result(output: Output, response: Message, text: str) -> int:
    if output.json:
        output.message(response)
    else:
        output.line(text)
    return EXIT_OK


def _size_text(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size} {unit}"
        size //= 1000
    return f"{size} TB"


def cmd_endpoint_status(client: Client, args: argparse.Namespace, output: Output) -> int:
    failed = False
    for endpoint in client.endpoints:
        try:
            status = client.status(endpoint)
        except errors.ClientError as error:
            print(f"Failed to get the status of endpoint {endpoint} ({error})", file=sys.stderr)
            failed = True
            continue
        if output.json:
            data = json_format.MessageToDict(status, preserving_proto_field_name=True)
            output.obj({"Endpoint": endpoint, "Status": data})
            continue
        is_leader = status.leader == status.header.member_id
        output.line(
            f"{endpoint}, {status.header.member_id:x}, {status.version}, "
            f"{_size_text(status.dbSize)}, {str(is_leader).lower()}, "
            f"{str(status.isLearner).lower()}, {status.raftTerm}, {status.raftIndex}, "
            f"{status.raftAppliedIndex}, {', '.join(status.errors)}"
        )
    return EXIT_ERROR if failed else EXIT_OK


def cmd_endpoint_health(client: Client, args: argparse.Namespace, output: Output) -> int:
    unhealthy = False
    for endpoint in client.endpoints:
        started = time.monotonic()
        error_text = ""
        try:
            _probe(client, endpoint)
        except errors.ClientError as error:
            error_text = str(error)
        took_ms = (time.monotonic() - started) * 1000
        healthy = not error_text
        unhealthy |= not healthy
        if output.json:
            entry: dict[str, Any] = {
                "endpoint": endpoint,
                "health": healthy,
                "took": f"{took_ms:.3f}ms",
            }
            if error_text:
                entry["error"] = error_text
            output.obj(entry)
        elif healthy:
            output.line(
                f"{endpoint} is healthy: successfully committed proposal: took = {took_ms:.3f}ms"
            )
        else:
            print(
                f"{endpoint} is unhealthy: failed to commit proposal: {error_text}", file=sys.stderr
            )
    return EXIT_ERROR if unhealthy else EXIT_OK


def _probe(client: Client, endpoint: str) -> None:
    """A linearizable read through `endpoint` (etcdctl reads the key "health")."""
    request = rpc_pb2.RangeRequest(key=b"health")

    async def call() -> None:
        await client.aio.call("Range", request, retry_safe=True, endpoint=endpoint)

    client._run(call(), client.timeout_s)


# ---------------------------------------------------------------------------- maintenance


def cmd_snapshot_save(client: Client, args: argparse.Namespace, output: Output) -> int:
    endpoints = list(client.endpoints)
    if len(endpoints) != 1:
        raise UsageError(
            f"snapshot must be requested from one member, not {len(endpoints)} "
            f"({','.join(endpoints)}): give --endpoints HOST:PORT"
        )
    path = os.path.abspath(args.path)
    temp = path + ".part"
    timeout_s = max(args.command_timeout, SNAPSHOT_TIMEOUT_S_MIN)
    try:
        header = client._run(_download(client, endpoints[0], temp, timeout_s), timeout_s)
        size, digest = _verify_snapshot(temp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise
    os.replace(temp, path)
    _sync_directory(os.path.dirname(path))
    output.result(
        {
            "path": path,
            "size": size,
            "sha256": digest,
            "member_id": f"{header.member_id:x}",
            "revision": header.revision,
        },
        f"Snapshot saved at {args.path}",
    )
    return EXIT_OK


async def _download(
    client: Client, endpoint: str, temp: str, timeout_s: float
) -> rpc_pb2.ResponseHeader:
    """Every chunk into `temp`, synced; the first chunk's header."""
    header: rpc_pb2.ResponseHeader | None = None
    with open(temp, "wb") as file:
        try:
            async with asyncio.timeout(timeout_s):
                async for chunk in client.aio.snapshot(endpoint):
                    header = header or chunk.header
                    file.write(chunk.blob)
        except TimeoutError:
            raise errors.Timeout(
                f"the snapshot did not arrive within {timeout_s:g}s", errors.DEADLINE_EXCEEDED
            ) from None
        file.flush()
        os.fsync(file.fileno())
    assert header is not None, "a snapshot stream has at least one chunk"
    return header


def _verify_snapshot(path: str) -> tuple[int, str]:
    """(size, sha256 hex) of a saved snapshot after checking its sha256 trailer."""
    size = os.path.getsize(path)
    if size < SNAPSHOT_PAGE_BYTES + SHA256_BYTES or size % SNAPSHOT_PAGE_BYTES != SHA256_BYTES:
        raise errors.ClientError(f"the member sent {size} bytes, not a whole snapshot")
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        remaining = size - SHA256_BYTES
        while remaining:
            block = file.read(min(remaining, 1 << 20))
            if not block:
                raise errors.ClientError(f"{path} shrank while being checked")
            digest.update(block)
            remaining -= len(block)
        trailer = file.read(SHA256_BYTES)
    if digest.digest() != trailer:
        raise errors.ClientError("the snapshot received fails its sha256 check (corrupted)")
    return size, trailer.hex()


def _sync_directory(path: str) -> None:
    descriptor = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def cmd_move_leader(client: Client, args: argparse.Namespace, output: Output) -> int:
    try:
        target = int(args.target, 16)
    except ValueError:
        raise UsageError(f"bad member ID {args.target!r} (hexadecimal expected)") from None
    for endpoint in client.endpoints:
        try:
            status = client.status(endpoint)
        except errors.ClientError:
            continue
        if status.leader == 0 or status.leader != status.header.member_id:
            continue
        client.move_leader(target, endpoint)
        output.result(
            {"from": f"{status.leader:x}", "to": f"{target:x}"},
            f"Leadership transferred from {status.leader:x} to {target:x}",
        )
        return EXIT_OK
    print(f"Error: no leader endpoint given at {list(client.endpoints)}", file=sys.stderr)
    return EXIT_ERROR


# ---------------------------------------------------------------------------- recipes


def _child_command(args: argparse.Namespace, options: dict[str, type]) -> list[str]:
    """The command after NAME, once options given after NAME (argparse leaves them in the
    remainder) are moved onto `args`: `lock NAME --ttl 3 -- CMD` works like
    `lock --ttl 3 NAME -- CMD`."""
    words: list[str] = list(args.command)
    if "--" in words:
        split = words.index("--")
        before, command = words[:split], words[split + 1 :]
    else:
        before, command = words, []
    parser = argparse.ArgumentParser(prog="synod ctl", add_help=False)
    for option, kind in options.items():
        parser.add_argument(option, type=kind, default=getattr(args, option.lstrip("-")))
    try:
        parsed, unknown = parser.parse_known_args(before)
    except SystemExit:
        raise UsageError(f"bad options: {' '.join(before)}") from None
    vars(args).update(vars(parsed))
    return unknown + command


def _wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM (run_ctl turns both into KeyboardInterrupt)."""
    forever = threading.Event()
    try:
        while not forever.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run_child(command: list[str], env: dict[str, str]) -> int:
    child = subprocess.Popen(command, env={**os.environ, **env})
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        return child.wait()


def cmd_lock(client: Client, args: argparse.Namespace, output: Output) -> int:
    from synod.recipes.lock import Lock  # the recipes sit on the client, not under it

    command = _child_command(args, {"--ttl": int, "--timeout": float})
    lock = Lock(client, args.name, ttl_s=args.ttl, identifier=f"synod-ctl:{os.getpid()}")
    if not lock.acquire(timeout_s=args.timeout):
        print(f"Error: lock {args.name!r} not acquired in {args.timeout:g}s", file=sys.stderr)
        return EXIT_ERROR
    try:
        env = {FENCING_ENV: str(lock.token), "SYNOD_LOCK_KEY": lock.key.decode()}
        if output.json:
            output.obj({"key": lock.key.decode(), "fencing_token": lock.token})
        elif not command:
            output.line(lock.key.decode())
        if command:
            return _run_child(command, env)
        _wait_for_signal()
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK  # a signal right after the output: the normal end
    finally:
        lock.release()


def cmd_elect(client: Client, args: argparse.Namespace, output: Output) -> int:
    from synod.recipes.election import Election

    election = Election(client, args.name, ttl_s=args.ttl)
    if args.listen:
        try:
            for leader in election.observe():
                if leader is None:
                    continue
                if output.json:
                    output.obj(
                        {
                            "key": leader.key.decode(),
                            "value": leader.value.decode(errors="replace"),
                            "fencing_token": leader.token,
                        }
                    )
                else:
                    output.line(leader.key.decode())
                    output.line(leader.value.decode(errors="replace"))
        except KeyboardInterrupt:
            pass
        return EXIT_OK
    if args.proposal is None:
        raise UsageError("a PROPOSAL is required to campaign (or --listen to observe)")
    token = election.campaign(args.proposal)
    try:
        if output.json:
            output.obj(
                {"key": election.prefix.decode(), "value": args.proposal, "fencing_token": token}
            )
        else:
            leader = election.leader()
            output.line(leader.key.decode() if leader else "")
            output.line(args.proposal)
        _wait_for_signal()
    except KeyboardInterrupt:
        pass  # a signal right after the output: the normal end
    finally:
        election.resign()
    return EXIT_OK


def _queue(client: Client, args: argparse.Namespace) -> Any:
    from synod.recipes.queue import Queue

    return Queue(
        client,
        args.name,
        visibility_s=getattr(args, "visibility", 30),
        max_deliveries=getattr(args, "max_deliveries", 5),
    )


def cmd_queue_push(client: Client, args: argparse.Namespace, output: Output) -> int:
    message_id = _queue(client, args).push(args.payload, priority=args.priority)
    if output.json:
        output.obj({"id": message_id})
    else:
        output.line(message_id)
    return EXIT_OK


def _receipt(message: Any) -> str:
    return f"{message.id}@{message.claim_revision}@{message.lease_id:x}"


def _from_receipt(text: str) -> Any:
    from synod.recipes.queue import Message

    try:
        message_id, claim, lease = text.rsplit("@", 2)
        priority = int(message_id.split("/", 1)[0])
        return Message(message_id, b"", priority, 0, int(claim), int(lease, 16))
    except ValueError:
        raise UsageError(f"bad receipt {text!r} (as printed by queue pop)") from None


def cmd_queue_pop(client: Client, args: argparse.Namespace, output: Output) -> int:
    from synod.recipes.errors import QueueEmpty

    try:
        message = _queue(client, args).pop(args.timeout)
    except QueueEmpty as error:
        print(f"Error: {error}", file=sys.stderr)
        return EXIT_ERROR
    if output.json:
        output.obj(
            {
                "id": message.id,
                "receipt": _receipt(message),
                "deliveries": message.deliveries,
                "priority": message.priority,
                "payload": base64.b64encode(message.payload).decode(),
            }
        )
    else:
        output.line(_receipt(message))
        output.line(message.payload.decode(errors="replace"))
    return EXIT_OK


def cmd_queue_ack(client: Client, args: argparse.Namespace, output: Output) -> int:
    _queue(client, args).ack(_from_receipt(args.receipt))
    output.result({"acked": True}, "OK")
    return EXIT_OK


def cmd_queue_nack(client: Client, args: argparse.Namespace, output: Output) -> int:
    _queue(client, args).nack(_from_receipt(args.receipt))
    output.result({"returned": True}, "OK")
    return EXIT_OK


def cmd_queue_size(client: Client, args: argparse.Namespace, output: Output) -> int:
    queue = _queue(client, args)
    counts = {
        "ready": queue.size(),
        "in_flight": queue.in_flight(),
        "dead": len(queue.dead_letters()),
    }
    if output.json:
        output.obj(counts)
    else:
        output.line(", ".join(f"{name} {count}" for name, count in counts.items()))
    return EXIT_OK


def cmd_barrier_create(client: Client, args: argparse.Namespace, output: Output) -> int:
    from synod.recipes.barrier import Barrier

    created = Barrier(client, args.name).create()
    output.result({"created": created}, "OK" if created else "already up")
    return EXIT_OK


def cmd_barrier_remove(client: Client, args: argparse.Namespace, output: Output) -> int:
    from synod.recipes.barrier import Barrier

    Barrier(client, args.name).remove()
    output.result({"removed": True}, "OK")
    return EXIT_OK


def cmd_barrier_wait(client: Client, args: argparse.Namespace, output: Output) -> int:
    from synod.recipes.barrier import Barrier

    if not Barrier(client, args.name).wait(args.timeout):
        print(f"Error: barrier {args.name!r} still up after {args.timeout:g}s", file=sys.stderr)
        return EXIT_ERROR
    output.result({"passed": True}, "OK")
    return EXIT_OK


def cmd_barrier_enter(client: Client, args: argparse.Namespace, output: Output) -> int:
    from synod.recipes.barrier import DoubleBarrier

    command = _child_command(args, {"--n": int, "--ttl": int, "--timeout": float})
    if args.n is None:
        raise UsageError("barrier enter needs --n (the number of participants)")
    barrier = DoubleBarrier(client, args.name, args.n, ttl_s=args.ttl)
    barrier.enter(args.timeout)
    status = EXIT_OK
    try:
        if command:
            status = _run_child(command, {})
    finally:
        barrier.leave(args.timeout)
    output.result({"left": True, "status": status}, "OK")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m synod.client.ctl ctl ...`: the same command without synod/cli.py."""
    parser = argparse.ArgumentParser(prog="synod")
    commands = parser.add_subparsers(dest="command", required=True)
    add_ctl_parser(commands)
    args = parser.parse_args(argv)
    return run_ctl(args)


if __name__ == "__main__":
    sys.exit(main())

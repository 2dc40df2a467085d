"""`synod ctl`'s parsing: etcdctl's txn input format, endpoints, and the command line
(options after NAME in `lock NAME --ttl 3 -- CMD`). No server."""

from __future__ import annotations

import argparse

import pytest

from synod.client import rpc_pb2
from synod.client.ctl import UsageError, _child_command, add_ctl_parser, parse_txn
from synod.client.transport import parse_endpoints


def test_txn_input_in_etcdctl_format() -> None:
    text = (
        'mod("key1") > "0"\nvalue("key2") = "x y"\n\n'
        'put key1 "new value"\nget key2\n\ndel k --prefix\n'
    )
    compares, success, failure = parse_txn(text)
    assert [c.target for c in compares] == [rpc_pb2.Compare.MOD, rpc_pb2.Compare.VALUE]
    assert compares[0].result == rpc_pb2.Compare.GREATER and compares[0].mod_revision == 0
    assert compares[1].value == b"x y"
    assert success[0].request_put.value == b"new value"
    assert success[1].request_range.key == b"key2"
    assert failure[0].request_delete_range.range_end == b"l"


def test_malformed_txn_input_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="malformed comparison"):
        parse_txn("mod(key1) > 0\n\n\n")
    with pytest.raises(UsageError, match="malformed operation"):
        parse_txn("\nfrobnicate k\n")


def test_endpoints_are_normalized_and_deduplicated() -> None:
    assert parse_endpoints("http://127.0.0.1:2379, 127.0.0.1:2379,host") == [
        "127.0.0.1:2379",
        "host:2379",
    ]
    with pytest.raises(ValueError):
        parse_endpoints(" , ")


def test_lock_options_after_the_name_are_honoured() -> None:
    parser = argparse.ArgumentParser()
    add_ctl_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ctl", "lock", "jobs", "--ttl", "3", "--", "echo", "-n", "hi"])
    assert _child_command(args, {"--ttl": int, "--timeout": float}) == ["echo", "-n", "hi"]
    assert args.ttl == 3 and args.endpoints.count(",") == 2 and args.write_out == "simple"


def test_global_options_may_follow_the_subcommand_as_with_etcdctl() -> None:
    parser = argparse.ArgumentParser()
    add_ctl_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ctl", "get", "k", "-w", "json", "--endpoints", "h:1"])
    assert args.write_out == "json" and args.endpoints == "h:1"
    args = parser.parse_args(["ctl", "-w", "json", "lease", "list"])
    assert args.write_out == "json" and args.command_timeout == 5.0

"""`synod serve` flags become a ServerConfig, and a bad value is refused with its flag's name."""

from __future__ import annotations

import argparse

import pytest

from synod.server.config import ConfigError
from synod.server.main import add_serve_arguments, config_from_args


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(["--name", "m1", *argv])


def test_the_log_is_fsynced_on_the_loop_unless_told_otherwise() -> None:
    assert config_from_args(parse()).wal_fsync == "loop"
    assert config_from_args(parse("--wal-fsync", "thread")).wal_fsync == "thread"
    assert config_from_args(parse("--wal-fsync", " Thread ")).wal_fsync == "thread"


def test_an_unknown_fsync_place_is_refused() -> None:
    with pytest.raises(ConfigError, match="--wal-fsync must be one of loop, thread"):
        config_from_args(parse("--wal-fsync", "sometimes"))

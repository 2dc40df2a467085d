"""`synod ctl snapshot save`: the file appears only whole and verified (temp file, fsync,
sha256 check, rename); a corrupted or broken download leaves neither the file nor its
temp; the snapshot is asked of exactly one member, as etcdctl requires.

Method: the real command functions over a fake transport whose snapshot stream yields
scripted chunks (tests/unit/client/fake.py); files in a temp dir.
"""

from __future__ import annotations

import argparse
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from synod.api.proto.etcdserverpb import rpc_pb2
from synod.client import errors
from synod.client.ctl import Output, UsageError, cmd_snapshot_save
from synod.client.sync import Client
from tests.unit.client.fake import FakeStream, FakeTransport

CHUNK_BYTES = 300


@dataclass
class SnapshotTransport(FakeTransport):
    """A fake whose snapshot streams answer with `chunks` (a ClientError breaks them)."""

    chunks: list[object] = field(default_factory=list)

    def snapshot(self, endpoint: str | None = None) -> FakeStream:
        stream = FakeStream(endpoint or self.current)
        for chunk in self.chunks:
            stream.responses.put_nowait(chunk)
        return stream


def chunks_of(data: bytes) -> list[object]:
    pieces: list[object] = []
    for offset in range(0, len(data), CHUNK_BYTES):
        blob = data[offset : offset + CHUNK_BYTES]
        remaining = len(data) - offset - len(blob)
        header = rpc_pb2.ResponseHeader(member_id=0xAB, revision=7)
        pieces.append(rpc_pb2.SnapshotResponse(header=header, remaining_bytes=remaining, blob=blob))
    return pieces


def backup_bytes() -> bytes:
    content = bytes(range(256)) * 4  # two pages
    return content + hashlib.sha256(content).digest()


def save(tmp_path: Path, chunks: list[object], endpoints: tuple[str, ...] = ("a:1",)) -> str:
    transport = SnapshotTransport(endpoint_list=endpoints, chunks=chunks)
    args = argparse.Namespace(path=str(tmp_path / "backup.db"), command_timeout=5.0)
    out = io.StringIO()
    with Client(endpoints, transport_factory=lambda: transport) as client:
        assert cmd_snapshot_save(client, args, Output("simple", out)) == 0
    return out.getvalue()


def test_a_verified_snapshot_is_renamed_into_place(tmp_path: Path) -> None:
    data = backup_bytes()
    assert save(tmp_path, chunks_of(data)) == f"Snapshot saved at {tmp_path / 'backup.db'}\n"
    assert (tmp_path / "backup.db").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.db"]


def test_a_corrupted_download_leaves_no_file(tmp_path: Path) -> None:
    data = bytearray(backup_bytes())
    data[10] ^= 0xFF
    with pytest.raises(errors.ClientError, match="sha256"):
        save(tmp_path, chunks_of(bytes(data)))
    assert list(tmp_path.iterdir()) == []


def test_a_download_broken_midway_leaves_no_file(tmp_path: Path) -> None:
    broken = [*chunks_of(backup_bytes())[:2], errors.Unavailable("connection lost")]
    with pytest.raises(errors.Unavailable):
        save(tmp_path, broken)
    assert list(tmp_path.iterdir()) == []


def test_the_snapshot_is_asked_of_one_member_only(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="one member"):
        save(tmp_path, chunks_of(backup_bytes()), endpoints=("a:1", "b:2"))

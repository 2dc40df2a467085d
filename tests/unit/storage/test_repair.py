"""`synod repair`: a damaged member's data is moved aside, never deleted, and a healthy
member's data is not touched without --force (DESIGN.md: operator mistakes must not lose
acknowledged data). Method: damage a real data directory, repair, check the result."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from storage_helpers import BOOTSTRAP, entry

from synod.storage.errors import StorageCorrupt
from synod.storage.repair import RepairRefused, repair
from synod.storage.storage import DurableStorage
from synod.storage.wal import WalOptions, segment_name

OPTIONS = WalOptions(segment_bytes_max=4096, sync_thread=False)


def make_member(data_dir: Path, slots: int = 400) -> None:
    storage = DurableStorage.open(str(data_dir), bootstrap=BOOTSTRAP, options=OPTIONS)
    for slot in range(1, slots + 1):
        storage.save(None, [entry(slot)], None, sync=True)
    storage.close()


def damage(data_dir: Path) -> None:
    assert (data_dir / segment_name(3)).exists()
    os.remove(data_dir / segment_name(2))


def test_damaged_data_is_moved_aside_and_the_member_starts_empty(tmp_path: Path) -> None:
    data_dir = tmp_path / "member"
    make_member(data_dir)
    damage(data_dir)
    with pytest.raises(StorageCorrupt):
        DurableStorage.open(str(data_dir), options=OPTIONS)
    result = repair(str(data_dir))
    assert result.moved_to == f"{data_dir}.damaged-1"
    assert "segment missing" in result.damage
    assert not data_dir.exists()
    assert (tmp_path / "member.damaged-1" / segment_name(1)).exists()
    fresh = DurableStorage.open(str(data_dir), bootstrap=BOOTSTRAP, options=OPTIONS)
    assert fresh.load()[0].entries == ()
    fresh.close()


def test_each_repair_keeps_its_own_damaged_copy(tmp_path: Path) -> None:
    data_dir = tmp_path / "member"
    for number in (1, 2):
        make_member(data_dir)
        damage(data_dir)
        assert repair(str(data_dir)).moved_to == f"{data_dir}.damaged-{number}"
    assert sorted(os.listdir(tmp_path)) == ["member.damaged-1", "member.damaged-2"]


def test_healthy_data_is_not_discarded_without_force(tmp_path: Path) -> None:
    data_dir = tmp_path / "member"
    make_member(data_dir)
    with pytest.raises(RepairRefused, match="healthy"):
        repair(str(data_dir))
    assert data_dir.exists()
    assert repair(str(data_dir), force=True).damage == "forced"
    assert not data_dir.exists()


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RepairRefused, match="not a directory"):
        repair(str(tmp_path / "nowhere"))


def test_a_running_member_is_not_repaired(tmp_path: Path) -> None:
    data_dir = tmp_path / "member"
    make_member(data_dir)
    running = DurableStorage.open(str(data_dir), options=OPTIONS)
    with pytest.raises(RepairRefused, match="in use"):
        repair(str(data_dir), force=True)
    running.close()
    assert data_dir.exists()

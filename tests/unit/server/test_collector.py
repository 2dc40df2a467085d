"""A member process runs with the collector thresholds of synod/server/collector.py.

Protects the put path's CPU budget (docs/bench.md, "What the profile showed"): with
Python's default thresholds the collector took about a sixth of a leader's CPU.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from synod.server import collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_tuning_raises_the_thresholds_and_freezes_the_startup_heap(
    restored_collector: None,
) -> None:
    """Goal: young collections every 50,000 net allocations rather than 700, and what
    existed at startup out of every collection's walk. Method: tune, then read gc back."""
    gc.unfreeze()
    collector.tune_collector()
    assert gc.get_threshold() == (50_000, 20, 100)
    assert gc.get_freeze_count() > 1000
    assert gc.isenabled()

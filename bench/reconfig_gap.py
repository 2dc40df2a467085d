"""Benchmark: how long clients stop getting writes acknowledged during membership changes.

A 3-member cluster (50 ms heartbeat, 500 ms election timeout, the integration tests'
launcher) under a closed-loop client load (3 threads putting and getting 3 keys through the
original members) goes through: add a voter and start it; add a second; remove both; kill
the leader and replace it by a new member. Printed: the longest time between two
acknowledged writes in each phase, the writes acknowledged, and the linearizability verdict
of the whole history (synod.sim.linearizability). Not part of the test suite.

    .venv/bin/python bench/reconfig_gap.py
"""

from __future__ import annotations

import itertools
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synod.sim.linearizability import check_history
from tests.integration.cluster import launch
from tests.integration.test_membership import (
    NO_NATIVE,
    Load,
    add_and_start,
    caught_up,
    remove,
    replace_dead,
    wait_until,
)

CATCH_UP_TIMEOUT_S = 60.0


def gap_s(load: Load, since_ns: int, until_ns: int) -> float:
    """The longest stretch in [since, until] without an acknowledged write."""
    with load.lock:
        times = sorted(t for t in load.acked.values() if since_ns <= t <= until_ns)
    points = [since_ns, *times, until_ns]
    return max((b - a for a, b in itertools.pairwise(points)), default=0) / 1e9


def phase(load: Load, name: str, action: Callable[[], None]) -> None:
    started = time.monotonic_ns()
    action()
    time.sleep(0.5)
    ended = time.monotonic_ns()
    seconds = (ended - started) / 1e9
    print(f"{name:<36} {seconds:6.2f} s   longest write gap {gap_s(load, started, ended):5.2f} s")


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="synod-reconfig-"))
    cluster = launch(root, token="reconfig-bench", extra_flags=NO_NATIVE)
    load = Load(cluster.endpoints)
    added: list[tuple[int, int]] = []
    try:
        load.start()
        time.sleep(1.0)

        def grow(name: str) -> None:
            index, member_id = add_and_start(cluster, 0, name)
            leader = cluster.wait_leader()
            wait_until(lambda: caught_up(cluster, index, leader), CATCH_UP_TIMEOUT_S, name)
            added.append((index, member_id))

        def shrink() -> None:
            for index, member_id in added:
                remove(cluster, 1, member_id)
                cluster.members[index].removed = True
                cluster.wait_exit(index)

        def replace_leader() -> None:
            replace_dead(cluster, cluster.wait_leader(), "m6")

        phase(load, "add voter m3 (3 -> 4), catch up", lambda: grow("m3"))
        phase(load, "add voter m4 (4 -> 5), catch up", lambda: grow("m4"))
        phase(load, "remove m3 and m4 (5 -> 3)", shrink)
        phase(load, "kill the leader, replace it", replace_leader)
    finally:
        load.finish()
        cluster.stop_all()
    verdict = check_history(load.operations)
    print(
        f"writes acknowledged {len(load.acked)}, operations {len(load.operations)}, "
        f"linearizable: {verdict.ok}{'' if verdict.ok else ' ' + verdict.explanation}"
    )
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""One chaos run: start a cluster behind proxies, run the workloads, let the nemesis inject
faults for the asked duration, heal, wait for recovery, then check linearizability of the
register history, that no acknowledged write is missing, that every member converged, and
the lock's fencing; return a report with the fault timeline. Processes and listeners are
stopped whatever happens.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from synod.chaos import checks
from synod.chaos.cluster import ChaosCluster
from synod.chaos.nemesis import FAULTS, Nemesis, Timeline
from synod.chaos.workload import LockClient, Recorder, RegisterClient
from synod.sim.linearizability import check_history

RECOVERY_WORK_S = 2.0  # clients keep going after the heal: progress proves liveness
CLIENT_JOIN_S = 15.0


@dataclass(frozen=True)
class ChaosOptions:
    members: int = 3
    duration_s: float = 30.0
    clients: int = 4
    lockers: int = 2
    keys: int = 4
    seed: int = 1
    faults: tuple[str, ...] = FAULTS
    root: Path | None = None  # None: a temp dir, removed after a passing run
    extra_env: dict[str, str] = field(default_factory=dict)


@dataclass
class ChaosReport:
    ok: bool
    problems: list[str]
    timeline: str
    counts: dict[str, int]
    injected: dict[str, int]
    operations: int
    linearizability: str
    elapsed_s: float
    root: Path

    def render(self) -> str:
        lines = [
            f"synod chaos: {'PASS' if self.ok else 'FAIL'} in {self.elapsed_s:.1f}s "
            f"(logs and data under {self.root})",
            "fault timeline:",
            self.timeline or "  (no faults)",
            "faults injected: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.injected.items())),
            "client outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())),
            f"history: {self.operations} register operations; {self.linearizability}",
        ]
        lines.extend(f"PROBLEM: {problem}" for problem in self.problems)
        return "\n".join(lines)


def run_chaos(options: ChaosOptions) -> ChaosReport:
    started = time.monotonic()
    root = options.root or Path(tempfile.mkdtemp(prefix="synod-chaos-"))
    cluster = ChaosCluster(root, options.members, options.seed, extra_env=options.extra_env)
    timeline = Timeline()
    recorder = Recorder()
    stop_clients = threading.Event()
    threads: list[threading.Thread] = []
    nemesis = Nemesis(cluster, list(options.faults), options.seed, timeline)
    try:
        cluster.start()
        leader = cluster.wait_leader()
        timeline.note(f"cluster of {options.members} up, leader {leader}")
        threads = _start_clients(options, cluster.endpoints, recorder, stop_clients)
        nemesis.run(options.duration_s, threading.Event())
        cluster.heal()
        timeline.note("healed everything")
        leader = cluster.wait_leader()
        timeline.note(f"recovered, leader {leader}")
        before = sum(recorder.counts.values())
        time.sleep(RECOVERY_WORK_S)
        progress = sum(recorder.counts.values()) - before
        stop_clients.set()
        for thread in threads:
            thread.join(CLIENT_JOIN_S)
        problems = [] if progress > 0 else ["no client made progress after the heal"]
        problems.extend(f"client {t.name} did not stop" for t in threads if t.is_alive())
        problems.extend(_check(cluster, recorder, timeline))
        operations = recorder.history.operations()
        verdict = check_history(operations)
        if not verdict.ok:
            kind = "inconclusive" if verdict.inconclusive else "NOT LINEARIZABLE"
            problems.append(f"{kind}: {verdict.explanation}")
        timeline.note("checks done")
    finally:
        stop_clients.set()
        cluster.stop()
    ok = not problems
    report = ChaosReport(
        ok, problems, timeline.render(), dict(recorder.counts), dict(nemesis.injected),
        len(operations), verdict.explanation.splitlines()[0], time.monotonic() - started, root,
    )  # fmt: skip
    if ok and options.root is None:
        shutil.rmtree(root, ignore_errors=True)
    return report


def _start_clients(
    options: ChaosOptions, endpoints: list[str], recorder: Recorder, stop: threading.Event
) -> list[threading.Thread]:
    threads = []
    for index in range(options.clients):
        client = RegisterClient(
            index, endpoints, recorder, options.keys, options.seed * 1000 + index
        )
        threads.append(threading.Thread(target=client.run, args=(stop,), name=f"register-{index}"))
    for index in range(options.lockers):
        locker = LockClient(100 + index, endpoints, recorder, options.seed * 1000 + 100 + index)
        threads.append(threading.Thread(target=locker.run, args=(stop,), name=f"locker-{index}"))
    for thread in threads:
        thread.daemon = True
        thread.start()
    return threads


def _check(cluster: ChaosCluster, recorder: Recorder, timeline: Timeline) -> list[str]:
    revision = checks.sync_revision(cluster)
    checks.wait_applied(cluster, revision)
    timeline.note(f"every member applied revision {revision}")
    state = checks.check_state(cluster, recorder.acked, revision)
    timeline.note(
        f"compared {state.events} changes on {cluster.size} members, "
        f"{len(recorder.acked)} acknowledged writes, {len(recorder.holdings)} lock holdings"
    )
    return state.problems + checks.check_holdings(recorder.holdings)

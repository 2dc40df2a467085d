"""Directed chaos scenarios: one fault placed where a known bug must show, so that a test can
prove the harness catches it (and that the correct server passes the same scenario).

`stale_read_scenario`: the leader is partitioned away while one client keeps reading from it
and another writes through the new leader on the majority side. A member that serves
linearizable reads from local state (SYNOD_UNSAFE_LOCAL_READS=1) answers with the old value
after the new one was acknowledged: the history is not linearizable. With the read index,
the cut-off member cannot confirm its leadership and the reads fail instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from synod.chaos.cluster import ChaosCluster
from synod.chaos.nemesis import Timeline
from synod.chaos.workload import REGISTER_PREFIX, Recorder, RegisterClient
from synod.sim.linearizability import CheckResult, check_history

NEW_LEADER_TIMEOUT_S = 20.0
STALE_READS = 5
WRITE_ATTEMPTS_MAX = 50


@dataclass
class ScenarioResult:
    verdict: CheckResult
    timeline: str
    reads_answered: int

    def render(self) -> str:
        return f"fault timeline:\n{self.timeline}\nverdict: {self.verdict.explanation}"


def stale_read_scenario(root: Path, unsafe_local_reads: bool, seed: int = 1) -> ScenarioResult:
    env = {"SYNOD_UNSAFE_LOCAL_READS": "1"} if unsafe_local_reads else {}
    cluster = ChaosCluster(root, 3, seed, extra_env=env)
    timeline = Timeline()
    recorder = Recorder()
    key = f"{REGISTER_PREFIX}0"
    try:
        cluster.start()
        old_leader = cluster.wait_leader()
        timeline.note(f"cluster up, leader {old_leader}; unsafe local reads {unsafe_local_reads}")
        old = RegisterClient(0, [cluster.member(old_leader).endpoint], recorder, 1, seed)
        _write(old, key, timeline)
        cluster.proxies.isolate(old_leader)
        timeline.note(f"partition: {old_leader} (old leader) isolated")
        new_leader = _wait_new_leader(cluster, old_leader)
        timeline.note(f"{new_leader} leads the majority")
        writer = RegisterClient(1, [cluster.member(new_leader).endpoint], recorder, 1, seed + 1)
        _write(writer, key, timeline)
        reader = RegisterClient(2, [cluster.member(old_leader).endpoint], recorder, 1, seed + 2)
        answered = sum(1 for _ in range(STALE_READS) if reader.get([key]))
        timeline.note(f"{answered} of {STALE_READS} reads through {old_leader} answered")
        cluster.heal()
        timeline.note(f"healed, leader {cluster.wait_leader()}")
    finally:
        cluster.stop()
    verdict = check_history(recorder.history.operations())
    timeline.note("history checked")
    return ScenarioResult(verdict, timeline.render(), answered)


def _write(client: RegisterClient, key: str, timeline: Timeline) -> None:
    """Put a fresh value until one is acknowledged."""
    for _ in range(WRITE_ATTEMPTS_MAX):
        if client.put([(key, client._fresh())]):
            timeline.note(f"client {client.client} wrote {key} (acknowledged)")
            return
        time.sleep(0.1)
    raise AssertionError(f"client {client.client} could not write {key}")


def _wait_new_leader(cluster: ChaosCluster, old_leader: str) -> str:
    """The leader the members other than `old_leader` agree on, once there is one."""
    ids = {member_id: name for name, member_id in cluster.member_ids.items()}
    others = [name for name in cluster.names if name != old_leader]
    deadline = time.monotonic() + NEW_LEADER_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            leaders = {cluster.status(name).leader for name in others}
        except grpc.RpcError:
            leaders = set()
        if len(leaders) == 1:
            leader = ids.get(leaders.pop())
            if leader is not None and leader != old_leader:
                return leader
        time.sleep(0.05)
    raise AssertionError("the majority elected no new leader")

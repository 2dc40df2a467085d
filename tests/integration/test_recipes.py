"""The recipes on a real three-member cluster, under contention and faults.

Goal: the guarantees docs/recipes/*.md promise hold against real processes and real
failures: mutual exclusion checked by fencing tokens and a shared log (contention from
several processes, a holder killed with SIGKILL, a holder paused with SIGSTOP past its
lease and refused by the fencing check when it resumes, the cluster's leader killed while
locks change hands); elections with one leader at a time and increasing tokens; barriers
that hold everyone until n arrive and until all leave; a semaphore's bound; a queue that
loses nothing, redelivers after the visibility timeout and dead-letters after N
deliveries; a broadcast seen in the same order by every subscriber, resumable.

Method: one module-scoped cluster (tests/integration/cluster.py), short TTLs (2 s, the
minimum), worker processes started from this module (`python -m
tests.integration.test_recipes <role> ...`) where separate processes matter, threads
elsewhere. Each test uses its own names, so the order of tests does not matter.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from synod.client import Client, txn
from synod.recipes import (
    Broadcast,
    DoubleBarrier,
    Election,
    FencingGuard,
    Lock,
    Queue,
    QueueEmpty,
    Semaphore,
    StaleToken,
)
from tests.integration.cluster import SynodCluster, launched

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TTL_S = 2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SynodCluster]:
    with launched(tmp_path_factory.mktemp("recipes-cluster"), token="recipes") as running:
        yield running


@pytest.fixture
def client(cluster: SynodCluster) -> Iterator[Client]:
    with Client(cluster.endpoints, timeout_s=5.0) as connected:
        yield connected


# ---------------------------------------------------------------- shared helpers


class FileFence:
    """A downstream resource shared by processes: it remembers the highest fencing token
    in a file and refuses lower ones (what docs/recipes/lock.md asks of a resource)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, token: int, line: str) -> None:
        with open(self.path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            lines = handle.read().splitlines()
            highest = max((int(item.split()[0]) for item in lines), default=0)
            if token < highest:
                raise StaleToken(f"token {token} < {highest}")
            handle.write(f"{token} {line}\n")
            handle.flush()


def append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def check_exclusive(lines: list[str]) -> list[int]:
    """The shared log alternates acquire/release of one holder at a time with increasing
    tokens; the tokens in order."""
    tokens: list[int] = []
    holder: tuple[str, str] | None = None
    for line in lines:
        verb, token, owner = line.split()
        if verb == "acquire":
            assert holder is None, f"two holders at once: {holder} and {owner}@{token}"
            holder = (token, owner)
            assert not tokens or int(token) > tokens[-1], f"token went backwards: {line}"
            tokens.append(int(token))
        else:
            assert holder == (token, owner), f"release by a non-holder: {line}"
            holder = None
    return tokens


def worker(*args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.test_recipes", *args],
        cwd=ROOT,
        stdin=stdin,
        stdout=subprocess.PIPE,
        text=True,
    )


def read_line(process: subprocess.Popen[str], timeout_s: float = 20.0) -> str:
    assert process.stdout is not None
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout_s)
    assert result and result[0], f"worker said nothing in {timeout_s}s"
    return result[0].strip()


# ---------------------------------------------------------------- locks


def test_lock_excludes_contending_processes_with_increasing_fencing_tokens(
    cluster: SynodCluster, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    endpoints = ",".join(cluster.endpoints)
    workers = [worker("lock-loop", endpoints, "locks/contended", str(log), "4") for _ in range(5)]
    for process in workers:
        assert process.wait(timeout=60) == 0
    tokens = check_exclusive(log.read_text().splitlines())
    assert len(tokens) == 20


def test_lock_of_a_killed_holder_frees_after_its_ttl_and_never_earlier(
    cluster: SynodCluster, client: Client
) -> None:
    holder = worker("lock-hold", ",".join(cluster.endpoints), "locks/killed")
    try:
        old_token = int(read_line(holder))
        assert not Lock(client, "locks/killed", ttl_s=TTL_S).acquire(timeout_s=0.5)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        started = time.monotonic()
        with Lock(client, "locks/killed", ttl_s=TTL_S) as lock:
            waited_s = time.monotonic() - started
            assert lock.token > old_token
        assert waited_s < TTL_S + 3.0, f"lock freed only after {waited_s:.1f}s"
    finally:
        holder.kill()
        holder.wait()


def test_paused_holder_resuming_after_its_lease_expired_is_refused_by_fencing(
    cluster: SynodCluster, client: Client, tmp_path: Path
) -> None:
    fence = FileFence(tmp_path / "resource")
    holder = worker(
        "lock-paused",
        ",".join(cluster.endpoints),
        "locks/paused",
        str(fence.path),
        stdin=subprocess.PIPE,
    )
    try:
        old_token = int(read_line(holder))
        holder.send_signal(signal.SIGSTOP)
        with Lock(client, "locks/paused", ttl_s=TTL_S) as lock:
            assert lock.token > old_token
            fence.write(lock.token, "new holder")
            client.txn([lock.guard()], [txn.put("locks/paused-data", "new")], [])
        holder.send_signal(signal.SIGCONT)
        assert holder.stdin is not None
        holder.stdin.write("write\n")
        holder.stdin.flush()
        assert read_line(holder) == "refused by file refused by synod"
        assert client.get_one("locks/paused-data").value == b"new"  # type: ignore[union-attr]
    finally:
        holder.send_signal(signal.SIGCONT)
        holder.kill()
        holder.wait()


def test_lock_stays_exclusive_while_the_leader_is_killed(
    cluster: SynodCluster, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    guard = FencingGuard()
    failures: list[BaseException] = []
    rounds = 6

    def contend(name: str) -> None:
        try:
            with Client(cluster.endpoints, timeout_s=8.0) as own:
                for _ in range(rounds):
                    with Lock(own, "locks/leader-kill", ttl_s=TTL_S) as lock:
                        guard.check(lock.token)
                        append(log, f"acquire {lock.token} {name}")
                        time.sleep(0.05)
                        append(log, f"release {lock.token} {name}")
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=contend, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    leader = cluster.wait_leader()
    cluster.kill(leader)
    for thread in threads:
        thread.join(60)
    cluster.start(leader)
    cluster.wait_leader()
    assert not failures, failures
    assert len(check_exclusive(log.read_text().splitlines())) == 4 * rounds


def test_lock_refuses_reentry_with_a_clear_error(client: Client) -> None:
    from synod.recipes import LockReentryError

    with Lock(client, "locks/reentry", ttl_s=TTL_S) as lock:
        with pytest.raises(LockReentryError, match="already held"):
            lock.acquire()
        with pytest.raises(LockReentryError, match="this thread; locks are not reentrant"):
            Lock(client, "locks/reentry", ttl_s=TTL_S).acquire()
        assert lock.is_held()
    assert not lock.is_held()
    with Lock(client, "locks/reentry", ttl_s=TTL_S) as again:  # released: free again
        assert again.token > 0


# ---------------------------------------------------------------- election


def test_election_has_one_leader_at_a_time_and_observers_see_every_change(
    cluster: SynodCluster, client: Client
) -> None:
    terms: list[tuple[int, str, str]] = []
    seen: list[int] = []
    guard = FencingGuard()
    observer_ready = threading.Event()

    def observe() -> None:
        with Client(cluster.endpoints) as own:
            for leader in Election(own, "elections/a").observe(timeout_s=3.0):
                observer_ready.set()
                if leader is not None:
                    seen.append(leader.token)

    def candidate(name: str) -> None:
        with Client(cluster.endpoints) as own:
            election = Election(own, "elections/a", ttl_s=TTL_S)
            token = election.campaign(name)
            guard.check(token)
            terms.append((token, "in", name))
            election.proclaim(f"{name}-proclaimed")
            assert election.is_leader()
            time.sleep(0.1)
            terms.append((token, "out", name))
            election.resign()

    watcher = threading.Thread(target=observe)
    watcher.start()
    observer_ready.wait(10)
    threads = [threading.Thread(target=candidate, args=(f"c{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    watcher.join(30)
    assert [kind for _, kind, _ in terms] == ["in", "out"] * 4
    tokens = [token for token, kind, _ in terms if kind == "in"]
    assert tokens == sorted(tokens)
    assert set(tokens) <= set(seen) and seen == sorted(seen)
    assert Election(client, "elections/a").leader() is None


# ---------------------------------------------------------------- barriers, semaphore


def test_double_barrier_holds_until_n_enter_and_until_all_leave(cluster: SynodCluster) -> None:
    n = 4
    events: list[tuple[str, int]] = []
    lock = threading.Lock()

    def participant(index: int) -> None:
        with Client(cluster.endpoints) as own:
            time.sleep(0.1 * index)
            with lock:
                events.append(("arrive", index))
            with DoubleBarrier(own, "barriers/double", n, ttl_s=TTL_S, timeout_s=20):
                with lock:
                    events.append(("entered", index))
                time.sleep(0.1 * (n - index))
                with lock:
                    events.append(("leaving", index))
            with lock:
                events.append(("left", index))

    threads = [threading.Thread(target=participant, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    kinds = [kind for kind, _ in events]
    assert kinds.count("left") == n
    last_arrival = max(i for i, kind in enumerate(kinds) if kind == "arrive")
    first_entry = min(i for i, kind in enumerate(kinds) if kind == "entered")
    assert first_entry > last_arrival
    last_leaving = max(i for i, kind in enumerate(kinds) if kind == "leaving")
    first_left = min(i for i, kind in enumerate(kinds) if kind == "left")
    assert first_left > last_leaving


def test_semaphore_admits_at_most_n_holders(cluster: SynodCluster) -> None:
    n = 2
    inside: list[int] = []
    peak: list[int] = []
    lock = threading.Lock()

    def holder() -> None:
        with Client(cluster.endpoints) as own:
            for _ in range(2):
                with Semaphore(own, "semaphores/a", n, ttl_s=TTL_S):
                    with lock:
                        inside.append(1)
                        peak.append(len(inside))
                    time.sleep(0.1)
                    with lock:
                        inside.pop()

    threads = [threading.Thread(target=holder) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(peak) == 10
    assert max(peak) == n


# ---------------------------------------------------------------- queue


def test_queue_loses_nothing_under_concurrent_consumers_and_redelivers_unacked(
    cluster: SynodCluster, client: Client
) -> None:
    queue = Queue(client, "queues/work", visibility_s=TTL_S, max_deliveries=3)
    payloads = {f"m{i}".encode() for i in range(24)}
    for payload in sorted(payloads):
        queue.push(payload)
    acked: list[bytes] = []
    dropped: list[bytes] = []
    lock = threading.Lock()

    def consume(index: int) -> None:
        with Client(cluster.endpoints) as own:
            mine = Queue(own, "queues/work", visibility_s=TTL_S, max_deliveries=3)
            while True:
                try:
                    message = mine.pop(timeout_s=TTL_S + 2.0)
                except QueueEmpty:
                    return
                # Consumer 0 "crashes" on its first two messages: it never acks them.
                with lock:
                    if index == 0 and len(dropped) < 2 and message.deliveries == 1:
                        dropped.append(message.payload)
                        continue
                mine.ack(message)
                with lock:
                    acked.append(message.payload)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert set(acked) == payloads
    assert len(dropped) == 2 and set(dropped) <= set(acked)
    assert queue.size() == 0 and queue.in_flight() == 0


def test_queue_priority_order_and_dead_letter_after_max_deliveries(client: Client) -> None:
    queue = Queue(client, "queues/poison", visibility_s=TTL_S, max_deliveries=2)
    queue.push("low", priority=5)
    queue.push("first")
    queue.push("second")
    assert [queue.pop(0).payload for _ in range(3)] == [b"first", b"second", b"low"]
    started = time.monotonic()
    again = queue.pop(timeout_s=10)
    assert again.payload == b"first" and again.deliveries == 2
    assert time.monotonic() - started >= TTL_S - 0.5
    queue.ack(queue.pop(timeout_s=10))  # "second", redelivered
    queue.ack(queue.pop(timeout_s=10))  # "low", redelivered
    with pytest.raises(QueueEmpty):
        queue.pop(timeout_s=TTL_S + 2.0)  # "first" exhausts its deliveries
    assert [m.payload for m in queue.dead_letters()] == [b"first"]
    assert queue.dead_letters()[0].deliveries == 2


# ---------------------------------------------------------------- broadcast


def test_broadcast_subscribers_see_one_order_and_resume(
    cluster: SynodCluster, client: Client
) -> None:
    channel = Broadcast(client, "broadcast/a")
    start = channel.last_position()
    received: dict[int, list[tuple[int, bytes]]] = {0: [], 1: [], 2: []}
    total = 20

    def subscribe(index: int) -> None:
        with (
            Client(cluster.endpoints) as own,
            Broadcast(own, "broadcast/a").subscribe(after=start) as subscription,
        ):
            while len(received[index]) < total:
                message = subscription.get(10)
                assert message is not None
                received[index].append((message.position, message.payload))
                if index == 2 and len(received[index]) == 5:
                    break

    def publish(name: str) -> None:
        with Client(cluster.endpoints) as own:
            for i in range(total // 2):
                Broadcast(own, "broadcast/a").publish(f"{name}{i}")

    subscribers = [threading.Thread(target=subscribe, args=(i,)) for i in range(3)]
    for thread in subscribers:
        thread.start()
    publishers = [threading.Thread(target=publish, args=(name,)) for name in "ab"]
    for thread in publishers:
        thread.start()
    for thread in publishers + subscribers:
        thread.join(30)
    assert received[0] == received[1] and len(received[0]) == total
    positions = [position for position, _ in received[0]]
    assert positions == sorted(positions)
    # Subscriber 2 stopped after 5 and resumes from its last position.
    with channel.subscribe(after=received[2][-1][0]) as resumed:
        rest = [resumed.get(10) for _ in range(total - 5)]
    assert received[2] + [(m.position, m.payload) for m in rest if m] == received[0]


# ---------------------------------------------------------------- worker processes


def _lock_loop(endpoints: str, name: str, log: str, rounds: str) -> None:
    with Client(endpoints) as client:
        for _ in range(int(rounds)):
            with Lock(client, name, ttl_s=TTL_S) as lock:
                append(Path(log), f"acquire {lock.token} {os.getpid()}")
                time.sleep(0.02)
                append(Path(log), f"release {lock.token} {os.getpid()}")


def _lock_hold(endpoints: str, name: str) -> None:
    with Client(endpoints) as client:
        lock = Lock(client, name, ttl_s=TTL_S)
        lock.acquire()
        print(lock.token, flush=True)
        time.sleep(120)


def _lock_paused(endpoints: str, name: str, resource: str) -> None:
    with Client(endpoints) as client:
        lock = Lock(client, name, ttl_s=TTL_S)
        lock.acquire()
        print(lock.token, flush=True)
        sys.stdin.readline()  # paused here by SIGSTOP; told to write after SIGCONT
        outcome = []
        try:
            FileFence(Path(resource)).write(lock.token, "stale holder")
            outcome.append("accepted by file")
        except StaleToken:
            outcome.append("refused by file")
        with contextlib.suppress(Exception):
            written = client.txn(
                [txn.create_revision(lock.key) == lock.token],
                [txn.put("locks/paused-data", "stale")],
                [],
            )
            outcome.append("refused by synod" if not written.succeeded else "accepted by synod")
        print(" ".join(outcome), flush=True)


if __name__ == "__main__":
    roles: dict[str, Callable[..., None]] = {
        "lock-loop": _lock_loop,
        "lock-hold": _lock_hold,
        "lock-paused": _lock_paused,
    }
    roles[sys.argv[1]](*sys.argv[2:])

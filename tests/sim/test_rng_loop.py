"""Seeded streams and the virtual clock make runs reproducible (STYLE.md: one integer seed,
named child streams, integer-microsecond virtual time on a heap)."""

from __future__ import annotations

from synod.sim.loop import EventLoop
from synod.sim.rng import SeededStreams


def test_a_stream_depends_only_on_seed_and_name() -> None:
    first, second = SeededStreams(5), SeededStreams(5)
    first.stream("network").random()  # an extra draw elsewhere...
    a = [first.stream("client-0").random() for _ in range(5)]
    b = [second.stream("client-0").random() for _ in range(5)]
    assert a == b, "...does not shift another stream"
    assert SeededStreams(6).stream("client-0").random() != a[0]


def test_asking_twice_returns_the_same_stream() -> None:
    streams = SeededStreams(1)
    assert streams.stream("x") is streams.stream("x")


def test_events_fire_in_time_order_then_scheduling_order() -> None:
    loop = EventLoop()
    fired: list[str] = []
    loop.schedule(20, "late", lambda: fired.append("late"))
    loop.schedule(10, "first", lambda: fired.append("first"))
    loop.schedule(10, "second", lambda: fired.append("second"))
    while loop.run_one():
        pass
    assert fired == ["first", "second", "late"]
    assert loop.now_us == 20
    assert loop.events_fired == 3


def test_equal_schedules_have_equal_digests_and_traces() -> None:
    def run(label: str) -> tuple[str, list[str]]:
        loop = EventLoop()
        loop.schedule(5, label, lambda: loop.note("did something"))
        loop.run_one()
        return loop.digest(), loop.trace()

    assert run("a") == run("a")
    assert run("a")[0] != run("b")[0]


def test_quiet_events_count_in_the_digest_but_not_in_the_trace() -> None:
    loud, quiet = EventLoop(), EventLoop(quiet_labels=("tick",))
    for loop in (loud, quiet):
        loop.schedule(1, "tick 1", lambda: None)
        loop.schedule(2, "deliver", lambda: None)
        while loop.run_one():
            pass
    assert loud.digest() == quiet.digest()
    assert len(loud.trace()) == 2
    assert [line.split()[-1] for line in quiet.trace()] == ["deliver"]

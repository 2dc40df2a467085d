"""The virtual network delivers, loses, duplicates, delays and cuts messages as configured.

Method: drive a `Network` on an `EventLoop` with a recording receiver and count what arrives.
Protects the fault models of DESIGN.md's "sim" layer and STYLE.md's simulation section.
"""

from __future__ import annotations

import random

from synod.paxos.messages import Message, PreVote
from synod.paxos.types import Ballot, NodeId, Slot
from synod.sim.loop import EventLoop
from synod.sim.network import Network, NetworkKnobs

A, B, C = NodeId(1), NodeId(2), NodeId(3)


def _message(source: NodeId, destination: NodeId, round_: int = 1) -> PreVote:
    return PreVote(source, destination, Ballot(round_, source), Slot(0))


def _network(knobs: NetworkKnobs, seed: int = 7) -> tuple[EventLoop, Network, list[Message]]:
    loop = EventLoop()
    received: list[Message] = []
    network = Network(loop, random.Random(seed), (A, B, C), knobs, received.append)
    return loop, network, received


def _drain(loop: EventLoop) -> None:
    while loop.run_one():
        pass


def test_calm_network_delivers_everything_within_the_delay_bounds() -> None:
    loop, network, received = _network(NetworkKnobs(delay_us_min=100, delay_us_max=200))
    network.send([_message(A, B, round_) for round_ in range(1, 101)])
    _drain(loop)
    assert len(received) == 100
    assert 100 <= loop.now_us <= 200


def test_loss_rate_drops_about_that_fraction() -> None:
    loop, network, received = _network(NetworkKnobs(loss_rate=0.3))
    network.send([_message(A, B) for _ in range(2_000)])
    _drain(loop)
    assert 1_200 < len(received) < 1_600
    assert network.counters["lost"] == 2_000 - len(received)


def test_duplication_delivers_extra_copies() -> None:
    loop, network, received = _network(NetworkKnobs(duplicate_rate=0.5))
    network.send([_message(A, B) for _ in range(1_000)])
    _drain(loop)
    assert len(received) == 1_000 + network.counters["duplicated"]
    assert network.counters["duplicated"] > 300


def test_jitter_and_reordering_change_the_arrival_order() -> None:
    knobs = NetworkKnobs(
        delay_us_min=10, delay_us_max=1_000, reorder_rate=0.2, reorder_delay_us_max=10_000
    )
    loop, network, received = _network(knobs)
    network.send([_message(A, B, round_) for round_ in range(1, 201)])
    _drain(loop)
    rounds = [message.ballot.round for message in received]
    assert sorted(rounds) == list(range(1, 201))
    assert rounds != sorted(rounds)


def test_one_way_cut_drops_only_its_direction() -> None:
    loop, network, received = _network(NetworkKnobs())
    network.cut(A, B)
    network.send([_message(A, B), _message(B, A), _message(A, C)])
    _drain(loop)
    assert sorted((message.src, message.dst) for message in received) == [(A, C), (B, A)]


def test_symmetric_partition_drops_both_directions_until_healed() -> None:
    loop, network, received = _network(NetworkKnobs())
    network.cut_between([A], [B, C])
    network.send([_message(A, B), _message(B, A), _message(C, A), _message(B, C)])
    _drain(loop)
    assert [(message.src, message.dst) for message in received] == [(B, C)]
    network.heal_partitions()
    network.send([_message(A, B)])
    _drain(loop)
    assert len(received) == 2


def test_a_link_cut_while_a_message_is_in_flight_loses_it() -> None:
    loop, network, received = _network(NetworkKnobs(delay_us_min=1_000, delay_us_max=1_000))
    network.send([_message(A, B)])
    loop.schedule(500, "cut", lambda: network.cut(A, B))
    _drain(loop)
    assert received == []


def test_clogged_link_holds_messages_until_the_clog_ends() -> None:
    loop, network, received = _network(NetworkKnobs(delay_us_min=100, delay_us_max=100))
    network.clog(A, B, until_us=50_000)
    network.send([_message(A, B), _message(A, C)])
    arrivals: list[int] = []
    while loop.run_one():
        arrivals.append(loop.now_us)
    assert [(message.src, message.dst) for message in received] == [(A, C), (A, B)]
    assert arrivals == [100, 50_100]


def test_same_seed_same_deliveries() -> None:
    knobs = NetworkKnobs(
        loss_rate=0.1,
        duplicate_rate=0.1,
        delay_us_max=5_000,
        reorder_rate=0.1,
        reorder_delay_us_max=5_000,
    )
    runs = []
    for _ in range(2):
        loop, network, received = _network(knobs, seed=42)
        network.send([_message(A, B, round_) for round_ in range(1, 301)])
        _drain(loop)
        runs.append(([message.ballot.round for message in received], loop.digest()))
    assert runs[0] == runs[1]

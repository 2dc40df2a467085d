"""Peer transport on loopback: batches arrive whole, garbage closes only its connection,
and a restarted peer is reconnected."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import uvloop

from synod.transport import peer
from synod.transport.codec import encode_frame
from synod.transport.peer import PeerTransport, query_cluster


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def wait_until(condition: Any, seconds: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def make_pair() -> tuple[PeerTransport, PeerTransport, list[Any], list[Any]]:
    port_a, port_b = free_port(), free_port()
    got_a: list[Any] = []
    got_b: list[Any] = []
    a = PeerTransport(
        1,
        7,
        ("127.0.0.1", port_a),
        {2: ("127.0.0.1", port_b)},
        lambda s, items: got_a.append((s, items)),
    )
    b = PeerTransport(
        2,
        7,
        ("127.0.0.1", port_b),
        {1: ("127.0.0.1", port_a)},
        lambda s, items: got_b.append((s, items)),
    )
    return a, b, got_a, got_b


def test_items_sent_in_one_iteration_arrive_in_one_frame() -> None:
    async def scenario() -> None:
        a, b, got_a, got_b = make_pair()
        await a.start()
        await b.start()
        await wait_until(lambda: a.connected(2))
        a.send(2, [["x", 1]])
        a.send(2, [["y", 2]])
        await wait_until(lambda: got_b)
        assert got_b == [(1, [["x", 1], ["y", 2]])]
        b.send(1, [[b"reply"]])
        await wait_until(lambda: got_a)
        assert got_a == [(2, [[b"reply"]])]
        await a.stop()
        await b.stop()

    asyncio.run(scenario())


def test_garbage_closes_only_that_connection() -> None:
    async def scenario() -> None:
        a, b, _, got_b = make_pair()
        await a.start()
        await b.start()
        _, writer = await asyncio.open_connection(*b.listen)
        writer.write(encode_frame(["not-a-hello"]))
        await writer.drain()
        await wait_until(lambda: a.connected(2))
        a.send(2, [[1]])
        await wait_until(lambda: got_b)
        assert got_b == [(1, [[1]])]
        writer.close()
        await a.stop()
        await b.stop()

    asyncio.run(scenario())


def test_hello_from_another_cluster_is_refused() -> None:
    async def scenario() -> None:
        port = free_port()
        got: list[Any] = []
        b = PeerTransport(2, 7, ("127.0.0.1", port), {}, lambda s, i: got.append(i))
        await b.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(encode_frame(["synod-peer-1", 8, 1]) + encode_frame([[1]]))
        await writer.drain()
        assert await reader.read() == b"", "the connection is closed"
        assert got == []
        await b.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("runner", ["asyncio", "uvloop"])
def test_restarted_peer_is_reconnected(runner: str) -> None:
    """Under both loops (uvloop reports writes to a closed peer as RuntimeError), a sender
    whose peer went away keeps its link task alive and reconnects when the peer is back."""

    async def scenario() -> None:
        a, b, _, got_b = make_pair()
        await a.start()
        await b.start()
        await wait_until(lambda: a.connected(2))
        await b.stop()
        for attempt in range(20):
            a.send(2, [[attempt]])
            await asyncio.sleep(0.01)
        b2 = PeerTransport(2, 7, b.listen, {1: a.listen}, lambda s, items: got_b.append(items))
        await b2.start()
        for attempt in range(300):
            a.send(2, [[attempt]])
            await asyncio.sleep(0.02)
            if got_b:
                break
        assert got_b, "messages flow again after the peer restarted"
        await a.stop()
        await b2.stop()

    if runner == "uvloop":
        uvloop.run(scenario())
    else:
        asyncio.run(scenario())


def test_address_book_follows_set_peers() -> None:
    """A peer added while running is connected and reached; a dropped one is not sent to;
    a re-addressed one is reached at its new address."""

    async def scenario() -> None:
        port_a, port_b, port_c = free_port(), free_port(), free_port()
        got_b: list[Any] = []
        got_c: list[Any] = []
        a = PeerTransport(1, 7, ("127.0.0.1", port_a), {}, lambda s, i: None)
        b = PeerTransport(2, 7, ("127.0.0.1", port_b), {}, lambda s, i: got_b.append(i))
        c = PeerTransport(3, 7, ("127.0.0.1", port_c), {}, lambda s, i: got_c.append(i))
        for transport in (a, b, c):
            await transport.start()
        a.send(2, [["lost"]])  # unknown peer: dropped
        a.set_peers({2: ("127.0.0.1", port_b)})
        await wait_until(lambda: a.connected(2))
        a.send(2, [["hello"]])
        await wait_until(lambda: got_b)
        assert got_b == [[["hello"]]]
        a.set_peers({2: ("127.0.0.1", port_c)})  # member 2 now listens where c does
        await wait_until(lambda: a.connected(2))
        a.send(2, [["moved"]])
        await wait_until(lambda: got_c)
        assert got_c == [[["moved"]]]
        a.set_peers({})
        assert a.peer_ids == ()
        assert not a.connected(2)
        for transport in (a, b, c):
            await transport.stop()

    asyncio.run(scenario())


def test_join_query_is_answered_without_a_cluster_id() -> None:
    async def scenario() -> None:
        a, _, _, _ = make_pair()
        a.on_join_query = lambda url: ["cluster", url]
        await a.start()
        answer = await query_cluster(*a.listen, "http://joiner:1")
        assert answer == ["cluster", "http://joiner:1"]
        await a.stop()

    asyncio.run(scenario())


def test_a_peer_that_connects_to_us_is_reconnected_without_waiting_out_the_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A restarted member connects out first; the leader's link to it, in a long backoff
    since the member went down, comes back at once (it decides how soon it is heard)."""
    monkeypatch.setattr(peer, "BACKOFF_S_MIN", 30.0)
    monkeypatch.setattr(peer, "BACKOFF_S_MAX", 30.0)

    async def scenario() -> None:
        a, b, _, got_b = make_pair()
        await a.start()  # b is down: a's first attempt fails and it backs off for 30 s
        await asyncio.sleep(0.2)
        assert not a.connected(2)
        await b.start()  # b connects to a, which is listening
        await wait_until(lambda: a.connected(2), seconds=5.0)
        a.send(2, [["back"]])
        await wait_until(lambda: got_b)
        assert got_b == [(1, [["back"]])]
        await a.stop()
        await b.stop()

    asyncio.run(scenario())

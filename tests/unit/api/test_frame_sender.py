"""How the native door and client put frames on a connection (native_wire.FrameSender).

Goal: a lone frame leaves at once (a single client's request or answer waits for nothing),
a burst costs one write per turn of the event loop on a busy connection, frames always
leave in the order they were sent, and a connection that quiets down sends at once again.
"""

from __future__ import annotations

import asyncio

from synod.api.proto import native_wire as wire


def _frames(writes: list[bytes]) -> list[int]:
    """The request ids of the frames in `writes`, in order."""
    buffer = bytearray(b"".join(writes))
    return [request_id for request_id, _, _, _ in wire.decode_frames(buffer, 1 << 20)]


async def _turn() -> None:
    """Let the loop run the flush scheduled in this turn."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def test_lone_frames_leave_at_once_and_bursts_in_one_write_per_busy_turn() -> None:
    async def scenario() -> None:
        writes: list[bytes] = []
        sender = wire.FrameSender(writes.append)

        sender.send(1, 0, 0, b"a")
        assert len(writes) == 1  # a quiet connection: at once
        await _turn()
        assert len(writes) == 1

        for request_id in (2, 3, 4):  # a burst on a quiet connection: first at once
            sender.send(request_id, 0, 0, b"b")
        assert len(writes) == 2
        await _turn()
        assert len(writes) == 3  # the rest together at the end of the turn

        for request_id in (5, 6):  # busy now: nothing leaves before the end of the turn
            sender.send(request_id, 0, 0, b"c")
        assert len(writes) == 3
        await _turn()
        assert len(writes) == 4

        sender.send(7, 0, 0, b"d")  # one frame in a busy turn: the connection quiets down
        assert len(writes) == 4
        await _turn()
        assert len(writes) == 5
        sender.send(8, 0, 0, b"e")
        assert len(writes) == 6  # quiet again: at once
        await _turn()

        assert _frames(writes) == [1, 2, 3, 4, 5, 6, 7, 8]

    asyncio.run(scenario())

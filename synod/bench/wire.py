"""Messages between the benchmark's parent and its client processes: msgpack maps over a
multiprocessing pipe (`send_bytes`/`recv_bytes`; nothing is pickled)."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import msgpack

Message = dict[str, Any]


def send(conn: Connection, message: Message) -> None:
    conn.send_bytes(msgpack.packb(message, use_bin_type=True))


def receive(conn: Connection) -> Message:
    message = msgpack.unpackb(conn.recv_bytes(), raw=False, strict_map_key=False)
    assert isinstance(message, dict), type(message)
    return message


def pack_floats(values: Sequence[float]) -> bytes:
    return array("d", values).tobytes()


def unpack_floats(data: bytes) -> list[float]:
    values = array("d")
    values.frombytes(data)
    return values.tolist()

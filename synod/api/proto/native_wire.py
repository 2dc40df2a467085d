"""The native door's wire: frame layout, method codes and the error body, shared by the
server (synod.api.native) and the client (synod.client.native_transport).

A frame is a fixed 14-byte head and a body:

    length    uint32 big-endian   bytes after this field (10 + len(body))
    id        uint64 big-endian   request id, chosen by the client; a stream's id
    method    uint8               METHODS code (HELLO is 0)
    flags     uint8               FLAG_END, FLAG_ERROR, FLAG_LEADERLESS_OK
    body      protobuf bytes of the method's request or response message (etcd's own), or
              an error: status uint8 (gRPC code) + etcd's message in UTF-8

Client to server: a frame opens a unary call, or opens/feeds the stream `id`;
FLAG_END closes the stream or cancels the unary call `id` (empty body). Server to client:
a unary call gets one frame (its response, or FLAG_END|FLAG_ERROR); a stream gets any number
of response frames and ends with FLAG_END (with FLAG_ERROR when it failed). Ids are reused
only after their call or stream ended. Nothing here does I/O (`FrameSender` hands its
bytes to the connection's write); decoding never trusts the peer (`FrameError` says what
was wrong, and the connection is then closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import Message

from synod.api.proto.etcdserverpb import rpc_pb2

HEAD = struct.Struct(">IQBB")
HEAD_BYTES = HEAD.size  # 14
_LENGTH = struct.Struct(">I")
LENGTH_BYTES = 4
FLAG_END = 0x01
FLAG_ERROR = 0x02
# On the first frame of a Watch stream: serve it while the member has no leader. Without
# it a watch requires a leader (etcd's `hasleader` metadata: refused without one, ended
# after NO_LEADER_CHECKS_MAX leaderless election timeouts); a gRPC worker sets it for the
# gRPC clients that do not send that metadata, as etcd serves them.
FLAG_LEADERLESS_OK = 0x04
FLAGS_KNOWN = FLAG_END | FLAG_ERROR | FLAG_LEADERLESS_OK
ID_MAX = 2**64 - 1
HELLO = 0
HELLO_BODY = b"synod-native/1"
# What one frame may carry: etcd's request limit plus the same overhead gRPC allows, so a
# slightly too large request reaches the handler and gets etcd's own message.
SERVER_FRAME_BYTES_MAX = 1536 * 1024 + 512 * 1024
CLIENT_FRAME_BYTES_MAX = 64 * 1024 * 1024
# `synod serve` listens for native clients on its first client port plus this.
NATIVE_PORT_OFFSET = 2


class FrameError(ValueError):
    """The peer sent bytes that are not a valid frame (too large, unknown method or flags,
    undecodable body)."""


@dataclass(frozen=True, slots=True)
class Method:
    code: int
    name: str  # the gRPC method name, as the client's transport calls it
    request: type[Message]
    response: type[Message]
    streaming: bool = False


_TABLE = (
    Method(1, "Range", rpc_pb2.RangeRequest, rpc_pb2.RangeResponse),
    Method(2, "Put", rpc_pb2.PutRequest, rpc_pb2.PutResponse),
    Method(3, "DeleteRange", rpc_pb2.DeleteRangeRequest, rpc_pb2.DeleteRangeResponse),
    Method(4, "Txn", rpc_pb2.TxnRequest, rpc_pb2.TxnResponse),
    Method(5, "Compact", rpc_pb2.CompactionRequest, rpc_pb2.CompactionResponse),
    Method(10, "LeaseGrant", rpc_pb2.LeaseGrantRequest, rpc_pb2.LeaseGrantResponse),
    Method(11, "LeaseRevoke", rpc_pb2.LeaseRevokeRequest, rpc_pb2.LeaseRevokeResponse),
    Method(
        12,
        "LeaseKeepAlive",
        rpc_pb2.LeaseKeepAliveRequest,
        rpc_pb2.LeaseKeepAliveResponse,
        streaming=True,
    ),
    Method(13, "LeaseTimeToLive", rpc_pb2.LeaseTimeToLiveRequest, rpc_pb2.LeaseTimeToLiveResponse),
    Method(14, "LeaseLeases", rpc_pb2.LeaseLeasesRequest, rpc_pb2.LeaseLeasesResponse),
    Method(20, "Watch", rpc_pb2.WatchRequest, rpc_pb2.WatchResponse, streaming=True),
    Method(30, "MemberList", rpc_pb2.MemberListRequest, rpc_pb2.MemberListResponse),
    Method(31, "MemberAdd", rpc_pb2.MemberAddRequest, rpc_pb2.MemberAddResponse),
    Method(32, "MemberRemove", rpc_pb2.MemberRemoveRequest, rpc_pb2.MemberRemoveResponse),
    Method(33, "MemberUpdate", rpc_pb2.MemberUpdateRequest, rpc_pb2.MemberUpdateResponse),
    Method(34, "MemberPromote", rpc_pb2.MemberPromoteRequest, rpc_pb2.MemberPromoteResponse),
    Method(40, "Status", rpc_pb2.StatusRequest, rpc_pb2.StatusResponse),
    Method(41, "Alarm", rpc_pb2.AlarmRequest, rpc_pb2.AlarmResponse),
    Method(42, "HashKV", rpc_pb2.HashKVRequest, rpc_pb2.HashKVResponse),
    Method(43, "Hash", rpc_pb2.HashRequest, rpc_pb2.HashResponse),
    Method(44, "Snapshot", rpc_pb2.SnapshotRequest, rpc_pb2.SnapshotResponse, streaming=True),
    Method(45, "MoveLeader", rpc_pb2.MoveLeaderRequest, rpc_pb2.MoveLeaderResponse),
)
METHODS: dict[int, Method] = {method.code: method for method in _TABLE}
METHODS_BY_NAME: dict[str, Method] = {method.name: method for method in _TABLE}
assert len(METHODS) == len(_TABLE) and HELLO not in METHODS


def encode_frame(request_id: int, method: int, flags: int, body: bytes) -> bytes:
    """One frame, head and body."""
    assert 0 <= request_id <= ID_MAX
    assert 0 <= method <= 255 and flags & ~FLAGS_KNOWN == 0
    return HEAD.pack(HEAD_BYTES - LENGTH_BYTES + len(body), request_id, method, flags) + body


def encode_error(code: int, message: str) -> bytes:
    """The body of an error frame."""
    assert 0 < code <= 255, "an error carries a non-OK status"
    return bytes((code,)) + message.encode("utf-8", "replace")


def decode_error(body: bytes) -> tuple[int, str]:
    """(status code, message) of an error frame's body."""
    if not body:
        raise FrameError("an error frame without a status code")
    return body[0], body[1:].decode("utf-8", "replace")


def decode_frames(buffer: bytearray, frame_bytes_max: int) -> list[tuple[int, int, int, bytes]]:
    """Remove every complete frame from the front of `buffer`: (id, method, flags, body)
    each. A partial frame stays in the buffer; a bad head raises FrameError."""
    frames: list[tuple[int, int, int, bytes]] = []
    offset = 0
    size = len(buffer)
    while size - offset >= LENGTH_BYTES:
        (length,) = _LENGTH.unpack_from(buffer, offset)
        if length < HEAD_BYTES - LENGTH_BYTES:
            raise FrameError(f"frame length {length} shorter than its head")
        if length + LENGTH_BYTES > frame_bytes_max:
            raise FrameError(f"frame of {length + LENGTH_BYTES} bytes over {frame_bytes_max}")
        end = offset + LENGTH_BYTES + length
        if end > size:
            break  # refused early above when too long; otherwise wait for the rest
        _, request_id, method, flags = HEAD.unpack_from(buffer, offset)
        if flags & ~FLAGS_KNOWN:
            raise FrameError(f"unknown frame flags {flags:#x}")
        frames.append((request_id, method, flags, bytes(buffer[offset + HEAD_BYTES : end])))
        offset = end
    if offset:
        del buffer[:offset]
    return frames


def parse(message_type: type[Message], body: bytes) -> Message:
    """`body` as `message_type`; FrameError when it does not decode."""
    message = message_type()
    try:
        message.ParseFromString(body)
    except Exception as error:  # protobuf raises DecodeError, sometimes others
        raise FrameError(f"undecodable {message_type.__name__}: {error}") from error
    return message


class FrameSender:
    """Frames for one connection. On a quiet connection the first frame of a turn of the
    event loop leaves at once (a lone answer waits for nothing) and the others of that turn
    leave together in one write at its end. On a busy one (the last turn sent more than
    one frame) every frame waits for the end of its turn: one write a turn, not two (on
    loopback the sender also pays for the receiver's side of each write, and the receiver
    wakes once, not twice)."""

    __slots__ = ("_busy", "_loop", "_out", "_scheduled", "_write")

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._write = write
        self._out: list[bytes] = []
        self._scheduled = False
        self._busy = False

    def send(self, request_id: int, method: int, flags: int, body: bytes) -> None:
        frame = encode_frame(request_id, method, flags, body)
        if self._scheduled:
            self._out.append(frame)
            return
        self._scheduled = True
        self._loop.call_soon(self._flush)
        if self._busy:
            self._out.append(frame)
        else:
            self._write(frame)

    def _flush(self) -> None:
        self._scheduled = False
        out, self._out = self._out, []
        # busy: this turn sent more than one frame (the first may have left at once)
        self._busy = len(out) > (1 if self._busy else 0)
        if out:
            self._write(out[0] if len(out) == 1 else b"".join(out))


def no_delay(transport: asyncio.BaseTransport) -> None:
    """Small frames leave at once: a request waits on its answer, not on Nagle."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

"""An in-process fake `Transport` for the client's unit tests: scripted answers per call,
a record of every attempt, and streams fed from queues. No sockets, no server."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from google.protobuf.message import Message

from synod.client import errors

Answer: TypeAlias = "Message | errors.ClientError | Callable[[Message], Message]"


@dataclass
class Attempt:
    method: str
    request: Message
    endpoint: str
    timeout_s: float


class FakeStream:
    """A stream whose responses the test pushes (a ClientError breaks it)."""

    def __init__(self, endpoint: str) -> None:
        self._endpoint = endpoint
        self.sent: list[Message] = []
        self.responses: asyncio.Queue[Any] = asyncio.Queue()
        self.cancelled = False

    @property
    def endpoint(self) -> str:
        return self._endpoint

    async def send(self, request: Message) -> None:
        if self.cancelled:
            raise errors.Cancelled("cancelled")
        self.sent.append(request)

    async def receive(self) -> Any:
        item = await self.responses.get()
        if isinstance(item, errors.ClientError):
            raise item
        return item

    def cancel(self) -> None:
        self.cancelled = True
        self.responses.put_nowait(errors.Cancelled("cancelled"))


@dataclass
class FakeTransport:
    endpoint_list: Sequence[str] = ("a:1", "b:2", "c:3")
    script: deque[Answer] = field(default_factory=deque)
    attempts: list[Attempt] = field(default_factory=list)
    watch_streams: list[FakeStream] = field(default_factory=list)
    keep_alive_streams: list[FakeStream] = field(default_factory=list)
    on_watch: Callable[[FakeStream], None] | None = None
    on_keep_alive: Callable[[FakeStream], None] | None = None
    index: int = 0
    closed: bool = False

    @property
    def endpoints(self) -> Sequence[str]:
        return tuple(self.endpoint_list)

    @property
    def current(self) -> str:
        return self.endpoint_list[self.index]

    def failover(self, failed: str) -> None:
        if self.current == failed:
            self.index = (self.index + 1) % len(self.endpoint_list)

    async def call(
        self, method: str, request: Message, timeout_s: float, endpoint: str | None = None
    ) -> Message:
        target = endpoint or self.current
        self.attempts.append(Attempt(method, request, target, timeout_s))
        answer: Answer = self.script.popleft()
        if isinstance(answer, errors.ClientError):
            answer.endpoint = target
            raise answer
        if isinstance(answer, Message):
            return answer
        return answer(request)

    def watch(self, endpoint: str | None = None) -> FakeStream:
        stream = FakeStream(endpoint or self.current)
        self.watch_streams.append(stream)
        if self.on_watch is not None:
            self.on_watch(stream)
        return stream

    def keep_alive(self, endpoint: str | None = None) -> FakeStream:
        stream = FakeStream(endpoint or self.current)
        self.keep_alive_streams.append(stream)
        if self.on_keep_alive is not None:
            self.on_keep_alive(stream)
        return stream

    async def close(self) -> None:
        self.closed = True

"""Static types for the generated gRPC stubs (used by the generated *_pb2_grpc.pyi files).

grpcio ships no type information, so scripts/gen_protos.py writes a .pyi next to each
*_pb2_grpc.py that types every client stub method with the protocols below and every
servicer method with its request and response messages. Each service has two client
names bound to the same runtime class: ``KVStub`` typed for a ``grpc.Channel`` (calls
return messages) and ``KVAsyncStub`` typed for a ``grpc.aio.Channel`` (calls return
awaitables and async iterators). Nothing here does anything at runtime.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Generator, Iterable, Iterator
from typing import Any, Protocol, TypeVar

Req = TypeVar("Req", contravariant=True)
Resp = TypeVar("Resp", covariant=True)

# grpc's metadata (sequence of (key, value) pairs, or grpc.aio.Metadata), credentials
# and compression objects: opaque here because grpcio is untyped.
Metadata = Any


class StreamingCall(Protocol[Resp]):
    """A server-streaming call on a synchronous channel: an iterator that can be cancelled."""

    def __iter__(self) -> Iterator[Resp]: ...
    def __next__(self) -> Resp: ...
    def cancel(self) -> bool: ...
    def is_active(self) -> bool: ...
    def code(self) -> Any: ...
    def details(self) -> str | None: ...
    def initial_metadata(self) -> Metadata: ...
    def trailing_metadata(self) -> Metadata: ...
    def time_remaining(self) -> float | None: ...


class UnaryUnary(Protocol[Req, Resp]):
    def __call__(
        self,
        request: Req,
        timeout: float | None = ...,
        metadata: Metadata = ...,
        credentials: Any = ...,
        wait_for_ready: bool | None = ...,
        compression: Any = ...,
    ) -> Resp: ...
    def with_call(
        self,
        request: Req,
        timeout: float | None = ...,
        metadata: Metadata = ...,
        credentials: Any = ...,
        wait_for_ready: bool | None = ...,
        compression: Any = ...,
    ) -> tuple[Resp, Any]: ...
    def future(
        self,
        request: Req,
        timeout: float | None = ...,
        metadata: Metadata = ...,
        credentials: Any = ...,
        wait_for_ready: bool | None = ...,
        compression: Any = ...,
    ) -> Any: ...


class UnaryStream(Protocol[Req, Resp]):
    def __call__(
        self,
        request: Req,
        timeout: float | None = ...,
        metadata: Metadata = ...,
        credentials: Any = ...,
        wait_for_ready: bool | None = ...,
        compression: Any = ...,
    ) -> StreamingCall[Resp]: ...


class StreamUnary(Protocol[Req, Resp]):
    def __call__(
        self,
        request_iterator: Iterator[Req],
        timeout: float | None = ...,
        metadata: Metadata = ...,
        credentials: Any = ...,
        wait_for_ready: bool | None = ...,
        compression: Any = ...,
    ) -> Resp: ...


class StreamStream(Protocol[Req, Resp]):
    def __call__(
        self,
        request_iterator: Iterator[Req],
        timeout: float | None = ...,
        metadata: Metadata = ...,
        credentials: Any = ...,
        wait_for_ready: bool | None = ...,
        compression: Any = ...,
    ) -> StreamingCall[Resp]: ...


# ---------------------------------------------------------------- grpc.aio channels


class AioUnaryCall(Protocol[Resp]):
    def __await__(self) -> Generator[Any, None, Resp]: ...
    def cancel(self) -> bool: ...
    def done(self) -> bool: ...
    async def code(self) -> Any: ...
    async def details(self) -> str: ...
    async def initial_metadata(self) -> Metadata: ...
    async def trailing_metadata(self) -> Metadata: ...


class AioStreamCall(Protocol[Resp]):
    """A server-streaming call on an aio channel; ``read()`` returns grpc.aio.EOF at the end."""

    def __aiter__(self) -> AsyncIterator[Resp]: ...
    async def read(self) -> Resp | object: ...
    def cancel(self) -> bool: ...
    def done(self) -> bool: ...
    async def code(self) -> Any: ...
    async def details(self) -> str: ...
    async def initial_metadata(self) -> Metadata: ...
    async def trailing_metadata(self) -> Metadata: ...


class AioBidiCall(AioStreamCall[Resp], Protocol[Req, Resp]):
    """A bidirectional call on an aio channel: write requests while reading responses."""

    async def write(self, request: Req) -> None: ...
    async def done_writing(self) -> None: ...


class AioUnaryUnary(Protocol[Req, Resp]):
    def __call__(
        self,
        request: Req,
        *,
        timeout: float | None = ...,
        metadata: Metadata = ...,
        credentials: Any = ...,
        wait_for_ready: bool | None = ...,
        compression: Any = ...,
    ) -> AioUnaryCall[Resp]: ...


class AioUnaryStream(Protocol[Req, Resp]):
    def __call__(
        self,
        request: Req,
        *,
        timeout: float | None = ...,
        metadata: Metadata = ...,
        credentials: Any = ...,
        wait_for_ready: bool | None = ...,
        compression: Any = ...,
    ) -> AioStreamCall[Resp]: ...


class AioStreamUnary(Protocol[Req, Resp]):
    def __call__(
        self,
        request_iterator: AsyncIterable[Req] | Iterable[Req] | None = ...,
        timeout: float | None = ...,
        metadata: Metadata = ...,
        credentials: Any = ...,
        wait_for_ready: bool | None = ...,
        compression: Any = ...,
    ) -> AioUnaryCall[Resp]: ...


class AioStreamStream(Protocol[Req, Resp]):
    def __call__(
        self,
        request_iterator: AsyncIterable[Req] | Iterable[Req] | None = ...,
        timeout: float | None = ...,
        metadata: Metadata = ...,
        credentials: Any = ...,
        wait_for_ready: bool | None = ...,
        compression: Any = ...,
    ) -> AioBidiCall[Req, Resp]: ...

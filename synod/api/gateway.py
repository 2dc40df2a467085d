"""etcd's HTTP JSON gateway as an aiohttp application.

Every etcd 3.4 gateway path, under `/v3/` and its alias `/v3beta/`, POST with a proto3 JSON
body, answered by the transport-independent handlers (synod.api.handlers) with the JSON
mapping of synod.api.json_mapping. Besides: `GET /version`, `GET /health`, `GET /metrics`.

Streams (watch, snapshot, election observe) are chunked responses with one
`{"result": ...}` document per chunk; lease keep-alive is answered once. The response head
of a stream is sent with its first message, as etcd's gateway does, so an error before any
message gets its own HTTP status.

The handlers are described here as Protocols (`EtcdHandlers`, `LockHandlers`,
`ElectionHandlers`) so the gateway and its tests need no member.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from google.protobuf.message import Message

from synod.api import json_mapping as jm
from synod.api.errors import EtcdError
from synod.api.proto.etcdserverpb import rpc_pb2
from synod.api.proto.v3electionpb import v3election_pb2
from synod.api.proto.v3lockpb import v3lock_pb2

log = logging.getLogger(__name__)

PREFIXES = ("/v3", "/v3beta")
REQUEST_BODY_MAX = 8 * 1024 * 1024  # 1.5 MiB of etcd request, base64 and JSON around it
STREAM_REQUEST_BUFFER_MAX = 4 * 1024 * 1024  # unparsed watch requests held at once
HEALTH_TIMEOUT_S = 1.0  # etcd 3.4's /health gives its quorum read one second
DISCONNECT_POLL_S = 1.0  # how often an idle stream checks that its client is still there
TOO_LARGE = "etcdserver: request is too large"
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS, PUT, DELETE",
    "Access-Control-Allow-Headers": "accept, content-type, authorization",
}


# ---------------------------------------------------------------------------- protocols


class WatchSession(Protocol):
    async def handle(self, request: rpc_pb2.WatchRequest) -> None: ...

    def responses(self) -> AsyncIterator[rpc_pb2.WatchResponse]: ...

    def close(self) -> None: ...


class EtcdHandlers(Protocol):
    """What synod.api.handlers.Handlers offers (one async method per etcd RPC)."""

    async def range(self, request: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse: ...
    async def put(self, request: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse: ...
    async def delete_range(
        self, request: rpc_pb2.DeleteRangeRequest
    ) -> rpc_pb2.DeleteRangeResponse: ...
    async def txn(self, request: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse: ...
    async def compact(self, request: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse: ...

    async def lease_grant(
        self, request: rpc_pb2.LeaseGrantRequest
    ) -> rpc_pb2.LeaseGrantResponse: ...
    async def lease_revoke(
        self, request: rpc_pb2.LeaseRevokeRequest
    ) -> rpc_pb2.LeaseRevokeResponse: ...
    async def lease_time_to_live(
        self, request: rpc_pb2.LeaseTimeToLiveRequest
    ) -> rpc_pb2.LeaseTimeToLiveResponse: ...
    async def lease_leases(
        self, request: rpc_pb2.LeaseLeasesRequest
    ) -> rpc_pb2.LeaseLeasesResponse: ...
    async def lease_keep_alive(
        self, request: rpc_pb2.LeaseKeepAliveRequest
    ) -> rpc_pb2.LeaseKeepAliveResponse: ...

    async def member_list(
        self, request: rpc_pb2.MemberListRequest
    ) -> rpc_pb2.MemberListResponse: ...
    async def member_add(self, request: rpc_pb2.MemberAddRequest) -> rpc_pb2.MemberAddResponse: ...
    async def member_remove(
        self, request: rpc_pb2.MemberRemoveRequest
    ) -> rpc_pb2.MemberRemoveResponse: ...
    async def member_update(
        self, request: rpc_pb2.MemberUpdateRequest
    ) -> rpc_pb2.MemberUpdateResponse: ...
    async def member_promote(
        self, request: rpc_pb2.MemberPromoteRequest
    ) -> rpc_pb2.MemberPromoteResponse: ...

    async def status(self, request: rpc_pb2.StatusRequest) -> rpc_pb2.StatusResponse: ...
    async def alarm(self, request: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse: ...
    async def defragment(
        self, request: rpc_pb2.DefragmentRequest
    ) -> rpc_pb2.DefragmentResponse: ...
    async def hash(self, request: rpc_pb2.HashRequest) -> rpc_pb2.HashResponse: ...
    async def hash_kv(self, request: rpc_pb2.HashKVRequest) -> rpc_pb2.HashKVResponse: ...
    def snapshot(
        self, request: rpc_pb2.SnapshotRequest
    ) -> AsyncIterator[rpc_pb2.SnapshotResponse]: ...
    async def move_leader(
        self, request: rpc_pb2.MoveLeaderRequest
    ) -> rpc_pb2.MoveLeaderResponse: ...

    def open_watch(self) -> WatchSession: ...


class LockHandlers(Protocol):
    """synod.api.lock.LockService."""

    async def lock(self, request: v3lock_pb2.LockRequest) -> v3lock_pb2.LockResponse: ...
    async def unlock(self, request: v3lock_pb2.UnlockRequest) -> v3lock_pb2.UnlockResponse: ...


class ElectionHandlers(Protocol):
    """synod.api.lock.ElectionService."""

    async def campaign(
        self, request: v3election_pb2.CampaignRequest
    ) -> v3election_pb2.CampaignResponse: ...
    async def proclaim(
        self, request: v3election_pb2.ProclaimRequest
    ) -> v3election_pb2.ProclaimResponse: ...
    async def leader(
        self, request: v3election_pb2.LeaderRequest
    ) -> v3election_pb2.LeaderResponse: ...
    def observe(
        self, request: v3election_pb2.LeaderRequest
    ) -> AsyncIterator[v3election_pb2.LeaderResponse]: ...
    async def resign(
        self, request: v3election_pb2.ResignRequest
    ) -> v3election_pb2.ResignResponse: ...


class MetricsSource(Protocol):
    """What GET /metrics needs (synod.api.metrics.SynodMetrics)."""

    def render(self) -> tuple[bytes, str]: ...


@dataclass(frozen=True)
class VersionInfo:
    """GET /version: clients choose the `/v3` prefix when `etcdcluster` >= 3.4."""

    etcdserver: str = "3.4.23"
    etcdcluster: str = "3.4.0"


# ---------------------------------------------------------------------------- plumbing

Unary = Callable[[Any], Awaitable[Message]]
Streaming = Callable[[Any], AsyncIterator[Message]]


def _json_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def _error_response(code: object, message: str) -> web.Response:
    return _json_response(jm.error_body(code, message), jm.http_status(code))


def _internal(error: BaseException) -> EtcdError:
    log.exception("gateway: unexpected error from a handler", exc_info=error)
    return EtcdError(jm.UNKNOWN, f"synod: internal error: {type(error).__name__}")


def _as_etcd_error(error: BaseException) -> EtcdError:
    if isinstance(error, EtcdError):
        return error
    return _internal(error)


async def _read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as error:
        raise EtcdError(jm.INVALID_ARGUMENT, TOO_LARGE) from error


def _disconnected(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _add_cors(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in CORS_HEADERS.items():
        response.headers.setdefault(name, value)


class _RequestDecoder:
    """Successive JSON documents of a streaming request body (etcd's gateway reads a
    watch body as a stream of requests)."""

    def __init__(self) -> None:
        self._buffer = ""
        self._decoder = json.JSONDecoder()
        self._partial = b""

    def feed(self, data: bytes) -> None:
        data = self._partial + data
        try:
            self._buffer += data.decode("utf-8")
            self._partial = b""
        except UnicodeDecodeError as error:
            if error.start < len(data) - 3:
                raise jm.BadRequestBody("invalid UTF-8 in request body") from error
            self._buffer += data[: error.start].decode("utf-8")
            self._partial = data[error.start :]
        if len(self._buffer) > STREAM_REQUEST_BUFFER_MAX:
            raise jm.BadRequestBody(TOO_LARGE)

    def documents(self, eof: bool) -> list[Any]:
        """The complete documents buffered so far; at `eof`, a broken rest is an error."""
        found: list[Any] = []
        while True:
            text = self._buffer.lstrip()
            if not text:
                self._buffer = ""
                return found
            try:
                value, end = self._decoder.raw_decode(text)
            except json.JSONDecodeError as error:
                if eof:
                    raise jm.BadRequestBody(jm._json_error_text(error)) from error
                self._buffer = text
                return found
            found.append(value)
            self._buffer = text[end:]


# ---------------------------------------------------------------------------- gateway


class Gateway:
    """The request handlers of the aiohttp application (one per application)."""

    def __init__(
        self,
        handlers: EtcdHandlers,
        version_info: VersionInfo,
        metrics: MetricsSource | None,
        *,
        lock: LockHandlers | None = None,
        election: ElectionHandlers | None = None,
        has_leader: Callable[[], bool] | None = None,
    ) -> None:
        self.h = handlers
        self.version_info = version_info
        self.metrics = metrics
        self.lock = lock
        self.election = election
        self.has_leader = has_leader

    # ------------------------------------------------------------------ routes

    def unary_routes(self) -> dict[str, tuple[type[Message], Unary]]:
        h = self.h
        routes: dict[str, tuple[type[Message], Unary]] = {
            "/kv/range": (rpc_pb2.RangeRequest, h.range),
            "/kv/put": (rpc_pb2.PutRequest, h.put),
            "/kv/deleterange": (rpc_pb2.DeleteRangeRequest, h.delete_range),
            "/kv/txn": (rpc_pb2.TxnRequest, h.txn),
            "/kv/compaction": (rpc_pb2.CompactionRequest, h.compact),
            "/lease/grant": (rpc_pb2.LeaseGrantRequest, h.lease_grant),
            "/lease/revoke": (rpc_pb2.LeaseRevokeRequest, h.lease_revoke),
            "/kv/lease/revoke": (rpc_pb2.LeaseRevokeRequest, h.lease_revoke),
            "/lease/timetolive": (rpc_pb2.LeaseTimeToLiveRequest, h.lease_time_to_live),
            "/kv/lease/timetolive": (rpc_pb2.LeaseTimeToLiveRequest, h.lease_time_to_live),
            "/lease/leases": (rpc_pb2.LeaseLeasesRequest, h.lease_leases),
            "/kv/lease/leases": (rpc_pb2.LeaseLeasesRequest, h.lease_leases),
            "/cluster/member/list": (rpc_pb2.MemberListRequest, h.member_list),
            "/cluster/member/add": (rpc_pb2.MemberAddRequest, h.member_add),
            "/cluster/member/remove": (rpc_pb2.MemberRemoveRequest, h.member_remove),
            "/cluster/member/update": (rpc_pb2.MemberUpdateRequest, h.member_update),
            "/cluster/member/promote": (rpc_pb2.MemberPromoteRequest, h.member_promote),
            "/maintenance/status": (rpc_pb2.StatusRequest, h.status),
            "/maintenance/alarm": (rpc_pb2.AlarmRequest, h.alarm),
            "/maintenance/defragment": (rpc_pb2.DefragmentRequest, h.defragment),
            "/maintenance/hash": (rpc_pb2.HashRequest, h.hash),
            # etcd 3.4 routes no path to HashKV (its proto names /maintenance/hash twice);
            # 3.5 serves this one.
            "/maintenance/hashkv": (rpc_pb2.HashKVRequest, h.hash_kv),
            "/maintenance/transfer-leadership": (rpc_pb2.MoveLeaderRequest, h.move_leader),
        }
        if self.lock is not None:
            routes["/lock/lock"] = (v3lock_pb2.LockRequest, self.lock.lock)
            routes["/lock/unlock"] = (v3lock_pb2.UnlockRequest, self.lock.unlock)
        if self.election is not None:
            e = self.election
            routes["/election/campaign"] = (v3election_pb2.CampaignRequest, e.campaign)
            routes["/election/proclaim"] = (v3election_pb2.ProclaimRequest, e.proclaim)
            routes["/election/leader"] = (v3election_pb2.LeaderRequest, e.leader)
            routes["/election/resign"] = (v3election_pb2.ResignRequest, e.resign)
        return routes

    def stream_routes(self) -> dict[str, tuple[type[Message], Streaming]]:
        routes: dict[str, tuple[type[Message], Streaming]] = {
            "/maintenance/snapshot": (rpc_pb2.SnapshotRequest, self.h.snapshot),
        }
        if self.election is not None:
            routes["/election/observe"] = (v3election_pb2.LeaderRequest, self.election.observe)
        return routes

    def add_routes(self, app: web.Application) -> None:
        for prefix in PREFIXES:
            for path, (cls, call) in self.unary_routes().items():
                app.router.add_post(prefix + path, self._unary_handler(cls, call))
            for path, (cls, stream) in self.stream_routes().items():
                app.router.add_post(prefix + path, self._stream_handler(cls, stream))
            app.router.add_post(prefix + "/watch", self.watch)
            app.router.add_post(prefix + "/lease/keepalive", self.keep_alive)
            app.router.add_post(prefix + "/auth/{rest:.*}", self.auth)
        app.router.add_get("/version", self.version)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_page)

    # ------------------------------------------------------------------ unary

    def _unary_handler(
        self, cls: type[Message], call: Unary
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                message = jm.parse_request(await _read_body(request), cls())
                response = await call(message)
            except jm.BadRequestBody as error:
                return _error_response(jm.INVALID_ARGUMENT, error.message)
            except Exception as error:
                etcd_error = _as_etcd_error(error)
                return _error_response(etcd_error.code, etcd_error.message)
            return _json_response(jm.message_json(response).encode())

        return handle

    async def auth(self, request: web.Request) -> web.StreamResponse:
        return _error_response(12, "synod: authentication is not supported yet")

    # ------------------------------------------------------------------ keep-alive

    async def keep_alive(self, request: web.Request) -> web.StreamResponse:
        """One keep-alive, answered once: `{"result": {...}}`; an unknown or expired lease is
        answered with no TTL field (a zero TTL is omitted), as etcd does."""
        try:
            message = jm.parse_request(await _read_body(request), rpc_pb2.LeaseKeepAliveRequest())
        except jm.BadRequestBody as error:
            return _error_response(jm.UNKNOWN, error.message)  # a stream's decode error
        except EtcdError as error:
            return _error_response(jm.UNKNOWN, error.message)
        try:
            response = await self.h.lease_keep_alive(message)
        except Exception as error:
            etcd_error = _as_etcd_error(error)
            return _json_response(
                jm.stream_error_chunk(etcd_error.code, etcd_error.message),
                jm.http_status(etcd_error.code),
            )
        if response.TTL <= 0:
            response.ClearField("TTL")
        return _json_response(jm.result_chunk(response))

    # ------------------------------------------------------------------ streams

    def _stream_handler(
        self, cls: type[Message], stream: Streaming
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                message = jm.parse_request(await _read_body(request), cls())
            except (jm.BadRequestBody, EtcdError) as error:
                text = error.message
                return _error_response(jm.UNKNOWN, text)
            return await self._stream(request, stream(message), None)

        return handle

    async def watch(self, request: web.Request) -> web.StreamResponse:
        """A watch stream: the body is one or more WatchRequests (JSON documents), the
        response one WatchResponse per chunk until the client goes away."""
        try:
            session = self.h.open_watch()
        except Exception as failure:
            error = _as_etcd_error(failure)
            return _json_response(
                jm.stream_error_chunk(error.code, error.message), jm.http_status(error.code)
            )
        feeder = asyncio.create_task(self._feed_watch(request, session))
        try:
            return await self._stream(request, session.responses(), feeder)
        finally:
            session.close()
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder

    async def _feed_watch(self, request: web.Request, session: WatchSession) -> None:
        decoder = _RequestDecoder()
        content = request.content
        handled = 0
        while True:
            data = await content.readany()
            eof = not data
            try:
                if data:
                    decoder.feed(data)
                values = decoder.documents(eof)
            except jm.BadRequestBody:
                # etcd's gateway fails the call only when the first request cannot be
                # decoded; a later one just ends the reading of requests
                if handled == 0:
                    raise
                return
            for value in values:
                try:
                    watch_request = jm.parse_value(value, rpc_pb2.WatchRequest())
                except jm.BadRequestBody:
                    if handled == 0:
                        raise
                    return
                await session.handle(watch_request)
                handled += 1
            if eof:
                return  # a half-closed watch keeps streaming, as etcd's does

    async def _stream(
        self,
        request: web.Request,
        responses: AsyncIterator[Message],
        side: asyncio.Task[None] | None,
    ) -> web.StreamResponse:
        """Send `responses` as chunks until they end, fail, or the client leaves. `side`
        (the request reader of a watch) failing before the first chunk is the call's
        error; after it, it only stops reading requests."""
        iterator = aiter(responses)
        out: web.StreamResponse | None = None
        pending: asyncio.Future[Message] = asyncio.ensure_future(anext(iterator))
        try:
            while True:
                waiting: set[asyncio.Future[Any]] = {pending}
                if side is not None and not side.done():
                    waiting.add(side)
                done, _ = await asyncio.wait(
                    waiting, timeout=DISCONNECT_POLL_S, return_when=asyncio.FIRST_COMPLETED
                )
                if side is not None and side in done and side.exception() is not None:
                    failure = side.exception()
                    assert failure is not None
                    if isinstance(failure, jm.BadRequestBody):
                        # the first request could not be decoded: code 2, HTTP 500 (etcd)
                        return _error_response(jm.UNKNOWN, failure.message)
                    else:  # the handlers refused a request: the stream ends with it
                        error = _as_etcd_error(failure)
                        chunk = jm.stream_error_chunk(error.code, error.message)
                        if out is None:
                            return _json_response(chunk, jm.http_status(error.code))
                        await out.write(chunk)
                        break
                if pending in done:
                    try:
                        message = pending.result()
                    except StopAsyncIteration:
                        break
                    except Exception as failure:
                        error = _as_etcd_error(failure)
                        chunk = jm.stream_error_chunk(error.code, error.message)
                        if out is None:
                            return _json_response(chunk, jm.http_status(error.code))
                        await out.write(chunk)
                        break
                    if out is None:
                        out = await self._start_stream(request)
                    await out.write(jm.result_chunk(message))
                    pending = asyncio.ensure_future(anext(iterator))
                elif _disconnected(request):
                    break
        except ConnectionError:  # the client went away mid-stream
            if out is None:
                raise
            return out
        finally:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
            closer = getattr(iterator, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()
        if out is None:
            out = await self._start_stream(request)
        with contextlib.suppress(ConnectionError):
            await out.write_eof()
        return out

    @staticmethod
    async def _start_stream(request: web.Request) -> web.StreamResponse:
        out = web.StreamResponse(status=200)
        out.content_type = "application/json"
        out.enable_chunked_encoding()
        await out.prepare(request)
        return out

    # ------------------------------------------------------------------ plain GETs

    async def version(self, request: web.Request) -> web.StreamResponse:
        body = {
            "etcdserver": self.version_info.etcdserver,
            "etcdcluster": self.version_info.etcdcluster,
        }
        return _json_response(jm.dumps(body).encode())

    async def health(self, request: web.Request) -> web.StreamResponse:
        """etcd 3.4: healthy when there is no alarm, a leader is known and a quorum read
        answers within a second; otherwise HTTP 503 `{"health":"false"}`."""
        healthy = await self._healthy()
        body = b'{"health":"true"}' if healthy else b'{"health":"false"}'
        return web.Response(
            body=body, status=200 if healthy else 503, content_type="text/plain", charset="utf-8"
        )

    async def _healthy(self) -> bool:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                alarms = await self.h.alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET))
                if len(alarms.alarms) > 0:
                    return False
                if self.has_leader is not None:
                    if not self.has_leader():
                        return False
                else:
                    status = await self.h.status(rpc_pb2.StatusRequest())
                    if status.leader == 0:
                        return False
                await self.h.range(rpc_pb2.RangeRequest(key=b"health"))
        except Exception as error:  # TimeoutError, EtcdError, ...
            log.info("/health: unhealthy: %r", error)
            return False
        return True

    async def metrics_page(self, request: web.Request) -> web.StreamResponse:
        if self.metrics is None:
            raise web.HTTPNotFound()
        body, content_type = self.metrics.render()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response


def build_gateway(
    handlers: EtcdHandlers,
    version_info: VersionInfo | None = None,
    metrics: MetricsSource | None = None,
    *,
    lock: LockHandlers | None = None,
    election: ElectionHandlers | None = None,
    has_leader: Callable[[], bool] | None = None,
) -> web.Application:
    """The etcd JSON gateway over `handlers` (plus lock and election when given).

    `has_leader` answers /health's "is a leader known" cheaply; without it /health asks
    `handlers.status()`.
    """
    app = web.Application(client_max_size=REQUEST_BODY_MAX)
    gateway = Gateway(
        handlers,
        version_info or VersionInfo(),
        metrics,
        lock=lock,
        election=election,
        has_leader=has_leader,
    )
    gateway.add_routes(app)
    app.on_response_prepare.append(_add_cors)
    return app

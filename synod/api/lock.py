"""etcd's v3lock and v3election services over the KV handlers (leases and txns)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from synod.api import errors as api_errors
from synod.api.handlers import Handlers
from synod.api.proto.v3electionpb import v3election_pb2
from synod.api.proto.v3lockpb import v3lock_pb2


class LockService:
    def __init__(self, handlers: Handlers) -> None:
        self.h = handlers

    async def lock(self, request: v3lock_pb2.LockRequest) -> v3lock_pb2.LockResponse:
        raise api_errors.unimplemented("the lock service")

    async def unlock(self, request: v3lock_pb2.UnlockRequest) -> v3lock_pb2.UnlockResponse:
        raise api_errors.unimplemented("the lock service")


class ElectionService:
    def __init__(self, handlers: Handlers) -> None:
        self.h = handlers

    async def campaign(
        self, request: v3election_pb2.CampaignRequest
    ) -> v3election_pb2.CampaignResponse:
        raise api_errors.unimplemented("the election service")

    async def proclaim(
        self, request: v3election_pb2.ProclaimRequest
    ) -> v3election_pb2.ProclaimResponse:
        raise api_errors.unimplemented("the election service")

    async def leader(self, request: v3election_pb2.LeaderRequest) -> v3election_pb2.LeaderResponse:
        raise api_errors.unimplemented("the election service")

    async def observe(
        self, request: v3election_pb2.LeaderRequest
    ) -> AsyncIterator[v3election_pb2.LeaderResponse]:
        raise api_errors.unimplemented("the election service")
        yield v3election_pb2.LeaderResponse()

    async def resign(self, request: v3election_pb2.ResignRequest) -> v3election_pb2.ResignResponse:
        raise api_errors.unimplemented("the election service")

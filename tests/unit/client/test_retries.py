"""The client's retry, failover and deadline rules against an in-process fake transport.

Goal: a write is never sent twice unless a compare makes the second run harmless
(synod/client/aio.py, "Retry rule"); requests that never reached a member, or reached a
member without a leader, move to the next endpoint; every call has one deadline; watches
resume after a break from the revision after the last delivered event; a lease that the
cluster reports gone is marked lost. Method: scripted answers, no sockets, no sleeps
beyond the client's own millisecond backoffs.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from synod.api.proto.mvccpb import kv_pb2
from synod.client import AsyncClient, errors, rpc_pb2, txn
from synod.client.aio import AsyncLease
from tests.unit.client.fake import Answer, FakeStream, FakeTransport

T = TypeVar("T")


def run(scenario: Callable[[AsyncClient, FakeTransport], Awaitable[T]], *answers: Answer) -> T:
    fake = FakeTransport(script=deque(answers))

    async def main() -> T:
        client = AsyncClient(transport=fake, timeout_s=2.0)
        try:
            return await scenario(client, fake)
        finally:
            await client.close()

    return asyncio.run(main())


def header(revision: int) -> rpc_pb2.ResponseHeader:
    return rpc_pb2.ResponseHeader(revision=revision, member_id=1, cluster_id=1, raft_term=1)


def test_read_fails_over_to_the_next_endpoint_when_a_member_is_unreachable() -> None:
    async def scenario(client: AsyncClient, fake: FakeTransport) -> None:
        response = await client.get("k")
        assert response.header.revision == 7
        assert [a.endpoint for a in fake.attempts] == ["a:1", "b:2"]

    run(scenario, errors.Unavailable("refused"), rpc_pb2.RangeResponse(header=header(7)))


def test_read_is_retried_after_an_unknown_outcome() -> None:
    async def scenario(client: AsyncClient, fake: FakeTransport) -> None:
        await client.get("k")
        assert len(fake.attempts) == 2

    run(scenario, errors.OutcomeUnknown("request timed out"), rpc_pb2.RangeResponse())


def test_put_is_never_resent_after_an_unknown_outcome() -> None:
    async def scenario(client: AsyncClient, fake: FakeTransport) -> None:
        with pytest.raises(errors.OutcomeUnknown):
            await client.put("k", "v")
        assert len(fake.attempts) == 1

    run(scenario, errors.OutcomeUnknown("etcdserver: request timed out"))


def test_put_is_resent_when_the_member_had_no_leader() -> None:
    async def scenario(client: AsyncClient, fake: FakeTransport) -> None:
        await client.put("k", "v")
        assert [a.endpoint for a in fake.attempts] == ["a:1", "b:2"]

    run(scenario, errors.NoLeader("etcdserver: no leader"), rpc_pb2.PutResponse())


def test_guarded_txn_is_resent_and_unguarded_txn_is_not() -> None:
    guarded = ([txn.create_revision("k") == 0], [txn.put("k", "v")], [txn.get("k")])

    async def scenario(client: AsyncClient, fake: FakeTransport) -> None:
        response = await client.txn(*guarded)
        assert len(fake.attempts) == 2 and not response.succeeded
        with pytest.raises(errors.OutcomeUnknown):
            await client.txn([], [txn.put("k", "v")], [])
        assert len(fake.attempts) == 3

    run(
        scenario,
        errors.OutcomeUnknown("lost"),
        rpc_pb2.TxnResponse(succeeded=False),
        errors.OutcomeUnknown("lost"),
    )


def test_retry_safety_of_txns() -> None:
    def request(
        compare: list[rpc_pb2.Compare],
        success: list[rpc_pb2.RequestOp],
        failure: list[rpc_pb2.RequestOp],
    ) -> rpc_pb2.TxnRequest:
        return rpc_pb2.TxnRequest(compare=compare, success=success, failure=failure)

    assert txn.is_retry_safe(request([], [txn.get("a")], []))
    assert not txn.is_retry_safe(request([], [txn.put("a", "1")], []))
    assert txn.is_retry_safe(request([txn.mod_revision("a") == 3], [txn.put("a", "1")], []))
    assert not txn.is_retry_safe(request([txn.mod_revision("a") == 3], [], [txn.delete("a")]))


def test_deadline_covers_all_attempts_and_reports_the_last_error() -> None:
    async def scenario(client: AsyncClient, fake: FakeTransport) -> None:
        with pytest.raises(errors.Unavailable, match="no member answered"):
            await client.get("k", timeout_s=0.3)
        assert len(fake.attempts) >= 2
        assert all(a.timeout_s <= 1.0 for a in fake.attempts)

    run(scenario, *[errors.Unavailable("refused") for _ in range(64)])


def test_errors_that_retrying_cannot_fix_are_raised_at_once() -> None:
    async def scenario(client: AsyncClient, fake: FakeTransport) -> None:
        with pytest.raises(errors.LeaseNotFound):
            await client.put("k", "v", lease=5)
        assert len(fake.attempts) == 1

    run(scenario, errors.LeaseNotFound(errors.MESSAGE_LEASE_NOT_FOUND, errors.NOT_FOUND))


def test_status_translation_names_compaction_no_leader_and_unknown_outcomes() -> None:
    compacted = errors.error_from_status(
        11, "etcdserver: mvcc: required revision has been compacted", sent=True
    )
    assert isinstance(compacted, errors.Compacted)
    assert isinstance(
        errors.error_from_status(14, "etcdserver: no leader", sent=True), errors.NoLeader
    )
    assert isinstance(
        errors.error_from_status(14, "Socket closed", sent=True), errors.OutcomeUnknown
    )
    assert type(errors.error_from_status(14, "failed to connect", sent=False)) is (
        errors.Unavailable
    )
    assert isinstance(errors.error_from_status(4, "", sent=True), errors.OutcomeUnknown)
    assert isinstance(
        errors.error_from_status(14, "etcdserver: request timed out", sent=True),
        errors.OutcomeUnknown,
    )


def event(revision: int, value: bytes) -> kv_pb2.Event:
    return kv_pb2.Event(
        type=kv_pb2.Event.PUT,
        kv=kv_pb2.KeyValue(key=b"k", value=value, mod_revision=revision, create_revision=2),
    )


def test_watch_resumes_on_the_next_member_after_the_last_delivered_revision() -> None:
    async def scenario(client: AsyncClient, fake: FakeTransport) -> None:
        def feed(stream: FakeStream) -> None:
            created = rpc_pb2.WatchResponse(header=header(4), created=True)
            stream.responses.put_nowait(created)
            if len(fake.watch_streams) == 1:
                stream.responses.put_nowait(
                    rpc_pb2.WatchResponse(header=header(5), events=[event(5, b"x")])
                )
                stream.responses.put_nowait(errors.Unavailable("member died"))
            else:
                stream.responses.put_nowait(
                    rpc_pb2.WatchResponse(header=header(6), events=[event(6, b"y")])
                )

        fake.on_watch = feed
        watcher = client.watch("k")
        seen: list[bytes] = []
        async for response in watcher:
            seen.extend(e.kv.value for e in response.events)
            if len(seen) == 2:
                watcher.cancel()
        assert seen == [b"x", b"y"]
        second = fake.watch_streams[1]
        assert second.endpoint == "b:2"
        assert second.sent[0].create_request.start_revision == 6

    run(scenario)


def test_watch_from_a_compacted_revision_raises_compacted_with_the_oldest_revision() -> None:
    async def scenario(client: AsyncClient, fake: FakeTransport) -> None:
        def feed(stream: FakeStream) -> None:
            stream.responses.put_nowait(
                rpc_pb2.WatchResponse(
                    header=header(9), created=True, canceled=True, compact_revision=8
                )
            )

        fake.on_watch = feed
        watcher = client.watch("k", start_revision=2)
        with pytest.raises(errors.Compacted) as caught:
            async for _ in watcher:
                pass
        assert caught.value.compact_revision == 8

    run(scenario)


def test_lease_reported_gone_by_the_cluster_is_marked_lost_and_reported() -> None:
    async def scenario(client: AsyncClient, fake: FakeTransport) -> None:
        def feed(stream: FakeStream) -> None:
            stream.responses.put_nowait(rpc_pb2.LeaseKeepAliveResponse(ID=9, TTL=0))

        fake.on_keep_alive = feed
        reported: list[AsyncLease] = []
        lease = await client.lease(3, on_lost=reported.append)
        await asyncio.wait_for(lease.lost.wait(), 2)
        assert reported == [lease] and lease.expires_in_s() == 0
        assert "expired" in lease.lost_reason

    run(scenario, rpc_pb2.LeaseGrantResponse(ID=9, TTL=3))


def test_lease_keep_alive_renews_at_a_third_of_the_ttl_and_fails_over() -> None:
    async def scenario(client: AsyncClient, fake: FakeTransport) -> None:
        def feed(stream: FakeStream) -> None:
            if len(fake.keep_alive_streams) == 1:
                stream.responses.put_nowait(errors.Unavailable("refused"))
            else:
                for _ in range(3):
                    stream.responses.put_nowait(rpc_pb2.LeaseKeepAliveResponse(ID=9, TTL=1))

        fake.on_keep_alive = feed
        lease = await client.lease(1)
        await asyncio.sleep(0.3)
        assert not lease.lost.is_set()
        assert fake.keep_alive_streams[1].endpoint == "b:2"
        assert len(fake.keep_alive_streams[1].sent) >= 1

    run(scenario, rpc_pb2.LeaseGrantResponse(ID=9, TTL=1))

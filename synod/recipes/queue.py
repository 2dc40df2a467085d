"""Queue: a work queue with at-least-once delivery, priorities and a dead-letter queue.

    queue = Queue(client, "jobs", visibility_s=30, max_deliveries=5)
    queue.push(b"resize 42", priority=0)
    message = queue.pop(timeout_s=10)
    handle(message.payload)
    queue.ack(message)                  # or let it time out: it is delivered again

Keys under `<name>/`:
- `ready/<priority>/<seq>`: waiting messages; value `<deliveries>\\n<payload>`.
- `inflight/<priority>/<seq>`: taken, not yet acknowledged (a durable copy).
- `claim/<priority>/<seq>`: the taker's claim, attached to a lease of `visibility_s`.
- `dead/<priority>/<seq>`: messages delivered `max_deliveries` times without an ack.
- `seq`: written once per push; its revision is the message's sequence number.

Taking a message moves it from ready to inflight and creates its claim in one txn guarded
by the ready key's mod revision, so two consumers never take the same delivery. When the
claim's lease expires (the consumer died or was too slow) the claim vanishes; the next
`pop` (by anyone) moves the message back to its old place in ready, or to dead after
`max_deliveries`. `ack` deletes the inflight copy and the claim, guarded by the claim's
revision: an ack after the visibility timeout is refused (`NotHeld`), because the message
may already be with another consumer.

Ordering guarantees. Smaller priority numbers first; within a priority, messages are
taken in order of their sequence numbers, allocated when `push` starts (two pushes that
overlap in time may be taken in either order; a push that returned before another began
is taken first). A redelivered message keeps its place (ahead of newer ones). Processing
order is not delivery order when several consumers run at once.

Delivery guarantees and limits. At least once: no acknowledged push is lost (it is in the
replicated store), but a message may be delivered more than once: after its visibility
timeout, or when an ack's outcome was unknown, or (rarely) when a push that got
`OutcomeUnknown` is pushed again by the caller. Make handlers idempotent. A message is
never deleted unless acked (or moved to dead).

Error handling. Client errors pass through. `pop` may be retried freely; `push` may be
retried after `OutcomeUnknown` at the price of a possible duplicate.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from synod.client import Client, ClientError, kv_pb2, txn
from synod.recipes.errors import NotHeld, QueueEmpty
from synod.recipes.session import deadline_after, remaining_s, wait_for_event

PRIORITY_MAX = 99_999
VISIBILITY_S_DEFAULT = 30
MAX_DELIVERIES_DEFAULT = 5
# Expired claims restored per pop, so that one pop's cost stays bounded.
REAP_MAX = 64


@dataclass(frozen=True)
class Message:
    """One delivery of a message. `id` is `<priority>/<seq>`; `deliveries` counts this
    one."""

    id: str
    payload: bytes
    priority: int
    deliveries: int
    claim_revision: int = 0
    lease_id: int = 0


def _encode(deliveries: int, payload: bytes) -> bytes:
    return f"{deliveries}\n".encode() + payload


def _decode(value: bytes) -> tuple[int, bytes]:
    head, _, payload = value.partition(b"\n")
    return int(head), payload


class Queue:
    """A FIFO (per priority) work queue called `name`."""

    def __init__(
        self,
        client: Client,
        name: str,
        *,
        visibility_s: int = VISIBILITY_S_DEFAULT,
        max_deliveries: int = MAX_DELIVERIES_DEFAULT,
    ) -> None:
        assert name
        if visibility_s < 1:
            raise ValueError("visibility_s must be at least 1 (the cluster may round it up)")
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        self.client = client
        self.name = name
        self.visibility_s = visibility_s
        self.max_deliveries = max_deliveries
        base = name.rstrip("/").encode()
        self.base = base + b"/"
        self.seq_key = base + b"/seq"
        self.ready = base + b"/ready/"
        self.inflight = base + b"/inflight/"
        self.claims = base + b"/claim/"
        self.dead = base + b"/dead/"

    # ------------------------------------------------------------------ producers

    def push(self, payload: bytes | str, priority: int = 0) -> str:
        """Append a message; its id. Lower `priority` numbers are taken first."""
        if not 0 <= priority <= PRIORITY_MAX:
            raise ValueError(f"priority must be within 0..{PRIORITY_MAX}")
        allocated = self.client.txn([], [txn.put(self.seq_key, b"")], [], retry_safe=True)
        message_id = f"{priority:05d}/{allocated.header.revision:020d}"
        key = self.ready + message_id.encode()
        self.client.txn(
            [txn.create_revision(key) == 0], [txn.put(key, _encode(0, txn.to_bytes(payload)))], []
        )
        return message_id

    # ------------------------------------------------------------------ consumers

    def pop(self, timeout_s: float | None = None, *, visibility_s: int | None = None) -> Message:
        """Take the first message, waiting at most `timeout_s` (forever if None; 0: do not
        wait); raises `QueueEmpty`. The message returns to the queue unless acked within
        the visibility timeout."""
        deadline = deadline_after(timeout_s)
        while True:
            self.reap()
            first = self.client.get(self.ready, prefix=True, limit=1)
            if first.kvs:
                message = self._take(first.kvs[0], visibility_s or self.visibility_s)
                if message is not None:
                    return message
                continue
            left = remaining_s(deadline)
            if left is not None and left <= 0:
                raise QueueEmpty(f"queue {self.name!r} is empty")
            wait_for_event(
                self.client,
                self.base,
                first.header.revision,
                _wakes_pop,
                prefix=True,
                deadline=deadline,
            )

    def _take(self, kv: kv_pb2.KeyValue, visibility_s: int) -> Message | None:
        message_id = kv.key[len(self.ready) :].decode()
        deliveries, payload = _decode(kv.value)
        grant = self.client.lease_grant(visibility_s)
        claim = self.claims + message_id.encode()
        taken = self.client.txn(
            [txn.mod_revision(kv.key) == kv.mod_revision],
            [
                txn.delete(kv.key),
                txn.put(self.inflight + message_id.encode(), _encode(deliveries + 1, payload)),
                txn.put(claim, b"", lease=grant.ID),
            ],
            [],
        )
        if not taken.succeeded:
            with contextlib.suppress(ClientError):
                self.client.lease_revoke(grant.ID)
            return None
        priority = int(message_id.split("/", 1)[0])
        return Message(
            message_id, payload, priority, deliveries + 1, taken.header.revision, grant.ID
        )

    def ack(self, message: Message) -> None:
        """Done with the message: delete it. `NotHeld` if its visibility timeout passed
        (it may be delivered again, or already was)."""
        claim = self.claims + message.id.encode()
        done = self.client.txn(
            [txn.create_revision(claim) == message.claim_revision],
            [txn.delete(claim), txn.delete(self.inflight + message.id.encode())],
            [],
        )
        with contextlib.suppress(ClientError):
            self.client.lease_revoke(message.lease_id)
        if not done.succeeded:
            raise NotHeld(f"message {message.id} was not acked in time; it returns to the queue")

    def nack(self, message: Message) -> None:
        """Give the message back now (it counts as a delivery)."""
        claim = self.claims + message.id.encode()
        self.client.txn(
            [txn.create_revision(claim) == message.claim_revision], [txn.delete(claim)], []
        )
        with contextlib.suppress(ClientError):
            self.client.lease_revoke(message.lease_id)
        self.reap()

    def extend(self, message: Message) -> None:
        """Restart the message's visibility timeout (for long work)."""
        try:
            self.client.lease_keep_alive_once(message.lease_id)
        except ClientError as error:
            raise NotHeld(f"message {message.id}: claim already expired") from error

    # ------------------------------------------------------------------ restoring

    def reap(self) -> int:
        """Return messages whose claim expired to ready (or dead); how many moved."""
        snapshot = self.client.txn(
            [],
            [
                txn.get(self.inflight, prefix=True, limit=REAP_MAX),
                txn.get(self.claims, prefix=True, keys_only=True),
            ],
            [],
        )
        inflight = snapshot.responses[0].response_range.kvs
        claimed = {kv.key[len(self.claims) :] for kv in snapshot.responses[1].response_range.kvs}
        moved = 0
        for kv in inflight:
            message_id = kv.key[len(self.inflight) :]
            if message_id in claimed:
                continue
            deliveries, _ = _decode(kv.value)
            target = self.dead if deliveries >= self.max_deliveries else self.ready
            restored = self.client.txn(
                [
                    txn.mod_revision(kv.key) == kv.mod_revision,
                    txn.create_revision(self.claims + message_id) == 0,
                ],
                [txn.delete(kv.key), txn.put(target + message_id, kv.value)],
                [],
            )
            moved += int(restored.succeeded)
        return moved

    # ------------------------------------------------------------------ inspection

    def size(self) -> int:
        """Messages waiting (not counting those taken and not yet acked)."""
        return self.client.get(self.ready, prefix=True, count_only=True).count

    def in_flight(self) -> int:
        return self.client.get(self.inflight, prefix=True, count_only=True).count

    def dead_letters(self) -> list[Message]:
        """Messages given up after `max_deliveries` deliveries."""
        response = self.client.get(self.dead, prefix=True)
        result = []
        for kv in response.kvs:
            message_id = kv.key[len(self.dead) :].decode()
            deliveries, payload = _decode(kv.value)
            result.append(Message(message_id, payload, int(message_id[:5]), deliveries))
        return result

    def purge_dead(self) -> int:
        """Delete every dead letter; how many."""
        response = self.client.txn([], [txn.delete(self.dead, prefix=True)], [], retry_safe=True)
        deleted: int = response.responses[0].response_delete_range.deleted
        return deleted


def _wakes_pop(event: kv_pb2.Event) -> bool:
    """A new ready message or an expired claim may let a waiting pop proceed."""
    key = event.kv.key
    if event.type == kv_pb2.Event.PUT:
        return b"/ready/" in key
    return b"/claim/" in key

"""Broadcast: ordered publish/subscribe on the replicated log.

    channel = Broadcast(client, "events/config")
    position = channel.publish(b"reload")
    with channel.subscribe(after=last_seen) as subscription:
        for message in subscription:
            apply(message.payload)
            last_seen = message.position       # persist it to resume after a restart

Every message is a put of one key, `<name>/log`; its position is the put's revision.
Revisions are the cluster's single total order, so every subscriber sees every message in
the same order, and a subscriber resumes exactly after its last position by watching from
position + 1 (the watch also resumes by itself across member failures).

Limits. History lives in the store's MVCC history until compaction: a subscriber that
resumes from a compacted position gets `Compacted` (with `compact_revision`, the oldest
position still available) and must decide what to do about the gap. A `publish` that
raised `OutcomeUnknown` may have published: publishing again may deliver it twice (carry
an id in the payload if duplicates matter).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from synod.client import Client, Watcher, kv_pb2


@dataclass(frozen=True)
class BroadcastMessage:
    position: int
    payload: bytes


class Broadcast:
    """A named channel."""

    def __init__(self, client: Client, name: str) -> None:
        assert name
        self.client = client
        self.name = name
        self.key = name.rstrip("/").encode() + b"/log"

    def publish(self, payload: bytes | str) -> int:
        """Publish; the message's position (ordered like every other publish)."""
        return self.client.put(self.key, payload).header.revision

    def last_position(self) -> int:
        """The position of the latest message (0 if none)."""
        kv = self.client.get_one(self.key)
        return 0 if kv is None else kv.mod_revision

    def subscribe(self, after: int | None = None) -> Subscription:
        """Messages published after position `after` (0: from the oldest kept; None: only
        messages published from now on)."""
        start = 0 if after is None else after + 1
        return Subscription(self.client.watch(self.key, start_revision=start))


class Subscription:
    """An ordered stream of messages; `position` is the last one delivered."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.position = 0
        self._pending: list[BroadcastMessage] = []

    def get(self, timeout_s: float | None = None) -> BroadcastMessage | None:
        """The next message, or None at the timeout."""
        while not self._pending:
            response = self.watcher.get(timeout_s)
            if response is None:
                return None
            self._pending = [
                BroadcastMessage(event.kv.mod_revision, event.kv.value)
                for event in response.events
                if event.type == kv_pb2.Event.PUT
            ]
        message = self._pending.pop(0)
        self.position = message.position
        return message

    def __iter__(self) -> Iterator[BroadcastMessage]:
        while True:
            message = self.get()
            if message is None:
                return
            yield message

    def close(self) -> None:
        self.watcher.cancel()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

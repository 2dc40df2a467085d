"""FencingGuard: the downstream half of a fenced lock or election.

A lock or leadership protects nothing by itself once its holder can be paused or its
messages delayed: the holder acts on a belief that may have expired. The recipes therefore
hand out a fencing token (the create revision of the holder's key, which grows with each
new holder). A resource that accepts writes remembers the highest token it has seen and
refuses any lower one; a deposed holder that wakes up is then refused instead of
corrupting data. This class is that check for one resource, in memory; a real resource
keeps the highest token with its data (same transaction as the write).
"""

from __future__ import annotations

import threading

from synod.recipes.errors import StaleToken


class FencingGuard:
    """Accepts tokens that are not older than the newest accepted one."""

    def __init__(self, highest: int = 0) -> None:
        assert highest >= 0
        self.highest = highest
        self._lock = threading.Lock()

    def check(self, token: int) -> None:
        """Accept `token` (remembering it) or raise `StaleToken`."""
        if token <= 0:
            raise StaleToken(f"fencing token {token} is not a token")
        with self._lock:
            if token < self.highest:
                raise StaleToken(f"fencing token {token} is older than {self.highest}")
            self.highest = token

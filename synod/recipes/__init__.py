"""Coordination recipes on the public client (synod.client) only: txn, lease and watch.

One module per recipe: `Lock`, `Election`, `Semaphore`, `Barrier`/`DoubleBarrier`,
`Queue`, `Broadcast`, plus `Session` (a kept-alive lease) and `FencingGuard` (the
downstream check of fencing tokens). See docs/recipes/.
"""

from synod.recipes.barrier import Barrier, DoubleBarrier
from synod.recipes.broadcast import Broadcast, BroadcastMessage, Subscription
from synod.recipes.election import Election, Leader
from synod.recipes.errors import (
    LockReentryError,
    NotHeld,
    QueueEmpty,
    RecipeError,
    SessionLost,
    StaleToken,
)
from synod.recipes.fencing import FencingGuard
from synod.recipes.lock import Lock
from synod.recipes.queue import Message, Queue
from synod.recipes.semaphore import Semaphore
from synod.recipes.session import Session

__all__ = [
    "Barrier",
    "Broadcast",
    "BroadcastMessage",
    "DoubleBarrier",
    "Election",
    "FencingGuard",
    "Leader",
    "Lock",
    "LockReentryError",
    "Message",
    "NotHeld",
    "Queue",
    "QueueEmpty",
    "RecipeError",
    "Semaphore",
    "Session",
    "SessionLost",
    "StaleToken",
    "Subscription",
]

"""Python's cyclic garbage collector, tuned for a member process.

A member's heap is mostly its store and its modules: long-lived objects without cycles,
freed by reference counting. With Python's default thresholds (700, 10, 10) a leader under
native put load (bench/profile_leader.py, 256 puts in flight, collections timed with
gc.callbacks) spent 1.1-1.2 s of its 6.3 s of CPU in the collector, with full collections
of up to 99 ms every half second or so: every put leaves survivors (its key's new record),
so the young generations fill and the whole heap is walked again and again. With the
thresholds below the same run spent 0.07-0.12 s in it (pauses 19-53 ms) and served about
15% more puts; the cycles a server makes (asyncio tasks, exceptions with tracebacks) are
still collected, just in larger, rarer young collections.
"""

from __future__ import annotations

import gc

# Young collections after this many net allocations of tracked objects (default 700).
YOUNG_ALLOCATIONS_MAX = 50_000
# A middle collection every this many young ones, a full one every this many middle ones
# (defaults 10 and 10; a full one also waits until the survivors grew by a quarter).
MIDDLE_EVERY = 20
FULL_EVERY = 100


def tune_collector() -> None:
    """Set the thresholds, and freeze what startup built (modules, classes, functions) so
    no collection walks it again; frozen objects are still freed by reference counting."""
    gc.freeze()
    gc.set_threshold(YOUNG_ALLOCATIONS_MAX, MIDDLE_EVERY, FULL_EVERY)

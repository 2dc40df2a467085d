"""Seeded randomness for the simulator: one integer seed, many named child streams.

Every component that draws (the network, each member's core, each client, the fault
scheduler, each disk) gets its own `random.Random` derived from the run's seed and the
component's name. One component drawing more or less than before then shifts no other
component's draws, so a change in one place keeps the rest of a seed's run recognisable, and
the same seed always reproduces the same run. Nothing else in the simulator may draw.
"""

from __future__ import annotations

import hashlib
import random

STREAMS_MAX = 10_000


class SeededStreams:
    """Hands out one `random.Random` per name, each seeded from `(seed, name)`."""

    def __init__(self, seed: int) -> None:
        assert seed >= 0, "seeds are non-negative so that the reproduce command is plain"
        self.seed = seed
        self._streams: dict[str, random.Random] = {}

    def stream(self, name: str) -> random.Random:
        """The stream named `name`; asking twice returns the same stream (it keeps its place)."""
        assert name, "every stream has a name"
        existing = self._streams.get(name)
        if existing is not None:
            return existing
        assert len(self._streams) < STREAMS_MAX, "too many streams: names should be bounded"
        # blake2b rather than hash(): str hashes are salted per process, digests are not.
        digest = hashlib.blake2b(f"{self.seed}/{name}".encode(), digest_size=8).digest()
        created = random.Random(int.from_bytes(digest, "big"))
        self._streams[name] = created
        return created

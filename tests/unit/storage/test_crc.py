"""crc32_combine gives zlib's crc32 of a concatenation from its parts' crc32s (the snapshot
file is hashed once on load, issue 8). Method: compare with zlib.crc32 over the joined bytes
for lengths around every power of two the squaring loop branches on."""

from __future__ import annotations

import random
import zlib

import pytest

from synod.storage.crc import crc32_combine


@pytest.mark.parametrize("second_bytes", [0, 1, 2, 3, 4, 7, 8, 9, 255, 256, 1000, 65_537])
def test_combined_crc_equals_the_crc_of_the_concatenation(second_bytes: int) -> None:
    rng = random.Random(second_bytes)
    for first_bytes in (0, 1, 13, 4096):
        first = rng.randbytes(first_bytes)
        second = rng.randbytes(second_bytes)
        combined = crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second))
        assert combined == zlib.crc32(first + second)


def test_a_changed_part_changes_the_combined_crc() -> None:
    first, second = b"meta", b"data" * 1000
    combined = crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second))
    changed = second[:-1] + b"x"
    assert crc32_combine(zlib.crc32(first), zlib.crc32(changed), len(changed)) != combined

"""crc32 (zlib's polynomial) of a concatenation from the crc32s of its parts.

A snapshot file is checked twice on load: the frame's crc over `prefix + data` and the WAL
reference's crc over `data` alone. Hashing hundreds of MB twice costs 0.15 s per pass on
the development VM (issue 8: a 1,000,000-key restart); with `crc32_combine` the data is
hashed once. zlib has the function in C but Python's zlib module does not expose it; this
is the same GF(2) method: the crc of `data` followed by n zero bytes is a linear map of the
crc, computed by squaring the one-zero-bit operator log2(n) times.
"""

from __future__ import annotations

CRC32_POLYNOMIAL_REVERSED = 0xEDB88320
CRC_BITS = 32


def crc32_combine(crc_first: int, crc_second: int, second_bytes: int) -> int:
    """crc32(a + b) given crc32(a), crc32(b) and len(b)."""
    assert 0 <= crc_first < 1 << CRC_BITS
    assert 0 <= crc_second < 1 << CRC_BITS
    assert second_bytes >= 0
    # The operator that appends one zero bit, then two, four, eight (one zero byte).
    odd = [CRC32_POLYNOMIAL_REVERSED] + [1 << bit for bit in range(CRC_BITS - 1)]
    even = _square(odd)
    odd = _square(even)
    remaining = second_bytes
    crc = crc_first
    while remaining:
        even = _square(odd)
        if remaining & 1:
            crc = _times(even, crc)
        remaining >>= 1
        if not remaining:
            break
        odd = _square(even)
        if remaining & 1:
            crc = _times(odd, crc)
        remaining >>= 1
    return crc ^ crc_second


def _times(matrix: list[int], vector: int) -> int:
    total = 0
    row = 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _square(matrix: list[int]) -> list[int]:
    return [_times(matrix, row) for row in matrix]

"""How long the linearizability checker takes on histories the simulator produces.

Generates linearizable histories from a seed (`synod.sim.history.generate_history`), checks
each a few times and prints the best wall-clock time, so that a regression in the search shows
as a number. The headline case is the issue's target: 10,000 operations over 100 keys with 16
concurrent clients and 1% unknown outcomes, in under 5 s on a 2-core machine. The other cases
show where the search gets expensive: many clients on few keys, and proving a violation on a
key where many unknown outcomes overlap, which may end inconclusive (budget exhausted).

Run: .venv/bin/python bench/checker.py [--repeat N] [--seed S]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time

from synod.sim.history import Operation, OpKind, generate_history
from synod.sim.linearizability import CheckResult, check_history

TARGET_S = 5.0

# (operations, keys, clients, unknown fraction)
CASES = [
    (10_000, 100, 16, 0.01),
    (10_000, 100, 16, 0.05),
    (10_000, 10, 16, 0.01),
    (10_000, 100, 64, 0.01),
    (2_000, 1, 8, 0.01),
    (1_000, 1, 16, 0.01),
]


# The same shapes with the last read changed to a value never written.
CORRUPTED_CASES = [
    (10_000, 100, 16, 0.01),
    (1_000, 1, 4, 0.05),
    (1_000, 1, 4, 0.2),
]


def corrupt_last_read(history: list[Operation]) -> list[Operation]:
    """The same history with its last known read changed to a value never written."""
    corrupted = list(history)
    for index in range(len(corrupted) - 1, -1, -1):
        operation = corrupted[index]
        if operation.kind is OpKind.GET and operation.known:
            corrupted[index] = dataclasses.replace(operation, result="never written")
            return corrupted
    raise AssertionError("the history has no known read")


def best_time_s(history: list[Operation], repeat: int) -> tuple[float, CheckResult]:
    best_s = float("inf")
    result = None
    for _ in range(repeat):
        start_s = time.perf_counter()
        result = check_history(history)
        best_s = min(best_s, time.perf_counter() - start_s)
    assert result is not None
    return best_s, result


def verdict(result: CheckResult) -> str:
    if result.ok:
        return "linearizable"
    if result.inconclusive:
        return f"inconclusive on {result.key}"
    return f"violation on {result.key}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args()
    print(f"{'operations':>10} {'keys':>5} {'clients':>7} {'unknown':>7} {'best_s':>8}  verdict")
    headline_s = None
    for operation_count, key_count, client_count, unknown_fraction in CASES:
        rng = random.Random(arguments.seed)
        history = generate_history(rng, operation_count, key_count, client_count, unknown_fraction)
        elapsed_s, result = best_time_s(history, arguments.repeat)
        headline_s = elapsed_s if headline_s is None else headline_s
        print(
            f"{operation_count:>10} {key_count:>5} {client_count:>7} {unknown_fraction:>7.2f} "
            f"{elapsed_s:>8.3f}  {verdict(result)}"
        )
    # Proving a violation means exhausting the search: costly where unknown outcomes pile up.
    for operation_count, key_count, client_count, unknown_fraction in CORRUPTED_CASES:
        rng = random.Random(arguments.seed)
        history = generate_history(rng, operation_count, key_count, client_count, unknown_fraction)
        elapsed_s, result = best_time_s(corrupt_last_read(history), arguments.repeat)
        print(
            f"{operation_count:>10} {key_count:>5} {client_count:>7} {unknown_fraction:>7.2f} "
            f"{elapsed_s:>8.3f}  {verdict(result)} (a read corrupted)"
        )
    assert headline_s is not None
    status = "ok" if headline_s < TARGET_S else "TOO SLOW"
    print(f"headline (10,000 ops, 100 keys, 16 clients): {headline_s:.3f} s")
    print(f"target {TARGET_S} s: {status}")


if __name__ == "__main__":
    main()

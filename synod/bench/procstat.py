"""CPU time of processes from /proc/PID/stat (utime + stime, all threads, in clock ticks)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

UTIME_FIELD = 14  # 1-based field numbers of proc(5)
STIME_FIELD = 15
STATE_FIELD = 3
PPID_FIELD = 4


def clock_ticks_per_s() -> int:
    ticks = os.sysconf("SC_CLK_TCK")
    assert ticks > 0
    return ticks


def parse_stat(text: str) -> tuple[int, int]:
    """(utime, stime) in clock ticks from the text of /proc/PID/stat. The command name (field
    2) is in parentheses and may itself hold spaces and parentheses: split after the last ')'."""
    close = text.rfind(")")
    if close < 0:
        raise ValueError(f"not a /proc/PID/stat line: {text[:80]!r}")
    rest = text[close + 1 :].split()
    offset = STATE_FIELD  # rest[0] is field 3
    if len(rest) <= STIME_FIELD - offset:
        raise ValueError(f"too few fields in /proc/PID/stat: {text[:80]!r}")
    return int(rest[UTIME_FIELD - offset]), int(rest[STIME_FIELD - offset])


def cpu_s(pid: int, proc_root: str = "/proc") -> float:
    """CPU seconds (user + system) `pid` has used so far; 0.0 if it is gone."""
    try:
        with open(f"{proc_root}/{pid}/stat") as stat_file:
            text = stat_file.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    utime, stime = parse_stat(text)
    return (utime + stime) / clock_ticks_per_s()


def parent_pid(text: str) -> int:
    """The parent's pid (field 4) from the text of /proc/PID/stat."""
    return int(text[text.rfind(")") + 1 :].split()[PPID_FIELD - STATE_FIELD])


def with_descendants(pids: Iterable[int], proc_root: str = "/proc") -> list[int]:
    """`pids` and every process below them, as they are now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc_root}/{entry}/stat") as stat_file:
                parent = parent_pid(stat_file.read())
        except (OSError, ValueError, IndexError):
            continue  # gone, or not a process
        children.setdefault(parent, []).append(int(entry))
    found: list[int] = []
    pending = list(pids)
    while pending:
        pid = pending.pop(0)
        if pid not in found:
            found.append(pid)
            pending.extend(sorted(children.get(pid, ())))
    return found


def sample(pids: Iterable[int], proc_root: str = "/proc") -> dict[int, float]:
    return {pid: cpu_s(pid, proc_root) for pid in pids}


def deltas(before: Mapping[int, float], after: Mapping[int, float]) -> dict[int, float]:
    """CPU seconds used by each pid between two samples (never negative)."""
    return {pid: max(0.0, after.get(pid, 0.0) - before.get(pid, 0.0)) for pid in before}


def parse_machine_stat(text: str) -> tuple[int, int]:
    """(busy, total) clock ticks of all cores from the text of /proc/stat: busy is user,
    nice, system, irq, softirq and steal; total adds idle and iowait."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            user, nice, system, idle, iowait, irq, softirq, steal = (
                int(value) for value in [*fields[1:9], "0", "0", "0"][:8]
            )
            busy = user + nice + system + irq + softirq + steal
            return busy, busy + idle + iowait
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def machine_busy_s(proc_root: str = "/proc") -> float:
    """CPU seconds all cores of the machine have been busy since boot."""
    with open(f"{proc_root}/stat") as stat_file:
        busy, _ = parse_machine_stat(stat_file.read())
    return busy / clock_ticks_per_s()

"""CPU time and peak memory of server processes, read from /proc (Linux only)."""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses, so split after its last ")".
    return text[text.rindex(")") + 2:].split()


def process_cpu_seconds(pid: int) -> float:
    """Return utime + stime + cutime + cstime of ``pid``, or 0 when it has exited.

    cutime and cstime cover children that the process has already waited for;
    live children are counted separately by :func:`tree_cpu_seconds`.
    """
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After the command name, field 3 (state) is index 0, so utime (14) is index 11.
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + cutime + cstime) / CLOCK_TICKS_PER_SECOND


def descendants(pid: int) -> list[int]:
    """Return the live descendants of ``pid``."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """Return the CPU seconds of ``pid`` and all its live descendants."""
    return sum(process_cpu_seconds(p) for p in [pid, *descendants(pid)])


def _status_bytes(pid: int, field: str) -> int:
    """Return a kB field of /proc/PID/status in bytes, or 0 when the process has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def peak_rss_bytes(pid: int) -> int:
    """Return VmHWM, the peak resident set size of ``pid``, or 0 when it has exited."""
    return _status_bytes(pid, "VmHWM")


def resident_bytes(pid: int) -> int:
    """Return VmRSS, the current resident set size of ``pid``, or 0 when it has exited."""
    return _status_bytes(pid, "VmRSS")


def largest_resident_bytes(pid: int) -> int:
    """Return the largest VmRSS among ``pid`` and its live descendants (the busiest worker of a server)."""
    return max(resident_bytes(p) for p in [pid, *descendants(pid)])


def total_cpu_seconds(pids: list[int]) -> dict[int, float]:
    """Return the CPU seconds of each pid that is still alive."""
    return {pid: process_cpu_seconds(pid) for pid in pids if _stat_fields(pid) is not None}


def machine_busy_seconds() -> float:
    """Return the CPU seconds all cores have spent busy since boot (every /proc/stat state but idle and iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS_PER_SECOND

"""CPU time of other processes, from Linux's ``/proc``: what the benchmarks charge to a server or a receiver."""

from __future__ import annotations

import os
from pathlib import Path


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far; 0 where it cannot be read (ended, not Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, ValueError, IndexError):
        return 0.0


def tree_cpu(pid: int) -> float:
    """CPU seconds of process ``pid`` and its descendants so far (a supervisor and its workers)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        total += process_cpu(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):  # ended meanwhile
            continue
    return total

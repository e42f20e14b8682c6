"""Who holds an outbox lease or writes a journal: this process's identity, and whether a process has ended.

An identity is ``host/pid/start``, where ``start`` is when the process started
(``/proc/<pid>/stat``'s start time on Linux), so a pid the system has since given
to another process does not pass for the owner. An owner on another host, or
one this system cannot check, is taken as alive: its leases end when they run out.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None where it cannot be read."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def identity(pid: int | None = None) -> str:
    """``host/pid/start`` of process ``pid`` (this one by default: read once per process)."""
    return _own(os.getpid()) if pid is None else _identity(pid)


def _identity(pid: int) -> str:
    return f"{socket.gethostname()}/{pid}/{_start_time(pid) or '?'}"


@functools.lru_cache(maxsize=2)
def _own(pid: int) -> str:
    return _identity(pid)  # keyed by pid: a forked child reads its own


def has_ended(owner: str) -> bool:
    """True only if the process behind ``owner`` is known to have ended (on this host)."""
    host, pid_text, start = (owner.split("/") + ["", "", ""])[:3]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another host's process (or not an identity): wait for the lease
    pid = int(pid_text)
    if start != "?":
        now = _start_time(pid)
        if now is not None or Path("/proc/self/stat").exists():
            return now != start  # gone, or the pid belongs to a newer process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists (another user's)
    return False

"""A small real disk for the full-disk tests: a tmpfs of a few megabytes, and a ballast file that fills it.

Mounting needs root (or CAP_SYS_ADMIN); :func:`mount` returns why it could not, and the tests skip
with that reason (or fail under ``CI=true``, where they must run). :func:`fill` refuses any folder
that is not such a small mount, so a mistake can never fill the machine's own disk.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

LARGEST_MB = 16
"""The largest file system :func:`fill` agrees to fill."""


def mount(folder: Path, size_mb: int) -> str | None:
    """Mount a ``size_mb`` MB tmpfs at ``folder`` (made if missing); None, or why it could not."""
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return "no mount command"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return done.stderr.strip() or f"mount exited {done.returncode}"
    return None


def unmount(folder: Path) -> None:
    """Unmount ``folder`` (lazily: a process of the test may still hold a file there)."""
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a ballast file into ``folder`` until its small tmpfs is full; the ballast's path."""
    fs = os.statvfs(folder)
    assert os.path.ismount(folder) and fs.f_blocks * fs.f_frsize <= LARGEST_MB << 20, \
        f"{folder} is not a small tmpfs mount: refusing to fill it"
    ballast = folder / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return ballast

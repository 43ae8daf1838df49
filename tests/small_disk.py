"""A small real file system that a test can fill: a tmpfs mounted for the test (CI runs as root).

Where mounting is refused the test FAILS saying so: a disk-full guarantee that was never exercised
must not look like a pass.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def mounted_tmpfs(mount_point: Path, size_mb: int) -> Iterator[Path]:
    mount_point.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount_point)],
                              capture_output=True, text=True, timeout=30)
        refused = done.returncode != 0 and (done.stderr.strip() or f"exit {done.returncode}")
    except (OSError, subprocess.SubprocessError) as exc:
        refused = str(exc)
    if refused:
        pytest.fail(f"DISK-FULL TEST NOT RUN: mounting a {size_mb} MB tmpfs was refused ({refused}). This test "
                    f"needs root (or CAP_SYS_ADMIN) to mount one, as CI has; run it there.", pytrace=False)
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(disk: Path, slack: int = 0) -> Path:
    """Write a ballast file until the disk is full, then give back `slack` bytes."""
    ballast = disk / "ballast"
    chunk = b"\0" * (1 << 20)
    with open(ballast, "wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        size = f.tell()
    if slack:
        os.truncate(ballast, max(0, size - slack))
    return ballast

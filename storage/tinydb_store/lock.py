"""The embedded store belongs to one process at a time: an exclusive `flock` on `LOCK` in the store.

The kernel releases the lock when the holder dies (even by SIGKILL), so a stale file never blocks a restart;
a live holder makes `acquire` fail with `StoreLocked`, naming its PID.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import StoreLocked


class StoreLock:
    def __init__(self, root: Path) -> None:
        self.path = root / "LOCK"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLocked(str(self.path.parent), f"pid {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

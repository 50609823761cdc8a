"""The node-local half of mutual exclusion per pool: an exclusive `flock`, taken before the Lease.

The invocations of one node queue here (a blocking flock hands over at once), so at most one
process per node and pool talks to the Lease. `fcntl.flock` is used directly rather than
`filelock`, which waits by polling (50 ms steps by default).
"""

from __future__ import annotations

import fcntl
import os
import time

from whereabouts.errors import TryAgainLater

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class _Timeout(Exception):
    pass


def _raise_timeout(signum: int, frame: Any) -> None:
    raise _Timeout()


class NodeLock:
    """An exclusive flock on `<dir>/<name>.lock`, waited for until `deadline` (monotonic)."""

    def __init__(self, directory: str, name: str, deadline: float) -> None:
        self.path = os.path.join(directory, f"{name}.lock")
        self.directory = directory
        self.deadline = deadline
        self.fd: int | None = None
        self.waited = 0.0

    def acquire(self) -> bool:
        """True when held; False when the directory cannot be used (we then rely on the Lease alone)."""
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:
            return False
        start = time.monotonic()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            import signal

            left = self.deadline - start
            if left <= 0:
                os.close(fd)
                raise TryAgainLater(f"node lock {self.path} not obtained before the deadline") from None
            previous = signal.signal(signal.SIGALRM, _raise_timeout)
            signal.setitimer(signal.ITIMER_REAL, left)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except _Timeout:
                os.close(fd)
                raise TryAgainLater(
                    f"node lock {self.path} still held by another invocation after {left:.1f}s"
                ) from None
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
        self.waited = time.monotonic() - start
        self.fd = fd
        return True

    def note(self) -> bytes:
        """What the last holder left in the lock file (a node's block hints); b"" when not held."""
        return os.pread(self.fd, 65536, 0) if self.fd is not None else b""

    def set_note(self, data: bytes) -> None:
        """Leave `data` for the next holder. A crash midway leaves a note that does not parse,
        which readers treat as none: it is a hint, checked against the store before use."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

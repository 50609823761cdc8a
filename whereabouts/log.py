"""Structured log: one JSON object per line in `log_file`, via structlog.

structlog is imported only when a `log_file` is configured, so an invocation
without one does not pay for it. The file is opened append-only, created 0600,
and never through a symlink (O_NOFOLLOW), so a planted link cannot redirect it.
Callers pass plain fields; no token, key or certificate is ever handed to a log.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on the hot path (~3 ms)
if TYPE_CHECKING:
    from typing import Any

LEVELS = {"debug": 10, "verbose": 20, "info": 20, "error": 40, "panic": 50}


class Log:
    """Discards everything: the logger of an invocation without `log_file`."""

    def bind(self, **fields: Any) -> None:
        pass

    def debug(self, event: str, **fields: Any) -> None:
        pass

    def info(self, event: str, **fields: Any) -> None:
        pass

    def error(self, event: str, **fields: Any) -> None:
        pass


class FileLog(Log):
    def __init__(self, path: str, level: str) -> None:
        import structlog

        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "a", buffering=1, encoding="utf-8")
        self._logger = structlog.wrap_logger(
            structlog.WriteLogger(self._file),
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, 20)),
        )

    def bind(self, **fields: Any) -> None:
        self._logger = self._logger.bind(**fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._logger.debug(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._logger.info(event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._logger.error(event, **fields)


def open_log(path: str, level: str) -> Log:
    """A `FileLog`, or the null `Log` when there is no path or it cannot be opened."""
    if not path:
        return Log()
    try:
        return FileLog(path, level)
    except OSError as e:
        print(f"whereabouts: cannot open log_file {path}: {e.strerror}", file=sys.stderr)
        return Log()

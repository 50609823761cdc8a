"""Structured log: one JSON object per line in `log_file`.

Written with `json`, which is loaded anyway, rather than structlog, whose import
would be paid on every pod attach with a `log_file` (doc/design.md, *Start-up cost*). The file is opened append-only, created 0600, never through a
symlink (O_NOFOLLOW), so a planted link cannot redirect it, and only if it is a
regular file (a FIFO would block the attach).
Callers pass plain fields; no token, key or certificate is ever handed to a log.
"""

from __future__ import annotations

import os
import sys

from whereabouts import jsontext
from whereabouts.files import open_append
from whereabouts.core.rfc3339 import format_time

TYPE_CHECKING = False
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
    """Appends one JSON object per line: the bound fields, the call's fields, then `event`,
    `level` and an RFC 3339 UTC `timestamp`. A failed write is dropped: a full disk must
    not fail a pod's attach."""

    def __init__(self, path: str, level: str) -> None:
        self._file = os.fdopen(open_append(path), "a", buffering=1, encoding="utf-8")
        self._min = LEVELS.get(level, 20)
        self._bound: dict[str, Any] = {}

    def bind(self, **fields: Any) -> None:
        self._bound.update(fields)

    def _write(self, level: str, event: str, fields: dict[str, Any]) -> None:
        line = {**self._bound, **fields, "event": event, "level": level, "timestamp": format_time()}
        try:
            self._file.write(jsontext.dumps(line, default=repr, ensure_ascii=False) + "\n")
        except (OSError, ValueError):
            pass

    def debug(self, event: str, **fields: Any) -> None:
        if self._min <= 10:
            self._write("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        if self._min <= 20:
            self._write("info", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        if self._min <= 40:
            self._write("error", event, fields)


def open_log(path: str, level: str) -> Log:
    """A `FileLog`, or the null `Log` when there is no path or it cannot be opened."""
    if not path:
        return Log()
    try:
        return FileLog(path, level)
    except OSError as e:
        print(f"whereabouts: cannot open log_file {path}: {e.strerror}", file=sys.stderr)
        return Log()

"""RFC 3339 times in UTC, as the API server writes them (a Lease's MicroTime) and as the plugin logs them.

One formatter and one parser for the per-invocation path: `time` is loaded anyway, `datetime` only
when a time is parsed (a waiter judging a held Lease).
"""

from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def format_time(ts: float | None = None) -> str:
    """`ts` (seconds since the epoch; default now) in UTC with microseconds: `2026-12-04T10:00:00.123456Z`."""
    ts = time.time() if ts is None else ts
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1_000_000):06d}Z"


def parse_time(text: Any) -> float | None:
    """Seconds since the epoch of an RFC 3339 time (any fraction, `Z` or an offset); None when it is not one."""
    if not isinstance(text, str):
        return None
    import datetime

    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None

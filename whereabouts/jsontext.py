"""JSON for the per-invocation path, through `_json`: the C scanner and encoder that `json` itself uses.

Importing `json` loads `re` (and with it `enum`) to compile the regular expressions of its
pure-Python fallback, which the plugin never runs: about 4 ms of CPU on every pod attach
(doc/design.md, *Start-up cost*). Results are `json`'s own: anything the fast path does not
take (a byte-order mark, an encoding other than UTF-8, a syntax error) is handed to `json`,
which then decodes it or raises its usual error. The operator side uses `json` as usual.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_WHITESPACE = " \t\n\r"  # what JSON allows around a value


class _Decoding:
    """The settings `json.loads` scans with (read once by the C scanner)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


_scan = _json.make_scanner(_Decoding())


def loads(data: str | bytes | bytearray) -> Any:
    """`json.loads(data)`."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        start = len(text) - len(text.lstrip(_WHITESPACE))
        value, end = _scan(text, start)
        if end == len(text) or not text[end:].strip(_WHITESPACE):
            return value
    except (ValueError, StopIteration, SystemError):
        # SystemError: on a syntax error, Python 3.11's scanner looks for json.decoder's exception
        # class in sys.modules and fails without an exception when json was never imported.
        pass
    import json

    return json.loads(data)


def _unserializable(o: Any) -> Any:
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def dumps(obj: Any, *, compact: bool = False, ensure_ascii: bool = True,
          default: Callable[[Any], Any] | None = None) -> str:
    """`json.dumps(obj)` with its defaults; `compact` is `separators=(",", ":")`."""
    encode = _json.make_encoder({}, default or _unserializable,
                                _json.encode_basestring_ascii if ensure_ascii else _json.encode_basestring,
                                None, ":" if compact else ": ", "," if compact else ", ", False, False, True)
    return "".join(encode(obj, 0))

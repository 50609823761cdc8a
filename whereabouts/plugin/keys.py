"""The keys of the `ipam` section: one table (type, default, bounds, a doc line), and the readers of its scalars.

doc/config.md documents exactly these keys with these defaults (tests/unit/test_config_doc.py checks
it). `whereabouts.plugin.config` reads the scalars through `value`, and the structured keys (ranges,
routes, dns, addresses) with parsers of their own.
"""

from __future__ import annotations

from whereabouts import jsontext
from whereabouts.core.pool import is_dns_subdomain
from whereabouts.core.record import Record
from whereabouts.errors import InvalidConfig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

LOG_LEVELS = ("debug", "verbose", "info", "error", "panic")
DEFAULT_NODE_LOCK_DIR = "/run/whereabouts"


def bad(key: str, value: Any, why: str) -> InvalidConfig:
    return InvalidConfig(f"invalid ipam config: {key}={jsontext.dumps(value)[:200]}: {why}")


def string(conf: dict[str, Any], key: str, default: str = "") -> str:
    """A string; unset or empty is `default`."""
    value = conf.get(key)
    if value is not None and not isinstance(value, str):
        raise bad(key, value, "must be a string")
    return value or default


def _boolean(conf: dict[str, Any], key: str, default: bool) -> bool:
    value = conf.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad(key, value, "must be true or false")
    return value


def _milliseconds(conf: dict[str, Any], key: str, default: int, bounds: tuple[int, int]) -> int:
    """A whole number of milliseconds within `bounds`; unset or 0 is `default`."""
    value = conf.get(key)
    if value is None or value == 0:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
        raise bad(key, value, f"must be a whole number of milliseconds from {bounds[0]} to {bounds[1]}")
    return value


def _seconds(conf: dict[str, Any], key: str, default: float, bounds: tuple[int, int]) -> float:
    value = conf.get(key) or default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not bounds[0] <= value <= bounds[1]:
        raise bad(key, value, f"must be a number of seconds from {bounds[0]} to {bounds[1]}")
    return float(value)


def _power_of_two(conf: dict[str, Any], key: str, default: int, bounds: tuple[int, int]) -> int:
    value = conf.get(key)
    if value is None or value == 0:
        return default
    if (isinstance(value, bool) or not isinstance(value, int) or not bounds[0] <= value <= bounds[1]
            or value & (value - 1)):
        raise bad(key, value, f"must be a power of two from {bounds[0]} to {bounds[1]} (addresses per IPPool)")
    return value


def _choice(conf: dict[str, Any], key: str, default: str, bounds: tuple[str, ...]) -> str:
    """One of `bounds`, in any case."""
    value = string(conf, key).lower() or default
    if value not in bounds:
        raise bad(key, conf.get(key), f"must be one of {', '.join(bounds)}")
    return value


def _object_name(conf: dict[str, Any], key: str, default: str, bounds: tuple[int, int]) -> str:
    """A prefix of pool, reservation and Lease names, so it must keep them valid DNS-1123 subdomains."""
    name = string(conf, key, default)
    if name and (len(name) > bounds[1] or not is_dns_subdomain(name)):
        raise bad(key, name, f"must be at most {bounds[1]} lower-case letters, digits, '-' and '.', with "
                  "each dot-separated part starting and ending with a letter or digit")
    return name


class Key(Record):
    """One key of the `ipam` section: its type and default as doc/config.md gives them (a test checks
    that page against `KEYS`), its bounds, and the reader of a scalar (None: read by its own parser)."""

    __slots__ = ("name", "type", "default", "bounds", "doc", "read", "shown")
    _defaults = {"bounds": None, "read": None, "shown": ""}
    name: str  # a dotted name is a key of an object: `kubernetes.kubeconfig`
    type: str
    default: Any  # what an unset key reads as (None: nothing)
    bounds: Any
    doc: str
    read: Callable[..., Any] | None
    shown: str  # what the doc says of the default when the value does not say it: REQUIRED, or how it is computed


REQUIRED = "required"
_DURATION = (1, 3_600_000)
KEYS = {k.name: k for k in (
    Key("type", "string", None, doc="must be \"whereabouts\"", shown=REQUIRED),
    Key("range", "string", None, doc="CIDR or start-end/prefix; required unless ipRanges is given", shown=REQUIRED),
    Key("range_start", "strings (IP addresses)", None, doc="narrows range", shown="the first and last usable address"),
    Key("range_end", "strings (IP addresses)", None, doc="narrows range", shown="the first and last usable address"),
    Key("exclude", "list of strings", None, doc="CIDRs or IPs never handed out"),
    Key("ipRanges", "list of objects", None, doc="more ranges, one address from each"),
    Key("gateway", "string (IP address)", None, doc="returned with each address of its IP version"),
    Key("network_name", "string", "", (1, 200), "prefix of pool and reservation names", _object_name),
    Key("enable_overlapping_ranges", "boolean", True, doc="claim each address cluster-wide", read=_boolean),
    Key("block_size", "integer", 0, (16, 65536), "addresses per block of a range split by node", _power_of_two),
    Key("node_slice_size", "string", None, doc="prefix length of the node slices"),
    Key("routes", "list of objects", None, doc="copied into the result"),
    Key("dns", "object", None, doc="copied into the result"),
    Key("addresses", "list of objects", None, doc="fixed addresses added to every result"),
    Key("kubernetes.kubeconfig", "string (path)", "", doc="the kubeconfig of every request", read=string,
        shown=REQUIRED),
    Key("configuration_path", "string (path)", None, doc="where to look for the flat file first"),
    Key("lock_timeout_ms", "integer (milliseconds)", 60000, (100, 3_600_000), "the budget of one invocation",
        _milliseconds),
    Key("leader_lease_duration", "integer (milliseconds)", 1500, _DURATION, "how long a vanished holder's Lease "
        "blocks", _milliseconds),
    Key("leader_retry_period", "integer (milliseconds)", 500, _DURATION, "how often a holder renews its Lease",
        _milliseconds),
    Key("leader_renew_deadline", "integer (milliseconds)", 1000, _DURATION, "how long a holder tries to renew",
        _milliseconds),
    Key("single_lease", "boolean", True, doc="one Lease for every pool, the Go plugin's", read=_boolean),
    Key("node_lock_dir", "string (path)", DEFAULT_NODE_LOCK_DIR, doc="directory of the node-local lock files",
        read=string),
    Key("log_file", "string (path)", "", doc="one JSON line per step, appended", read=string),
    Key("log_level", "string", "verbose", LOG_LEVELS, "how much log_file gets", _choice),
    Key("sleep_for_race", "seconds", 0, (0, 600), "a test knob: sleep between choosing and writing", _seconds),
)}


def read_key(conf: dict[str, Any], name: str) -> Any:
    """The key `name` of `conf` (for a dotted name, `conf` is its object) as its `KEYS` entry reads it."""
    key = KEYS[name]
    args = (key.default,) if key.bounds is None else (key.default, key.bounds)
    return key.read(conf, name.rpartition(".")[2], *args)

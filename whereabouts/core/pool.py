"""Object names and the `IPPool` allocation encoding, as the Go plugin writes them.

Compatibility lives here: a pool is named after its range, an allocation is keyed
by the decimal offset of its address from the network address, and a reservation
is named after its address. Where the Go plugin's name would be invalid (ranges and
addresses beginning with `::`), a `0` is put in front so that the name is valid.
"""

from __future__ import annotations

from whereabouts.errors import CorruptPool
from whereabouts.core.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from whereabouts.core.ranges import Address

GROUP = "whereabouts.cni.cncf.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
LEASE_PREFIX = "whereabouts-"

_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def is_dns_label(text: str, max_length: int = 63) -> bool:
    """Lower-case letters, digits and '-', beginning and ending with a letter or digit (DNS-1123).
    Plain string tests, not `re`: its import is paid on every pod attach (doc/design.md)."""
    return 0 < len(text) <= max_length and text[0] != "-" and text[-1] != "-" and _LABEL_CHARS.issuperset(text)


def is_dns_subdomain(name: str) -> bool:
    """A Kubernetes object name: dot-separated DNS-1123 labels, 253 characters at most."""
    return len(name) <= 253 and all(is_dns_label(part, 253) for part in name.split("."))


def normalize_range(text: str) -> str:
    if text.endswith(":"):
        text += "0"
    return text.replace(":", "-").replace("/", "-")


def with_network(network_name: str, normalized: str) -> str:
    name = f"{network_name}-{normalized}" if network_name else normalized
    if not is_dns_subdomain(name) and name.startswith("-"):
        name = "0" + name
    return name


def pool_name(cidr: str, network_name: str = "") -> str:
    """`10.0.0.0/8` -> `10.0.0.0-8`; `caa5::/64` -> `caa5---64`; `::/64` -> `0---64`."""
    return with_network(network_name, normalize_range(cidr))


def reservation_name(ip: Address, network_name: str = "") -> str:
    """`10.0.0.5` -> `10.0.0.5`; `fd00::5` -> `fd00--5`; `::5` -> `0--5`."""
    return with_network(network_name, normalize_range(str(ip)))


def lease_name(pool: str) -> str:
    """The Lease guarding one pool; hashed when the plain name would be too long."""
    name = LEASE_PREFIX + pool
    if len(name) <= 253:
        return name
    import hashlib

    digest = hashlib.sha256(pool.encode()).hexdigest()[:16]
    return f"{LEASE_PREFIX}{pool[:200].rstrip('-.')}-{digest}"


class Allocation(Record):
    """One entry of `spec.allocations`; `extra` keeps fields we do not interpret (e.g. ipamclaimref).
    Who holds what is decided in `whereabouts.core.ownership`."""

    __slots__ = ("container_id", "podref", "ifname", "extra")
    _defaults = {"extra": dict}
    container_id: str
    podref: str
    ifname: str
    extra: dict[str, Any]

    def encode(self) -> dict[str, Any]:
        return {**self.extra, "id": self.container_id, "podref": self.podref, "ifname": self.ifname}


class Pool(Record):
    """A decoded `IPPool`, keeping the raw object so a write changes only our entries.

    `keys` maps every offset that any entry holds to the keys holding it (taken, even
    when the entry itself does not decode); `undecodable` lists keys we could not read.
    """

    __slots__ = ("name", "cidr", "resource_version", "raw", "allocations", "keys", "undecodable")
    _defaults = {"keys": dict, "undecodable": list}
    name: str
    cidr: str
    resource_version: str
    raw: dict[str, Any]
    allocations: dict[int, Allocation]
    keys: dict[int, list[str]]
    undecodable: list[str]

    @property
    def taken(self) -> set[int]:
        return set(self.keys)

    def holder(self, offset: int) -> Allocation | None:
        """Who holds `offset`: its entry, a stand-in for an entry we cannot decode, or None."""
        if offset in self.allocations:
            return self.allocations[offset]
        if offset in self.keys:
            return Allocation("", "an undecodable pool entry", "")
        return None



def new_pool_object(name: str, cidr: str, namespace: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "IPPool",
        "metadata": {**(metadata or {}), "name": name, "namespace": namespace},
        "spec": {"range": cidr, "allocations": {}},
    }


def decode_pool(obj: Any, expected_cidr: str) -> Pool:
    """Read an `IPPool` object. Entries that do not decode are kept and their offsets held.

    A pool whose shape is wrong (no spec, allocations not a map) or whose range is not
    the one we were configured with raises `CorruptPool`: writing to it could lose data.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
        raise CorruptPool("stored IPPool is not an object with metadata")
    name = obj["metadata"].get("name", "?")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise CorruptPool(f"IPPool {name} has no spec object")
    if spec.get("range") != expected_cidr:
        raise CorruptPool(f"IPPool {name} holds range {spec.get('range')!r}, expected {expected_cidr!r}")
    raw_allocs = spec.get("allocations")
    if raw_allocs is None:
        raw_allocs = spec["allocations"] = {}
    if not isinstance(raw_allocs, dict):
        raise CorruptPool(f"IPPool {name}: spec.allocations is not a map")
    pool = Pool(name, expected_cidr, str(obj["metadata"].get("resourceVersion", "")), obj, {})
    for key, value in raw_allocs.items():
        offset = _offset_key(key)
        if offset is None:
            pool.undecodable.append(key)
            continue
        pool.keys.setdefault(offset, []).append(key)
        if isinstance(value, dict) and all(isinstance(value.get(k, ""), str) for k in ("id", "podref", "ifname")):
            extra = {k: v for k, v in value.items() if k not in ("id", "podref", "ifname")}
            alloc = Allocation(value.get("id", ""), value.get("podref", ""), value.get("ifname", ""), extra)
            # With duplicate keys for one offset ("5" and "05"), the first one stands.
            pool.allocations.setdefault(offset, alloc)
        else:
            pool.undecodable.append(key)
    return pool


def _offset_key(key: str) -> int | None:
    if not key.isascii() or not key.isdigit() or len(key) > 40:
        return None
    return int(key)


def set_allocation(pool: Pool, offset: int, alloc: Allocation) -> None:
    """Record `alloc` at `offset` in the raw object (replacing any entry for that offset)."""
    allocs = pool.raw["spec"]["allocations"]
    for key in pool.keys.get(offset, []):
        allocs.pop(key, None)
    allocs[str(offset)] = alloc.encode()
    pool.keys[offset] = [str(offset)]
    pool.allocations[offset] = alloc


def remove_allocation(pool: Pool, offset: int) -> None:
    allocs = pool.raw["spec"]["allocations"]
    for key in pool.keys.pop(offset, []):
        allocs.pop(key, None)
    pool.allocations.pop(offset, None)


def reservation_object(name: str, namespace: str, alloc: Allocation) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "OverlappingRangeIPReservation",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containerid": alloc.container_id, "podref": alloc.podref, "ifname": alloc.ifname},
    }

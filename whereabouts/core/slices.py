"""Node slices (`node_slice_size`): a range cut into equal subnets, one per node, as the Go plugin does it.

A `NodeSlicePool` object (named after the network) lists in `status.allocations` which
node holds which slice; the node-slice controller writes it, the plugin only reads it.
Each node then allocates in an IPPool of its own, named `[<network_name>-]<node>-<slice>`,
under a Lease of the same name, so nodes never contend with each other. Names, the order
of slices and the encoding are the Go plugin's, so both plugins and both controllers mix.
"""

from __future__ import annotations

import ipaddress

from whereabouts.core.pool import normalize_range, with_network

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from whereabouts.core.ranges import Network

KIND = "NodeSlicePool"
PLURAL = "nodeslicepools"
# More slices than this in one range is a configuration mistake (a /8 cut into /32s), not a plan.
MAX_SLICES = 65536


def parse_slice_size(text: str) -> int:
    """`/26` or `26` -> 26 (a prefix length); ValueError names what is wrong."""
    digits = text[1:] if text.startswith("/") else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > 3:
        raise ValueError(f"{text!r} is not a prefix length such as \"/26\"")
    return int(digits)


def check_slicing(network: Network, prefix: int) -> None:
    """Raise ValueError unless `network` can be cut into slices of `/prefix` with addresses to hand out."""
    if prefix < network.prefixlen:
        raise ValueError(f"slices of /{prefix} are wider than the range {network}")
    if prefix > network.max_prefixlen - 2:
        raise ValueError(f"slices of /{prefix} hold no address to hand out (network and broadcast only)")
    if prefix - network.prefixlen > 16:
        raise ValueError(f"{network} cut into /{prefix} makes more than {MAX_SLICES} slices")


def divide(network: Network, prefix: int) -> list[str]:
    """Every slice of the range, lowest first (the order the Go controller assigns them in)."""
    check_slicing(network, prefix)
    return [str(s) for s in network.subnets(new_prefix=prefix)]


def slice_set_name(network_name: str, name: str) -> str:
    """The NodeSlicePool of a network: named after `network_name`, else after the network's `name`."""
    return network_name or name


def slice_pool_name(network_name: str, node: str, slice_cidr: str) -> str:
    """`node-1`, `10.0.0.64/26` -> `node-1-10.0.0.64-26`; with a network name `<net>-node-1-...`.
    The Lease guarding the pool has the same name."""
    return with_network(network_name, f"{node}-{normalize_range(slice_cidr)}")


def node_slice(obj: dict[str, Any], node: str) -> str | None:
    """The slice CIDR a NodeSlicePool gives `node`, if any."""
    status = obj.get("status")
    allocations = status.get("allocations") if isinstance(status, dict) else None
    for entry in allocations if isinstance(allocations, list) else ():
        if isinstance(entry, dict) and entry.get("nodeName") == node:
            value = entry.get("sliceRange")
            return value if isinstance(value, str) else None
    return None


def parse_slice(text: str, rng: Network) -> Network:
    """A slice CIDR read from the store, checked to lie inside the configured range."""
    try:
        net = ipaddress.ip_network(text)
    except ValueError:
        raise ValueError(f"sliceRange {text!r} is not a CIDR") from None
    if net.version != rng.version or not net.subnet_of(rng):  # type: ignore[arg-type]
        raise ValueError(f"sliceRange {text} lies outside the range {rng}")
    return net

"""How a range maps onto IPPool objects: one pool, aligned blocks of one, or this node's slice.

By default a range is one IPPool named after it, exactly as the Go plugin stores
it, so both plugins share it. That object cannot grow past etcd's object limit
(~1.5 MB, about 10,000 allocations) and every invocation queues on one Lease (the
namespace's, shared by all its pools, unless `single_lease` is off).
With `block_size` set, the range is split into CIDR-aligned blocks of that many
addresses. It is opt-in because a pool layout must never change under a running
cluster: the Go plugin, or an older config, would keep using the single pool. Each block is an
IPPool of its own (spec.range is the block's CIDR, so its offsets decode on their
own) that one node claims (`BLOCK_NODE_ANNOTATION`) and then allocates in without a
Lease; other nodes use it only once their own blocks are full (see `whereabouts.core.affinity`).
With `node_slice_size`, the node's slice (`whereabouts.core.slices`, cut by `carve`) is the
one pool it allocates in; DEL and CHECK also look in its old slices' pools after a re-slicing.
"""

from __future__ import annotations

import ipaddress

from whereabouts.core.pool import pool_name
from whereabouts.core.ranges import IPRange
from whereabouts.core.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from whereabouts.core.ranges import Address, Network

# Very wide ranges (an IPv6 /64) use their first MAX_BLOCKS blocks.
MAX_BLOCKS = 4096
BLOCK_RANGE_ANNOTATION = "whereabouts.cni.cncf.io/range"
BLOCK_OF_LABEL = "whereabouts.cni.cncf.io/block-of"
# The node that claimed a block (an annotation: node names can be longer than a label value).
BLOCK_NODE_ANNOTATION = "whereabouts.cni.cncf.io/node"
_BLOCK_INFIX = "-blk"  # block i of pool P is named P-blk<i>


def parent_pool_name(name: str) -> str:
    """The name of the pool a block's name was made from (the name itself when it is not a block's)."""
    head, sep, index = name.rpartition(_BLOCK_INFIX)
    return head if sep and index.isascii() and index.isdigit() else name


def block_label(name: str) -> str:
    """The `block-of` label value of the blocks of the range whose single pool would be named `name`."""
    import hashlib

    return hashlib.sha256(name.encode()).hexdigest()[:40]


class Block(Record):
    """One IPPool's share of a configured range.

    `local` is the block as a range of its own (offsets relative to its CIDR); `index`
    is None for a range stored as a single, Go-compatible pool, and for a node's slice.
    """

    __slots__ = ("parent", "local", "name", "index")
    _defaults = {"index": None}
    parent: IPRange
    local: IPRange
    name: str
    index: int | None

    @property
    def sharded(self) -> bool:
        return self.index is not None


class Layout(Record):
    """The pools of one range: `block_size` 0 (or not below the range's size) means one pool, named and
    encoded as the Go plugin does."""

    __slots__ = ("rng", "network_name", "block_size")
    _defaults = {"network_name": "", "block_size": 0}
    rng: IPRange
    network_name: str
    block_size: int

    @property
    def sharded(self) -> bool:
        return 0 < self.block_size < self.rng.size

    @property
    def count(self) -> int:
        if not self.sharded:
            return 1
        return min(self.rng.last // self.block_size - self.rng.first // self.block_size + 1, MAX_BLOCKS)

    @property
    def label(self) -> str:
        """A label value naming the range (pool names can be longer than a label allows)."""
        return block_label(self.name)

    @property
    def name(self) -> str:
        """The range's own pool name (the whole pool's, or the stem of its blocks' names)."""
        return pool_name(self.rng.cidr, self.network_name)

    def block(self, i: int) -> Block:
        """Block `i` (0-based, counting from the block holding the first usable address)."""
        rng, size = self.rng, self.block_size
        if not self.sharded:
            return Block(rng, rng, self.name)
        prefix = rng.network.max_prefixlen - (size.bit_length() - 1)
        network = ipaddress.ip_network((rng.network.network_address + (rng.first // size + i) * size, prefix))
        return carve(rng, network, f"{self.name}{_BLOCK_INFIX}{i}", i)

    def blocks(self) -> list[Block]:
        return [self.block(i) for i in range(self.count)]

    def block_of(self, ip: Address) -> Block | None:
        """The block that holds `ip`, if any of the range's blocks does."""
        if not self.sharded:
            return self.block(0)
        i = self.rng.offset(ip) // self.block_size - self.rng.first // self.block_size
        return self.block(i) if 0 <= i < self.count else None

    def metadata(self, node: str = "") -> dict[str, dict[str, str]]:
        """Labels and annotations that let tools find a block's range and siblings, and its node."""
        if not self.sharded:
            return {}
        annotations = {BLOCK_RANGE_ANNOTATION: self.rng.cidr}
        if node:
            annotations[BLOCK_NODE_ANNOTATION] = node
        return {"labels": {BLOCK_OF_LABEL: self.label}, "annotations": annotations}


def carve(rng: IPRange, network: Network, name: str, index: int | None = None) -> Block:
    """The part of `rng` inside `network` (a block, or a node slice: then the slice's own network and
    broadcast addresses are left out, as the Go plugin leaves them out)."""
    lo = rng.offset(network.network_address)
    hi = lo + network.num_addresses - 1
    first, last = max(rng.first, lo), min(rng.last, hi)
    if index is None:
        first, last = max(first, lo + 1), min(last, hi - 1)
    excluded = tuple((max(a, lo) - lo, min(b, hi) - lo) for a, b in rng.excluded if b >= lo and a <= hi)
    gateway = rng.gateway - lo if rng.gateway is not None and lo <= rng.gateway <= hi else None
    return Block(rng, IPRange(network, first - lo, last - lo, excluded, gateway), name, index)


def block_node(obj: dict[str, Any]) -> str:
    """The node that claimed a block ("" for none: unclaimed, or written before blocks had owners)."""
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    node = annotations.get(BLOCK_NODE_ANNOTATION) if isinstance(annotations, dict) else None
    return node if isinstance(node, str) else ""

"""How a range maps onto IPPool objects: one pool, or aligned blocks of one.

By default a range is one IPPool named after it, exactly as the Go plugin stores
it, so both plugins share it. That object cannot grow past etcd's object limit
(~1.5 MB, about 10,000 allocations) and every invocation queues on its one Lease.
With `block_size` set, the range is split into CIDR-aligned blocks of that many
addresses. It is opt-in because a pool layout must never change under a running
cluster: the Go plugin, or an older config, would keep using the single pool. Each block is an
IPPool of its own (spec.range is the block's CIDR, so its offsets decode on their
own) with a Lease of its own. An owner starts at a home block chosen by a stable
hash, so concurrent invocations spread over blocks, and spills to the next block
only when its home block is full.
"""

from __future__ import annotations

import ipaddress
import zlib

from whereabouts.core.pool import pool_name
from whereabouts.core.ranges import IPRange
from whereabouts.core.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from whereabouts.core.ranges import Address

# Very wide ranges (an IPv6 /64) use their first MAX_BLOCKS blocks.
MAX_BLOCKS = 4096
BLOCK_RANGE_ANNOTATION = "whereabouts.cni.cncf.io/range"
BLOCK_OF_LABEL = "whereabouts.cni.cncf.io/block-of"
_BLOCK_INFIX = "-blk"  # block i of pool P is named P-blk<i>


def parent_pool_name(name: str) -> str:
    """The name of the pool a block's name was made from (the name itself when it is not a block's)."""
    head, sep, index = name.rpartition(_BLOCK_INFIX)
    return head if sep and index.isascii() and index.isdigit() else name


class Block(Record):
    """One IPPool's share of a configured range.

    `local` is the block as a range of its own (offsets relative to its CIDR); `index`
    is None for a range stored as a single, Go-compatible pool.
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
    """The pools of one range: `block_size` 0 means one pool, named and encoded as the Go plugin does."""

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
        import hashlib

        return hashlib.sha256(pool_name(self.rng.cidr, self.network_name).encode()).hexdigest()[:40]

    def block(self, i: int) -> Block:
        """Block `i` (0-based, counting from the block holding the first usable address)."""
        rng, size = self.rng, self.block_size
        name = pool_name(rng.cidr, self.network_name)
        if not self.sharded:
            return Block(rng, rng, name)
        lo = (rng.first // size + i) * size
        hi = lo + size - 1
        prefix = rng.network.max_prefixlen - (size.bit_length() - 1)
        network = ipaddress.ip_network((rng.network.network_address + lo, prefix))
        excluded = tuple((max(a, lo) - lo, min(b, hi) - lo) for a, b in rng.excluded if b >= lo and a <= hi)
        gateway = rng.gateway - lo if rng.gateway is not None and lo <= rng.gateway <= hi else None
        local = IPRange(network, max(rng.first, lo) - lo, min(rng.last, hi) - lo, excluded, gateway)
        return Block(rng, local, f"{name}{_BLOCK_INFIX}{i}", i)

    def blocks(self) -> list[Block]:
        return [self.block(i) for i in range(self.count)]

    def search_order(self, owner_key: str) -> list[Block]:
        """The home block of an owner first (a stable hash: zlib.crc32, unlike hash(), is the
        same in every process), then the following ones."""
        n = self.count
        home = zlib.crc32(owner_key.encode()) % n
        return [self.block((home + j) % n) for j in range(n)]

    def block_of(self, ip: Address) -> Block | None:
        """The block that holds `ip`, if any of the range's blocks does."""
        if not self.sharded:
            return self.block(0)
        i = self.rng.offset(ip) // self.block_size - self.rng.first // self.block_size
        return self.block(i) if 0 <= i < self.count else None

    def metadata(self) -> dict[str, dict[str, str]]:
        """Labels and annotations that let tools find a block's range and siblings."""
        if not self.sharded:
            return {}
        return {"labels": {BLOCK_OF_LABEL: self.label}, "annotations": {BLOCK_RANGE_ANNOTATION: self.rng.cidr}}

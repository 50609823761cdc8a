"""Allocation modes: where a range's addresses live and which locks guard them.

- `single`: the Go-compatible layout, one IPPool per range under the Go plugin's Lease;
- `slices`: `node_slice_size`, the node's slice of the range (a NodeSlicePool assigns it), one
  IPPool and Lease per slice, as the Go plugin's Fast IPAM writes them;
- `blocks`: `block_size`, node-affine blocks of the range, claimed by nodes, with no Lease.
`mode_for` is the one place that picks a mode from the config. Each mode gives the verbs
(`whereabouts.plugin.verbs`) the same few steps per range; the pool writes themselves are
`whereabouts.plugin.txn`'s.
"""

from __future__ import annotations

from whereabouts.plugin.locks import Locked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from whereabouts.core.blocks import Block
    from whereabouts.core.pool import Allocation
    from whereabouts.core.ranges import Address, IPRange
    from whereabouts.plugin.config import IPAMConfig
    from whereabouts.plugin.txn import Assigned, Doomed, Txn


class Mode:
    """One allocation mode's steps for the verbs, over one invocation's `Txn`."""

    def __init__(self, txn: Txn) -> None:
        self.txn = txn

    def add(self, rng: IPRange, owner: Allocation, want: Address | None) -> Assigned:
        """Allocate for `owner` in the range (`want`: the requested address), its locks taken."""
        raise NotImplementedError

    def release(self, rng: IPRange, doomed: Doomed, everywhere: bool) -> list[str]:
        """Free what `doomed` picks in the pools this node uses for the range (`everywhere`: for a
        DEL, which frees one container's addresses wherever this node may have put them)."""
        raise NotImplementedError

    def roll_back(self, assigned: Assigned, doomed: Doomed) -> list[str]:
        """Free in the block an ADD of this invocation wrote to, under the locks that ADD took."""
        raise NotImplementedError

    def block_of(self, rng: IPRange, ip: Address) -> Block | None:
        """The block (pool) of the range where this node would find `ip` (CHECK)."""
        raise NotImplementedError

    def check_room(self, rng: IPRange) -> None:
        """Raise RangeExhausted (or TryAgainLater) unless an ADD in the range could be served now."""
        raise NotImplementedError


class Leased(Mode):
    """A mode whose pools are guarded by a Lease, as the Go plugin guards them."""

    def lease_of(self, blk: Block) -> str:
        raise NotImplementedError

    def add_in(self, blk: Block, owner: Allocation, want: Address | None) -> Assigned:
        with Locked(self.txn, blk.name, self.lease_of(blk)):
            return self.txn.allocate(blk, owner, want)

    def release_in(self, blk: Block, doomed: Doomed) -> list[str]:
        """Free in one pool under its locks; a pool with nothing to free costs one GET and no lock."""
        pool = self.txn.read(blk, create=False)
        if pool is None or not any(doomed(o, a) for o, a in pool.allocations.items()):
            return []
        with Locked(self.txn, blk.name, self.lease_of(blk)):
            return self.txn.free(blk, doomed)

    def roll_back(self, assigned: Assigned, doomed: Doomed) -> list[str]:
        return self.release_in(assigned.blk, doomed)


def node_affine(config: IPAMConfig) -> bool:
    """Whether the config's mode keys its pools by the node, whose name must then be known."""
    return bool(config.node_slice_size or config.block_size)


def mode_for(txn: Txn, rng: IPRange) -> Mode:
    """The mode serving a range. A range no larger than `block_size` is one pool, as in the Go layout."""
    if txn.config.node_slice_size:
        from whereabouts.plugin.modes.slices import Slices

        return Slices(txn)
    if txn.layout(rng).sharded:
        from whereabouts.plugin.modes.blocks import Blocks

        return Blocks(txn)
    from whereabouts.plugin.modes.single import Single

    return Single(txn)

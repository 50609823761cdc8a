"""The Go-compatible layout: one IPPool per range, guarded by the Lease the Go plugin takes."""

from __future__ import annotations

from whereabouts.core.pool import lease_name
from whereabouts.errors import RangeExhausted
from whereabouts.plugin.modes import Leased
from whereabouts.plugin.txn import has_room

TYPE_CHECKING = False
if TYPE_CHECKING:
    from whereabouts.core.blocks import Block
    from whereabouts.core.pool import Allocation
    from whereabouts.core.ranges import Address, IPRange
    from whereabouts.plugin.txn import Assigned, Doomed

# The one Lease the Go plugin holds for every pool of a namespace (see `single_lease`).
SHARED_LEASE = "whereabouts"


class Single(Leased):
    def lease_of(self, blk: Block) -> str:
        """The Go plugin's one Lease per namespace, unless `single_lease` is off: then one per pool."""
        return SHARED_LEASE if self.txn.config.single_lease else lease_name(blk.name)

    def _pool(self, rng: IPRange) -> Block:
        return self.txn.layout(rng).block(0)

    def add(self, rng: IPRange, owner: Allocation, want: Address | None) -> Assigned:
        return self.add_in(self._pool(rng), owner, want)

    def release(self, rng: IPRange, doomed: Doomed, everywhere: bool) -> list[str]:
        return self.release_in(self._pool(rng), doomed)

    def block_of(self, rng: IPRange, ip: Address) -> Block | None:
        return self._pool(rng)

    def check_room(self, rng: IPRange) -> None:
        blk = self._pool(rng)
        if not has_room(blk, self.txn.read(blk, create=False)):
            raise RangeExhausted(f"no free address left in range {rng.cidr}")

"""`block_size`: node-affine blocks. A range is split into blocks; a node allocates in blocks it
claimed (their IPPool records it), so nodes do not contend and need no Lease: the node-local lock
of the range orders one node's invocations and the pool's resourceVersion settles the rare
cross-node write. Which block serves when the node's own are full: `whereabouts.core.affinity`.

The node-local lock file's note lists the blocks this node allocated in: its own, and the other
nodes' blocks it spilled into when its own were full, so its ADD (an idempotent one must find the
owner), DEL and GC look there without listing the range."""

from __future__ import annotations

from whereabouts.core.blocks import BLOCK_OF_LABEL, block_node
from whereabouts.core.ownership import find_owned
from whereabouts.core.pool import decode_pool
from whereabouts.errors import AddressUnavailable, OutcomeUnknown, RangeExhausted
from whereabouts.k8s.store import dig
from whereabouts.plugin.locks import Locked
from whereabouts.plugin.modes import Mode
from whereabouts.plugin.txn import has_room

TYPE_CHECKING = False
if TYPE_CHECKING:
    from whereabouts.core.blocks import Block, Layout
    from whereabouts.core.pool import Allocation, Pool
    from whereabouts.core.ranges import Address, IPRange
    from whereabouts.plugin.nodelock import NodeLock
    from whereabouts.plugin.txn import Assigned, Doomed


class Blocks(Mode):
    def _existing(self, rng: IPRange) -> list[tuple[Block, Pool]]:
        """Every stored block of a range (one LIST by the range's label)."""
        layout = self.txn.layout(rng)
        by_name = {blk.name: blk for blk in layout.blocks()}
        found = []
        for obj in self.txn.pools.list_pools(f"{BLOCK_OF_LABEL}={layout.label}"):
            blk = by_name.get(dig(obj, "metadata", "name"))
            if blk is not None:
                found.append((blk, decode_pool(obj, blk.local.cidr)))
        return found

    def add(self, rng: IPRange, owner: Allocation, want: Address | None) -> Assigned:
        layout = self.txn.layout(rng)
        with Locked(self.txn, layout.name, None) as lock:
            if want is not None:
                blk = layout.block_of(want)
                if blk is None:
                    raise AddressUnavailable(f"requested address {want} lies beyond the blocks used in range "
                                             f"{rng.cidr}")
                return self.txn.allocate(blk, owner, want)
            return self._add_affine(layout, owner, lock)

    def _add_affine(self, layout: Layout, owner: Allocation, lock: NodeLock) -> Assigned:
        """Allocate in this node's blocks (named by the lock file's note, checked against the store),
        else in the first of `fallbacks` that works out."""
        from whereabouts.core.affinity import ADOPT, CLAIM, USE, Stored, fallbacks, format_hints, hint_order, parse_hints

        txn = self.txn

        def note(served: int, noted: list[int]) -> None:
            order = hint_order(served, noted)
            if order != hints:
                lock.set_note(format_hints(order))

        hints = parse_hints(lock.note())
        mine: list[int] = []  # this node's own blocks
        dropped: set[int] = set()
        candidates: list[tuple[Block, Pool]] = []
        held = False
        # Every noted block is read: the owner may hold an address in any of them (an idempotent ADD
        # must find it). The note's order only decides where a new address goes: the own block that
        # served last, which most likely has room; never another node's.
        for i in hints:
            blk = layout.block(i)
            pool = txn.read(blk, create=False)
            if pool is None:
                dropped.add(i)  # released: the listing below tells the truth
                continue
            if find_owned(pool.allocations, owner) is not None:
                candidates, held = [(blk, pool)], True
                break
            if block_node(pool.raw) == txn.node:
                mine.append(i)
                candidates.append((blk, pool))
            elif not txn.holds_noted(pool):
                dropped.add(i)
        for blk, pool in candidates:
            if held or has_room(blk, pool):
                try:
                    assigned = txn.allocate(blk, owner, None, pool)
                except RangeExhausted:
                    continue
                note(blk.index, [h for h in hints if h not in dropped])
                return assigned
        tried = set(mine)
        noted = [h for h in hints if h not in dropped]
        stored: dict[int, Stored] = {}
        for blk, pool in self._existing(layout.rng):
            node = block_node(pool.raw)
            stored[blk.index] = Stored(node, has_room(blk, pool), find_owned(pool.allocations, owner) is not None)
            if node == txn.node:
                noted.append(blk.index)
        for action, i in fallbacks(layout.count, stored, txn.node, tried):
            blk = layout.block(i)
            pool = None
            if action == CLAIM:
                pool = txn.pools.claim_pool(blk.name, blk.local.cidr, layout.metadata(txn.node))
                if pool is None:
                    continue  # another node created it first
            elif action == ADOPT:
                pool = self._adopt(blk, layout)
                if pool is None:
                    continue
            noted.append(i)  # even when it is another node's: this node's ADD, DEL and GC look there
            try:
                assigned = txn.allocate(blk, owner, None, pool)
            except RangeExhausted:
                continue  # filled up since the listing
            break
        else:
            raise RangeExhausted(f"no free address left in range {layout.rng.cidr} "
                                 f"({layout.count} blocks of {layout.block_size})")
        note(assigned.blk.index, noted)
        return assigned

    def _adopt(self, blk: Block, layout: Layout) -> Pool | None:
        """Record this node as the owner of an unclaimed block; None when another writer got there first."""
        txn = self.txn
        pool = txn.read(blk, create=False)
        if pool is None or block_node(pool.raw):
            return None
        meta = pool.raw.setdefault("metadata", {})
        meta["annotations"] = {**(meta.get("annotations") or {}), **layout.metadata(txn.node)["annotations"]}
        try:
            return pool if txn.pools.write_pool(pool) else None
        except OutcomeUnknown:
            pool = txn.read(blk, create=False)
            return pool if pool is not None and block_node(pool.raw) == txn.node else None

    def release(self, rng: IPRange, doomed: Doomed, everywhere: bool) -> list[str]:
        """Free in the noted blocks; then in this node's other blocks, and for a DEL that freed nothing
        there, in every block of the range (one LIST)."""
        from whereabouts.core.affinity import parse_hints

        layout = self.txn.layout(rng)
        with Locked(self.txn, layout.name, None) as lock:
            hints = parse_hints(lock.note())
            freed: list[str] = []
            for i in hints:
                freed += self.txn.free(layout.block(i), doomed)
            if freed and everywhere:
                return freed
            for blk, pool in self._existing(rng):
                if blk.index in hints or not (everywhere or block_node(pool.raw) == self.txn.node):
                    continue
                if any(doomed(o, a) for o, a in pool.allocations.items()):
                    freed += self.txn.free(blk, doomed)
            return freed

    def roll_back(self, assigned: Assigned, doomed: Doomed) -> list[str]:
        with Locked(self.txn, self.txn.layout(assigned.rng).name, None):
            return self.txn.free(assigned.blk, doomed)

    def block_of(self, rng: IPRange, ip: Address) -> Block | None:
        return self.txn.layout(rng).block_of(ip)

    def check_room(self, rng: IPRange) -> None:
        stored = {blk.name: pool for blk, pool in self._existing(rng)}
        if not any(has_room(blk, stored.get(blk.name)) for blk in self.txn.layout(rng).blocks()):
            raise RangeExhausted(f"no free address left in range {rng.cidr}")

"""`node_slice_size`: each node allocates in its own slice of the range, which the node-slice
controller assigns in the NodeSlicePool's status; one IPPool and one Lease per slice, named as the
Go plugin's Fast IPAM names them. A re-slicing leaves a node's old slice pools behind while pods
hold addresses there (`whereabouts.core.slices`): DEL, GC and CHECK look there too."""

from __future__ import annotations

from whereabouts.core.blocks import carve
from whereabouts.core.ownership import attached, find_owned, same_owner
from whereabouts.core.pool import decode_pool
from whereabouts.errors import AddressUnavailable, CorruptPool, RangeExhausted, TryAgainLater
from whereabouts.k8s.store import NODE_SLICES
from whereabouts.plugin.locks import Locked
from whereabouts.plugin.modes import Leased
from whereabouts.plugin.txn import has_room

TYPE_CHECKING = False
if TYPE_CHECKING:
    from whereabouts.core.blocks import Block
    from whereabouts.core.pool import Allocation, Pool
    from whereabouts.core.ranges import Address, IPRange
    from whereabouts.plugin.txn import Assigned, Doomed, Txn


class Slices(Leased):
    def __init__(self, txn: Txn) -> None:
        super().__init__(txn)
        self._slice: dict[str, Block | None] = {}  # NodeSlicePool name -> this node's slice, read once
        self._status: dict[str, dict | None] = {}  # NodeSlicePool name -> the object as read

    def lease_of(self, blk: Block) -> str:
        """A slice's Lease is named after its pool, as the Go plugin names it."""
        return blk.name

    def _set_name(self) -> str:
        from whereabouts.core.slices import slice_set_name

        return slice_set_name(self.txn.config.network_name, self.txn.config.name)

    def node_slice(self, rng: IPRange, fresh: bool = False) -> Block | None:
        """This node's slice of the range, as the NodeSlicePool's status says (read once per call, or
        again when `fresh`)."""
        from whereabouts.core.slices import node_slice, parse_slice, slice_pool_name

        set_name, txn = self._set_name(), self.txn
        if fresh or set_name not in self._slice:
            obj = txn.pools.store.get(NODE_SLICES, set_name)
            self._status[set_name] = obj
            cidr = node_slice(obj, txn.node) if obj is not None else None
            blk = None
            if cidr is not None:
                try:
                    net = parse_slice(cidr, rng.network)
                except ValueError as e:
                    raise CorruptPool(f"NodeSlicePool {set_name}: node {txn.node}: {e}") from None
                blk = carve(rng, net, slice_pool_name(txn.config.network_name, txn.node, str(net)))
            self._slice[set_name] = blk
        return self._slice[set_name]

    def _given_over(self, old: Block) -> bool:
        """Whether the NodeSlicePool as read gives a slice overlapping the old slice pool `old` to a node:
        an entry there, written after the re-slicing was decided, is no address to keep."""
        from whereabouts.core.slices import assigned_slices

        obj = self._status.get(self._set_name())
        return any(net.overlaps(old.local.network) for net in assigned_slices(obj))  # type: ignore[arg-type]

    def _slice_or_wait(self, rng: IPRange) -> Block:
        blk = self.node_slice(rng)
        if blk is None:
            raise TryAgainLater(f"node {self.txn.node!r} has no slice of range {rng.cidr} yet (NodeSlicePool "
                                f"{self.txn.pools.store.namespace}/{self._set_name()}): "
                                "the node-slice controller assigns one when it sees the node")
        return blk

    def _old_slices(self, rng: IPRange, current: Block | None) -> list[tuple[Block, Pool]]:
        """This node's slice pools of the network other than `current` (one LIST)."""
        from whereabouts.core.slices import slice_pool_of

        found = []
        for obj in self.txn.pools.list_pools():
            old = slice_pool_of(obj, self.txn.config.network_name, rng.network)
            if old is not None and old.node == self.txn.node and (current is None or old.name != current.name):
                found.append((carve(rng, old.network, old.name), decode_pool(obj, str(old.network))))
        return found

    def add(self, rng: IPRange, owner: Allocation, want: Address | None) -> Assigned:
        """Allocate in this node's slice; an owner that holds an address in one of the node's old
        slice pools keeps it there (an idempotent ADD after a re-slicing).

        The network's node-local lock orders this node's ADDs across re-slicings, and its note lists
        the slices the node allocated in, so finding the owner in old pools costs one GET per old
        pool, and nothing once they are drained."""
        blk = self._slice_or_wait(rng)
        if want is not None and want not in blk.local.network:
            raise AddressUnavailable(f"requested address {want} lies outside this node's slice "
                                     f"{blk.local.cidr} of range {rng.cidr}")
        from whereabouts import jsontext

        with Locked(self.txn, self._set_name(), None) as lock:
            try:
                noted = jsontext.loads(lock.note() or b"[]")
            except ValueError:
                noted = []
            kept = [blk.local.cidr]
            for cidr in noted if isinstance(noted, list) else []:
                old = self._noted_slice(rng, cidr)
                if old is None or old.name == blk.name:
                    continue
                pool = self.txn.read(old, create=False)
                if pool is None or not self.txn.holds_noted(pool):
                    continue  # drained or gone: no longer looked at
                kept.append(old.local.cidr)
                if want is None and find_owned(pool.allocations, owner) is not None:
                    if not self._given_over(old):
                        lock.set_note(jsontext.dumps(kept).encode())
                        return self.add_in(old, owner, None)
                    self.release_in(old, lambda _, a: same_owner(a, owner))  # not the owner's to keep
            if kept != noted:
                lock.set_note(jsontext.dumps(kept).encode())
            assigned = self.add_in(blk, owner, want)
            if assigned.new and self.node_slice(rng, fresh=True) != blk:
                # The slicing changed during this ADD: the controller may have given a slice over this one
                # before the write landed. Take the address back; the runtime retries in the new slice.
                self.release_in(blk, lambda o, a: o == assigned.offset and attached(a, owner.container_id,
                                                                                     owner.ifname))
                raise TryAgainLater(f"node {self.txn.node!r}'s slice of range {rng.cidr} changed during this ADD "
                                    f"(was {blk.local.cidr}); try again")
            return assigned

    def _noted_slice(self, rng: IPRange, cidr: object) -> Block | None:
        from whereabouts.core.slices import parse_slice, slice_pool_name

        try:
            net = parse_slice(str(cidr), rng.network)
        except ValueError:
            return None  # a damaged note is no note
        return carve(rng, net, slice_pool_name(self.txn.config.network_name, self.txn.node, str(net)))

    def release(self, rng: IPRange, doomed: Doomed, everywhere: bool) -> list[str]:
        """Free in this node's slice, then in its old slice pools: always for GC, for a DEL only when
        its own slice had nothing to free (one LIST)."""
        blk = self.node_slice(rng)
        freed = self.release_in(blk, doomed) if blk is not None else []
        if freed and everywhere:
            return freed
        for old, pool in self._old_slices(rng, blk):
            if any(doomed(o, a) for o, a in pool.allocations.items()):
                freed += self.release_in(old, doomed)
        if not freed and blk is None:
            self.txn.log.info("no slice of this node held anything to free", range=rng.cidr, node=self.txn.node)
        return freed

    def block_of(self, rng: IPRange, ip: Address) -> Block | None:
        blk = self.node_slice(rng)
        if blk is not None and ip in blk.local.network:
            return blk
        return next((old for old, _ in self._old_slices(rng, blk) if ip in old.local.network), None)

    def check_room(self, rng: IPRange) -> None:
        blk = self._slice_or_wait(rng)
        if not has_room(blk, self.txn.read(blk, create=False)):
            raise RangeExhausted(f"no free address left in this node's slice {blk.local.cidr} of {rng.cidr}")

"""The verbs over the store: lock -> pool read -> allocate -> pool write, range by range.

Ordering rules that keep pools and reservations consistent under any failure:
- ADD creates the cluster-wide reservation before the pool entry; DEL removes the
  pool entry before the reservation. A crash in between therefore only ever leaves
  a reservation without an entry, which blocks an address (and is swept by the
  reconciler) but can never let two pods share one.
- A pool write is reported done only when the API server accepted it.
- With several ranges, ADD is all-or-nothing: what this call allocated in earlier
  ranges is released again when a later range fails.
"""

from __future__ import annotations

import time

from whereabouts.core.allocator import lowest_free, next_step
from whereabouts.core.blocks import BLOCK_OF_LABEL, Block, Layout, block_node, carve
from whereabouts.core.ownership import attached, find_owned, holds_reservation, names_attachment
from whereabouts.core.pool import (Allocation, Pool, decode_pool, lease_name, remove_allocation, reservation_name,
                                   set_allocation)
from whereabouts.core.record import Record
from whereabouts.errors import (AddressUnavailable, CNIError, CorruptPool, NotAllocated, OutcomeUnknown,
                                RangeExhausted, TryAgainLater)
from whereabouts.k8s.pools import Pools
from whereabouts.k8s.store import NODE_SLICES, dig
from whereabouts.plugin.nodelock import NodeLock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from whereabouts.core.ranges import Address, IPRange
    from whereabouts.k8s.lease import LeaseLock
    from whereabouts.k8s.store import Store
    from whereabouts.plugin.config import IPAMConfig
    from whereabouts.plugin.log import Log

# Lost pool writes are retried with growing pauses until the deadline, or this many times.
MAX_WRITE_CONFLICTS = 200
# The one Lease the Go plugin holds for every pool of a namespace (see `single_lease`).
SHARED_LEASE = "whereabouts"


class Assigned(Record):
    """One address this invocation holds in one range; `offset` is relative to the block's CIDR."""

    __slots__ = ("blk", "offset", "new")
    blk: Block
    offset: int
    new: bool

    @property
    def rng(self) -> IPRange:
        return self.blk.parent

    @property
    def address(self) -> Address:
        return self.blk.local.address(self.offset)


class Stats(Record):
    __slots__ = ("retries", "lock_wait")
    _defaults = {"retries": 0, "lock_wait": 0.0}
    retries: int
    lock_wait: float


class IPAM:
    """The verbs over a Store; `leases(name)` makes the (not yet taken) Lease guarding a pool.

    `node` names this node: the key of node slices and block affinity (unused by default).
    """

    def __init__(self, config: IPAMConfig, store: Store, leases: Callable[[str], LeaseLock], deadline: float,
                 log: Log, node: str = "") -> None:
        self.config = config
        self.pools = Pools(store)
        self.leases = leases
        self.deadline = deadline
        self.log = log
        self.node = node
        self.stats = Stats()
        self._slices: dict[str, Block | None] = {}

    def reservation_name(self, ip: Address) -> str:
        return reservation_name(ip, self.config.network_name)

    def lease_of(self, blk: Block) -> str:
        """The Lease guarding a pool in the Go layout: the Go plugin's one Lease per namespace unless
        `single_lease` is off; a node slice's is named after its pool, as the Go plugin names it."""
        if self.config.node_slice_prefix:
            return blk.name
        if self.config.single_lease:
            return SHARED_LEASE
        return lease_name(blk.name)

    def locked(self, name: str, lease_name: str | None) -> Locked:
        """`with ipam.locked(...) as node_lock`: the node-local lock `name`, then (unless None:
        node-affine blocks need none) the Lease."""
        return Locked(self, name, lease_name)

    def node_slice(self, rng: IPRange) -> Block | None:
        """This node's slice of the range, as the NodeSlicePool's status says (read once per call)."""
        from whereabouts.core.slices import node_slice, parse_slice, slice_pool_name, slice_set_name

        set_name = slice_set_name(self.config.network_name, self.config.name)
        if set_name not in self._slices:
            obj = self.pools.store.get(NODE_SLICES, set_name)
            cidr = node_slice(obj, self.node) if obj is not None else None
            blk = None
            if cidr is not None:
                try:
                    net = parse_slice(cidr, rng.network)
                except ValueError as e:
                    raise CorruptPool(f"NodeSlicePool {set_name}: node {self.node}: {e}") from None
                blk = carve(rng, net, slice_pool_name(self.config.network_name, self.node, str(net)))
            self._slices[set_name] = blk
        return self._slices[set_name]

    def _slice_or_wait(self, rng: IPRange) -> Block:
        blk = self.node_slice(rng)
        if blk is None:
            from whereabouts.core.slices import slice_set_name

            raise TryAgainLater(f"node {self.node!r} has no slice of range {rng.cidr} yet (NodeSlicePool "
                                f"{self.pools.store.namespace}/{slice_set_name(self.config.network_name, self.config.name)}): "
                                "the node-slice controller assigns one when it sees the node")
        return blk

    def _backoff(self, attempt: int, pool: str) -> None:
        if attempt >= MAX_WRITE_CONFLICTS:
            raise TryAgainLater(f"IPPool {pool}: {attempt} write conflicts in a row; try again")
        from whereabouts.core.retry import backoff_pause  # only a conflict pays for the import

        self.stats.retries += 1
        pause = backoff_pause(attempt)
        if time.monotonic() + pause >= self.deadline:
            raise TryAgainLater(f"IPPool {pool}: deadline passed while retrying a conflicting write")
        time.sleep(pause)

    def layout(self, rng: IPRange) -> Layout:
        return Layout(rng, self.config.network_name, self.config.block_size)

    def _read(self, blk: Block, create: bool) -> Pool | None:
        return self.pools.read_pool(blk.name, blk.local.cidr, create,
                                    self.layout(blk.parent).metadata() if create else None)

    def _existing_blocks(self, rng: IPRange) -> list[tuple[Block, Pool]]:
        """Every stored pool of a range with its block (one GET, or one LIST for a sharded range)."""
        layout = self.layout(rng)
        if not layout.sharded:
            blk = layout.block(0)
            pool = self._read(blk, create=False)
            return [(blk, pool)] if pool else []
        by_name = {blk.name: blk for blk in layout.blocks()}
        found = []
        for obj in self.pools.list_pools(f"{BLOCK_OF_LABEL}={layout.label}"):
            blk = by_name.get(dig(obj, "metadata", "name"))
            if blk is not None:
                found.append((blk, decode_pool(obj, blk.local.cidr)))
        return found

    # --- ADD ---------------------------------------------------------------------------

    def add(self, owner: Allocation, requested: dict[int, Address]) -> list[Assigned]:
        """All ranges or none. The attachment is noted in the node's ledger before the first write,
        so what a rollback cannot free (the deadline passed, the process died) GC frees later."""
        from whereabouts.plugin import ledger

        ledger.note(self.config.node_lock_dir, self.config.name, owner.container_id, owner.ifname)
        done: list[Assigned] = []
        try:
            for i, rng in enumerate(self.config.ranges):
                done.append(self._add_range(rng, owner, requested.get(i)))
        except CNIError:
            self._roll_back(owner, [a for a in done if a.new])
            raise
        return done

    def _add_range(self, rng: IPRange, owner: Allocation, want: Address | None) -> Assigned:
        layout = self.layout(rng)
        if self.config.node_slice_prefix:
            blk = self._slice_or_wait(rng)
            if want is not None and want not in blk.local.network:
                raise AddressUnavailable(f"requested address {want} lies outside this node's slice "
                                         f"{blk.local.cidr} of range {rng.cidr}")
            return self._add_in_block(blk, owner, want)
        if not layout.sharded:
            return self._add_in_block(layout.block(0), owner, want)
        with self.locked(layout.name, None) as lock:
            if want is not None:
                blk = layout.block_of(want)
                if blk is None:
                    raise AddressUnavailable(f"requested address {want} lies beyond the blocks used in range "
                                             f"{rng.cidr}")
                return self._allocate(blk, owner, want)
            return self._add_affine(layout, owner, lock)

    def _add_affine(self, layout: Layout, owner: Allocation, lock: NodeLock) -> Assigned:
        """Allocate in this node's blocks (named by the lock file's note, checked against the store),
        else in the first of `fallbacks` that works out. No Lease: see `whereabouts.core.affinity`."""
        from whereabouts.core.affinity import ADOPT, CLAIM, USE, Stored, fallbacks, format_hints, hint_order, parse_hints

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
        # must find it), its own blocks and the other nodes' blocks it spilled into when its own were
        # full. The note's order only decides where a new address goes: the own block that served
        # last, which most likely has room; never another node's.
        for i in hints:
            blk = layout.block(i)
            pool = self._read(blk, create=False)
            if pool is None:
                dropped.add(i)  # released: the listing below tells the truth
                continue
            if find_owned(pool.allocations, owner) is not None:
                candidates, held = [(blk, pool)], True
                break
            if block_node(pool.raw) == self.node:
                mine.append(i)
                candidates.append((blk, pool))
            elif not self._spilled_here(pool):
                dropped.add(i)
        for blk, pool in candidates:
            if held or _has_room(blk, pool):
                try:
                    assigned = self._allocate(blk, owner, None, pool)
                except RangeExhausted:
                    continue
                note(blk.index, [h for h in hints if h not in dropped])
                return assigned
        tried = set(mine)
        noted = [h for h in hints if h not in dropped]
        stored: dict[int, Stored] = {}
        for blk, pool in self._existing_blocks(layout.rng):
            node = block_node(pool.raw)
            stored[blk.index] = Stored(node, _has_room(blk, pool), find_owned(pool.allocations, owner) is not None)
            if node == self.node:
                noted.append(blk.index)
        for action, i in fallbacks(layout.count, stored, self.node, tried):
            blk = layout.block(i)
            pool = None
            if action == CLAIM:
                pool = self.pools.claim_pool(blk.name, blk.local.cidr, layout.metadata(self.node))
                if pool is None:
                    continue  # another node created it first
            elif action == ADOPT:
                pool = self._adopt(blk, layout)
                if pool is None:
                    continue
            noted.append(i)  # even when it is another node's: this node's ADD, DEL and GC look there
            try:
                assigned = self._allocate(blk, owner, None, pool)
            except RangeExhausted:
                continue  # filled up since the listing
            break
        else:
            raise RangeExhausted(f"no free address left in range {layout.rng.cidr} "
                                 f"({layout.count} blocks of {layout.block_size})")
        note(assigned.blk.index, noted)
        return assigned

    def _spilled_here(self, pool: Pool) -> bool:
        """Whether another node's block still holds an entry this node allocated (its ledger says)."""
        from whereabouts.plugin import ledger

        noted = ledger.noted(self.config.node_lock_dir, self.config.name)
        return any((a.container_id, a.ifname) in noted for a in pool.allocations.values())

    def _adopt(self, blk: Block, layout: Layout) -> Pool | None:
        """Record this node as the owner of an unclaimed block; None when another writer got there first."""
        pool = self._read(blk, create=False)
        if pool is None or block_node(pool.raw):
            return None
        meta = pool.raw.setdefault("metadata", {})
        meta["annotations"] = {**(meta.get("annotations") or {}), **layout.metadata(self.node)["annotations"]}
        try:
            return pool if self.pools.write_pool(pool) else None
        except OutcomeUnknown:
            pool = self._read(blk, create=False)
            return pool if pool is not None and block_node(pool.raw) == self.node else None

    def _add_in_block(self, blk: Block, owner: Allocation, want: Address | None) -> Assigned:
        with self.locked(blk.name, self.lease_of(blk)):
            return self._allocate(blk, owner, want)

    def _allocate(self, blk: Block, owner: Allocation, want: Address | None, pool: Pool | None = None) -> Assigned:
        """Allocate in one block (its locks held), retrying lost writes until the deadline.

        Every round starts from a fresh read of the pool (the first may be given), so a write whose
        answer was lost is judged by what is stored: if it was applied, the read shows this owner's
        entry and the round returns it. Reservations this call created are kept across rounds, so a
        retry that picks the same address goes straight from the pool read to the pool write. When
        the call ends, it deletes the reservations it created for addresses it does not hold, except
        those of writes whose outcome was ever unknown: such a write may still be applied, and the
        reservation is what keeps an overlapping range from handing out its address meanwhile.
        """
        local = blk.local
        blocked: set[int] = set()
        created: set[int] = set()  # offsets whose reservation this call created
        doubtful: dict[int, str] = {}  # offset -> resourceVersion of a write whose answer was lost
        held: int | None = None
        try:
            conflicts = 0
            while True:
                if pool is None:
                    pool = self._read(blk, create=True)
                    assert pool is not None
                step = next_step(local, pool, owner, want, blocked)
                for o, rv in list(doubtful.items()):
                    if o not in (step.offset, step.moves_from) and rv != pool.resource_version:
                        del doubtful[o]  # the pool moved on without it: that write can never apply
                offset = step.offset
                if step.keep:
                    held = offset
                    return self._keep(pool, blk, offset, owner, new=offset in created.union(doubtful))
                if self.config.overlapping_ranges and offset not in created:
                    holder = self.pools.claim_reservation(self.reservation_name(local.address(offset)), owner)
                    if holder is not None:
                        if want is not None:
                            raise AddressUnavailable(f"requested address {want} is reserved by "
                                                     f"{_holder_text(holder)} in an overlapping range")
                        blocked.add(offset)
                        continue
                    if holder is None:
                        created.add(offset)
                if step.moves_from is not None:
                    remove_allocation(pool, step.moves_from)
                if self.config.sleep_for_race:
                    time.sleep(self.config.sleep_for_race)
                set_allocation(pool, offset, owner)
                read_at = pool.resource_version
                try:
                    written = self.pools.write_pool(pool)
                except OutcomeUnknown as e:
                    doubtful[offset] = read_at
                    self.log.debug("pool write outcome unknown", pool=blk.name, ip=str(local.address(offset)),
                                   error=e.msg)
                    written = False
                if written:
                    held = offset
                    if step.moves_from is not None and self.config.overlapping_ranges:
                        self.pools.delete_reservation(self.reservation_name(local.address(step.moves_from)),
                                                      owner)
                    self.log.debug("allocated", pool=blk.name, ip=str(local.address(offset)),
                                   conflicts=conflicts)
                    return Assigned(blk, offset, new=True)
                pool = None
                conflicts += 1
                self._backoff(conflicts, blk.name)
        finally:
            for offset in created - doubtful.keys() - {held}:
                self._forget_reservation(local.address(offset), owner)

    def _forget_reservation(self, ip: Address, owner: Allocation) -> None:
        """Drop a reservation this call made for a pool write that did not happen (best effort)."""
        try:
            self.pools.delete_reservation(self.reservation_name(ip), owner)
        except CNIError as e:
            self.log.error("reservation left for the reconciler", ip=str(ip), error=e.msg)

    def _keep(self, pool: Pool, blk: Block, offset: int, owner: Allocation, new: bool) -> Assigned:
        """Idempotent ADD: return what this owner holds, pointing it at the current container.

        `new` says that this invocation wrote the entry (its answer was lost), so a rollback frees it.
        """
        current = pool.allocations[offset]
        if current.container_id != owner.container_id:
            set_allocation(pool, offset, Allocation(owner.container_id, owner.podref, owner.ifname, current.extra))
            if not self.pools.write_pool(pool):
                raise TryAgainLater(f"IPPool {pool.name} changed while updating the container id; try again")
        if self.config.overlapping_ranges and not new:
            self._reserve_kept(blk.local.address(offset), owner)
        return Assigned(blk, offset, new=new)

    def _reserve_kept(self, ip: Address, owner: Allocation) -> None:
        """The reservation of an address the owner keeps names its container: repointed in place
        (the address stays reserved throughout), or made when it is missing."""
        name = self.reservation_name(ip)
        obj = self.pools.get_reservation(name)
        if obj is None:
            obj = self.pools.claim_reservation(name, owner)
            if obj is None:
                return
        if not holds_reservation(owner, obj):
            self.log.error("address held in the pool is reserved by another owner in an overlapping range",
                           ip=str(ip), reservation=name, holder=_holder_text(obj))
        elif not names_attachment(owner, obj) and not self.pools.repoint_reservation(obj, owner):
            raise TryAgainLater(f"reservation {name} of {ip} changed while pointing it at container "
                                f"{owner.container_id}; try again")

    def _roll_back(self, owner: Allocation, assigned: list[Assigned]) -> None:
        for a in reversed(assigned):
            try:
                self._release_block(a.blk, lambda o, al: o == a.offset and attached(al, owner.container_id,
                                                                                    owner.ifname))
            except CNIError as e:
                self.log.error("rollback failed: the node's ledger leaves it to GC or DEL", ip=str(a.address),
                               error=e.msg)

    # --- releasing: DEL, GC, rollback ----------------------------------------------------

    def _release_block(self, blk: Block, doomed: Callable[[int, Allocation], bool]) -> list[str]:
        """`_free` in one block under the locks its ADD takes: the range's node lock for a range split
        into node-affine blocks, else the pool's node lock and Lease."""
        layout = self.layout(blk.parent)
        if layout.sharded:
            with self.locked(layout.name, None):
                return self._free(blk, doomed)
        return self._release(blk, doomed)

    def _release(self, blk: Block, doomed: Callable[[int, Allocation], bool]) -> list[str]:
        """`_free` under the pool's locks; a pool with nothing to free costs one GET and no lock."""
        pool = self._read(blk, create=False)
        if pool is None or not any(doomed(o, a) for o, a in pool.allocations.items()):
            return []
        with self.locked(blk.name, self.lease_of(blk)):
            return self._free(blk, doomed)

    def _free(self, blk: Block, doomed: Callable[[int, Allocation], bool]) -> list[str]:
        """Remove every allocation of a block that `doomed` picks, then their reservations.

        A write whose answer was lost is judged by the next read: an entry no longer stored was
        freed, by this call or by another; its reservation goes either way.
        """
        tried: dict[int, Allocation] = {}
        conflicts = 0
        while True:
            pool = self._read(blk, create=False)
            gone = {o: a for o, a in pool.allocations.items() if doomed(o, a)} if pool else {}
            if not gone:
                break
            tried.update(gone)
            for o in gone:
                remove_allocation(pool, o)
            try:
                if self.pools.write_pool(pool):
                    break
            except OutcomeUnknown:
                pass  # the next read tells
            conflicts += 1
            self._backoff(conflicts, blk.name)
        freed = {o: a for o, a in tried.items() if pool is None or pool.allocations.get(o) != a}
        if self.config.overlapping_ranges:
            for o, alloc in freed.items():
                self.pools.delete_reservation(self.reservation_name(blk.local.address(o)), alloc)
        return [str(blk.local.address(o)) for o in freed]

    def _release_affine(self, layout: Layout, doomed: Callable[[int, Allocation], bool], everywhere: bool) -> list[str]:
        """Free in this node's blocks (its note first); `everywhere`: in every block if they had nothing."""
        from whereabouts.core.affinity import parse_hints

        with self.locked(layout.name, None) as lock:
            hints = parse_hints(lock.note())
            freed: list[str] = []
            for i in hints:
                freed += self._free(layout.block(i), doomed)
            if freed and everywhere:
                return freed
            for blk, pool in self._existing_blocks(layout.rng):
                if blk.index in hints or not (everywhere or block_node(pool.raw) == self.node):
                    continue
                if any(doomed(o, a) for o, a in pool.allocations.items()):
                    freed += self._free(blk, doomed)
            return freed

    def delete(self, owner: Allocation) -> list[str]:
        """Free this container's addresses in every range; errors are raised after trying all."""
        freed: list[str] = []
        first_error: CNIError | None = None

        def mine(_: int, a: Allocation) -> bool:
            return attached(a, owner.container_id, owner.ifname)

        for rng in self.config.ranges:
            try:
                freed += self._release_in_range(rng, mine, everywhere=True)
            except CNIError as e:
                first_error = first_error or e
        if first_error is not None:
            raise first_error
        return freed

    def _release_in_range(self, rng: IPRange, doomed: Callable[[int, Allocation], bool], everywhere: bool) -> list[str]:
        """Free what `doomed` picks in the pools this node uses for a range (`everywhere`: for a DEL,
        every block of a split range when this node's own blocks had nothing)."""
        layout = self.layout(rng)
        if self.config.node_slice_prefix:
            return self._release_in_slices(rng, doomed, everywhere)
        if layout.sharded:
            return self._release_affine(layout, doomed, everywhere)
        return self._release(layout.block(0), doomed)

    def _release_in_slices(self, rng: IPRange, doomed: Callable[[int, Allocation], bool], everywhere: bool
                           ) -> list[str]:
        """Free in this node's slice, then in the node's other slice pools of the network: a re-slicing
        leaves them behind while pods hold addresses there (`whereabouts.core.slices`). One LIST finds
        them: always for GC, for a DEL (`everywhere`) only when its own slice had nothing to free."""
        blk = self.node_slice(rng)
        freed = self._release(blk, doomed) if blk is not None else []
        if freed and everywhere:
            return freed
        for old, pool in self._old_slices(rng, blk):
            if any(doomed(o, a) for o, a in pool.allocations.items()):
                freed += self._release(old, doomed)
        if not freed and blk is None:
            self.log.info("no slice of this node held anything to free", range=rng.cidr, node=self.node)
        return freed

    def _old_slices(self, rng: IPRange, current: Block | None) -> list[tuple[Block, Pool]]:
        """This node's slice pools of the network other than `current` (one LIST): a re-slicing leaves
        them behind while pods hold addresses there."""
        from whereabouts.core.slices import slice_pool_of

        found = []
        for obj in self.pools.list_pools():
            old = slice_pool_of(obj, self.config.network_name, rng.network)
            if old is not None and old.node == self.node and (current is None or old.name != current.name):
                found.append((carve(rng, old.network, old.name), decode_pool(obj, str(old.network))))
        return found

    def gc(self, valid: set[tuple[str, str]]) -> list[str]:
        """Free every allocation made on this node whose (container id, ifname) is not a valid attachment.

        The runtime's list names this node's attachments only, so only what this node noted
        (`whereabouts.plugin.ledger`) is judged; with node slices or blocks, only in its own pools."""
        from whereabouts.plugin import ledger

        mine = ledger.noted(self.config.node_lock_dir, self.config.name)
        freed: list[str] = []
        errors: list[str] = []
        for rng in self.config.ranges:
            try:
                freed += self._release_in_range(
                    rng, lambda _, a: (a.container_id, a.ifname) in mine and (a.container_id, a.ifname) not in valid,
                    everywhere=False)
            except CNIError as e:
                errors.append(f"{rng.cidr}: {e.msg}")
        if errors:
            raise TryAgainLater(f"GC freed {len(freed)} address(es) but failed in: " + "; ".join(errors))
        ledger.keep(self.config.node_lock_dir, self.config.name, valid)
        return freed

    # --- CHECK, STATUS -----------------------------------------------------------------

    def _block_of(self, rng: IPRange, ip: Address) -> Block | None:
        if self.config.node_slice_prefix:
            blk = self.node_slice(rng)
            if blk is not None and ip in blk.local.network:
                return blk
            return next((old for old, _ in self._old_slices(rng, blk) if ip in old.local.network), None)
        return self.layout(rng).block_of(ip)

    def check(self, container_id: str, ifname: str, addresses: list[Address]) -> None:
        """Every address of prevResult in our ranges is allocated to this container and interface."""
        for rng in self.config.ranges:
            mine = [a for a in addresses if a.version == rng.version and a in rng.network]
            if not mine:
                raise NotAllocated(f"prevResult has no address in range {rng.cidr}")
            for ip in mine:
                blk = self._block_of(rng, ip)
                pool = self._read(blk, create=False) if blk else None
                holder = pool.allocations.get(blk.local.offset(ip)) if pool and blk else None
                if holder is None or not attached(holder, container_id, ifname):
                    who = f"held by container {holder.container_id}" if holder else "not allocated"
                    raise NotAllocated(f"{ip} of prevResult is {who} in range {rng.cidr}, "
                                       f"not by container {container_id} interface {ifname}")
                if self.config.overlapping_ranges:
                    res = self.pools.get_reservation(self.reservation_name(ip))
                    if res is None or not holds_reservation(holder, res):
                        who = f"reserved by {_holder_text(res)}" if res else "not reserved"
                        raise NotAllocated(f"{ip} of prevResult is {who} across overlapping ranges "
                                           f"(OverlappingRangeIPReservation {self.reservation_name(ip)})")

    def status(self) -> None:
        """Raise RangeExhausted unless every range could serve an ADD now."""
        for rng in self.config.ranges:
            if self.config.node_slice_prefix:
                blk = self._slice_or_wait(rng)
                if not _has_room(blk, self._read(blk, create=False)):
                    raise RangeExhausted(f"no free address left in this node's slice {blk.local.cidr} of {rng.cidr}")
                continue
            stored = {blk.name: pool for blk, pool in self._existing_blocks(rng)}
            if not any(_has_room(blk, stored.get(blk.name)) for blk in self.layout(rng).blocks()):
                raise RangeExhausted(f"no free address left in range {rng.cidr}")


class Locked:
    """The locks of one pool, taken on entry and released in reverse on exit (a class rather than
    `contextlib.contextmanager`, whose import every pod attach would pay)."""

    def __init__(self, ipam: IPAM, name: str, lease_name: str | None) -> None:
        self.ipam, self.name, self.lease_name = ipam, name, lease_name
        self.node: NodeLock | None = None
        self.lease: LeaseLock | None = None

    def __enter__(self) -> NodeLock:
        ipam = self.ipam
        node = NodeLock(ipam.config.node_lock_dir, self.name, ipam.deadline)
        node_held = node.acquire()
        try:
            if self.lease_name is None:
                ipam.stats.lock_wait += node.waited
                ipam.log.debug("lock", pool=self.name, node_lock=node_held, node_wait=round(node.waited, 4))
            else:
                lease = ipam.leases(self.lease_name)
                lease.acquire()
                self.lease = lease
                ipam.stats.lock_wait += node.waited + lease.waited
                ipam.log.debug("lock", pool=self.name, lease=lease.name, node_lock=node_held,
                               node_wait=round(node.waited, 4), lease_wait=round(lease.waited, 4),
                               lease_attempts=lease.attempts)
        except BaseException:
            node.release()
            raise
        self.node = node
        return node

    def __exit__(self, *exc: object) -> None:
        assert self.node is not None
        try:
            if self.lease is not None:
                self.lease.release()
                if self.lease.renewals:
                    self.ipam.log.debug("lease renewed", lease=self.lease.name, renewals=self.lease.renewals)
        finally:
            self.node.release()
            self.node = self.lease = None


def _has_room(blk: Block, pool: Pool | None) -> bool:
    """Whether a block (an absent pool is an empty one) has an address to hand out."""
    try:
        lowest_free(blk.local, pool.taken if pool else set())
    except RangeExhausted:
        return False
    return True


def _holder_text(obj: dict) -> str:
    spec = obj.get("spec") or {}
    return str(spec.get("podref") or spec.get("containerid") or "another owner")

"""One invocation's writes to pools: the resourceVersion-guarded read-modify-write of an ADD and of a
release, with the reservations that go with them. The caller holds the pool's locks.

Ordering rules that keep pools and reservations consistent under any failure:
- ADD makes the cluster-wide reservation before the pool entry; a release removes the pool
  entry before the reservation. A crash in between therefore only ever leaves a reservation
  without an entry, which blocks an address (and is swept by the reconciler) but can never let
  two pods share one.
- A pool write is reported done only when the API server accepted it; one whose answer was
  lost is judged by the next read, never sent again blindly.
- Who holds an entry or a reservation is decided in `whereabouts.core.ownership`.
"""

from __future__ import annotations

import time

from whereabouts.core.allocator import lowest_free, next_step
from whereabouts.core.blocks import Block, Layout
from whereabouts.core.ownership import holds_reservation, names_attachment
from whereabouts.core.pool import Allocation, Pool, remove_allocation, reservation_name, set_allocation
from whereabouts.core.record import Record
from whereabouts.errors import AddressUnavailable, CNIError, OutcomeUnknown, RangeExhausted, TryAgainLater
from whereabouts.k8s.pools import Pools

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from whereabouts.core.ranges import Address, IPRange
    from whereabouts.k8s.lease import LeaseLock
    from whereabouts.k8s.store import Store
    from whereabouts.plugin.config import IPAMConfig
    from whereabouts.plugin.log import Log

    Doomed = Callable[[int, Allocation], bool]  # which entries (offset, entry) of a pool a release frees

# Lost pool writes are retried with growing pauses until the deadline, or this many times.
MAX_WRITE_CONFLICTS = 200


class Assigned(Record):
    """One address this invocation holds in one range; `offset` is relative to the block's CIDR.
    `new`: this invocation wrote the entry, so a rollback frees it."""

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


class Txn:
    """The store, the clock and the log of one invocation, and the pool writes every mode shares.

    `leases(name)` makes the (not yet taken) Lease of that name; `node` names this node (the key
    of node slices and block affinity, else only the Lease holder)."""

    def __init__(self, config: IPAMConfig, store: Store, leases: Callable[[str], LeaseLock], deadline: float,
                 log: Log, node: str = "") -> None:
        self.config = config
        self.pools = Pools(store)
        self.leases = leases
        self.deadline = deadline
        self.log = log
        self.node = node
        self.stats = Stats()
        self._noted: set[tuple[str, str]] | None = None

    def noted(self) -> set[tuple[str, str]]:
        """The attachments this node's ledger notes for the network (read once per invocation)."""
        if self._noted is None:
            from whereabouts.plugin import ledger

            self._noted = ledger.noted(self.config.node_lock_dir, self.config.name)
        return self._noted

    def holds_noted(self, pool: Pool) -> bool:
        """Whether a pool still holds an entry this node allocated: another node's block it spilled
        into, or an old slice pool of its own."""
        noted = self.noted()
        return any((a.container_id, a.ifname) in noted for a in pool.allocations.values())

    def reservation_name(self, ip: Address) -> str:
        return reservation_name(ip, self.config.network_name)

    def layout(self, rng: IPRange) -> Layout:
        return Layout(rng, self.config.network_name, self.config.block_size)

    def read(self, blk: Block, create: bool) -> Pool | None:
        return self.pools.read_pool(blk.name, blk.local.cidr, create,
                                    self.layout(blk.parent).metadata() if create else None)

    def backoff(self, attempt: int, pool: str) -> None:
        if attempt >= MAX_WRITE_CONFLICTS:
            raise TryAgainLater(f"IPPool {pool}: {attempt} write conflicts in a row; try again")
        from whereabouts.core.retry import backoff_pause  # only a conflict pays for the import

        self.stats.retries += 1
        pause = backoff_pause(attempt)
        if time.monotonic() + pause >= self.deadline:
            raise TryAgainLater(f"IPPool {pool}: deadline passed while retrying a conflicting write")
        time.sleep(pause)

    # --- ADD ---------------------------------------------------------------------------

    def allocate(self, blk: Block, owner: Allocation, want: Address | None, pool: Pool | None = None) -> Assigned:
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
                    pool = self.read(blk, create=True)
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
                                                     f"{holder_text(holder)} in an overlapping range")
                        blocked.add(offset)
                        continue
                    created.add(offset)
                moved = pool.allocations.get(step.moves_from) if step.moves_from is not None else None
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
                    if moved is not None and self.config.overlapping_ranges:
                        self.pools.delete_reservation(self.reservation_name(local.address(step.moves_from)), moved)
                    self.log.debug("allocated", pool=blk.name, ip=str(local.address(offset)),
                                   conflicts=conflicts)
                    return Assigned(blk, offset, new=True)
                pool = None
                conflicts += 1
                self.backoff(conflicts, blk.name)
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
                           ip=str(ip), reservation=name, holder=holder_text(obj))
        elif not names_attachment(owner, obj) and not self.pools.repoint_reservation(obj, owner):
            raise TryAgainLater(f"reservation {name} of {ip} changed while pointing it at container "
                                f"{owner.container_id}; try again")

    # --- releasing: DEL, GC, rollback ----------------------------------------------------

    def free(self, blk: Block, doomed: Doomed) -> list[str]:
        """Remove every allocation of a block that `doomed` picks, then their reservations.

        A write whose answer was lost is judged by the next read: an entry no longer stored was
        freed, by this call or by another; its reservation goes either way.
        """
        tried: dict[int, Allocation] = {}
        conflicts = 0
        while True:
            pool = self.read(blk, create=False)
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
            self.backoff(conflicts, blk.name)
        freed = {o: a for o, a in tried.items() if pool is None or pool.allocations.get(o) != a}
        if self.config.overlapping_ranges:
            for o, alloc in freed.items():
                self.pools.delete_reservation(self.reservation_name(blk.local.address(o)), alloc)
        return [str(blk.local.address(o)) for o in freed]


def has_room(blk: Block, pool: Pool | None) -> bool:
    """Whether a block (an absent pool is an empty one) has an address to hand out."""
    try:
        lowest_free(blk.local, pool.taken if pool else set())
    except RangeExhausted:
        return False
    return True


def holder_text(obj: dict) -> str:
    spec = obj.get("spec") or {}
    return str(spec.get("podref") or spec.get("containerid") or "another owner")

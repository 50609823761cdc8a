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

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from whereabouts.allocator import check_requested, find_by_container, find_owned, lowest_free
from whereabouts.config import IPAMConfig
from whereabouts.errors import AddressUnavailable, CNIError, NotAllocated, RangeExhausted, TryAgainLater
from whereabouts.lock import LeaseLock, NodeLock
from whereabouts.log import Log
from whereabouts.pool import Allocation, Pool, lease_name, pool_name, remove_allocation, reservation_name, set_allocation
from whereabouts.ranges import Address, IPRange
from whereabouts.store import Store, reservation_belongs

MAX_WRITE_CONFLICTS = 20


@dataclass
class Assigned:
    """One address this invocation holds in one range."""

    rng: IPRange
    offset: int
    new: bool

    @property
    def address(self) -> Address:
        return self.rng.address(self.offset)


@dataclass
class Stats:
    retries: int = 0
    lock_wait: float = 0.0
    requests: int = 0
    notes: list[str] = field(default_factory=list)


class IPAM:
    def __init__(self, config: IPAMConfig, store: Store, identity: str, deadline: float, log: Log) -> None:
        self.config = config
        self.store = store
        self.identity = identity
        self.deadline = deadline
        self.log = log
        self.stats = Stats()

    def pool_name(self, rng: IPRange) -> str:
        return pool_name(rng.cidr, self.config.network_name)

    def reservation_name(self, ip: Address) -> str:
        return reservation_name(ip, self.config.network_name)

    @contextmanager
    def locked(self, pool: str) -> Iterator[None]:
        node = NodeLock(self.config.node_lock_dir, pool, self.deadline)
        node_held = node.acquire()
        try:
            lease = LeaseLock(self.store.api, lease_name(pool), self.identity, self.config.lease_duration_ms, self.deadline)
            lease.acquire()
            self.stats.lock_wait += node.waited + lease.waited
            self.log.debug("lock", pool=pool, node_lock=node_held, node_wait=round(node.waited, 4),
                           lease_wait=round(lease.waited, 4), lease_attempts=lease.attempts)
            try:
                yield
            finally:
                lease.release()
        finally:
            node.release()

    def _backoff(self, attempt: int) -> None:
        self.stats.retries += 1
        pause = min(0.5, 0.01 * (2 ** attempt)) * random.uniform(0.5, 1.5)
        if time.monotonic() + pause >= self.deadline:
            raise TryAgainLater("deadline passed while retrying a conflicting pool write")
        time.sleep(pause)

    # --- ADD ---------------------------------------------------------------------------

    def add(self, owner: Allocation, requested: dict[int, Address]) -> list[Assigned]:
        done: list[Assigned] = []
        try:
            for i, rng in enumerate(self.config.ranges):
                done.append(self._add_one(rng, owner, requested.get(i)))
        except CNIError:
            self._roll_back(owner, [a for a in done if a.new])
            raise
        return done

    def _add_one(self, rng: IPRange, owner: Allocation, want: Address | None) -> Assigned:
        name = self.pool_name(rng)
        blocked: set[int] = set()
        with self.locked(name):
            conflicts = 0
            while True:
                pool = self.store.read_pool(name, rng.cidr)
                assert pool is not None
                existing = find_owned(pool.allocations, owner.podref, owner.ifname, owner.container_id)
                if want is None and existing is not None:
                    return self._keep(pool, rng, existing, owner)
                if want is not None:
                    offset = check_requested(rng, want, self._holder(pool, rng.offset(want)), owner)
                    if existing == offset:
                        return self._keep(pool, rng, existing, owner)
                else:
                    offset = lowest_free(rng, pool.taken, blocked)
                reserved = False
                if self.config.overlapping_ranges:
                    holder = self.store.create_reservation(self.reservation_name(rng.address(offset)), owner)
                    if holder is not None and not reservation_belongs(holder, owner):
                        if want is not None:
                            raise AddressUnavailable(
                                f"requested address {want} is reserved by {_holder_text(holder)} in an overlapping range"
                            )
                        blocked.add(offset)
                        continue
                    reserved = holder is None
                if existing is not None:
                    remove_allocation(pool, existing)  # a static request moves this owner
                if self.config.sleep_for_race:
                    time.sleep(self.config.sleep_for_race)
                set_allocation(pool, offset, owner)
                if self.store.write_pool(pool):
                    if existing is not None and self.config.overlapping_ranges:
                        self.store.delete_reservation(self.reservation_name(rng.address(existing)), owner)
                    self.log.debug("allocated", pool=name, ip=str(rng.address(offset)), reserved=reserved)
                    return Assigned(rng, offset, new=True)
                if reserved:
                    self.store.delete_reservation(self.reservation_name(rng.address(offset)), owner)
                conflicts += 1
                if conflicts >= MAX_WRITE_CONFLICTS:
                    raise TryAgainLater(f"IPPool {name}: {conflicts} write conflicts in a row; try again")
                self._backoff(conflicts)

    def _holder(self, pool: Pool, offset: int) -> Allocation | None:
        if offset in pool.allocations:
            return pool.allocations[offset]
        if offset in pool.keys:  # held by an entry we cannot decode
            return Allocation("", "an undecodable pool entry", "")
        return None

    def _keep(self, pool: Pool, rng: IPRange, offset: int, owner: Allocation) -> Assigned:
        """Idempotent ADD: return what this owner holds, pointing it at the current container."""
        current = pool.allocations[offset]
        if current.container_id != owner.container_id:
            set_allocation(pool, offset, Allocation(owner.container_id, owner.podref, owner.ifname, current.extra))
            if not self.store.write_pool(pool):
                raise TryAgainLater(f"IPPool {pool.name} changed while updating the container id; try again")
            if self.config.overlapping_ranges:
                name = self.reservation_name(rng.address(offset))
                obj = self.store.get_reservation(name)
                if obj is not None and reservation_belongs(obj, current):
                    self.store.update_reservation(obj, owner)
        return Assigned(rng, offset, new=False)

    def _roll_back(self, owner: Allocation, assigned: list[Assigned]) -> None:
        for a in reversed(assigned):
            try:
                self._release_offsets(a.rng, {a.offset}, owner)
            except CNIError as e:
                self.log.error("rollback failed", ip=str(a.address), error=e.msg)

    # --- DEL ---------------------------------------------------------------------------

    def delete(self, container_id: str, ifname: str) -> list[str]:
        """Free this container's addresses in every range; errors are raised after trying all."""
        freed: list[str] = []
        first_error: CNIError | None = None
        for rng in self.config.ranges:
            try:
                freed += self._delete_one(rng, container_id, ifname)
            except CNIError as e:
                first_error = first_error or e
        if first_error is not None:
            raise first_error
        return freed

    def _delete_one(self, rng: IPRange, container_id: str, ifname: str) -> list[str]:
        name = self.pool_name(rng)
        with self.locked(name):
            conflicts = 0
            while True:
                pool = self.store.read_pool(name, rng.cidr, create=False)
                if pool is None:
                    return []
                offsets = find_by_container(pool.allocations, container_id, ifname)
                if not offsets:
                    return []
                owners = {o: pool.allocations[o] for o in offsets}
                for o in offsets:
                    remove_allocation(pool, o)
                if self.store.write_pool(pool):
                    break
                conflicts += 1
                if conflicts >= MAX_WRITE_CONFLICTS:
                    raise TryAgainLater(f"IPPool {name}: {conflicts} write conflicts in a row; try again")
                self._backoff(conflicts)
        if self.config.overlapping_ranges:
            for o, alloc in owners.items():
                self.store.delete_reservation(self.reservation_name(rng.address(o)), alloc)
        return [str(rng.address(o)) for o in offsets]

    def _release_offsets(self, rng: IPRange, offsets: set[int], owner: Allocation) -> None:
        """Free given offsets if they still belong to `owner` (rollback and GC)."""
        name = self.pool_name(rng)
        with self.locked(name):
            for attempt in range(MAX_WRITE_CONFLICTS):
                pool = self.store.read_pool(name, rng.cidr, create=False)
                if pool is None:
                    return
                mine = [o for o in offsets if o in pool.allocations
                        and pool.allocations[o].container_id == owner.container_id
                        and pool.allocations[o].ifname == owner.ifname]
                if not mine:
                    return
                for o in mine:
                    remove_allocation(pool, o)
                if self.store.write_pool(pool):
                    break
                self._backoff(attempt + 1)
            else:
                raise TryAgainLater(f"IPPool {name}: too many write conflicts while releasing")
        if self.config.overlapping_ranges:
            for o in mine:
                self.store.delete_reservation(self.reservation_name(rng.address(o)), owner)

    # --- CHECK, GC, STATUS -------------------------------------------------------------

    def check(self, container_id: str, ifname: str, addresses: list[Address]) -> None:
        """Every address of prevResult in our ranges is allocated to this container and interface."""
        for rng in self.config.ranges:
            mine = [a for a in addresses if a.version == rng.version and a in rng.network]
            pool = self.store.read_pool(self.pool_name(rng), rng.cidr, create=False)
            allocations = pool.allocations if pool else {}
            held = find_by_container(allocations, container_id, ifname)
            if not mine:
                raise NotAllocated(f"prevResult has no address in range {rng.cidr}")
            for ip in mine:
                if rng.offset(ip) not in held:
                    holder = allocations.get(rng.offset(ip))
                    who = f"held by container {holder.container_id}" if holder else "not allocated"
                    raise NotAllocated(f"{ip} of prevResult is {who} in IPPool {self.pool_name(rng)}, "
                                       f"not by container {container_id} interface {ifname}")

    def gc(self, valid: set[tuple[str, str]]) -> list[str]:
        """Free every allocation whose (container id, ifname) is not a valid attachment."""
        freed: list[str] = []
        errors: list[str] = []
        for rng in self.config.ranges:
            try:
                freed += self._gc_one(rng, valid)
            except CNIError as e:
                errors.append(f"{rng.cidr}: {e.msg}")
        if errors:
            raise TryAgainLater(f"GC freed {len(freed)} address(es) but failed in: " + "; ".join(errors))
        return freed

    def _gc_one(self, rng: IPRange, valid: set[tuple[str, str]]) -> list[str]:
        name = self.pool_name(rng)
        with self.locked(name):
            for attempt in range(MAX_WRITE_CONFLICTS):
                pool = self.store.read_pool(name, rng.cidr, create=False)
                if pool is None:
                    return []
                stale = {o: a for o, a in pool.allocations.items() if (a.container_id, a.ifname) not in valid}
                if not stale:
                    return []
                for o in stale:
                    remove_allocation(pool, o)
                if self.store.write_pool(pool):
                    break
                self._backoff(attempt + 1)
            else:
                raise TryAgainLater(f"IPPool {name}: too many write conflicts during GC")
        if self.config.overlapping_ranges:
            for o, alloc in stale.items():
                self.store.delete_reservation(self.reservation_name(rng.address(o)), alloc)
        return [str(rng.address(o)) for o in stale]

    def status(self) -> None:
        """Raise unless every range could serve an ADD now."""
        for rng in self.config.ranges:
            pool = self.store.read_pool(self.pool_name(rng), rng.cidr, create=False)
            try:
                lowest_free(rng, pool.taken if pool else set())
            except RangeExhausted as e:
                raise RangeExhausted(e.msg) from None


def _holder_text(obj: dict) -> str:
    spec = obj.get("spec") or {}
    return str(spec.get("podref") or spec.get("containerid") or "another owner")

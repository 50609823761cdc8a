"""Decide what a sweep frees: pure functions over snapshots, no I/O.

A sweep frees two kinds of leak:

- an `IPPool` allocation whose pod no longer exists (the pod died without a DEL:
  node crash, plugin down, force delete), together with its reservation;
- an `OverlappingRangeIPReservation` that no allocation holds (an ADD or DEL that
  stopped between its two writes).

Ordering and safety (the caller, `whereabouts.operator.sweep.sweep`, reads in this order):

1. Reservations are listed first, then pools, then pods. ADD creates the
   reservation before the pool entry, so listing reservations before pools keeps
   the window in which an ADD in flight looks like an orphan reservation as short
   as it can be: its reservation must appear before the first read and its pool
   entry after the second.
2. Pools are read before pods. An allocation made after the pool read is not in
   the snapshot, so it is never a candidate. One in the snapshot was made before
   the pods were listed, and the runtime sets up only pods that exist, so a pod
   missing from that listing was deleted since. A pod recreated under the same
   name (StatefulSet) is listed, so its address is kept.
3. Only allocations with a `namespace/name` podref are candidates: entries of
   non-Kubernetes containers (empty podref) and of IPAMClaims are never freed.
4. A pool write carries the snapshot's resourceVersion. On a conflict the pool is
   read again and only entries identical to the candidates (same offset,
   container id, podref and ifname) are removed (`unchanged`): an idempotent ADD
   of a recreated pod changes the container id and so keeps its entry. The
   reservations of a freed entry go with it only if freeing it frees them (they
   name its container or none: `whereabouts.core.ownership`) and no entry still
   in a pool, read again, holds them.
5. A reservation is an orphan only when it is older than the grace period, when
   no allocation of the snapshot holds it (the same pod, or container, and
   interface), and when no entry that cannot be decoded names its pod. An ADD in
   flight holds a reservation without a pool entry for at most its deadline, and
   one that reuses a reservation makes it anew, so its age restarts. Before
   deleting, the caller reads the pools again and re-decides, and deletes with the
   listed resourceVersion as a precondition, so a reservation made anew or
   repointed meanwhile is kept.

Reservation names carry the network name of named networks, so a name does not
reliably give back its address (`blue-fd00--5` is also `blue:fd00::5`). Instead,
each allocation's possible reservation names are computed from its pool: a pool
is named `[<network_name>-]<normalized range>`, and every network name that the
pool name allows is tried. A block of a range split into blocks is named after
its parent range (`<parent pool>-blk<i>`), which its annotation gives.

Blocks are claimed by nodes (`whereabouts.core.blocks`). An empty block whose node is gone
is deleted, with the resourceVersion read as a precondition, so that any node may claim it
again; a block that any write touched since the snapshot is kept until the next sweep.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from whereabouts.core.blocks import BLOCK_RANGE_ANNOTATION, block_node, parent_pool_name
from whereabouts.errors import CorruptPool
from whereabouts.core.pool import Allocation, Pool, decode_pool, pool_name, reservation_name
from whereabouts.core.ranges import Address, IPRange, Network, usable_span
from whereabouts.core.ownership import frees_reservation, holds_reservation

# --- snapshots ---------------------------------------------------------------------


def network_names(name: str, cidr: str) -> frozenset[str]:
    """Every `network_name` that could have produced pool `name` for range `cidr`.

    The empty name is always included, and so is every `-`-separated prefix of what
    precedes the range (node-slice pools are `<network_name>-<node>-<slice>`).
    """
    suffix = pool_name(cidr, "n")[1:]  # "-<normalized range>", as after any network name
    names = {""}
    if name.endswith(suffix) and len(name) > len(suffix):
        parts = name[: -len(suffix)].split("-")
        names.update("-".join(parts[:i]) for i in range(1, len(parts) + 1))
    return frozenset(names)


@dataclass(frozen=True)
class PoolView:
    """A decoded pool, the usable span of its network and its possible network names.

    `parent` is the configured range when the pool is one block of it, else None.
    """

    pool: Pool
    rng: IPRange
    networks: frozenset[str]
    parent: Network | None = None

    @property
    def name(self) -> str:
        return self.pool.name

    @property
    def network_name(self) -> str:
        """The most specific network name: one address in two networks is no duplicate."""
        return max(self.networks, key=len)

    def address(self, offset: int) -> Address | None:
        """The address of an offset, or None when the offset lies outside the network."""
        return self.rng.address(offset) if 0 <= offset < self.rng.network.num_addresses else None

    def reservation_names(self, offset: int) -> frozenset[str]:
        ip = self.address(offset)
        return frozenset(reservation_name(ip, n) for n in self.networks) if ip is not None else frozenset()


@dataclass(frozen=True)
class BrokenPool:
    """A pool that cannot be decoded: never written, and the pods it names keep their reservations."""

    name: str
    reason: str
    podrefs: frozenset[str]


def view_pool(obj: Any) -> PoolView:
    """Decode a stored `IPPool` whatever its range; `CorruptPool` when its range is not a network CIDR.

    A block of a range split into blocks (`whereabouts.core.blocks`) names its parent range
    in an annotation: its usable span is the parent's, its network names the parent pool's.
    """
    spec = obj.get("spec") if isinstance(obj, dict) else None
    cidr = spec.get("range") if isinstance(spec, dict) else None
    network = _network(cidr, "spec.range")
    pool = decode_pool(obj, str(cidr))
    parent_cidr = (pool.raw["metadata"].get("annotations") or {}).get(BLOCK_RANGE_ANNOTATION)
    if parent_cidr is None:
        return PoolView(pool, IPRange(network, *usable_span(network)), network_names(pool.name, str(cidr)))
    parent = _network(parent_cidr, f"annotation {BLOCK_RANGE_ANNOTATION}")
    lo = int(network.network_address) - int(parent.network_address)
    if network.version != parent.version or lo < 0 or lo + network.num_addresses > parent.num_addresses:
        raise CorruptPool(f"block {network} lies outside the range {parent} it is annotated with")
    first, last = usable_span(parent)
    span = IPRange(network, max(first, lo) - lo, min(last, lo + network.num_addresses - 1) - lo)
    return PoolView(pool, span, network_names(parent_pool_name(pool.name), str(parent_cidr)), parent)


def _network(cidr: Any, what: str) -> Network:
    try:
        return ipaddress.ip_network(str(cidr))
    except ValueError:
        raise CorruptPool(f"{what} {cidr!r} is not a network CIDR") from None


def _broken(obj: Any, reason: str) -> BrokenPool:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = str(meta.get("name", "?")) if isinstance(meta, dict) else "?"
    spec = obj.get("spec") if isinstance(obj, dict) else None
    allocs = spec.get("allocations") if isinstance(spec, dict) else None
    values = allocs.values() if isinstance(allocs, dict) else ()
    return BrokenPool(name, reason, frozenset(str(v["podref"]) for v in values if isinstance(v, dict) and v.get("podref")))


@dataclass(frozen=True)
class Reservation:
    """An `OverlappingRangeIPReservation` as listed."""

    raw: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.raw["metadata"]["name"])

    @property
    def spec(self) -> dict[str, Any]:
        spec = self.raw.get("spec")
        return spec if isinstance(spec, dict) else {}

    @property
    def podref(self) -> str:
        return str(self.spec.get("podref") or "")

    @property
    def resource_version(self) -> str:
        return str(self.raw["metadata"].get("resourceVersion", ""))

    def age(self, now: datetime) -> timedelta | None:
        created = self.raw["metadata"].get("creationTimestamp")
        try:
            return now - datetime.fromisoformat(str(created))
        except ValueError:
            return None

    def held_by(self, alloc: Allocation) -> bool:
        """The entry `alloc` holds this reservation: the same pod (or container) and interface."""
        return holds_reservation(alloc, self.raw)

    def freed_with(self, alloc: Allocation) -> bool:
        """Freeing the entry `alloc` frees this reservation too: it names no later sandbox of the pod."""
        return frees_reservation(alloc, self.raw)


@dataclass
class Snapshot:
    pools: list[PoolView] = field(default_factory=list)
    broken: list[BrokenPool] = field(default_factory=list)
    reservations: list[Reservation] = field(default_factory=list)


def snapshot(pool_objs: Iterable[Any], reservation_objs: Iterable[dict[str, Any]] = ()) -> Snapshot:
    snap = Snapshot(reservations=[Reservation(r) for r in reservation_objs])
    for obj in pool_objs:
        try:
            snap.pools.append(view_pool(obj))
        except CorruptPool as e:
            snap.broken.append(_broken(obj, e.msg))
    return snap


@dataclass
class Pairing:
    """Which reservations the allocations hold."""

    held: set[str] = field(default_factory=set)  # names of reservations some allocation holds
    bare: list[tuple[PoolView, int]] = field(default_factory=list)  # allocations holding none
    reserving: set[str] = field(default_factory=set)  # pools with an allocation that holds one


def pairing(pools: Iterable[PoolView], reservations: Iterable[Reservation],
            skip: Collection[tuple[str, int]] = ()) -> Pairing:
    """Match allocations (but the `(pool, offset)` in `skip`) and reservations.

    An entry beyond its network has no address, hence no reservation to miss.
    """
    by_name = {r.name: r for r in reservations}
    out = Pairing()
    for view in pools:
        for offset, alloc in view.pool.allocations.items():
            if (view.name, offset) in skip:
                continue
            names = view.reservation_names(offset)
            mine = {n for n in names if n in by_name and by_name[n].held_by(alloc)}
            out.held |= mine
            if mine:
                out.reserving.add(view.name)
            elif names:
                out.bare.append((view, offset))
    return out


# --- decisions ---------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One pool entry as read: what a sweep or a release decides to remove."""

    pool: str
    offset: int
    address: Address | None
    alloc: Allocation
    reservations: frozenset[str]


def reclaimable(alloc: Allocation) -> bool:
    """Only entries that name a pod can be judged by the pod's existence."""
    ns, _, name = alloc.podref.partition("/")
    return bool(ns and name) and "/" not in name and not alloc.extra.get("ipamclaimref")


def stale_allocations(pools: Iterable[PoolView], live: set[str]) -> list[Entry]:
    return [
        Entry(view.name, offset, view.address(offset), alloc, view.reservation_names(offset))
        for view in pools
        for offset, alloc in sorted(view.pool.allocations.items())
        if reclaimable(alloc) and alloc.podref not in live
    ]


def unchanged(view: PoolView, candidates: Iterable[Entry]) -> list[int]:
    """The candidates whose entry is still exactly as first read (re-deciding after a write conflict)."""
    allocs = view.pool.allocations
    return [
        c.offset
        for c in candidates
        if c.pool == view.name
        and c.offset in allocs
        and (allocs[c.offset].container_id, allocs[c.offset].podref, allocs[c.offset].ifname)
        == (c.alloc.container_id, c.alloc.podref, c.alloc.ifname)
    ]


def unheld(snap: Snapshot, skip: Collection[tuple[str, int]] = ()) -> list[Reservation]:
    """Reservations that no allocation holds (but those in `skip`), and whose pod no undecodable entry names."""
    held = pairing(snap.pools, snap.reservations, skip).held
    protected = {p for b in snap.broken for p in b.podrefs}
    protected |= {
        str(value["podref"])
        for view in snap.pools
        for key in view.pool.undecodable
        if isinstance(value := view.pool.raw["spec"]["allocations"].get(key), dict) and value.get("podref")
    }
    return [r for r in snap.reservations if r.name not in held and (not r.podref or r.podref not in protected)]


def orphan_reservations(
    snap: Snapshot, now: datetime, grace: timedelta
) -> tuple[list[Reservation], list[Reservation]]:
    """Unheld reservations: (old enough to free, still within the grace period)."""
    old: list[Reservation] = []
    young: list[Reservation] = []
    for r in unheld(snap):
        age = r.age(now)
        (old if age is not None and age >= grace else young).append(r)
    return old, young


def abandoned_blocks(pools: Iterable[PoolView], nodes: set[str]) -> list[PoolView]:
    """Empty blocks claimed by a node that no longer exists: deleting one makes it free for any node.

    A block that still holds an entry is kept: the entries of a deleted node's pods go first,
    as their pods are found gone, and the block follows in a later sweep."""
    return [v for v in pools
            if v.parent is not None and block_node(v.pool.raw) not in nodes | {""}
            and not v.pool.keys and not v.pool.undecodable]


@dataclass
class Plan:
    allocations: list[Entry]
    # The reservations each of those entries frees with it: held by it and by no entry that stays.
    companions: dict[tuple[str, int], list[Reservation]]
    reservations: list[Reservation]
    young: list[Reservation]


def plan(snap: Snapshot, live: set[str], now: datetime, grace: timedelta) -> Plan:
    """What one sweep frees, from a snapshot read in the documented order."""
    stale = stale_allocations(snap.pools, live)
    unheld_after = {r.name: r for r in unheld(snap, skip={(e.pool, e.offset) for e in stale})}
    companions = {
        (e.pool, e.offset): [unheld_after[n] for n in sorted(e.reservations)
                             if n in unheld_after and unheld_after[n].freed_with(e.alloc)]
        for e in stale
    }
    old, young = orphan_reservations(snap, now, grace)
    return Plan(stale, companions, old, young)

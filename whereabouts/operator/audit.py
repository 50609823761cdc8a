"""Consistency checks over pools and reservations: pure, no I/O.

Each finding names one thing an operator can look at. What counts as wrong:

- `undecodable`: a pool whose range is not a network CIDR, or an entry whose key is
  not a decimal offset or whose value is not `{id, podref, ifname}`. The plugin
  keeps such entries and never hands out their addresses, but nothing frees them.
- `out-of-range`: an entry at the network or broadcast address, or beyond the network.
- `duplicate`: one address allocated in two pools of the same network (overlapping
  ranges), or under two keys of one pool (`5` and `05`).
- `reservation-without-allocation`: a reservation that no allocation holds. It blocks
  its address in every overlapping range; `whereabouts reconcile` frees it.
- `allocation-without-reservation`: an allocation whose reservation is missing, so an
  overlapping range may hand out its address again. Reservations exist only where
  `enable_overlapping_ranges` is on, a setting pools do not record; by default a pool
  is expected to have them when any of its other allocations has one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass

from whereabouts.operator.reconcile import PoolView, Snapshot, pairing

UNDECODABLE = "undecodable"
OUT_OF_RANGE = "out-of-range"
DUPLICATE = "duplicate"
ORPHAN_RESERVATION = "reservation-without-allocation"
MISSING_RESERVATION = "allocation-without-reservation"


@dataclass(frozen=True)
class Finding:
    kind: str
    pool: str
    address: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def audit(snap: Snapshot, expect_reservations: bool | None = None) -> list[Finding]:
    """Every inconsistency in the snapshot. `expect_reservations` None: decide per pool."""
    return [
        *_undecodable(snap),
        *_out_of_range(snap.pools),
        *_duplicates(snap.pools),
        *_reservations(snap, expect_reservations),
    ]


def _address(view: PoolView, offset: int) -> str:
    ip = view.address(offset)
    return str(ip) if ip is not None else ""


def _undecodable(snap: Snapshot) -> list[Finding]:
    found = [Finding(UNDECODABLE, b.name, "", b.reason) for b in snap.broken]
    for view in snap.pools:
        for key in view.pool.undecodable:
            if key.isascii() and key.isdigit():
                found.append(Finding(UNDECODABLE, view.name, _address(view, int(key)),
                                     f"entry {key!r} is not an object of id, podref and ifname strings"))
            else:
                found.append(Finding(UNDECODABLE, view.name, "", f"key {key!r} is not a decimal offset"))
    return found


def _out_of_range(pools: list[PoolView]) -> list[Finding]:
    found = []
    for view in pools:
        for offset in sorted(view.pool.taken):
            if view.rng.in_span(offset):
                continue
            if offset == 0:
                why = "is the network address"
            elif offset == view.rng.network.num_addresses - 1:
                why = "is the broadcast address"
            else:
                why = f"lies beyond the network {view.rng.network}"
            found.append(Finding(OUT_OF_RANGE, view.name, _address(view, offset), f"offset {offset} {why}"))
    return found


def _duplicates(pools: list[PoolView]) -> list[Finding]:
    found = []
    holders: dict[tuple[str, str], list[PoolView]] = defaultdict(list)
    for view in pools:
        for offset, keys in sorted(view.pool.keys.items()):
            address = _address(view, offset)
            if len(keys) > 1:
                found.append(Finding(DUPLICATE, view.name, address, f"keys {', '.join(map(repr, keys))} hold one offset"))
            if address:
                holders[(view.network_name, address)].append(view)
    for (_, address), views in holders.items():
        for view in views if len(views) > 1 else ():
            others = ", ".join(v.name for v in views if v is not view)
            found.append(Finding(DUPLICATE, view.name, address, f"also allocated in overlapping pool {others}"))
    return found


def _reservations(snap: Snapshot, expect: bool | None) -> list[Finding]:
    paired = pairing(snap.pools, snap.reservations)
    found = [
        Finding(ORPHAN_RESERVATION, "", "",
                f"reservation {r.name} (pod {r.podref or '-'}, container {r.spec.get('containerid') or '-'}) "
                "is held by no allocation")
        for r in snap.reservations
        if r.name not in paired.held
    ]
    for view, offset in paired.bare:
        if not view.rng.in_span(offset):
            continue  # reported as out-of-range
        if expect or (expect is None and view.name in paired.reserving):
            alloc = view.pool.allocations[offset]
            found.append(Finding(MISSING_RESERVATION, view.name, _address(view, offset),
                                 f"pod {alloc.podref or '-'} ({alloc.ifname or '-'}) has no reservation"))
    return found

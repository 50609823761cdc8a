"""Who holds what: the one place that decides ownership of addresses and reservations.

An owner is an `Allocation` as an invocation would write it (container id, podref, ifname).
- The same owner (the idempotency key of ADD): the same pod and interface, or the same
  container and interface where there is no pod. A pod's new sandbox keeps its address.
- An attachment (the key of DEL, CHECK, GC and rollback): this container's interface, so a
  DEL of an old sandbox never frees what the pod's new sandbox holds.
- A reservation belongs to an owner by the same rule; one was made by an allocation when it
  also names no other container.
- An owner's home block (block layout) follows from its idempotency key, so its ADD and
  its DEL look in the same block first.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from whereabouts.core.pool import Allocation


def same_owner(alloc: Allocation, owner: Allocation) -> bool:
    """Whether `alloc` is held by `owner`: the pod and interface, or the container where there is no pod."""
    if owner.podref:
        return alloc.podref == owner.podref and alloc.ifname == owner.ifname
    return attached(alloc, owner.container_id, owner.ifname)


def attached(alloc: Allocation, container_id: str, ifname: str) -> bool:
    """Whether `alloc` is this container's interface."""
    return alloc.container_id == container_id and alloc.ifname == ifname


def find_owned(allocations: dict[int, Allocation], owner: Allocation) -> int | None:
    """The offset `owner` holds already, for an idempotent ADD."""
    for offset, alloc in allocations.items():
        if same_owner(alloc, owner):
            return offset
    return None


def reservation_belongs(obj: Any, owner: Allocation) -> bool:
    """Whether an OverlappingRangeIPReservation object is `owner`'s (an empty ifname matches any)."""
    spec = obj.get("spec") if isinstance(obj, dict) else None
    if not isinstance(spec, dict) or spec.get("ifname", "") not in ("", owner.ifname):
        return False
    if owner.podref and spec.get("podref") == owner.podref:
        return True
    return bool(owner.container_id) and spec.get("containerid") == owner.container_id


def reservation_made_by(obj: Any, alloc: Allocation) -> bool:
    """Whether the reservation is the one `alloc` made: its owner's, and naming no later sandbox."""
    spec = obj.get("spec") if isinstance(obj, dict) else None
    containerid = (spec.get("containerid") if isinstance(spec, dict) else "") or ""
    return reservation_belongs(obj, alloc) and containerid in ("", alloc.container_id)

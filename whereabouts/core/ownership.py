"""Who holds what: the one place that decides ownership of addresses and reservations.

An owner is an `Allocation` as an invocation would write it (container id, podref, ifname).
A pool entry and an `OverlappingRangeIPReservation` name their owner the same way, and the
same two keys decide for both:
- The owner (the key of ADD, and of whether a reservation is held): the same pod and
  interface, or the same container and interface where there is no pod. A pod's new sandbox
  keeps its address, and the pod's entry holds the address's reservation whichever of its
  sandboxes the reservation names. The reconciler pairs entries and reservations by it.
- The attachment (the key of DEL, GC and rollback): this container's interface. Freeing an
  entry frees its reservation too only while the reservation names that container (or none),
  so a DEL of an old sandbox never frees what the pod's new sandbox holds or has just reserved.
An ADD therefore makes every reservation it relies on name its own container: one it finds
left over by the same owner (a DEL that stopped between its two writes, an earlier sandbox)
is made anew, which also restarts its age for the reconciler's grace period.
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


def _spec(obj: Any) -> dict[str, Any]:
    spec = obj.get("spec") if isinstance(obj, dict) else None
    return spec if isinstance(spec, dict) else {}


def holds_reservation(owner: Allocation, obj: Any) -> bool:
    """Whether `owner` holds an OverlappingRangeIPReservation object: its pod (or container) and
    interface; a reservation without an interface (older writers) names any."""
    spec = _spec(obj)
    if spec.get("ifname", "") not in ("", owner.ifname):
        return False
    if owner.podref and spec.get("podref") == owner.podref:
        return True
    return bool(owner.container_id) and spec.get("containerid") == owner.container_id


def frees_reservation(alloc: Allocation, obj: Any) -> bool:
    """Whether freeing the entry `alloc` frees the reservation too: its owner holds it and it names
    this container or none (not a later sandbox's, which may be about to write its entry)."""
    return holds_reservation(alloc, obj) and (_spec(obj).get("containerid") or "") in ("", alloc.container_id)


def names_attachment(alloc: Allocation, obj: Any) -> bool:
    """Whether the reservation names exactly this container's interface (what this ADD would write)."""
    return frees_reservation(alloc, obj) and _spec(obj).get("containerid") == alloc.container_id

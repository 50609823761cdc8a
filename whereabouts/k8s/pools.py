"""IPPools and OverlappingRangeIPReservations over a Store, as the CNI verbs use them.

Every pool write carries the resourceVersion it read, so a concurrent writer (another node,
the Go plugin, the reconciler) makes it fail instead of being overwritten. Nothing here decides
which address to take, nor who owns what (`whereabouts.core.ownership` does). A write whose answer
was lost (`OutcomeUnknown`) is never sent again blindly: creates and deletes read the object and
decide from what is stored; a lost pool write is passed up, because only the caller knows what to
look for in the pool it reads next; a lost repoint of a reservation counts as not done.
"""

from __future__ import annotations

from whereabouts.core.ownership import frees_reservation, holds_reservation, names_attachment
from whereabouts.core.pool import decode_pool, new_pool_object, reservation_object
from whereabouts.errors import CorruptPool, IOFailure, OutcomeUnknown
from whereabouts.k8s.store import POOLS, RESERVATIONS, dig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from whereabouts.core.pool import Allocation, Pool
    from whereabouts.k8s.store import Store


class Pools:
    """The pool and reservation operations of the verbs, over one Store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # --- pools ---------------------------------------------------------------------

    def read_pool(self, name: str, cidr: str, create: bool = True,
                  metadata: dict[str, Any] | None = None) -> Pool | None:
        """The pool as stored now, created empty (with `metadata` labels/annotations) if absent and `create`
        (else None). Raises IOFailure when it keeps appearing and disappearing."""
        for _ in range(3):
            obj = self.store.get(POOLS, name)
            if obj is not None:
                return decode_pool(obj, cidr)
            if not create:
                return None
            try:
                obj = self.store.create(POOLS, new_pool_object(name, cidr, self.store.namespace, metadata))
            except OutcomeUnknown:
                continue  # created or not, the next read tells
            if obj is not None:
                return decode_pool(obj, cidr)
            # It exists: created between our read and our create; read theirs.
        raise IOFailure(f"IPPool {name} keeps appearing and disappearing; giving up")

    def claim_pool(self, name: str, cidr: str, metadata: dict[str, Any]) -> Pool | None:
        """Create the pool empty with `metadata` (a block's owning node): None when it exists already,
        so of two creators exactly one gets it. After a lost answer, the stored object decides: it is
        ours if it carries our metadata's annotations (they name this node), as it is stored now."""
        body = new_pool_object(name, cidr, self.store.namespace, metadata)
        try:
            obj = self.store.create(POOLS, body)
        except OutcomeUnknown:
            obj = self.store.get(POOLS, name)
            mine = metadata.get("annotations", {}).items() <= (dig(obj, "metadata", "annotations") or {}).items()
            if obj is None or not mine:
                return None
        return decode_pool(obj, cidr) if obj is not None else None

    def write_pool(self, pool: Pool) -> bool:
        """Replace the pool if nobody wrote it since we read it. False on a conflict, or when it is gone.

        Raises OutcomeUnknown when the answer was lost: the caller reads the pool again.
        """
        obj = self.store.replace(POOLS, pool.raw)
        if obj is None:
            return False
        try:
            fresh = decode_pool(obj, pool.cidr)
        except CorruptPool:
            raise IOFailure(f"IPPool {pool.name}: the API server answered a write with an unreadable object") from None
        pool.raw, pool.resource_version = fresh.raw, fresh.resource_version
        return True

    def list_pools(self, label_selector: str = "") -> list[dict[str, Any]]:
        return self.store.list(POOLS, label_selector)

    # --- reservations ----------------------------------------------------------------

    def claim_reservation(self, name: str, alloc: Allocation) -> dict[str, Any] | None:
        """Make the cluster-wide reservation `alloc` relies on: None when it is now `alloc`'s, made
        by this call, else the holder's object (another owner's: the address is taken), or an
        empty-spec stand-in for one when it kept coming and going through four attempts.

        A reservation of the same owner left from before (a DEL that stopped between its two
        writes, an earlier sandbox of the pod) is deleted as read and created anew: it then
        names this container, so a DEL of the old sandbox leaves it alone, and its age restarts,
        so the reconciler's grace period covers this ADD until its pool write
        (`whereabouts.core.ownership`). After a lost answer, what is stored decides: a reservation
        naming this very attachment is the one the lost create made.
        """
        body = reservation_object(name, self.store.namespace, alloc)
        for _ in range(4):
            lost = False
            try:
                if self.store.create(RESERVATIONS, body) is not None:
                    return None
            except OutcomeUnknown:
                lost = True
            existing = self.store.get(RESERVATIONS, name)
            if existing is None:
                continue  # deleted since, or our create never arrived: once more
            if not holds_reservation(alloc, existing):
                return existing
            if lost and names_attachment(alloc, existing):
                return None
            self._delete_as_read(name, existing)
        return {"spec": {}}  # it keeps coming and going: treat it as someone else's

    def get_reservation(self, name: str) -> dict[str, Any] | None:
        return self.store.get(RESERVATIONS, name)

    def repoint_reservation(self, obj: dict[str, Any], alloc: Allocation) -> bool:
        """Point the reservation an entry holds at the entry's new container (idempotent ADD after a
        sandbox restart), in place: the address stays reserved throughout. False when it changed
        since `obj` was read, or the answer was lost."""
        obj = {**obj, "spec": {**(dig(obj, "spec") or {}), "containerid": alloc.container_id,
                               "podref": alloc.podref, "ifname": alloc.ifname}}
        if not isinstance(dig(obj, "metadata", "name"), str):
            return False
        try:
            return self.store.replace(RESERVATIONS, obj) is not None
        except OutcomeUnknown:
            return False

    def delete_reservation(self, name: str, freed: Allocation) -> bool:
        """Delete the reservation of an address `freed` no longer holds (its entry freed or moved, or
        never written by the ADD that reserved it), while freeing that entry frees the reservation
        (`frees_reservation`), under a resourceVersion precondition.

        True when this call saw it go. After a lost answer or a change, the reservation is read
        again, and deleted again only under the precondition of what that read shows.
        """
        for _ in range(3):
            obj = self.store.get(RESERVATIONS, name)
            if obj is None or not frees_reservation(freed, obj):
                return False
            if self._delete_as_read(name, obj):
                return True
        return False

    def _delete_as_read(self, name: str, obj: dict[str, Any]) -> bool:
        """Delete the reservation only as `obj` shows it; a lost answer is judged by the caller's next read."""
        try:
            return self.store.delete(RESERVATIONS, name, str(dig(obj, "metadata", "resourceVersion") or ""))
        except OutcomeUnknown:
            return False

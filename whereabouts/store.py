"""The Kubernetes store: IPPools and OverlappingRangeIPReservations.

Every write of a pool carries the resourceVersion that was read, so a concurrent
writer (another node, the Go plugin, the reconciler) makes it fail with a 409
instead of being overwritten. Nothing here decides which address to take.

A write whose answer was lost (`OutcomeUnknown`) is never sent again blindly: creates and
deletes read the object and decide from what is stored; a lost pool write is passed up,
because only the caller knows what to look for in the pool it reads next.
"""

from __future__ import annotations

import urllib.parse

from whereabouts.errors import CorruptPool, IOFailure, OutcomeUnknown
from whereabouts.kubeapi import dig
from whereabouts.pool import decode_pool, new_pool_object, reservation_object

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on the hot path (~3 ms)
if TYPE_CHECKING:
    from typing import Any

    from whereabouts.kubeapi import KubeAPI
    from whereabouts.pool import Allocation, Pool

POOLS = "ippools"
RESERVATIONS = "overlappingrangeipreservations"


class Store:
    def __init__(self, api: KubeAPI) -> None:
        self.api = api

    @property
    def namespace(self) -> str:
        return self.api.namespace

    # --- pools ---------------------------------------------------------------------

    def read_pool(
        self, name: str, cidr: str, create: bool = True, metadata: dict[str, Any] | None = None
    ) -> Pool | None:
        """The pool as stored now, created empty (with `metadata` labels/annotations) if absent and `create`."""
        for _ in range(3):
            resp = self.api.request("GET", self.api.custom_path(POOLS, name))
            if resp.status == 200:
                return decode_pool(resp.body, cidr)
            if not create:
                return None
            body = new_pool_object(name, cidr, self.namespace, metadata)
            try:
                resp = self.api.request("POST", self.api.custom_path(POOLS), body)
            except OutcomeUnknown:
                continue  # created or not, the next GET tells
            if resp.status in (200, 201):
                return decode_pool(resp.body, cidr)
            # 409: someone created it between our GET and POST; read theirs.
        raise IOFailure(f"IPPool {name} keeps appearing and disappearing; giving up")

    def write_pool(self, pool: Pool) -> bool:
        """Replace the pool if nobody wrote it since we read it. False on a conflict.

        Raises OutcomeUnknown when the answer was lost: the caller reads the pool again.
        """
        resp = self.api.request("PUT", self.api.custom_path(POOLS, pool.name), pool.raw)
        if resp.status in (404, 409):
            return False
        try:
            fresh = decode_pool(resp.body, pool.cidr)
        except CorruptPool:
            fresh = None
        if fresh is None:
            raise IOFailure(f"IPPool {pool.name}: the API server answered a write with an unreadable object")
        pool.raw, pool.resource_version = fresh.raw, fresh.resource_version
        return True

    def list_pools(self, label_selector: str = "") -> list[dict[str, Any]]:
        path = self.api.custom_path(POOLS)
        if label_selector:
            path += "?labelSelector=" + urllib.parse.quote(label_selector)
        resp = self.api.request("GET", path)
        items = resp.body.get("items") if resp.status == 200 else []
        if not isinstance(items, list):
            raise IOFailure(f"API server answered the list of IPPools with a malformed object (items: {type(items).__name__})")
        return items

    # --- reservations ----------------------------------------------------------------

    def create_reservation(self, name: str, alloc: Allocation) -> dict[str, Any] | None:
        """Create the cluster-wide reservation. None when created, else the existing holder's object."""
        body = reservation_object(name, self.namespace, alloc)
        for _ in range(2):
            try:
                resp = self.api.request("POST", self.api.custom_path(RESERVATIONS), body)
                if resp.status in (200, 201):
                    return None
            except OutcomeUnknown:
                pass  # as after a 409, what is stored decides: if it is ours, the caller proceeds
            existing = self.get_reservation(name)
            if existing is not None:
                return existing
            # Not there (deleted between our POST and GET, or our POST never arrived): try once more.
        return {"spec": {}}  # it keeps coming and going: someone else's

    def get_reservation(self, name: str) -> dict[str, Any] | None:
        resp = self.api.request("GET", self.api.custom_path(RESERVATIONS, name))
        return resp.body if resp.status == 200 else None

    def update_reservation(self, obj: dict[str, Any], alloc: Allocation) -> bool:
        """Point an existing reservation at a new container id (idempotent ADD after a sandbox restart)."""
        obj = dict(obj)
        obj["spec"] = {**(obj.get("spec") or {}), "containerid": alloc.container_id, "podref": alloc.podref,
                       "ifname": alloc.ifname}
        name = dig(obj, "metadata", "name")
        if not isinstance(name, str):
            return False
        try:
            resp = self.api.request("PUT", self.api.custom_path(RESERVATIONS, name), obj)
        except OutcomeUnknown:
            return False  # the container id in a reservation is informative; its podref decides
        return resp.status == 200

    def delete_reservation(self, name: str, owner: Allocation) -> bool:
        """Delete the reservation only if it still belongs to `owner` (by resourceVersion precondition).

        True when this call saw it go. After a lost answer the reservation is read again, and
        deleted again only under the precondition of what that read shows.
        """
        for _ in range(3):
            obj = self.get_reservation(name)
            if obj is None or not reservation_belongs(obj, owner):
                return False
            body = {
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "preconditions": {"resourceVersion": dig(obj, "metadata", "resourceVersion")},
            }
            try:
                resp = self.api.request("DELETE", self.api.custom_path(RESERVATIONS, name), body)
            except OutcomeUnknown:
                continue
            if resp.status != 409:  # 409: changed since our read; read it again
                return resp.status in (200, 202)
        return False


def reservation_belongs(obj: dict[str, Any], owner: Allocation) -> bool:
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    if owner.podref and spec.get("podref") == owner.podref:
        return spec.get("ifname", "") in ("", owner.ifname)
    return bool(owner.container_id) and spec.get("containerid") == owner.container_id and spec.get(
        "ifname", ""
    ) in ("", owner.ifname)

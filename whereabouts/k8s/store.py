"""The Store: the five operations on namespaced objects that whereabouts needs, and its HTTPS form.

Everything above it speaks to this interface, not to HTTP: `HTTPStore` serves the plugin over
the lean `KubeAPI`; the operator's `Kube` serves the same calls over the official client; the
tests' `FakeStore` keeps objects in memory and injects conflicts, lost answers, timeouts and
stale reads. Writes carry the resourceVersion that was read (`replace`) or a precondition on it
(`delete`), so a concurrent writer makes them fail instead of being overwritten. A write whose
answer was lost raises `OutcomeUnknown`: the caller reads again, never resends blindly.
"""

from __future__ import annotations

from whereabouts.errors import IOFailure
from whereabouts.k8s.urls import quote

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from whereabouts.k8s.api import KubeAPI

POOLS = "ippools"
RESERVATIONS = "overlappingrangeipreservations"
NODE_SLICES = "nodeslicepools"


def dig(obj: Any, *keys: str) -> Any:
    """`obj[k1][k2]...`, or None where a level is missing or not an object (a malformed answer)."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


class Store:
    """Namespaced objects of the whereabouts API group, by plural (`POOLS`, `RESERVATIONS`, `NODE_SLICES`)."""

    namespace: str

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        """The object as stored now; None when there is none."""
        raise NotImplementedError

    def create(self, plural: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The created object; None when one of that name exists already."""
        raise NotImplementedError

    def replace(self, plural: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The written object; None when it changed since `obj` was read (its resourceVersion) or is gone."""
        raise NotImplementedError

    def delete(self, plural: str, name: str, resource_version: str) -> bool:
        """Delete it as it was read; False when it changed since or is gone."""
        raise NotImplementedError

    def list(self, plural: str, label_selector: str = "") -> list[dict[str, Any]]:
        """Every object of the namespace, or those the label selector picks."""
        raise NotImplementedError


class HTTPStore(Store):
    """The Store over `KubeAPI`: one kept-alive connection, every request within the invocation's deadline."""

    def __init__(self, api: KubeAPI) -> None:
        self.api = api
        self.namespace = api.namespace

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        resp = self.api.request("GET", self.api.custom_path(plural, name))
        return resp.body if resp.status == 200 else None

    def create(self, plural: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        resp = self.api.request("POST", self.api.custom_path(plural), obj)
        return resp.body if resp.status in (200, 201) else None

    def replace(self, plural: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        name = (obj.get("metadata") or {}).get("name") or ""
        resp = self.api.request("PUT", self.api.custom_path(plural, name), obj)
        return resp.body if resp.status in (200, 201) else None

    def delete(self, plural: str, name: str, resource_version: str) -> bool:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": resource_version}}
        resp = self.api.request("DELETE", self.api.custom_path(plural, name), body)
        return resp.status in (200, 202)

    def list(self, plural: str, label_selector: str = "") -> list[dict[str, Any]]:
        path = self.api.custom_path(plural)
        if label_selector:
            path += "?labelSelector=" + quote(label_selector)
        resp = self.api.request("GET", path)
        items = resp.body.get("items") if resp.status == 200 else []
        if not isinstance(items, list):
            raise IOFailure(f"API server answered the list of {plural} with a malformed object "
                            f"(items: {type(items).__name__})")
        return items

"""The store as the official client sees it: what tests read and plant, independent of our code."""

from __future__ import annotations

from typing import Any


class Pools:
    """Read what the plugin stored, with the official client (independent of our code)."""

    def __init__(self, api, namespace: str) -> None:
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api)
        self.coord = client.CoordinationV1Api(api)
        self.namespace = namespace

    def _get(self, plural: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.rest import ApiException

        try:
            return self.custom.get_namespaced_custom_object("whereabouts.cni.cncf.io", "v1alpha1", self.namespace,
                                                           plural, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def pool(self, name: str) -> dict[str, Any] | None:
        return self._get("ippools", name)

    def allocations(self, name: str) -> dict[str, Any]:
        pool = self.pool(name)
        return pool["spec"].get("allocations") or {} if pool else {}

    def reservation(self, name: str) -> dict[str, Any] | None:
        return self._get("overlappingrangeipreservations", name)

    def _list(self, plural: str) -> list[dict[str, Any]]:
        items = self.custom.list_namespaced_custom_object("whereabouts.cni.cncf.io", "v1alpha1", self.namespace,
                                                         plural)["items"]
        return sorted(items, key=lambda o: o["metadata"]["name"])

    def pools(self) -> list[dict[str, Any]]:
        return self._list("ippools")

    def reservations(self) -> list[dict[str, Any]]:
        return self._list("overlappingrangeipreservations")

    def lease(self, name: str = "whereabouts") -> tuple[str, float, float, int]:
        """(holderIdentity, acquireTime, renewTime, leaseDurationSeconds) of a Lease, the times in
        seconds since the epoch: what tells whether and when a waiter took it over."""
        spec = self.coord.read_namespaced_lease(name, self.namespace).spec
        return (spec.holder_identity or "", spec.acquire_time.timestamp(), spec.renew_time.timestamp(),
                spec.lease_duration_seconds)

    def create_pool(self, name: str, cidr: str, allocations: dict[str, Any]) -> None:
        body = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool",
                "metadata": {"name": name}, "spec": {"range": cidr, "allocations": allocations}}
        self.custom.create_namespaced_custom_object("whereabouts.cni.cncf.io", "v1alpha1", self.namespace, "ippools",
                                                   body)


class Pods:
    """Pod objects in the test namespace. Without a kubelet they stay Pending and are deleted at once."""

    def __init__(self, api: Any, namespace: str) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api)
        self.client = client
        self.namespace = namespace

    def create(self, *names: str) -> None:
        c = self.client
        for name in names:
            spec = c.V1PodSpec(containers=[c.V1Container(name="main", image="busybox")])
            self.core.create_namespaced_pod(self.namespace, c.V1Pod(metadata=c.V1ObjectMeta(name=name), spec=spec))

    def delete(self, *names: str) -> None:
        for name in names:
            self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)

    def ref(self, name: str) -> str:
        return f"{self.namespace}/{name}"

"""Fixtures for tests at the CNI boundary against the real API server."""

from __future__ import annotations

import copy
from typing import Any

import pytest


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

    def reservations(self) -> list[dict[str, Any]]:
        return self.custom.list_namespaced_custom_object("whereabouts.cni.cncf.io", "v1alpha1", self.namespace,
                                                        "overlappingrangeipreservations")["items"]

    def create_pool(self, name: str, cidr: str, allocations: dict[str, Any]) -> None:
        body = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool",
                "metadata": {"name": name}, "spec": {"range": cidr, "allocations": allocations}}
        self.custom.create_namespaced_custom_object("whereabouts.cni.cncf.io", "v1alpha1", self.namespace, "ippools",
                                                   body)


@pytest.fixture
def pools(kube, namespace) -> Pools:
    return Pools(kube, namespace)


@pytest.fixture
def netconf(namespace_kubeconfig, tmp_path):
    """Build a bridge-style network config whose ipam points at this test's namespace."""

    def make(ipam: dict[str, Any] | None = None, version: str = "1.0.0", **top: Any) -> dict[str, Any]:
        base_ipam = {
            "type": "whereabouts",
            "range": "10.10.0.0/24",
            "kubernetes": {"kubeconfig": str(namespace_kubeconfig)},
            "configuration_path": str(tmp_path / "no-flat-file.conf"),
            "node_lock_dir": str(tmp_path / "locks"),
            "log_file": str(tmp_path / "whereabouts.log"),
            "log_level": "debug",
        }
        base_ipam.update(ipam or {})
        conf = {"cniVersion": version, "name": "testnet", "type": "bridge", "bridge": "br-test",
                "ipam": {k: v for k, v in base_ipam.items() if v is not None}}
        conf.update(copy.deepcopy(top))
        return conf

    return make

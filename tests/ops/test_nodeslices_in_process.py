"""The node-slice controller's passes over the in-memory store: what a re-slicing does while pods
hold addresses in the old slice pools (issue 18, defect 2), and what it logs meanwhile."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.fakes.store import FakeStore
from whereabouts.core.slices import KIND, PLURAL
from whereabouts.k8s.store import POOLS
from whereabouts.operator.nads import NAD
from whereabouts.operator.nodeslices import NodeSlices


class Kube(FakeStore):
    """The FakeStore with the controller's pod lookups; `live` names the Pods that exist."""

    def __init__(self) -> None:
        super().__init__("ns")
        self.live: set[str] = set()
        self.pod_reads = 0

    def pod_exists(self, podref: str) -> bool:
        self.pod_reads += 1
        return podref in self.live


class Mirror:
    def __init__(self, items: dict[str, Any]) -> None:
        self.items = items

    def snapshot(self) -> tuple[dict[str, Any], str]:
        return dict(self.items), "1"


@pytest.fixture
def world(tmp_path):
    kube = Kube()
    nads, nodes = Mirror({}), Mirror({"a": True, "b": True})
    leading = threading.Event()
    leading.set()
    controller = NodeSlices(kube, nads, nodes, leading)

    def nad(size: str) -> None:
        ipam = {"type": "whereabouts", "range": "10.0.0.0/24", "node_slice_size": size, "network_name": "blue",
                "configuration_path": str(tmp_path / "none.conf")}
        config = json.dumps({"cniVersion": "0.3.1", "name": "net", "type": "macvlan", "ipam": ipam})
        nads.items["ns/net"] = NAD("ns", "net", "uid-1", "2025-01-01T00:00:00Z", config)

    return kube, controller, nad


def status(kube: Kube) -> dict[str, str]:
    return {a["sliceRange"]: a["nodeName"] for a in kube.obj(PLURAL, "blue")["status"]["allocations"]}


def ippool(kube: Kube, name: str, cidr: str, pods: dict[str, str]) -> None:
    kube.put(POOLS, {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool", "metadata": {"name": name},
                     "spec": {"range": cidr, "allocations": {o: {"id": f"c-{p}", "podref": f"ns/{p}", "ifname": "net1"}
                                                             for o, p in pods.items()}}})


def events(logs: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"].startswith(text)]


def test_a_resize_withholds_the_slice_of_live_pods_until_their_old_pool_is_drained_then_deletes_it(world):
    kube, controller, nad = world
    nad("/26")
    controller.reconcile()
    assert status(kube)["10.0.0.0/26"] == "a"
    ippool(kube, "blue-a-10.0.0.0-26", "10.0.0.0/26", {"1": "p1", "2": "p2", "3": "dead"})
    kube.live = {"ns/p1", "ns/p2"}

    nad("/25")
    with capture_logs() as logs:
        assert controller.reconcile() is True  # to be checked again
    assert status(kube) == {"10.0.0.0/25": "", "10.0.0.128/25": "a"}  # b waits
    (withheld,) = events(logs, "slice withheld")
    assert (withheld["old_pool"], withheld["addresses"], withheld["slices"]) == ("blue-a-10.0.0.0-26", 2,
                                                                               ["10.0.0.0/25"])
    assert events(logs, "nodes wait for a slice")[0]["nodes"] == ["b"]
    with capture_logs() as logs:
        controller.reconcile()
    assert not events(logs, "slice withheld")  # said once

    kube.live = set()  # the pods are gone; the reconciler has not freed their entries yet
    with capture_logs() as logs:
        assert controller.reconcile() is False
    assert status(kube) == {"10.0.0.0/25": "b", "10.0.0.128/25": "a"}
    assert events(logs, "slice no longer withheld") and not events(logs, "deleted an empty old slice pool")
    assert "blue-a-10.0.0.0-26" in kube.names(POOLS)

    kube.put(POOLS, {**kube.obj(POOLS, "blue-a-10.0.0.0-26"), "spec": {"range": "10.0.0.0/26", "allocations": {}}})
    ippool(kube, "blue-a-10.0.0.128-25", "10.0.0.128/25", {})  # a's current pool, empty: kept
    with capture_logs() as logs:
        controller.reconcile()
    assert events(logs, "deleted an empty old slice pool")[0]["ippool"] == "blue-a-10.0.0.0-26"
    assert kube.names(POOLS) == ["blue-a-10.0.0.128-25"]


def test_the_pools_nodes_are_on_cost_no_pod_lookups_in_a_pass(world):
    kube, controller, nad = world
    nad("/26")
    controller.reconcile()
    ippool(kube, "blue-a-10.0.0.0-26", "10.0.0.0/26", {"1": "p1"})
    ippool(kube, "blue-b-10.0.0.64-26", "10.0.0.64/26", {"1": "p2"})
    kube.live = {"ns/p1", "ns/p2"}
    controller.reconcile()
    assert kube.pod_reads == 0


def test_a_slice_the_go_controller_gave_over_a_live_old_pool_is_reported(world):
    kube, controller, nad = world
    nad("/25")
    kube.put(PLURAL, {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": KIND, "metadata": {"name": "blue"},
                      "spec": {"range": "10.0.0.0/24", "sliceSize": "/25"},
                      "status": {"allocations": [{"nodeName": "b", "sliceRange": "10.0.0.0/25"},
                                                 {"nodeName": "a", "sliceRange": "10.0.0.128/25"}]}})
    ippool(kube, "blue-a-10.0.0.0-26", "10.0.0.0/26", {"1": "p1"})
    kube.live = {"ns/p1"}
    with capture_logs() as logs:
        assert controller.reconcile() is True
    (clash,) = events(logs, "a node's slice overlaps an old slice pool")
    assert clash["log_level"] == "error" and clash["slices"] == ["b 10.0.0.0/25"]


def test_a_resize_withholds_what_overlaps_the_old_slices_until_a_pass_lists_the_pools_after_it(world):
    """An ADD that read the old slicing may write into its (empty) slice after the resizing pass listed
    the pools: that pass gives no slice over an old one; the next pass, listing after it, does when the
    old pools are still empty. Before, the resizing pass gave 10.0.0.0/25 at once."""
    kube, controller, nad = world
    nad("/26")
    controller.reconcile()
    assert status(kube) == {"10.0.0.0/26": "a", "10.0.0.64/26": "b", "10.0.0.128/26": "", "10.0.0.192/26": ""}
    nad("/25")
    with capture_logs() as logs:
        assert controller.reconcile() is True  # to be checked again
    assert status(kube) == {"10.0.0.0/25": "", "10.0.0.128/25": "a"}
    assert events(logs, "slices overlapping the old slicing withheld")
    assert controller.reconcile() is False
    assert status(kube) == {"10.0.0.0/25": "b", "10.0.0.128/25": "a"}

"""The pure decisions of `reconcile` and `audit`, without a cluster."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from whereabouts.operator.audit import audit
from whereabouts.operator.reconcile import (abandoned_blocks, network_names, pairing, plan, snapshot, unchanged,
                                           view_pool)

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc)
OLD = timedelta(minutes=10)
GRACE = timedelta(seconds=60)


def pool(name: str, cidr: str, allocs: dict) -> dict:
    return {"metadata": {"name": name, "resourceVersion": "1"}, "spec": {"range": cidr, "allocations": allocs}}


def entry(podref: str, container: str = "c", ifname: str = "net1", **extra: str) -> dict:
    return {"id": container, "podref": podref, "ifname": ifname, **extra}


def reservation(name: str, podref: str, container: str = "c", ifname: str = "net1", age: timedelta | None = OLD):
    meta = {"name": name, "resourceVersion": "7"}
    if age is not None:
        meta["creationTimestamp"] = (NOW - age).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": meta, "spec": {"podref": podref, "containerid": container, "ifname": ifname}}


@pytest.mark.parametrize("name,cidr,names", [
    ("10.0.0.0-24", "10.0.0.0/24", {""}),
    ("blue-10.0.0.0-24", "10.0.0.0/24", {"", "blue"}),
    ("blue-node1-10.0.0.0-26", "10.0.0.0/26", {"", "blue", "blue-node1"}),
    ("net----64", "::/64", {"", "net"}),
    ("0---64", "::/64", {""}),
    ("hand-made", "10.0.0.0/24", {""}),
])
def test_network_names(name, cidr, names):
    assert network_names(name, cidr) == names


def test_named_reservations_are_matched_through_their_pool():
    # "ab-fd00--5" also reads as the address ab:fd00::5: the Go reconciler's mistake.
    snap = snapshot([pool("ab-fd00---64", "fd00::/64", {"5": entry("ns/a")})],
                    [reservation("ab-fd00--5", "ns/a"), reservation("fd00--5", "ns/other", "c9")])
    paired = pairing(snap.pools, snap.reservations)
    assert paired.held == {"ab-fd00--5"} and paired.bare == [] and paired.reserving == {"ab-fd00---64"}
    assert [r.name for r in plan(snap, {"ns/a"}, NOW, GRACE).reservations] == ["fd00--5"]


def test_plan_frees_only_entries_of_missing_pods():
    snap = snapshot([pool("10.0.0.0-24", "10.0.0.0/24", {
        "1": entry("ns/live"), "2": entry("ns/dead"), "3": entry(""), "4": entry("no-namespace"),
        "5": entry("ns/dead", ipamclaimref="ns/claim"), "6": entry("ns/dead", ifname="net2"),
    })], [reservation("10.0.0.2", "ns/dead"), reservation("10.0.0.6", "ns/dead", ifname="net2")])
    todo = plan(snap, {"ns/live"}, NOW, GRACE)
    assert [(e.offset, str(e.address)) for e in todo.allocations] == [(2, "10.0.0.2"), (6, "10.0.0.6")]
    assert {k: [r.name for r in v] for k, v in todo.companions.items()} == {
        ("10.0.0.0-24", 2): ["10.0.0.2"], ("10.0.0.0-24", 6): ["10.0.0.6"]}
    assert todo.reservations == [] and todo.young == []


def test_plan_frees_dead_pods_in_old_slice_pools_of_any_size_with_their_named_reservations():
    """A re-slicing leaves `<net>-<node>-<old slice>` pools behind (issue 18, defect 2): the sweep drains them too."""
    snap = snapshot([pool("blue-node-a-10.0.0.0-26", "10.0.0.0/26", {"1": entry("ns/live"), "2": entry("ns/dead")}),
                     pool("blue-node-a-10.0.0.128-25", "10.0.0.128/25", {"1": entry("ns/dead2")})],
                    [reservation("blue-10.0.0.2", "ns/dead")])
    todo = plan(snap, {"ns/live"}, NOW, GRACE)
    assert [(e.pool, str(e.address)) for e in todo.allocations] == [("blue-node-a-10.0.0.0-26", "10.0.0.2"),
                                                                   ("blue-node-a-10.0.0.128-25", "10.0.0.129")]
    assert [r.name for r in todo.companions[("blue-node-a-10.0.0.0-26", 2)]] == ["blue-10.0.0.2"]


def test_a_reservation_shared_with_an_entry_that_stays_is_not_a_companion():
    # One container holds 10.0.0.5 in an unnamed pool (kept: an IPAMClaim's) and in "blue" (freed):
    # "10.0.0.5" is a possible name for both, but only "blue-10.0.0.5" goes with the blue entry.
    snap = snapshot([pool("10.0.0.0-24", "10.0.0.0/24", {"5": entry("ns/p", ipamclaimref="ns/claim")}),
                     pool("blue-10.0.0.0-24", "10.0.0.0/24", {"5": entry("ns/p")})],
                    [reservation("10.0.0.5", "ns/p"), reservation("blue-10.0.0.5", "ns/p")])
    todo = plan(snap, set(), NOW, GRACE)
    assert [(e.pool, e.offset) for e in todo.allocations] == [("blue-10.0.0.0-24", 5)]
    assert [r.name for r in todo.companions[("blue-10.0.0.0-24", 5)]] == ["blue-10.0.0.5"]


def test_unheld_reservations_wait_for_the_grace_period():
    snap = snapshot([], [reservation("10.0.0.1", "ns/a", age=timedelta(seconds=10)),
                         reservation("10.0.0.2", "ns/a", age=timedelta(seconds=60)),
                         reservation("10.0.0.3", "ns/a", age=None)])
    todo = plan(snap, {"ns/a"}, NOW, GRACE)
    assert [r.name for r in todo.reservations] == ["10.0.0.2"]
    assert [r.name for r in todo.young] == ["10.0.0.1", "10.0.0.3"]


def test_reservations_of_pods_named_by_undecodable_entries_are_kept():
    snap = snapshot([pool("bad", "10.0.0.0/33", {"1": entry("ns/a")}),
                     pool("10.0.1.0-24", "10.0.1.0/24", {"junk": entry("ns/b")})],
                    [reservation("10.0.0.1", "ns/a"), reservation("10.0.1.1", "ns/b"), reservation("10.0.1.2", "ns/c")])
    assert [b.name for b in snap.broken] == ["bad"]
    assert [r.name for r in plan(snap, set(), NOW, GRACE).reservations] == ["10.0.1.2"]


def test_unchanged_keeps_only_identical_entries():
    first = view_pool(pool("p", "10.0.0.0/24", {"1": entry("ns/a"), "2": entry("ns/b"), "3": entry("ns/c")}))
    candidates = plan(snapshot([first.pool.raw]), set(), NOW, GRACE).allocations
    # Re-read after a conflict: 1 is as it was, 2 was taken over by a new sandbox, 3 was freed by a DEL.
    now = view_pool(pool("p", "10.0.0.0/24", {"1": entry("ns/a"), "2": entry("ns/b", container="new")}))
    assert unchanged(now, candidates) == [1]


def test_audit_healthy_and_each_kind():
    healthy = snapshot([pool("10.0.0.0-24", "10.0.0.0/24", {"1": entry("ns/a")}),
                        pool("blue-10.0.0.0-24", "10.0.0.0/24", {"1": entry("ns/b")})],
                       [reservation("10.0.0.1", "ns/a"), reservation("blue-10.0.0.1", "ns/b")])
    assert audit(healthy) == []
    sick = snapshot([pool("10.0.0.0-24", "10.0.0.0/24", {"1": entry("ns/a"), "2": entry("ns/b"), "255": entry("ns/c"),
                                                          "x": entry("ns/d")}),
                     pool("10.0.0.0-28", "10.0.0.0/28", {"1": entry("ns/e")})],
                    [reservation("10.0.0.1", "ns/a"), reservation("10.0.0.9", "ns/z")])
    kinds = sorted((f.kind, f.pool, f.address) for f in audit(sick))
    assert kinds == [
        ("allocation-without-reservation", "10.0.0.0-24", "10.0.0.2"),
        ("duplicate", "10.0.0.0-24", "10.0.0.1"),
        ("duplicate", "10.0.0.0-28", "10.0.0.1"),
        ("out-of-range", "10.0.0.0-24", "10.0.0.255"),
        ("reservation-without-allocation", "", ""),
        ("undecodable", "10.0.0.0-24", ""),
    ]
    assert not [f for f in audit(sick, expect_reservations=False) if f.kind == "allocation-without-reservation"]


def test_blocks_of_a_split_range_use_their_parent_range():
    def block(name: str, cidr: str, allocs: dict) -> dict:
        obj = pool(name, cidr, allocs)
        obj["metadata"]["annotations"] = {"whereabouts.cni.cncf.io/range": "10.0.0.0/24"}
        return obj

    snap = snapshot([block("blue-10.0.0.0-24-blk0", "10.0.0.0/26", {"0": entry("ns/a"), "1": entry("ns/b")}),
                     block("blue-10.0.0.0-24-blk1", "10.0.0.64/26", {"0": entry("ns/c"), "63": entry("ns/d")}),
                     block("blue-10.0.0.0-24-blk3", "10.0.0.192/26", {"63": entry("ns/e")})],
                    [reservation("blue-10.0.0.1", "ns/b"), reservation("blue-10.0.0.64", "ns/c"),
                     reservation("blue-10.0.0.127", "ns/d")])
    first, middle, last = snap.pools
    assert (first.rng.first, first.rng.last, middle.rng.first, middle.rng.last, last.rng.last) == (1, 63, 0, 63, 62)
    assert middle.networks == {"", "blue"}
    findings = sorted((f.kind, f.address) for f in audit(snap))
    assert findings == [("out-of-range", "10.0.0.0"), ("out-of-range", "10.0.0.255")]
    assert plan(snap, {"ns/a", "ns/b", "ns/c", "ns/d", "ns/e"}, NOW, timedelta(0)).reservations == []


def test_only_empty_blocks_of_deleted_nodes_are_abandoned():
    def block(i: int, node: str, allocs: dict) -> dict:
        obj = pool(f"10.0.0.0-24-blk{i}", f"10.0.0.{64 * i}/26", allocs)
        obj["metadata"]["annotations"] = {"whereabouts.cni.cncf.io/range": "10.0.0.0/24"}
        if node:
            obj["metadata"]["annotations"]["whereabouts.cni.cncf.io/node"] = node
        return obj

    snap = snapshot([block(0, "gone", {}), block(1, "gone", {"5": entry("ns/a")}), block(2, "alive", {}),
                     block(3, "", {}), pool("10.1.0.0-24", "10.1.0.0/24", {}),
                     block(4, "gone", {"x": entry("ns/b")})])
    assert [v.name for v in abandoned_blocks(snap.pools, {"alive"})] == ["10.0.0.0-24-blk0"]


def test_in_a_pod_without_a_kubeconfig_the_service_account_is_used(tmp_path, monkeypatch):
    from kubernetes import config

    from whereabouts.operator.kubeclient import KubeError, connect

    missing = str(tmp_path / "none")
    with pytest.raises(KubeError, match="does not exist"):
        connect(missing, None)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    with pytest.raises(KubeError, match="no usable service account"):
        connect(missing, None)  # no token mounted here

    def fake(client_configuration):
        client_configuration.host = "https://10.96.0.1:443"

    monkeypatch.setattr(config, "load_incluster_config", fake)
    kube = connect(missing, None)
    assert (kube.namespace, kube.api.configuration.host) == ("kube-system", "https://10.96.0.1:443")
    assert connect(missing, "whereabouts").namespace == "whereabouts"

"""Pods attached to NetworkAttachmentDefinitions through the real kubelet, containerd and Multus."""

from __future__ import annotations

import ipaddress

import pytest

from tests.node.conftest import SYSTEM, network_status, pod_body


def _assert_freed(k8s, namespace: str, ranges: list[str]) -> None:
    for r in ranges:
        k8s.wait(lambda r=r: not k8s.allocations(r), 90, f"the pools of {r} empty")
    k8s.wait(lambda: not k8s.reservations(namespace), 30, f"no reservation of {namespace} left")


NETWORKS = {
    # id: (ipam of the NAD, its ranges); a bridge NAD but for "macvlan"
    "ipv4": ({"range": "10.124.1.0/24"}, ["10.124.1.0/24"]),
    "dual-stack": ({"ipRanges": [{"range": "10.124.2.0/24"}, {"range": "fd00:124:2::/64"}]},
                   ["10.124.2.0/24", "fd00:124:2::/64"]),
    "block_size": ({"range": "10.124.3.0/24", "block_size": 16}, ["10.124.3.0/24"]),
    "macvlan": ({"range": "10.124.4.0/24"}, ["10.124.4.0/24"]),
}


@pytest.mark.parametrize("kind", list(NETWORKS))
def test_annotated_pods_get_distinct_addresses_on_net1_reach_each_other_and_deletion_frees_them(
        k8s, node, installed, namespace, bridge_net, kind):
    ipam, ranges = NETWORKS[kind]
    nad = bridge_net(f"net-{kind.replace('_', '-')}", ipam, main="macvlan" if kind == "macvlan" else "bridge")
    names = ["a", "b", "c"]
    for name in names:
        k8s.core.create_namespaced_pod(namespace, pod_body(name, node.busybox, nad))
    pods = k8s.wait_running(namespace, names)

    # Multus recorded net1 with one address per range, all distinct and inside the ranges.
    addrs = {p.metadata.name: network_status(p) for p in pods}
    flat = [a for v in addrs.values() for a in v]
    assert len(flat) == len(names) * len(ranges), addrs
    assert len(set(flat)) == len(flat), f"duplicate addresses: {addrs}"
    nets = [ipaddress.ip_network(r) for r in ranges]
    for pod_addrs in addrs.values():
        assert sorted(ipaddress.ip_address(a).version for a in pod_addrs) == sorted(n.version for n in nets)
        for a in pod_addrs:
            assert any(ipaddress.ip_address(a) in n for n in nets), a

    # The pools hold exactly these addresses, each for its pod.
    stored = {}
    for r in ranges:
        stored.update(k8s.allocations(r))
    assert stored == {a: f"{namespace}/{name}" for name, v in addrs.items() for a in v}

    # They reach each other over net1 (with the host's FORWARD policy DROP: the firewall plugin's rules).
    for src in names:
        for dst in names:
            if src == dst:
                continue
            for a in addrs[dst]:
                ping = ["ping", "-c1", "-W3", a] if ":" not in a else ["ping", "-6", "-c1", "-W3", a]
                for _ in range(5):  # IPv6 duplicate address detection may need a moment
                    rc, out = k8s.exec(namespace, src, ping)
                    if rc == 0:
                        break
                assert rc == 0, f"{src} -> {a}: {out}"

    # Deleting the pods frees every address and reservation.
    for name in names:
        k8s.core.delete_namespaced_pod(name, namespace)
    k8s.wait(lambda: not k8s.pods(namespace), 120, f"pods of {namespace} gone")
    _assert_freed(k8s, namespace, ranges)
    # The installer is still Running: nothing above needed it to restart.
    assert all(p.status.phase == "Running" for p in k8s.pods(SYSTEM, "app.kubernetes.io/name=whereabouts"))

"""The node-affine modes on the real API server: racing claims, processes killed while holding a
claim or before their write, and 300 concurrent ADDs from 6 nodes in every mode of ours."""

from __future__ import annotations

import ipaddress
import signal
import time
from collections import Counter

import pytest

from tests.helpers.cni import finish, start
from tests.helpers.faultproxy import Rule
from tests.reliability.test_burst_and_crash import burst

GROUP, VERSION = "whereabouts.cni.cncf.io", "v1alpha1"
NODE_ANNOTATION = "whereabouts.cni.cncf.io/node"


def owners(pools) -> dict[str, str]:
    return {p["metadata"]["name"]: (p["metadata"].get("annotations") or {}).get(NODE_ANNOTATION, "")
            for p in pools.pools()}


def plant_slices(pools, name: str, rng: str, size: str, nodes: list[str]) -> None:
    """A NodeSlicePool as a node-slice controller leaves it: node i holds slice i."""
    subnets = [str(s) for s in ipaddress.ip_network(rng).subnets(new_prefix=int(size.lstrip("/")))]
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "NodeSlicePool", "metadata": {"name": name},
            "spec": {"range": rng, "sliceSize": size},
            "status": {"allocations": [{"nodeName": nodes[i] if i < len(nodes) else "", "sliceRange": s}
                                       for i, s in enumerate(subnets)]}}
    pools.custom.create_namespaced_custom_object(GROUP, VERSION, pools.namespace, "nodeslicepools", body)


def all_stored(pools) -> list[str]:
    out = []
    for p in pools.pools():
        base = ipaddress.ip_network(p["spec"]["range"]).network_address
        out += [str(base + int(k)) for k in p["spec"].get("allocations") or {}]
    return out


def test_two_nodes_racing_for_one_block_get_one_each(netconf, pools, tmp_path, fault_proxy):
    """Both nodes list the range before either created a block (the listing answers are held back),
    so both try to create blk0: one wins it, the other takes blk1."""
    fault_proxy.set_rules(Rule("delay_answer", "GET", "ippools", nth=None, seconds=0.4,
                               predicate=lambda r: "labelSelector" in r.query))
    ipam = {"range": "10.70.0.0/24", "block_size": 16, "kubernetes": {"kubeconfig": str(fault_proxy.kubeconfig)}}
    procs = {node: start(netconf({**ipam, "node_lock_dir": str(tmp_path / node)}), "ADD", container_id=node,
                         pod=node, env={"NODENAME": node}) for node in ("node-a", "node-b")}
    ips = {node: finish(p).ok().ips[0] for node, p in procs.items()}
    assert len(set(ips.values())) == 2
    assert sorted(owners(pools).items()) in (
        [("10.70.0.0-24-blk0", "node-a"), ("10.70.0.0-24-blk1", "node-b")],
        [("10.70.0.0-24-blk0", "node-b"), ("10.70.0.0-24-blk1", "node-a")])
    creates = [e.status for e in fault_proxy.log if e.method == "POST" and e.path.endswith("/ippools")]
    assert sorted(creates) == [201, 201, 409]  # blk0 twice (one lost the race), then blk1


def test_a_node_killed_after_its_claim_keeps_the_block_and_uses_it_next_time(netconf, pools, tmp_path):
    conf = netconf({"range": "10.71.0.0/24", "block_size": 16, "node_lock_dir": str(tmp_path / "node-a"),
                    "sleep_for_race": 30})
    proc = start(conf, "ADD", container_id="killed", pod="killed", env={"NODENAME": "node-a"})
    deadline = time.monotonic() + 20
    while "10.71.0.0-24-blk0" not in owners(pools):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert owners(pools) == {"10.71.0.0-24-blk0": "node-a"}
    conf["ipam"]["sleep_for_race"] = 0
    got = finish(start(conf, "ADD", container_id="next", pod="next", env={"NODENAME": "node-a"})).ok().ips[0]
    # 10.71.0.1 stays reserved by the killed call (it may have been written): the next takes .2.
    assert got == "10.71.0.2/24" and owners(pools) == {"10.71.0.0-24-blk0": "node-a"}
    # The killed one's sandbox retried (same container id): it gets the address it had reserved.
    again = finish(start(conf, "ADD", container_id="killed", pod="killed", env={"NODENAME": "node-a"})).ok()
    assert again.ips[0] == "10.71.0.1/24"
    assert len(pools.reservations()) == 2


@pytest.mark.parametrize("mode", ["default", "slices", "blocks"])
def test_a_holder_killed_before_its_write_blocks_nobody_for_long(mode, netconf, pools, tmp_path):
    """SIGKILLed while holding every lock it takes, between reading and writing the pool: the next
    invocation on the node gets the node lock at once and the Lease (where there is one) when it
    expires, and nothing is handed out twice."""
    ipam = {"range": "10.72.0.0/24", "node_lock_dir": str(tmp_path / "node-a")}
    if mode == "slices":
        plant_slices(pools, "testnet", "10.72.0.0/24", "/26", ["node-a"])
        ipam["node_slice_size"] = "/26"
    elif mode == "blocks":
        ipam["block_size"] = 16
    first = finish(start(netconf(ipam), "ADD", container_id="c0", pod="p0", env={"NODENAME": "node-a"})).ok()
    proc = start(netconf({**ipam, "sleep_for_race": 30}), "ADD", container_id="killed", pod="killed",
                 env={"NODENAME": "node-a"})
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    began = time.monotonic()
    after = finish(start(netconf(ipam), "ADD", container_id="c1", pod="p1", env={"NODENAME": "node-a"})).ok()
    took = time.monotonic() - began
    assert first.ips[0] != after.ips[0]
    assert took < (1.5 + 2 + 3 if mode != "blocks" else 3), took  # Lease duration + skew, or no Lease at all
    assert sorted(Counter(all_stored(pools)).values()) == [1, 1]


@pytest.mark.parametrize("mode", ["default", "slices", "blocks"])
def test_300_concurrent_adds_from_6_nodes(mode, netconf, pools, tmp_path, full, figures):
    n, nodes = 300, 6
    ipam = {"range": "10.73.0.0/23"}
    if mode == "slices":
        plant_slices(pools, "testnet", "10.73.0.0/23", "/26", [f"node{i}" for i in range(nodes)])
        ipam["node_slice_size"] = "/26"
    elif mode == "blocks":
        ipam["block_size"] = 32
    began = time.monotonic()
    results = burst(netconf, tmp_path, n, nodes, ipam)
    wall = time.monotonic() - began
    failures = [r for r in results.values() if r.rc != 0]
    assert not failures, failures[:3]
    ips = [r.ips[0].split("/")[0] for r in results.values()]
    assert len(set(ips)) == n
    stored = all_stored(pools)
    assert sorted(stored) == sorted(ips), "stored allocations differ from the results"
    if mode == "slices":  # every node stayed in its slice
        for i, r in results.items():
            assert ipaddress.ip_address(r.ips[0].split("/")[0]) in list(
                ipaddress.ip_network("10.73.0.0/23").subnets(new_prefix=26))[i % nodes]
    figures[f"{n} ADDs from {nodes} nodes, {mode}"] = f"{wall:.1f}s wall, 0 failures, 0 duplicates"

"""The node-affine modes on the real API server: racing claims, processes killed while holding a
claim or before their write, and 300 concurrent ADDs from 6 nodes in every mode of ours."""

from __future__ import annotations

import fcntl
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
    """Both nodes list the range before either created a block (both listings are answered by the API
    server and the answers held at the proxy until both are), so both try to create blk0: one wins
    it, the other takes blk1."""
    listing = Rule("hold_answer", "GET", "ippools", nth=None, predicate=lambda r: "labelSelector" in r.query)
    fault_proxy.set_rules(listing)
    ipam = {"range": "10.70.0.0/24", "block_size": 16, "kubernetes": {"kubeconfig": str(fault_proxy.kubeconfig)}}
    procs = {node: start(netconf({**ipam, "node_lock_dir": str(tmp_path / node)}), "ADD", container_id=node,
                         pod=node, env={"NODENAME": node}) for node in ("node-a", "node-b")}
    listing.wait_held(2)
    listing.release()
    ips = {node: finish(p).ok().ips[0] for node, p in procs.items()}
    assert len(set(ips.values())) == 2
    assert sorted(owners(pools).items()) in (
        [("10.70.0.0-24-blk0", "node-a"), ("10.70.0.0-24-blk1", "node-b")],
        [("10.70.0.0-24-blk0", "node-b"), ("10.70.0.0-24-blk1", "node-a")])
    creates = [e.status for e in fault_proxy.log if e.method == "POST" and e.path.endswith("/ippools")]
    assert sorted(creates) == [201, 201, 409]  # blk0 twice (one lost the race), then blk1


def killed_at_its_pool_write(conf: dict, fault_proxy, container: str) -> None:
    """Run an ADD through the fault proxy and SIGKILL it while its first pool write is held there:
    it holds every lock it takes and has made its reservation, and the write never reaches the
    API server."""
    write = Rule("hold", "PUT", "ippools")
    fault_proxy.set_rules(write)
    conf = {**conf, "ipam": {**conf["ipam"], "kubernetes": {"kubeconfig": str(fault_proxy.kubeconfig)}}}
    proc = start(conf, "ADD", container_id=container, pod=container, env={"NODENAME": "node-a"})
    try:
        write.wait_held()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    fault_proxy.clear()


def free_to_take(lock_dir) -> list[str]:
    """The node lock files in `lock_dir`, each taken and let go at once: a killed holder's are free."""
    names = []
    for path in sorted(lock_dir.glob("*.lock")):
        with open(path) as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while anyone holds it
        names.append(path.name)
    return names


def test_a_node_killed_after_its_claim_keeps_the_block_and_uses_it_next_time(netconf, pools, tmp_path, fault_proxy):
    conf = netconf({"range": "10.71.0.0/24", "block_size": 16, "node_lock_dir": str(tmp_path / "node-a")})
    killed_at_its_pool_write(conf, fault_proxy, "killed")
    assert owners(pools) == {"10.71.0.0-24-blk0": "node-a"}
    assert pools.allocations("10.71.0.0-24-blk0") == {}  # the claim was stored, the allocation not
    got = finish(start(conf, "ADD", container_id="next", pod="next", env={"NODENAME": "node-a"})).ok().ips[0]
    # The killed call's reservation of 10.71.0.1 stays (the reconciler sweeps it): the next takes .2.
    assert got == "10.71.0.2/24" and owners(pools) == {"10.71.0.0-24-blk0": "node-a"}
    # The killed one's sandbox retried (same container id): it gets the address it had reserved.
    again = finish(start(conf, "ADD", container_id="killed", pod="killed", env={"NODENAME": "node-a"})).ok()
    assert again.ips[0] == "10.71.0.1/24"
    assert len(pools.reservations()) == 2


@pytest.mark.parametrize("mode", ["default", "slices", "blocks"])
def test_a_holder_killed_before_its_write_blocks_nobody_past_its_lease(mode, netconf, pools, tmp_path, fault_proxy):
    """SIGKILLed while holding every lock it takes, between reading and writing the pool: the next
    invocation on the node gets the node lock (the kernel dropped it), and the Lease, where there is
    one, only once it has expired by the dead holder's own record; nothing is handed out twice.
    That the wait is short is the next ADD's own deadline (lock_timeout_ms) to enforce."""
    ipam = {"range": "10.72.0.0/24", "node_lock_dir": str(tmp_path / "node-a")}
    if mode == "slices":
        plant_slices(pools, "testnet", "10.72.0.0/24", "/26", ["node-a"])
        ipam["node_slice_size"] = "/26"
    elif mode == "blocks":
        ipam["block_size"] = 16
    first = finish(start(netconf(ipam), "ADD", container_id="c0", pod="p0", env={"NODENAME": "node-a"})).ok()
    lease_name = "node-a-10.72.0.0-26" if mode == "slices" else "whereabouts"
    killed_at_its_pool_write(netconf(ipam), fault_proxy, "killed")
    assert free_to_take(tmp_path / "node-a"), "no node lock file: the killed ADD took none"
    if mode != "blocks":
        holder, _, dead_renewed, duration = pools.lease(lease_name)
        assert holder, "the killed ADD did not hold the Lease"
    after = finish(start(netconf(ipam), "ADD", container_id="c1", pod="p1", env={"NODENAME": "node-a"})).ok()
    assert first.ips[0] != after.ips[0]
    assert sorted(Counter(all_stored(pools)).values()) == [1, 1]
    if mode == "blocks":
        assert pools.coord.list_namespaced_lease(pools.namespace).items == []  # no Lease on this path
    else:  # taken over, and not before the dead holder's last renewal had run its duration
        _, taken, _, _ = pools.lease(lease_name)
        assert taken - dead_renewed >= duration - 1e-3, (taken, dead_renewed, duration)


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

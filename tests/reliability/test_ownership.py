"""Who owns an address, on the real API server: the paths from a half-finished DEL, a spill into
another node's block, a timed-out multi-range ADD and a rollback to a duplicate or a leak.

Each test is a sequence a runtime and an operator can produce; each failed before its fix
(the docstrings say how)."""

from __future__ import annotations

from tests.helpers.cni import run
from tests.helpers.faultproxy import Rule
from tests.ops.conftest import cli_env, run_cli

NODE_ANNOTATION = "whereabouts.cni.cncf.io/node"


def test_reconcile_keeps_the_reservation_a_pod_reused_after_a_del_that_stopped_midway(
        netconf, pools, pods, fault_proxy, namespace_kubeconfig):
    """A DEL that stops between its pool write and its reservation delete, then the pod's ADD from a
    new sandbox, then a sweep: the reservation stays the pod's, so an overlapping range can't hand
    its address out. Before the fix the ADD reused the reservation as it was (naming c-one), the
    sweep deleted it as unheld, and t0 got 10.98.0.1 as well."""
    ns = pools.namespace
    wide = netconf({"range": "10.98.0.0/28"})
    assert run(wide, "ADD", container_id="c-one", pod="s0", pod_namespace=ns).ok().ips == ["10.98.0.1/28"]
    pods.create("s0")
    # The DEL's pool write lands; every reservation DELETE is reset before it reaches the server.
    fault_proxy.set_rules(Rule("reset_before", "DELETE", "overlappingrangeipreservations", nth=None))
    proxied = netconf({"range": "10.98.0.0/28", "kubernetes": {"kubeconfig": str(fault_proxy.kubeconfig)}})
    run(proxied, "DEL", container_id="c-one", pod="s0", pod_namespace=ns)
    assert fault_proxy.fired("reset_before"), "the reservation delete was never attempted"
    assert pools.allocations("10.98.0.0-28") == {}
    assert pools.reservation("10.98.0.1")["spec"]["containerid"] == "c-one"
    run(wide, "DEL", container_id="c-one", pod="s0", pod_namespace=ns).ok()  # the runtime's retry: nothing left to free

    assert run(wide, "ADD", container_id="c-two", pod="s0", pod_namespace=ns).ok().ips == ["10.98.0.1/28"]
    assert pools.reservation("10.98.0.1")["spec"]["containerid"] == "c-two"
    swept = run_cli("reconcile", "--grace", "0", "--unsafe-short-grace", "-o", "json", env=cli_env(namespace_kubeconfig))
    assert swept.rc == 0, swept.err
    assert swept.json["freed"] == [], swept.json
    assert pools.reservation("10.98.0.1")["spec"]["podref"] == pods.ref("s0")

    narrow = netconf({"range": "10.98.0.0/29"})
    assert run(narrow, "ADD", container_id="c-t0", pod="t0", pod_namespace=ns).ok().ips == ["10.98.0.2/29"]


def test_del_of_an_old_sandbox_leaves_the_reservation_its_successor_made(netconf, pools):
    """The pod's new sandbox reserved the address anew (it names c-two); a late DEL of c-one must not
    delete that reservation."""
    conf = netconf({"range": "10.98.1.0/28"})
    assert run(conf, "ADD", container_id="c-one", pod="s1").ok().ips == ["10.98.1.1/28"]
    assert run(conf, "ADD", container_id="c-two", pod="s1").ok().ips == ["10.98.1.1/28"]
    run(conf, "DEL", container_id="c-one", pod="s1").ok()
    assert pools.allocations("10.98.1.0-28") == {"1": {"id": "c-two", "podref": "default/s1", "ifname": "net1"}}
    assert pools.reservation("10.98.1.1")["spec"]["containerid"] == "c-two"


# Range 10.97.0.0/27 in two blocks of 16; the exclusions leave 10.97.0.1-3 in blk0, 10.97.0.16-19 in blk1.
SPILL = {"range": "10.97.0.0/27", "block_size": 16,
         "exclude": ["10.97.0.4/30", "10.97.0.8/29", "10.97.0.20/30", "10.97.0.24/29"]}


def _on(netconf, tmp_path, node: str, **extra):
    return netconf({**SPILL, "node_lock_dir": str(tmp_path / f"locks-{node}"), **extra}), {"NODENAME": node}


def _spilled(netconf, pools, tmp_path):
    """node-a fills its block blk0, node-b holds blk1, so node-a's a4 spills into blk1."""
    a, env_a = _on(netconf, tmp_path, "node-a")
    b, env_b = _on(netconf, tmp_path, "node-b")
    assert run(a, "ADD", container_id="a1", pod="a1", env=env_a).ok().ips == ["10.97.0.1/27"]
    assert run(b, "ADD", container_id="b1", pod="b1", env=env_b).ok().ips == ["10.97.0.16/27"]
    run(a, "ADD", container_id="a2", pod="a2", env=env_a).ok()
    run(a, "ADD", container_id="a3", pod="a3", env=env_a).ok()
    assert run(a, "ADD", container_id="a4", pod="a4", env=env_a).ok().ips == ["10.97.0.17/27"]
    owners = {p["metadata"]["name"]: p["metadata"]["annotations"][NODE_ANNOTATION] for p in pools.pools()}
    assert owners == {"10.97.0.0-27-blk0": "node-a", "10.97.0.0-27-blk1": "node-b"}
    return a, env_a


def test_idempotent_add_finds_the_owner_in_another_nodes_block(netconf, pools, tmp_path):
    """Before the fix a4's repeated ADD, once node-a's own block had room again, got 10.97.0.1 beside
    its 10.97.0.17 in node-b's block."""
    a, env_a = _spilled(netconf, pools, tmp_path)
    run(a, "DEL", container_id="a1", pod="a1", env=env_a).ok()
    assert run(a, "ADD", container_id="a4", pod="a4", env=env_a).ok().ips == ["10.97.0.17/27"]
    held = [k for p in pools.pools() for k, v in p["spec"]["allocations"].items() if v["id"] == "a4"]
    assert held == ["1"], held  # offset 1 of blk1 only


def test_gc_frees_what_this_node_spilled_into_another_nodes_block(netconf, pools, tmp_path):
    """a5's ADD is served by node-a's own block again. Before the fix that ADD dropped node-b's block
    from the node's note, GC skipped it and a4's entry stayed."""
    a, env_a = _spilled(netconf, pools, tmp_path)
    run(a, "DEL", container_id="a1", pod="a1", env=env_a).ok()
    assert run(a, "ADD", container_id="a5", pod="a5", env=env_a).ok().ips == ["10.97.0.1/27"]
    valid = [{"containerID": c, "ifname": "net1"} for c in ("a2", "a3", "a5")]
    run({**a, "cniVersion": "1.1.0", "cni.dev/valid-attachments": valid}, "GC", env=env_a).ok()
    assert sorted(v["id"] for v in pools.allocations("10.97.0.0-27-blk1").values()) == ["b1"]
    assert pools.reservation("10.97.0.17") is None


def test_gc_frees_what_a_timed_out_multi_range_add_left(netconf, pools, fault_proxy):
    """Range 2's pool never answers: the ADD runs out of time, and with it the rollback of range 1.
    The node's ledger noted the attachment before the first write, so GC frees range 1's entry.
    Before the fix the ledger was written only on success and the entry stayed."""
    conf = netconf({"range": None, "ipRanges": [{"range": "10.94.0.0/28"}, {"range": "10.94.1.0/28"}],
                    "lock_timeout_ms": 3000, "kubernetes": {"kubeconfig": str(fault_proxy.kubeconfig)}},
                   version="1.1.0")
    fault_proxy.set_rules(Rule("blackhole", "GET", "ippools", nth=None,
                               predicate=lambda req: req.path.endswith("/10.94.1.0-28")))
    run(conf, "ADD", container_id="c1", pod="p1").error(11)
    assert fault_proxy.fired("blackhole")
    fault_proxy.clear()
    assert list(pools.allocations("10.94.0.0-28")) == ["1"], "the rollback could not have run"
    run({**conf, "cni.dev/valid-attachments": []}, "GC").ok()
    assert pools.allocations("10.94.0.0-28") == {}
    assert pools.reservation("10.94.0.1") is None


def test_block_mode_rollback_takes_the_locks_of_its_add(netconf, pools, tmp_path):
    """Range 2 has no address left, so range 1's address is rolled back, under the node lock of the
    range as its ADD took it and without a Lease. Before the fix the rollback took the shared Lease."""
    conf = netconf({"range": None, "block_size": 16,
                    "ipRanges": [{"range": "10.93.0.0/27"},
                                 {"range": "10.93.1.0/27", "exclude": ["10.93.1.0/27"]}]})
    err = run(conf, "ADD", container_id="c1", pod="p1").error(100)
    assert "10.93.1.0/27" in err["msg"]
    assert all(not p["spec"]["allocations"] for p in pools.pools()), "range 1 was not rolled back"
    assert pools.coord.list_namespaced_lease(pools.namespace).items == []


def test_gc_refuses_an_attachment_without_ifname(netconf, pools):
    """An attachment without its interface named nothing, and GC freed every noted entry of that
    container; now GC refuses it and frees nothing."""
    conf = netconf({"range": "10.92.0.0/28"}, version="1.1.0")
    run(conf, "ADD", container_id="c1", ifname="net1").ok()
    err = run({**conf, "cni.dev/valid-attachments": [{"containerID": "c1"}]}, "GC").error(7)
    assert "valid-attachments[0]" in err["msg"] and "ifname" in err["msg"]
    assert list(pools.allocations("10.92.0.0-28")) == ["1"]

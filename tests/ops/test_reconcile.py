"""`whereabouts reconcile` against the real API server, with Pod objects created and deleted."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading

from tests.helpers.cni import finish, run, start
from tests.helpers.faultproxy import Rule
from tests.ops.conftest import cli_env

POOL = "10.10.0.0-24"
BLUE = "blue-fd00-10---64"


def names(reservations):
    return sorted(r["metadata"]["name"] for r in reservations)


def owners(allocations):
    return {key: value["podref"] for key, value in allocations.items()}


def test_frees_allocations_of_deleted_pods_and_keeps_live_ones(netconf, pools, pods, wb):
    ns = pods.namespace
    pods.create("live-0", "dead-0", "dead-1")
    v4, blue = netconf(), netconf({"network_name": "blue", "range": "fd00:10::/64"})
    for i, pod in enumerate(("live-0", "dead-0", "dead-1")):
        run(v4, "ADD", container_id=f"c{i}", pod=pod, pod_namespace=ns).ok()
    run(blue, "ADD", container_id="c0", pod="live-0", pod_namespace=ns, ifname="net2").ok()
    run(blue, "ADD", container_id="c2", pod="dead-1", pod_namespace=ns, ifname="net2").ok()
    run(v4, "ADD", container_id="no-pod", pod=None).ok()  # a container outside Kubernetes: never swept
    pods.delete("dead-0", "dead-1")
    before = (pools.allocations(POOL), pools.allocations(BLUE), names(pools.reservations()))

    dry = wb("reconcile", "--dry-run", "-o", "json")
    assert dry.rc == 0 and dry.json["dry_run"] is True
    expected = {("allocation", POOL, "10.10.0.2", f"{ns}/dead-0"), ("reservation", "10.10.0.2", "10.10.0.2", f"{ns}/dead-0"),
                ("allocation", POOL, "10.10.0.3", f"{ns}/dead-1"), ("reservation", "10.10.0.3", "10.10.0.3", f"{ns}/dead-1"),
                ("allocation", BLUE, "fd00:10::2", f"{ns}/dead-1"),
                ("reservation", "blue-fd00-10--2", "fd00:10::2", f"{ns}/dead-1")}
    assert {(f["kind"], f["name"], f["address"], f["pod"]) for f in dry.json["freed"]} == expected
    assert (pools.allocations(POOL), pools.allocations(BLUE), names(pools.reservations())) == before

    done = wb("reconcile", "-o", "json")
    assert done.rc == 0 and done.json["dry_run"] is False
    assert {(f["kind"], f["name"], f["address"], f["pod"]) for f in done.json["freed"]} == expected
    assert owners(pools.allocations(POOL)) == {"1": f"{ns}/live-0", "4": ""}
    assert owners(pools.allocations(BLUE)) == {"1": f"{ns}/live-0"}
    assert names(pools.reservations()) == ["10.10.0.1", "10.10.0.4", "blue-fd00-10--1"]

    again = wb("reconcile")
    assert again.rc == 0 and again.out.strip() == f"Nothing to free in namespace {ns}."
    assert wb("check").rc == 0


def test_entries_without_a_pod_or_owned_by_a_claim_are_never_swept(pools, wb):
    pools.create_pool(POOL, "10.10.0.0/24", {
        "1": {"id": "x", "podref": "", "ifname": "net1"},
        "2": {"id": "y", "podref": "gone/pod", "ifname": "net1", "ipamclaimref": "gone/claim"},
        "3": {"id": "z", "podref": "gone/pod", "ifname": "net1"},
    })
    out = wb("reconcile", "-o", "json")
    assert [(f["kind"], f["address"]) for f in out.json["freed"]] == [("allocation", "10.10.0.3")]
    assert set(pools.allocations(POOL)) == {"1", "2"}


def test_unheld_reservations_wait_for_the_grace_period(pools, pods, reserve, wb):
    pods.create("live-0")
    live = pods.ref("live-0")
    # Held: a named network whose reservation name also reads as an IPv6 address ("ab:fd00::5").
    pools.create_pool("ab-fd00---64", "fd00::/64", {"5": {"id": "c1", "podref": live, "ifname": "net1"}})
    reserve("ab-fd00--5", live, "c1")
    reserve("10.10.0.77", live)  # held by no allocation, pod alive (an ADD that stopped half-way)
    reserve("blue-10.10.0.78", "gone/pod")  # held by no allocation, pod gone

    young = wb("reconcile", "-o", "json")
    assert young.json["freed"] == [] and sorted(young.json["deferred"]) == ["10.10.0.77", "blue-10.10.0.78"]
    text = wb("reconcile", "--dry-run", "--grace", "0", "--unsafe-short-grace")
    assert "Would free 0 allocation(s) and 2 reservation(s)" in text.out
    assert len(pools.reservations()) == 3

    swept = wb("reconcile", "--grace", "0", "--unsafe-short-grace", "-o", "json")
    assert sorted(f["name"] for f in swept.json["freed"]) == ["10.10.0.77", "blue-10.10.0.78"]
    assert names(pools.reservations()) == ["ab-fd00--5"]
    assert wb("check").rc == 0


def test_recreated_statefulset_pod_keeps_its_address(netconf, pools, pods, wb):
    ns = pods.namespace
    conf = netconf()
    pods.create("web-0", "web-1")
    run(conf, "ADD", container_id="old", pod="web-0", pod_namespace=ns).ok()
    addr = run(conf, "ADD", container_id="w1", pod="web-1", pod_namespace=ns).ok().ips
    # web-1 is deleted and recreated under the same name before its new sandbox is set up.
    pods.delete("web-1")
    pods.create("web-1")
    assert wb("reconcile", "-o", "json").json["freed"] == []
    assert run(conf, "ADD", container_id="new", pod="web-1", pod_namespace=ns).ok().ips == addr
    assert wb("reconcile", "-o", "json").json["freed"] == []
    assert pools.allocations(POOL)["2"] == {"id": "new", "podref": f"{ns}/web-1", "ifname": "net1"}
    assert pools.reservation("10.10.0.2")["spec"]["containerid"] == "new"


def test_sweeps_alongside_twenty_adds_free_only_the_dead(netconf, pools, pods, namespace_kubeconfig, wb):
    """A reconcile loop runs while waves of ADDs do: whether a sweep overlaps an ADD is left to the
    scheduler here (test_a_sweep_and_an_add_in_flight_overlap_both_ways makes sure it does); what
    is checked is the end state: only what the dead pods held was freed."""
    ns = pods.namespace
    conf = netconf({"log_file": None})
    live = [f"live-{i}" for i in range(20)]
    dead = [f"dead-{i}" for i in range(10)]  # never created: leaks for the sweeps to free meanwhile
    pods.create(*live)

    loop = subprocess.Popen([sys.executable, "-m", "whereabouts", "reconcile", "--loop", "--interval", "1",
                             "-o", "json"], env=cli_env(namespace_kubeconfig), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    sweeps: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [sweeps.put(json.loads(line)) for line in loop.stdout], daemon=True)
    reader.start()
    try:
        first = sweeps.get(timeout=60)  # the loop runs
        # Three waves of ADDs, each started before the loop's next sweep is read.
        order = [pod for pair in zip(live, dead + [None] * 10) for pod in pair if pod]
        procs, racing = {}, []
        for wave in (order[:10], order[10:20], order[20:]):
            procs |= {pod: start(conf, "ADD", container_id=f"c-{pod}", pod=pod, pod_namespace=ns) for pod in wave}
            racing.append(sweeps.get(timeout=60))
        results = [finish(procs[pod]).ok() for pod in live]
        for pod in dead:
            finish(procs[pod]).ok()
    finally:
        loop.send_signal(signal.SIGTERM)
        err = loop.stderr.read()
        loop.wait(timeout=60)
        reader.join(timeout=10)
    assert loop.returncode == 0, err
    done = [first, *racing, *sweeps.queue, wb("reconcile", "-o", "json").json]
    assert not any(s["errors"] for s in done), err
    freed_pods = {f["pod"] for s in done for f in s["freed"]}
    assert freed_pods == {f"{ns}/{pod}" for pod in dead}

    ips = {r.ips[0] for r in results}
    assert len(ips) == 20
    stored = pools.allocations(POOL)
    assert {f"10.10.0.{k}/24" for k in stored} == ips
    assert {v["podref"] for v in stored.values()} == {f"{ns}/{p}" for p in live}
    assert names(pools.reservations()) == sorted(ip.split("/")[0] for ip in ips)
    assert wb("check").rc == 0


def test_a_sweep_and_an_add_in_flight_overlap_both_ways(netconf, pools, pods, fault_proxy, wb):
    """1. An ADD parked at the fault proxy between its reservation and its pool write: a sweep sees its
    reservation without an entry and keeps it (within the grace period), frees a dead pod's entry, and
    the ADD's write, now on a stale read, conflicts and is decided again. 2. A sweep parked at its pool
    write while an ADD completes: its write conflicts, and on a fresh read it frees only the dead."""
    ns = pods.namespace
    pods.create("live-0", "live-1")
    direct = netconf()
    via_proxy = netconf({"kubernetes": {"kubeconfig": str(fault_proxy.kubeconfig)}})

    def pool_writes() -> list[int | None]:
        return [e.status for e in fault_proxy.log if e.method == "PUT" and e.path.endswith(f"/ippools/{POOL}")]

    run(direct, "ADD", container_id="c-dead-0", pod="dead-0", pod_namespace=ns).ok()  # 10.10.0.1, no pod
    write = Rule("hold", "PUT", "ippools")
    fault_proxy.set_rules(write)
    add = start(via_proxy, "ADD", container_id="c-live-0", pod="live-0", pod_namespace=ns)
    write.wait_held()
    assert pools.reservation("10.10.0.2")["spec"]["podref"] == f"{ns}/live-0" and "2" not in pools.allocations(POOL)
    sweep = wb("reconcile", "-o", "json")
    assert sweep.json["deferred"] == ["10.10.0.2"]  # the in-flight ADD's reservation, seen and kept
    assert {(f["kind"], f["address"], f["pod"]) for f in sweep.json["freed"]} == {
        ("allocation", "10.10.0.1", f"{ns}/dead-0"), ("reservation", "10.10.0.1", f"{ns}/dead-0")}
    write.release()
    assert finish(add).ok().ips == ["10.10.0.1/24"]  # decided again on the read after the sweep's write
    assert pool_writes() == [409, 200]
    assert names(pools.reservations()) == ["10.10.0.1"]  # the one left by its first decision is gone

    run(direct, "ADD", container_id="c-dead-1", pod="dead-1", pod_namespace=ns).ok()  # 10.10.0.2, no pod
    write = Rule("hold", "PUT", "ippools")
    fault_proxy.set_rules(write)
    loop = subprocess.Popen([sys.executable, "-m", "whereabouts", "reconcile", "-o", "json"],
                            env=cli_env(fault_proxy.kubeconfig), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        write.wait_held()
        assert run(direct, "ADD", container_id="c-live-1", pod="live-1", pod_namespace=ns).ok().ips == ["10.10.0.3/24"]
    finally:
        write.release()
        out, err = loop.communicate(timeout=120)
    assert loop.returncode == 0, err
    assert {(f["kind"], f["address"]) for f in json.loads(out)["freed"]} == {
        ("allocation", "10.10.0.2"), ("reservation", "10.10.0.2")}
    assert pool_writes()[2:] == [409, 200]  # the sweep's write on its first read, then on a fresh one
    assert owners(pools.allocations(POOL)) == {"1": f"{ns}/live-0", "3": f"{ns}/live-1"}
    assert names(pools.reservations()) == ["10.10.0.1", "10.10.0.3"]
    assert wb("check").rc == 0


def test_a_write_conflict_re_decides_on_a_fresh_read(netconf, pools, pods, namespace_kubeconfig):
    from datetime import datetime, timedelta, timezone

    from whereabouts.k8s.store import POOLS, RESERVATIONS
    from whereabouts.operator.kubeclient import connect
    from whereabouts.operator.reconcile import plan, snapshot, unchanged
    from whereabouts.operator.release import release_reservations, remove_allocations

    ns = pods.namespace
    conf = netconf()
    run(conf, "ADD", container_id="old", pod="web-0", pod_namespace=ns).ok()
    run(conf, "ADD", container_id="d0", pod="dead-0", pod_namespace=ns).ok()
    kube = connect(str(namespace_kubeconfig), None)
    try:
        snap = snapshot(kube.list(POOLS), kube.list(RESERVATIONS))
        todo = plan(snap, kube.pod_refs(), datetime.now(timezone.utc), timedelta(0))
        assert [e.alloc.podref for e in todo.allocations] == [f"{ns}/web-0", f"{ns}/dead-0"]
        # web-0 comes back after the snapshot, and its new sandbox takes over the entry.
        pods.create("web-0")
        run(conf, "ADD", container_id="new", pod="web-0", pod_namespace=ns).ok()
        view = snap.pools[0]
        removed = remove_allocations(kube, view.name, lambda v: unchanged(v, todo.allocations), first=view.pool.raw)
        assert [r.alloc.podref for r in removed] == [f"{ns}/dead-0"]
        assert [r.name for r in release_reservations(kube, removed)] == ["10.10.0.2"]
    finally:
        kube.close()
    assert pools.allocations(POOL) == {"1": {"id": "new", "podref": f"{ns}/web-0", "ifname": "net1"}}
    assert names(pools.reservations()) == ["10.10.0.1"]


def test_blocks_of_a_named_network(netconf, pools, pods, wb):
    ns = pods.namespace
    conf = netconf({"network_name": "blue", "block_size": 16})
    pods.create(*[f"live-{i}" for i in range(6)])
    for i in range(6):  # from three nodes, so that three blocks are claimed
        node = {"NODENAME": f"node-{i % 3}"}
        run(conf, "ADD", container_id=f"l{i}", pod=f"live-{i}", pod_namespace=ns, env=node).ok()
        run(conf, "ADD", container_id=f"d{i}", pod=f"dead-{i}", pod_namespace=ns, env=node).ok()
    blocks = [p["metadata"]["name"] for p in pools.custom.list_namespaced_custom_object(
        "whereabouts.cni.cncf.io", "v1alpha1", ns, "ippools")["items"]]
    assert len(blocks) > 1 and all(b.startswith("blue-10.10.0.0-24-blk") for b in blocks)
    assert wb("check").rc == 0

    out = wb("reconcile", "--grace", "0", "--unsafe-short-grace", "-o", "json").json
    assert sorted(f["pod"] for f in out["freed"] if f["kind"] == "allocation") == [f"{ns}/dead-{i}" for i in range(6)]
    assert len([f for f in out["freed"] if f["kind"] == "reservation"]) == 6
    held = {r["spec"]["podref"] for r in pools.reservations()}
    assert held == {f"{ns}/live-{i}" for i in range(6)}
    assert all(r["metadata"]["name"].startswith("blue-") for r in pools.reservations())
    assert wb("check").rc == 0


def test_empty_blocks_of_deleted_nodes_are_released(netconf, pools, pods, wb, kube):
    """node-1 exists, node-2 does not: node-2's block goes once the pods holding addresses in it are gone."""
    from kubernetes import client

    ns = pods.namespace
    core = client.CoreV1Api(kube)
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=f"{ns}-node-1")))
    try:
        conf = netconf({"range": "10.66.0.0/24", "block_size": 16})
        pods.create("on-1")
        run(conf, "ADD", container_id="a", pod="on-1", pod_namespace=ns, env={"NODENAME": f"{ns}-node-1"}).ok()
        run(conf, "ADD", container_id="b", pod="on-2", pod_namespace=ns, env={"NODENAME": f"{ns}-node-2"}).ok()
        run(conf, "DEL", container_id="a", pod="on-1", pod_namespace=ns, env={"NODENAME": f"{ns}-node-1"}).ok()
        names = sorted(p["metadata"]["name"] for p in pools.pools())
        assert names == ["10.66.0.0-24-blk0", "10.66.0.0-24-blk1"]
        sweep = ("reconcile", "--grace", "0", "--unsafe-short-grace", "-o", "json")
        out = wb(*sweep).json  # frees on-2's entry (no such pod)
        assert [f["kind"] for f in out["freed"]] == ["allocation", "reservation"]
        out = wb(*sweep).json  # then node-2's empty block
        assert [(f["kind"], f["name"]) for f in out["freed"]] == [("block", "10.66.0.0-24-blk1")]
        assert sorted(p["metadata"]["name"] for p in pools.pools()) == ["10.66.0.0-24-blk0"]
    finally:
        core.delete_node(f"{ns}-node-1")

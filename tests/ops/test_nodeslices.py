"""`whereabouts node-slices` on the real API server, and against the Go `nodeslicecontroller`.

Node objects are created directly (no kubelet). The cluster is shared: other tests and sessions may
add Nodes and NADs meanwhile, so every check is about this test's own nodes and pools.

Tests wait on what the controller shows, never on time: its objects, and its log. A pass ends with a
`synced` event naming the resourceVersions of the NADs and Nodes it saw (the watch delivers each kind
in resourceVersion order), so "nothing changed" is asserted only after a pass that saw the change.
DEADLINE bounds every wait; it is not what the tests wait for.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from whereabouts.core.slices import OWNERS_ANNOTATION, slice_pool_name

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION = "whereabouts.cni.cncf.io", "v1alpha1"
NAD = ("k8s.cni.cncf.io", "v1", "network-attachment-definitions")
# A standby takes over at once from a leader that released the Lease; a leader keeps it through a
# loaded machine's stalls (a lost Lease mid-test would let the standby write).
FAST = ["--retry-period", "0.2", "--renew-deadline", "20", "--lease-duration", "30", "--recheck-interval", "1",
        "--debug"]
DEADLINE = 60.0

pytestmark = pytest.mark.timeout(180)


def wait_for(check: Callable[[], Any], timeout: float = DEADLINE, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what or check}")
        time.sleep(0.05)


class Env:
    """This test's namespace, nodes, NADs and controllers."""

    def __init__(self, kube: Any, namespace: str, kubeconfig: Path, tmp: Path) -> None:
        from kubernetes import client

        self.core, self.custom = client.CoreV1Api(kube), client.CustomObjectsApi(kube)
        self.ns, self.kubeconfig, self.tmp = namespace, kubeconfig, tmp
        self.nodes: list[str] = []
        self.node_version = 0  # the resourceVersion of the last Node this test made
        self.witnesses = 0
        self.procs: list[subprocess.Popen] = []
        self.flat = tmp / "whereabouts.conf"  # the Go controller refuses NADs without a flat file and kubeconfig
        self.flat.write_text(json.dumps({"kubernetes": {"kubeconfig": str(kubeconfig)}}))

    # --- objects ---------------------------------------------------------------------------

    def node(self, suffix: str) -> str:
        name = f"{self.ns}-{suffix}"
        made = self.core.create_node({"metadata": {"name": name}})
        self.nodes.append(name)
        self.node_version = int(made.metadata.resource_version)
        return name

    def delete_node(self, name: str) -> None:
        self.core.delete_node(name)

    def nad(self, name: str, namespace: str | None = None, **ipam: Any) -> dict[str, Any]:
        conf = {"cniVersion": "0.3.1", "name": name, "type": "macvlan",
                "ipam": {"type": "whereabouts", "range": "10.60.0.0/16", "node_slice_size": "/26",
                         "configuration_path": str(self.flat), **ipam}}
        body = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": name}, "spec": {"config": json.dumps(conf)}}
        return self.custom.create_namespaced_custom_object(*NAD[:2], namespace or self.ns, NAD[2], body)

    def update_nad(self, name: str, **ipam: Any) -> None:
        obj = self.custom.get_namespaced_custom_object(*NAD[:2], self.ns, NAD[2], name)
        conf = json.loads(obj["spec"]["config"])
        conf["ipam"].update(ipam)
        obj["spec"]["config"] = json.dumps(conf)
        self.custom.replace_namespaced_custom_object(*NAD[:2], self.ns, NAD[2], name, obj)

    def delete_nad(self, name: str, namespace: str | None = None) -> int:
        """A NAD resourceVersion past the deletion: that of a witness NAD (no node slices) made after it, as
        the DELETE answers with a Status. A pass that saw it saw the deletion (events come in order)."""
        self.custom.delete_namespaced_custom_object(*NAD[:2], namespace or self.ns, NAD[2], name)
        self.witnesses += 1
        conf = {"cniVersion": "0.3.1", "name": "witness", "type": "macvlan", "ipam": {"type": "static"}}
        body = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": f"witness-{self.witnesses}"}, "spec": {"config": json.dumps(conf)}}
        made = self.custom.create_namespaced_custom_object(*NAD[:2], self.ns, NAD[2], body)
        return int(made["metadata"]["resourceVersion"])

    def pool(self, name: str, plural: str = "nodeslicepools") -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, plural, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def ippool(self, name: str) -> dict[str, Any] | None:
        return self.pool(name, "ippools")

    def slices(self, name: str) -> dict[str, str]:
        """node -> slice of this test's nodes in NodeSlicePool `name`."""
        obj = self.pool(name) or {}
        return {a["nodeName"]: a["sliceRange"] for a in (obj.get("status") or {}).get("allocations") or []
                if a["nodeName"] in self.nodes}

    def wait_slices(self, name: str, nodes: list[str], timeout: float = DEADLINE) -> dict[str, str]:
        def found() -> dict[str, str] | None:
            got = self.slices(name)
            return got if set(nodes) <= set(got) else None

        return wait_for(found, timeout, f"slices for {nodes} in {name}")

    # --- controllers -------------------------------------------------------------------------

    def ours(self, *extra: str, log: str = "ours.log") -> subprocess.Popen:
        """Our controller, from this checkout (PYTHONPATH), as `whereabouts node-slices` runs it."""
        argv = [sys.executable, "-m", "whereabouts", "node-slices", "--kubeconfig", str(self.kubeconfig),
                "-n", self.ns, *FAST, *extra]
        return self._start(argv, {"PYTHONPATH": os.pathsep.join(sys.path)}, log)

    def go(self, binary: str) -> subprocess.Popen:
        return self._start([binary, "-kubeconfig", str(self.kubeconfig)], {"WHEREABOUTS_NAMESPACE": self.ns}, "go.log")

    def _start(self, argv: list[str], env: dict[str, str], log: str) -> subprocess.Popen:
        with open(self.tmp / log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **env})
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> int:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=20)

    def logs(self, log: str = "ours.log") -> list[dict[str, Any]]:
        lines = (self.tmp / log).read_text().splitlines() if (self.tmp / log).exists() else []
        return [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]

    def wait_event(self, msg: str, log: str = "ours.log", after: int = -1,
                   check: Callable[[dict[str, Any]], bool] = lambda e: True) -> tuple[int, dict[str, Any]]:
        """The first event `msg` of the log past index `after` that `check` accepts, with its index."""
        def found() -> tuple[int, dict[str, Any]] | None:
            return next(((i, e) for i, e in enumerate(self.logs(log))
                         if i > after and e.get("msg") == msg and check(e)), None)

        return wait_for(found, DEADLINE, f"{msg!r} in {log} after line {after}")

    def synced(self, log: str = "ours.log", nads: int = 0, nodes: int = 0, after: int = -1) -> int:
        """The index of a `synced` event of a pass that saw the NADs at resourceVersion `nads` (or later)
        and the Nodes at `nodes` (or later): that pass decided on every change up to them."""
        def saw(e: dict[str, Any]) -> bool:
            return int(e["nad_version"] or 0) >= nads and int(e["node_version"] or 0) >= nodes

        return self.wait_event("synced", log, after, saw)[0]

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for name in self.nodes:
            try:
                self.core.delete_node(name)
            except Exception:  # noqa: BLE001 - deleted by the test already
                pass


@pytest.fixture
def env(kube, namespace, namespace_kubeconfig, tmp_path) -> Iterator[Env]:
    e = Env(kube, namespace, namespace_kubeconfig, tmp_path)
    yield e
    e.cleanup()


@pytest.fixture(scope="session")
def go_controller() -> str:
    proc = subprocess.run(["bash", str(ROOT / "hack" / "build-go-whereabouts.sh")], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"hack/build-go-whereabouts.sh failed:\n{proc.stderr[-3000:]}", pytrace=False)
    return str(Path(proc.stdout.strip().splitlines()[-1]).parent / "nodeslicecontroller")


# --- ours ------------------------------------------------------------------------------------


def test_pool_for_a_nad_slices_for_nodes_new_node_next_free_deleted_node_freed(env):
    nodes = [env.node(f"n{i}") for i in range(3)]
    nad = env.nad("net1")
    env.ours()
    slices = env.wait_slices("net1", nodes)
    pool = env.pool("net1")
    assert pool["spec"] == {"range": "10.60.0.0/16", "sliceSize": "/26"}
    allocations = pool["status"]["allocations"]
    assert [a["sliceRange"] for a in allocations[:2]] == ["10.60.0.0/26", "10.60.0.64/26"]
    assert len(allocations) == 1024 and len(set(slices.values())) == 3
    assert pool["metadata"]["ownerReferences"] == [{
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition", "name": "net1",
        "uid": nad["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]

    # A new node gets a slice that was free.
    free = {a["sliceRange"] for a in env.pool("net1")["status"]["allocations"] if not a["nodeName"]}
    started = time.monotonic()
    new = env.node("new")
    got = env.wait_slices("net1", [new])[new]
    print(f"new node got {got} after {time.monotonic() - started:.3f}s")
    assert got in free and got not in slices.values()

    # A deleted node's slice (no IPPool holds anything there) is freed, the others stay.
    env.delete_node(nodes[0])
    started = time.monotonic()
    wait_for(lambda: nodes[0] not in env.slices("net1"), DEADLINE, "the deleted node's slice freed")
    print(f"deleted node freed after {time.monotonic() - started:.3f}s")
    freed = next(a for a in env.pool("net1")["status"]["allocations"] if a["sliceRange"] == slices[nodes[0]])
    assert freed["nodeName"] != nodes[0]  # free (or already another new node's: the cluster is shared)
    assert {n: s for n, s in env.slices("net1").items() if n in nodes} == {n: slices[n] for n in nodes[1:]}


def test_a_deleted_nodes_slice_stays_while_a_live_pod_holds_an_address_there(env, pods):
    node = env.node("busy")
    env.nad("net2", network_name="blue")
    env.ours()
    cidr = env.wait_slices("blue", [node])[node]
    pods.create("web-0")
    pool = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "IPPool",
            "metadata": {"name": slice_pool_name("blue", node, cidr)},
            "spec": {"range": cidr, "allocations": {"1": {"id": "c1", "podref": pods.ref("web-0"), "ifname": "net1"}}}}
    env.custom.create_namespaced_custom_object(GROUP, VERSION, env.ns, "ippools", pool)

    env.delete_node(node)
    # The pass that saw the deletion kept the slice; so do the rechecks after it.
    at, kept = env.wait_event("kept the slice of a deleted node")
    assert pods.ref("web-0") in kept["why"] and kept["slice"] == cidr
    env.synced(after=env.synced(after=at))
    assert env.slices("blue") == {node: cidr}

    pods.delete("web-0")
    wait_for(lambda: node not in env.slices("blue"), DEADLINE, "the slice freed once the pod is gone")


def test_a_changed_slice_size_reslices(env):
    nodes = [env.node(f"r{i}") for i in range(2)]
    env.nad("net3", range="10.61.0.0/20")
    env.ours()
    env.wait_slices("net3", nodes)
    env.update_nad("net3", node_slice_size="/27")
    pool = wait_for(lambda: (p := env.pool("net3"))["spec"]["sliceSize"] == "/27" and p, DEADLINE, "re-sliced")
    ranges = [a["sliceRange"] for a in pool["status"]["allocations"]]
    assert len(ranges) == 128 and ranges[:8] == [f"10.61.0.{i * 32}/27" for i in range(8)]
    assert set(env.slices("net3")) == set(nodes)


def test_the_pool_goes_with_the_last_nad_asking_for_it(env, new_namespace):
    other = new_namespace()
    env.nad("a", network_name="shared")
    env.nad("b", namespace=other, network_name="shared")
    env.ours()
    pool = wait_for(lambda: (p := env.pool("shared")) and len(json.loads(
        p["metadata"]["annotations"][OWNERS_ANNOTATION])) == 2 and p, DEADLINE, "both NADs recorded")
    # No owner references while a NAD of another namespace asks: the garbage collector would delete the
    # pool as soon as the referenced NADs are gone.
    assert "ownerReferences" not in pool["metadata"]
    gone = env.delete_nad("a")
    wait_for(lambda: list(json.loads(env.pool("shared")["metadata"]["annotations"][OWNERS_ANNOTATION]).values())
             == [f"{other}/b"], DEADLINE, "a dropped from the annotation")
    env.synced(nads=gone)  # a whole pass that saw a gone, and b still asking
    assert env.pool("shared") is not None
    env.delete_nad("b", namespace=other)
    wait_for(lambda: env.pool("shared") is None, DEADLINE, "the pool deleted with the last NAD")


def test_two_replicas_only_the_leader_writes_and_a_standby_takes_over(env):
    first = env.node("a")
    env.nad("net5")
    one = env.ours(log="one.log")
    env.wait_event("leading", "one.log")
    two = env.ours(log="two.log")
    env.wait_event("standing by: another replica leads", "two.log")  # it has tried, and found one leading
    env.wait_slices("net5", [first])
    second = env.node("b")
    env.wait_slices("net5", [second])
    env.synced("one.log", nodes=env.node_version)
    writes = {log: [e for e in env.logs(log) if e["msg"] in ("created", "updated")] for log in ("one.log", "two.log")}
    assert writes["one.log"] and not writes["two.log"]
    assert not any(e["msg"] in ("leading", "synced") for e in env.logs("two.log"))

    assert env.stop(one) == 0  # releases the Lease: the standby takes over at its next retry
    started = time.monotonic()
    third = env.node("c")
    env.wait_slices("net5", [third])
    print(f"standby served a new node {time.monotonic() - started:.3f}s after the leader stopped")
    assert any(e["msg"] == "leading" for e in env.logs("two.log"))
    assert env.stop(two) == 0


# --- against the Go controller -------------------------------------------------------------------


def comparable(pool: dict[str, Any]) -> tuple[Any, ...]:
    return pool["spec"], pool["metadata"].get("ownerReferences"), pool["status"]["allocations"]


def test_go_and_ours_take_over_from_each_other_without_reassigning(env, go_controller):
    # Unique network names: the Go controller refuses every NAD that shares its network_name (even none)
    # with another NAD of a different range, in any namespace.
    mixed, made_by_go = f"{env.ns}-mixed", f"{env.ns}-by-go"
    nodes = [env.node(f"g{i}") for i in range(3)]
    env.nad("mixed", range="10.62.0.0/20", network_name=mixed)

    ours = env.ours()
    before = env.wait_slices(mixed, nodes)
    assert env.stop(ours) == 0
    made_by_ours = env.pool(mixed)

    go = env.go(go_controller)
    new = env.node("g3")
    after_go = env.wait_slices(mixed, [*nodes, new])
    assert {n: after_go[n] for n in nodes} == before  # the Go controller reassigns nothing of ours
    by_go = env.pool(mixed)
    assert by_go["spec"] == made_by_ours["spec"]
    assert by_go["metadata"]["ownerReferences"] == made_by_ours["metadata"]["ownerReferences"]
    go.send_signal(signal.SIGTERM)
    go.wait(timeout=20)

    ours = env.ours(log="ours-after-go.log")
    env.synced("ours-after-go.log")  # its first pass saw everything made before it started
    assert env.slices(mixed) == after_go  # nor does ours of the Go controller's
    assert env.stop(ours) == 0

    # A pool the Go controller creates is the one ours would create for the same nodes.
    go = env.go(go_controller)
    env.nad("made-by-go", range="10.63.0.0/18", node_slice_size="/25", network_name=made_by_go)
    go_slices = env.wait_slices(made_by_go, env.nodes)
    go.send_signal(signal.SIGTERM)
    go.wait(timeout=20)
    by_go = env.pool(made_by_go)
    assert by_go["spec"] == {"range": "10.63.0.0/18", "sliceSize": "/25"}
    assert [a["sliceRange"] for a in by_go["status"]["allocations"]] == [f"10.63.{i // 2}.{i % 2 * 128}/25"
                                                                         for i in range(128)]
    ours = env.ours(log="ours-last.log")
    env.synced("ours-last.log")
    assert env.slices(made_by_go) == go_slices
    assert env.stop(ours) == 0


def test_adds_by_our_plugin_and_the_go_plugin_use_the_slices_it_assigned(env, go_controller):
    from tests.helpers.cni import run

    network = f"{env.ns}-add"
    a, b = env.node("pa"), env.node("pb")
    nad = env.nad("addnet", range="10.64.0.0/16", network_name=network)
    env.ours()
    slices = env.wait_slices(network, [a, b])
    conf = json.loads(nad["spec"]["config"])
    conf["ipam"]["node_lock_dir"] = str(env.tmp / "locks")
    go_plugin = str(Path(go_controller).parent / "whereabouts")
    for i, (node, plugin) in enumerate([(a, None), (b, [go_plugin]), (a, [go_plugin]), (b, None)]):
        got = run(conf, plugin=plugin, container_id=f"c{i}", pod=f"p{i}", env={"NODENAME": node}).ok().ips[0]
        assert ipaddress.ip_interface(got).ip in ipaddress.ip_network(slices[node]), (node, plugin, got)
    assert env.custom.get_namespaced_custom_object(GROUP, VERSION, env.ns, "ippools",
                                                   slice_pool_name(network, a, slices[a]))["spec"]["allocations"]


# --- re-slicing while pods hold addresses (issue 18, defect 2) ----------------------------------------


class Plugin:
    """Our plugin on one of the test's nodes, run as a runtime runs it, for Pods of the test namespace."""

    def __init__(self, env: Env, pods: Any, nad: dict[str, Any]) -> None:
        self.env, self.pods = env, pods
        self.conf = json.loads(nad["spec"]["config"])
        self.conf["ipam"]["node_lock_dir"] = str(env.tmp / "locks")

    def run(self, command: str, node: str, pod: str) -> Any:
        from tests.helpers.cni import run

        return run(self.conf, command, container_id=f"c-{pod}", pod=pod, pod_namespace=self.env.ns,
                   env={"NODENAME": node}).ok()

    def add(self, node: str, pod: str) -> ipaddress.IPv4Address:
        self.pods.create(pod)
        return ipaddress.ip_interface(self.run("ADD", node, pod).ips[0]).ip

    def delete(self, node: str, pod: str) -> None:
        self.run("DEL", node, pod)
        self.pods.delete(pod)


def overlapping(allocations: list[dict[str, Any]], cidr: str) -> dict[str, str]:
    """node -> slice of every assigned slice that overlaps `cidr`."""
    net = ipaddress.ip_network(cidr)
    return {a["nodeName"]: a["sliceRange"] for a in allocations
            if a["nodeName"] and ipaddress.ip_network(a["sliceRange"]).overlaps(net)}


def three_live_pods(env: Env, pods: Any, nad: str, node: str, cidr: str) -> tuple[str, str, Plugin, set[Any]]:
    """NAD `nad` of range `cidr` in /26 slices (overlap protection off), our controller, and three live
    pods on `node`: (network name, the node's slice, the plugin, the pods' addresses)."""
    network = f"{env.ns}-{nad}"
    made = env.nad(nad, range=cidr, network_name=network, enable_overlapping_ranges=False)
    env.ours()
    old = env.wait_slices(network, [node])[node]
    plugin = Plugin(env, pods, made)
    held = {plugin.add(node, f"old{i}") for i in range(3)}
    assert all(ip in ipaddress.ip_network(old) for ip in held)
    return network, old, plugin, held


def test_resizing_withholds_slices_that_old_pools_of_live_pods_overlap_and_drains_them(env, pods):
    """/26 -> /25 while three live pods on a node hold addresses of its /26, overlap protection off."""
    node = env.node("rs")
    network, old, plugin, held = three_live_pods(env, pods, "rs", node, "10.99.0.0/16")
    old_pool = slice_pool_name(network, node, old)

    env.update_nad("rs", node_slice_size="/25")
    pool = wait_for(lambda: (p := env.pool(network))["spec"]["sliceSize"] == "/25" and p, DEADLINE, "re-sliced")
    given = overlapping(pool["status"]["allocations"], old)
    assert not given, f"slices overlapping {old_pool}, where 3 live pods hold addresses, were given: {given}"
    assert node in env.slices(network)
    _, withheld = env.wait_event("slice withheld: an old slice pool holds live addresses there",
                                 check=lambda e: e["old_pool"] == old_pool)
    assert withheld["addresses"] == 3 and withheld["slices"] == [str(ipaddress.ip_network(old).supernet(1))]

    new = {plugin.add(node, f"new{i}") for i in range(3)}
    assert not new & held and all(ip in ipaddress.ip_network(env.slices(network)[node]) for ip in new)

    # The old pods' DELs find their entries in the old pool; once it is empty, the controller deletes it.
    for i in range(3):
        plugin.delete(node, f"old{i}")
    stored = env.ippool(old_pool)
    assert stored is None or not stored["spec"].get("allocations"), stored
    env.wait_event("deleted an empty old slice pool", check=lambda e: e["ippool"] == old_pool)
    env.wait_event("slice no longer withheld: the old slice pool holds no live address",
                   check=lambda e: e["old_pool"] == old_pool)
    assert env.ippool(old_pool) is None
    assert len(env.ippool(slice_pool_name(network, node, env.slices(network)[node]))["spec"]["allocations"]) == 3


def test_a_nad_made_again_gives_an_old_pools_slice_back_to_its_node_and_to_no_other(env, pods):
    """A NAD deleted and made again while live pods hold addresses, and a new node that sorts first."""
    node = env.node("rc-b")
    network, old, plugin, held = three_live_pods(env, pods, "rc", node, "10.98.0.0/16")

    env.delete_nad("rc")
    wait_for(lambda: env.pool(network) is None, DEADLINE, "the NodeSlicePool deleted with its NAD")
    first = env.node("rc-a")  # right before the node in name order: a fresh slicing would give it `old`
    env.nad("rc", range="10.98.0.0/16", network_name=network, enable_overlapping_ranges=False)
    slices = env.wait_slices(network, [first, node])
    given = overlapping(env.pool(network)["status"]["allocations"], old)
    assert given == {node: old}, f"the slice {old} of 3 live pods on {node} went to {given}"

    assert not {plugin.add(first, f"a{i}") for i in range(3)} & held
    assert {plugin.add(node, f"b{i}") for i in range(3)}.isdisjoint(held)
    for i in range(3):
        plugin.delete(node, f"old{i}")
    assert len(env.ippool(slice_pool_name(network, node, slices[node]))["spec"]["allocations"]) == 3  # the b pods'

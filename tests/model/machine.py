"""A model of a cluster running whereabouts, stepped by hypothesis: the protocol's state machine.

Pods live on nodes; the rules start CNI invocations (ADD, DEL, GC, CHECK) on a pod's node, a
reconciler sweep, a node-slice controller pass, the Go plugin's ADD and DEL, and step any
operation in flight through its next Store call with a fate (`tests.model.harness`). One class
serves every allocation mode; a mode picks the network configs and the rules that apply.

What the runtime guarantees is kept: one invocation at a time per pod, GC of a node never
concurrent with an ADD or DEL there (a rule for a pod or node first lets those in flight end),
time passes only while nothing is in flight (no invocation outlives its deadline, which is
shorter than the reconciler's grace).

Invariants, after every step:
- no address held by two live pods in overlapping ranges of one network (with overlap
  protection, every network config sharing the reservations; else within one range);
- a live pod holds at most one address per range;
- an ADD that returned success keeps its address (the entry, and with overlap protection its
  reservation naming the pod) until a DEL of that container starts or its pod is gone;
- a GC that succeeded left no entry of a container this node ran an ADD for that is not valid;
- a CHECK of a pod's current attachment succeeds; no invocation fails with anything but its
  protocol's errors;
- after DEL of every attachment and one sweep (grace passed), nothing is left: no entry, no
  reservation, no block of a deleted node.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import tempfile
import threading
import time
import types
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from unittest import mock

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.fakes.store import FakeStore
from tests.model import harness
from tests.model.harness import FATES, GatedStore, ModelLease, ModelNodeLock, Op, Scheduler, plugin_failure
from whereabouts.core.blocks import BLOCK_NODE_ANNOTATION, BLOCK_RANGE_ANNOTATION
from whereabouts.core.pool import Allocation, new_pool_object, pool_name, reservation_name
from whereabouts.errors import CNIError, NotAllocated
from whereabouts.k8s.store import POOLS, RESERVATIONS
from whereabouts.operator.sweep import sweep
from whereabouts.operator.kubeclient import KubeError
from whereabouts.operator.nads import NAD
from whereabouts.operator.nodeslices import NodeSlices
from whereabouts.operator.reconcile import view_pool
from whereabouts.plugin.config import parse_ipam
from whereabouts.plugin.log import Log
from whereabouts.plugin.modes.single import SHARED_LEASE
from whereabouts.plugin.verbs import IPAM

GRACE = timedelta(seconds=60)
IFNAME = "net1"
NODES = ("n0", "n1")
PODS = ("p0", "p1", "p2")  # pod i runs on NODES[i % 2]
GO_PODS = ("g0", "g1")  # the Go plugin's pods (single-pool mode)
RUN = st.sampled_from([True, True, False])  # run an operation to its end at once (shrinks to that), or step it
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@dataclass
class Net:
    """A network config (a NAD): its name and ipam keys."""

    name: str
    keys: dict[str, Any]

    def ranges(self) -> list[str]:
        return [self.keys["range"]] + [r["range"] for r in self.keys.get("ipRanges", [])]

    @property
    def overlap(self) -> bool:
        return self.keys.get("enable_overlapping_ranges", True)


MODES: dict[str, list[Net]] = {
    # One pool per range under the shared Lease; B overlaps A; the Go plugin writes into A.
    "single": [Net("net-a", {"range": "10.9.0.0/29"}), Net("net-b", {"range": "10.9.0.0/30"})],
    # Two ranges per ADD.
    "multi": [Net("net-m", {"range": "10.8.0.0/29", "ipRanges": [{"range": "10.7.0.0/29"}]})],
    # Node slices without overlap protection (their common use); slices /30, re-sliced to /29.
    "slices": [Net("net-s", {"range": "10.6.0.0/28", "node_slice_size": "/30", "enable_overlapping_ranges": False})],
    # Node-affine blocks of 16: block 0 holds one usable address, block 1 two, so nodes spill.
    "blocks": [Net("net-k", {"range": "10.5.0.0/27", "block_size": 16, "exclude": [
        "10.5.0.2/31", "10.5.0.4/30", "10.5.0.8/29", "10.5.0.18/31", "10.5.0.20/30", "10.5.0.24/29"]})],
}


class Clock(datetime):
    """`datetime` for the reconciler, whose `now` is the model's clock."""

    current = T0

    @classmethod
    def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
        return Clock.current


@dataclass
class Pod:
    name: str
    node: str
    go: bool = False
    live: bool = False
    containers: list[str] = field(default_factory=list)  # every sandbox an ADD was started for, in order
    net: dict[str, str] = field(default_factory=dict)  # container -> network config name
    held: tuple[str, str, list[str]] | None = None  # (container, net, addresses) of a successful ADD

    @property
    def ref(self) -> str:
        return f"ns/{self.name}"


class ProtocolMachine(RuleBasedStateMachine):
    mode = "single"

    def __init__(self) -> None:
        super().__init__()
        self.nets = {n.name: Net(n.name, json.loads(json.dumps(n.keys))) for n in MODES[self.mode]}
        self.store = FakeStore(clock=lambda: Clock.current)
        Clock.current = T0
        self.sched = Scheduler()
        self.dir = tempfile.mkdtemp(prefix="wb-model-")
        self.nodes = set(NODES)
        self.pods = {name: Pod(name, NODES[i % 2]) for i, name in enumerate(PODS)}
        if self.mode == "single":
            self.pods.update({name: Pod(name, NODES[i % 2], go=True) for i, name in enumerate(GO_PODS)})
        self.violations: list[str] = []
        self.counter = 0
        self.nad_uid = 0
        self.gone_nodes: set[str] = set()
        no_sleep = types.SimpleNamespace(monotonic=time.monotonic, sleep=lambda s: None)
        self.patches = [mock.patch("whereabouts.plugin.locks.NodeLock", ModelNodeLock),
                        mock.patch("whereabouts.plugin.txn.time", no_sleep),
                        mock.patch("whereabouts.operator.release.time", no_sleep),
                        mock.patch("whereabouts.operator.sweep.datetime", Clock),
                        mock.patch.object(harness, "SCHEDULER", self.sched)]
        for p in self.patches:
            p.start()
        if self.mode == "slices":
            self.sched.finish(self._start("slices", self._slices_pass(recreate=False)))

    def teardown(self) -> None:
        self.sched.kill_all()
        for p in reversed(self.patches):
            p.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- starting operations --------------------------------------------------------------

    def _run(self, run: bool, kind: str, fn: Any, **about: Any) -> None:
        """Start an operation; `run`: and let it run to its end with every call applied."""
        op = self._start(kind, fn, **about)
        if run:
            self.sched.finish(op)
            self._account()

    def _start(self, kind: str, fn: Any, **about: Any) -> Op:
        op = self.sched.start(Op(kind, fn, **about))
        self._account()
        return op

    def _ipam(self, op: Op, net: Net, node: str) -> IPAM:
        conf = parse_ipam({"type": "whereabouts", "kubernetes": {"kubeconfig": "k"},
                           "node_lock_dir": os.path.join(self.dir, node), **net.keys}, name=net.name)
        return IPAM(conf, GatedStore(self.store, op, plugin_failure), ModelLease, time.monotonic() + 3600, Log(), node)

    def _kube(self, op: Op) -> GatedStore:
        return GatedStore(self.store, op, lambda text, unknown: KubeError(text), self)

    def live_pods(self) -> set[str]:
        return {p.ref for p in self.pods.values() if p.live}

    def _pod(self, i: int, go: bool = False) -> Pod | None:
        """Pod i, once what the runtime would make its next invocation wait for has ended: the
        pod's invocation in flight, a GC on its node. None when its node is gone."""
        pods = [p for p in self.pods.values() if p.go == go]
        pod = pods[i % len(pods)]
        if pod.node not in self.nodes:
            return None
        self._settle(lambda op: op.about.get("pod") == pod.name or (op.kind == "GC" and op.about["node"] == pod.node))
        return pod

    def _settle(self, waits_for: Any) -> None:
        for op in self.sched.in_flight():
            if waits_for(op):
                self.sched.finish(op)
        self._account()

    def _net(self, j: int) -> Net:
        nets = list(self.nets.values())
        return nets[j % len(nets)]

    @initialize(n=st.integers(0, len(PODS)))
    def running(self, n: int) -> None:
        """The cluster as found: the first `n` pods attached (the nodes taking turns), each by an ADD run to its end."""
        for i in range(n):
            self.add(i, new_sandbox=False, run=True)

    @rule(i=st.integers(0, 2), new_sandbox=st.booleans(), run=RUN)
    def add(self, i: int, new_sandbox: bool, run: bool) -> None:
        pod = self._pod(i)
        if pod is None:
            return
        # One network per pod: an interface name is unique in a pod, so the same pod and ifname in
        # two network configs is no state a runtime makes.
        net = self._net(list(self.pods).index(pod.name))
        if new_sandbox or not pod.containers or pod.net[pod.containers[-1]] != net.name:
            self.counter += 1
            pod.containers.append(f"c{self.counter}-{pod.name}")
        cid = pod.containers[-1]
        pod.net[cid], pod.live, pod.held = net.name, True, None
        owner = Allocation(cid, pod.ref, IFNAME)
        self._run(run, "ADD", lambda op: self._ipam(op, net, pod.node).add(owner, {}), pod=pod.name,
                  container=cid, net=net.name, node=pod.node)

    @rule(i=st.integers(0, 2), k=st.integers(0, 3), run=RUN)
    def delete(self, i: int, k: int, run: bool) -> None:
        pod = self._pod(i)
        if pod is None or not pod.containers:
            return
        cid = pod.containers[-1 - k % len(pod.containers)]
        if pod.held and pod.held[0] == cid:
            pod.held = None
        net = self.nets[pod.net[cid]]
        owner = Allocation(cid, pod.ref, IFNAME)
        self._run(run, "DEL", lambda op: self._ipam(op, net, pod.node).delete(owner), pod=pod.name,
                  container=cid, net=net.name, node=pod.node)

    @precondition(lambda self: self.mode != "blocks")  # narrower rule sets find a block's spill sooner
    @rule(i=st.integers(0, 5))
    def check(self, i: int) -> None:
        pod = self._pod(i)
        if pod is None or not pod.held or not pod.live:
            return
        cid, name, addrs = pod.held
        ips = [ipaddress.ip_address(a) for a in addrs]
        self._start("CHECK", lambda op: self._ipam(op, self.nets[name], pod.node).check(cid, IFNAME, ips),
                    pod=pod.name, container=cid, net=name, node=pod.node)

    @rule(n=st.integers(0, 1), j=st.integers(0, 1), run=RUN)
    def gc(self, n: int, j: int, run: bool) -> None:
        node, net = NODES[n], self._net(j)
        if node not in self.nodes:
            return
        self._settle(lambda op: op.about.get("node") == node)  # GC is never concurrent with ADD or DEL there
        valid = {(p.held[0], IFNAME) for p in self.pods.values()
                 if p.node == node and not p.go and p.held and p.held[1] == net.name}
        self._run(run, "GC", lambda op: self._ipam(op, net, node).gc(valid), node=node, net=net.name, valid=valid)

    @precondition(lambda self: self.mode != "blocks")
    @rule(i=st.integers(0, 5))
    def pod_deleted(self, i: int) -> None:
        """The Pod object is gone (its sandbox may still wait for a DEL)."""
        pods = [p for p in self.pods.values() if p.live]
        if pods:
            pods[i % len(pods)].live = False

    @rule(run=RUN, late=st.booleans())
    def sweep(self, run: bool, late: bool) -> None:
        """A reconciler sweep; `late`: after the grace period has passed (only while nothing is in flight)."""
        if late and not self.sched.in_flight():
            Clock.current += GRACE + timedelta(seconds=1)
        self._run(run, "SWEEP", lambda op: sweep(self._kube(op), GRACE, dry_run=False))

    # --- stepping ---------------------------------------------------------------------------

    @precondition(lambda self: self.sched.runnable() and self.mode != "blocks")
    @rule(i=st.integers(0, 7), fate=st.sampled_from(FATES))
    def step(self, i: int, fate: str) -> None:
        ops = self.sched.runnable()
        op = ops[i % len(ops)]
        if op.kind == "GO-ADD" or (op.kind == "SLICES" and fate != "ok"):
            fate = "ok"  # see go_add; a controller pass that fails only leaves the old slicing
        self.sched.advance(op, fate)
        self._account()

    @precondition(lambda self: self.sched.runnable())
    @rule(i=st.integers(0, 7), k=st.integers(0, 3), fate=st.sampled_from(FATES))
    def to_write(self, i: int, k: int, fate: str) -> None:
        """Run an operation on through its reads and `k` applied writes; `fate` meets the next write."""
        ops = self.sched.runnable()
        op = ops[i % len(ops)]
        while op.state == "gate" and (op.call.split()[0] in ("get", "list") or k > 0):
            k -= op.call.split()[0] not in ("get", "list")
            self.sched.advance(op)
        if op.state == "gate":
            self.sched.advance(op, "ok" if op.kind in ("GO-ADD", "SLICES") else fate)
        self._account()

    @precondition(lambda self: self.sched.in_flight())
    @rule(i=st.integers(0, 7))
    def finish(self, i: int) -> None:
        ops = self.sched.in_flight()
        self.sched.finish(ops[i % len(ops)])
        self._account()

    # --- mode-specific -------------------------------------------------------------------------

    @precondition(lambda self: self.mode == "single")
    @rule(i=st.integers(0, 3), new_sandbox=st.booleans(), run=RUN)
    def go_add(self, i: int, new_sandbox: bool, run: bool) -> None:
        """The Go plugin's ADD into net-a: pool entry, then reservation; an idempotent ADD updates the
        entry's container id and leaves the reservation as it is. Its calls are always applied: its
        known bugs (a crash between its two writes leaves an entry without a reservation) are not ours."""
        pod = self._pod(i, go=True)
        if pod is None:
            return
        if new_sandbox or not pod.containers:
            self.counter += 1
            pod.containers.append(f"c{self.counter}-{pod.name}")
        cid = pod.containers[-1]
        pod.net[cid], pod.live, pod.held = "net-a", True, None
        self._run(run, "GO-ADD", lambda op: self._go_add(self._kube(op), cid, pod.ref), pod=pod.name,
                  container=cid, net="net-a", node=pod.node)

    @precondition(lambda self: self.mode == "single")
    @rule(i=st.integers(0, 3), k=st.integers(0, 3))
    def go_del(self, i: int, k: int) -> None:
        pod = self._pod(i, go=True)
        if pod is None or not pod.containers:
            return
        cid = pod.containers[-1 - k % len(pod.containers)]
        if pod.held and pod.held[0] == cid:
            pod.held = None
        self._start("GO-DEL", lambda op: self._go_del(self._kube(op), cid), pod=pod.name, container=cid,
                    net="net-a", node=pod.node)

    @precondition(lambda self: self.mode == "slices")
    @rule(recreate=st.booleans())
    def reslice(self, recreate: bool) -> None:
        """The NAD's node_slice_size changes (/30 <-> /29), or the NAD is deleted and created again."""
        if not recreate:
            keys = self.nets["net-s"].keys
            keys["node_slice_size"] = "/29" if keys["node_slice_size"] == "/30" else "/30"
        self._start("SLICES", self._slices_pass(recreate))

    @precondition(lambda self: self.mode == "blocks" and "n1" in self.nodes)
    @rule()
    def node_deleted(self) -> None:
        """Node n1 goes, and its pods with it; its blocks are the reconciler's to reclaim once empty."""
        self._settle(lambda op: op.about.get("node") == "n1")
        self.nodes.discard("n1")
        self.gone_nodes.add("n1")
        for pod in self.pods.values():
            if pod.node == "n1":
                pod.live, pod.held = False, None

    # --- the Go plugin and the controller, as operations --------------------------------------

    def _go_add(self, kube: GatedStore, cid: str, podref: str) -> str:
        cidr = self.nets["net-a"].keys["range"]
        net = ipaddress.ip_network(cidr)
        name = pool_name(cidr)
        lease = ModelLease(SHARED_LEASE)
        lease.acquire()
        try:
            obj = kube.get(POOLS, name) or kube.create(POOLS, new_pool_object(name, cidr, kube.namespace))
            allocs = obj["spec"].setdefault("allocations", {})
            for key, a in allocs.items():
                if a.get("podref") == podref and a.get("ifname") == IFNAME:
                    a["id"] = cid
                    if kube.replace(POOLS, obj) is None:
                        raise CNIError("Go: pool changed")
                    return str(net.network_address + int(key))
            for offset in range(1, net.num_addresses - 1):
                ip = net.network_address + offset
                if str(offset) not in allocs and kube.get(RESERVATIONS, reservation_name(ip)) is None:
                    break
            else:
                raise CNIError("Go: range full")
            allocs[str(offset)] = {"id": cid, "podref": podref, "ifname": IFNAME}
            if kube.replace(POOLS, obj) is None:
                raise CNIError("Go: pool changed")
            res = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "OverlappingRangeIPReservation",
                   "metadata": {"name": reservation_name(ip), "namespace": kube.namespace},
                   "spec": {"podref": podref, "ifname": IFNAME, "containerid": cid}}
            if kube.create(RESERVATIONS, res) is None:
                raise CNIError("Go: reservation exists")
            return str(ip)
        finally:
            lease.release()

    def _go_del(self, kube: GatedStore, cid: str) -> None:
        cidr = self.nets["net-a"].keys["range"]
        net = ipaddress.ip_network(cidr)
        lease = ModelLease(SHARED_LEASE)
        lease.acquire()
        try:
            obj = kube.get(POOLS, pool_name(cidr))
            allocs = (obj or {}).get("spec", {}).get("allocations") or {}
            mine = [k for k, a in allocs.items() if a.get("id") == cid and a.get("ifname") == IFNAME]
            if not mine:
                return
            for k in mine:
                del allocs[k]
            if kube.replace(POOLS, obj) is None:
                raise CNIError("Go: pool changed")
            for k in mine:
                res = kube.get(RESERVATIONS, reservation_name(net.network_address + int(k)))
                if res is not None:
                    kube.delete(RESERVATIONS, res["metadata"]["name"], res["metadata"]["resourceVersion"])
        finally:
            lease.release()

    def _slices_pass(self, recreate: bool) -> Any:
        net = self.nets["net-s"]
        if recreate:
            self.nad_uid += 1
        config = json.dumps({"cniVersion": "1.0.0", "name": net.name, "type": "macvlan",
                             "ipam": {"type": "whereabouts", **net.keys}})
        nad = NAD("ns", net.name, f"uid-{self.nad_uid}", "2026-01-01T00:00:00Z", config)

        def run(op: Op) -> None:
            nodes = types.SimpleNamespace(snapshot=lambda: (dict.fromkeys(self.nodes, True), "1"))
            leading = threading.Event()
            leading.set()
            kube = self._kube(op)
            if recreate:
                NodeSlices(kube, types.SimpleNamespace(snapshot=lambda: ({}, "1")), nodes, leading).reconcile()
            NodeSlices(kube, types.SimpleNamespace(snapshot=lambda: ({f"ns/{net.name}": nad}, "1")), nodes,
                       leading).reconcile()

        return run

    # --- the model's bookkeeping ------------------------------------------------------------

    def _account(self) -> None:
        for op in self.sched.ops:
            if op.state != "done" or op.seen:
                continue
            op.seen = True
            expected = (KubeError, CNIError) if op.kind in ("SWEEP", "SLICES", "GO-ADD", "GO-DEL") else CNIError
            if op.error is not None and not isinstance(op.error, expected):
                self.violations.append(f"{op} raised {op.error!r}")
            pod = self.pods.get(op.about.get("pod", ""))
            if op.kind in ("ADD", "GO-ADD") and op.ok and pod is not None:
                addrs = [str(a.address) for a in op.result] if op.kind == "ADD" else [op.result]
                pod.held = (op.about["container"], op.about["net"], addrs)
            elif op.kind == "CHECK" and isinstance(op.error, NotAllocated) and pod is not None and pod.live \
                    and pod.held and pod.held[0] == op.about["container"]:
                self.violations.append(f"CHECK of {pod.name}'s attachment {pod.held} failed: {op.error}")
            elif op.kind == "GC" and op.ok:
                self._check_gc(op)
        self.sched.ops = [op for op in self.sched.ops if not op.seen]

    def _check_gc(self, op: Op) -> None:
        node, name = op.about["node"], op.about["net"]
        busy = {o.about.get("container") for o in self.sched.in_flight()}
        ran = {c for p in self.pods.values() if p.node == node and not p.go for c, n in p.net.items() if n == name}
        for cid in ran - {c for c, _ in op.about["valid"]} - busy:
            left = [f"{pool} {ip}" for pool, ip, a in self.entries(name) if a.container_id == cid]
            if left:
                self.violations.append(f"GC of {node} left {left} of container {cid}, not a valid attachment, "
                                       "which this node ran an ADD for")

    def entries(self, net_name: str, range_index: int | None = None) -> list[tuple[str, str, Allocation]]:
        """(pool, address, entry) of every entry in the pools of a network config (one of its ranges)."""
        net = self.nets[net_name]
        out = []
        for i, cidr in enumerate(net.ranges()):
            if range_index not in (None, i):
                continue
            network = ipaddress.ip_network(cidr)
            for obj in self.store.list(POOLS):
                ann = obj["metadata"].get("annotations") or {}
                spec_net = ipaddress.ip_network(obj["spec"]["range"])
                if BLOCK_RANGE_ANNOTATION in ann:
                    mine = ann[BLOCK_RANGE_ANNOTATION] == cidr
                elif "node_slice_size" in net.keys:
                    mine = spec_net.subnet_of(network) and obj["metadata"]["name"] != pool_name(cidr)
                else:
                    mine = obj["metadata"]["name"] == pool_name(cidr)
                if mine:
                    view = view_pool(obj)
                    out += [(view.name, str(view.address(o)), a) for o, a in view.pool.allocations.items()]
        return out

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def no_violation(self) -> None:
        assert not self.violations, self.violations

    @invariant()
    def no_address_held_twice(self) -> None:
        live = self.live_pods()
        groups: dict[Any, dict[str, set[str]]] = {}
        for name, net in self.nets.items():
            for i in range(len(net.ranges())):
                per_pod: dict[str, set[str]] = {}
                for pool, ip, a in self.entries(name, i):
                    if a.podref in live:
                        key = "reserved" if net.overlap else (name, i)
                        groups.setdefault(key, {}).setdefault(ip, set()).add(a.podref)
                        per_pod.setdefault(a.podref, set()).add(f"{pool} {ip}")
                two = {p: s for p, s in per_pod.items() if len(s) > 1}
                assert not two, f"a live pod holds two addresses in range {net.ranges()[i]} of {name}: {two}"
        for key, by_ip in groups.items():
            dup = {ip: owners for ip, owners in by_ip.items() if len(owners) > 1}
            assert not dup, f"address held by two live pods ({key}): {dup}"

    @invariant()
    def success_keeps_its_address(self) -> None:
        for pod in self.pods.values():
            if not pod.live or not pod.held:
                continue
            cid, name, addrs = pod.held
            held = {ip for _, ip, a in self.entries(name) if a.podref == pod.ref and a.ifname == IFNAME}
            lost = set(addrs) - held
            assert not lost, f"{pod.name} (ADD of {cid} succeeded with {addrs}) lost {lost}; it holds {held}"
            if self.nets[name].overlap:
                for ip in addrs:
                    res = self.store.obj(RESERVATIONS, reservation_name(ipaddress.ip_address(ip)))
                    assert res is not None and res["spec"].get("podref") == pod.ref, (
                        f"{pod.name} (ADD of {cid} succeeded with {ip}) has no reservation of {ip}: {res}")

    # --- the end state -------------------------------------------------------------------------

    @rule()
    def drain(self) -> None:
        """Everything in flight ends, every attachment is deleted, pods go, grace passes, one sweep:
        nothing may be left (but a deleted node's block, which empties in that sweep and goes in the next)."""
        for op in self.sched.in_flight():
            self.sched.finish(op)
        self._account()
        for pod in self.pods.values():
            if pod.node not in self.nodes:
                continue
            for cid in pod.containers:
                if pod.go:
                    self.sched.finish(self._start("GO-DEL", lambda op, c=cid: self._go_del(self._kube(op), c)))
                else:
                    net, owner = self.nets[pod.net[cid]], Allocation(cid, pod.ref, IFNAME)
                    self.sched.finish(self._start(
                        "DEL", lambda op, n=net, o=owner, p=pod: self._ipam(op, n, p.node).delete(o)))
            pod.live, pod.held, pod.containers, pod.net = False, None, [], {}
        Clock.current += GRACE + timedelta(seconds=1)
        for _ in range(2 if self.gone_nodes else 1):
            self.sched.finish(self._start("SWEEP", lambda op: sweep(self._kube(op), GRACE, dry_run=False)))
        self._account()
        left = {name: self.entries(name) for name in self.nets}
        left = {k: v for k, v in left.items() if v}
        assert not left, f"entries left after DEL of everything and a sweep: {left}"
        assert not self.store.names(RESERVATIONS), \
            f"reservations left after DEL of everything and a sweep: {self.store.names(RESERVATIONS)}"
        foreign = [o["metadata"]["name"] for o in self.store.list(POOLS)
                   if (o["metadata"].get("annotations") or {}).get(BLOCK_NODE_ANNOTATION) in self.gone_nodes]
        assert not foreign, f"blocks of deleted nodes left: {foreign}"

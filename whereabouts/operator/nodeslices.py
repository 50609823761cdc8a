"""`whereabouts node-slices`: the node-slice controller, interchangeable with the Go `nodeslicecontroller`.

For every NetworkAttachmentDefinition whose whereabouts `ipam` has `node_slice_size`, it keeps the
NodeSlicePool named after the network (`whereabouts.core.slices`) in the whereabouts namespace: the
range cut into slices, each node on one. The plugin on a node then allocates only in its own slice,
so nodes never wait for each other. Objects, names and the order of assignment are the Go
controller's, so either controller can take over from the other. Where it differs, on purpose:

- A deleted node's slice is freed only once no pod that still exists holds an address in it (the
  Go controller frees it at once, and the next node then hands those addresses out a second time).
- A re-slicing (range or slice size changed, a NAD made again) gives no node a slice that overlaps
  an old slice pool holding live addresses, and deletes old slice pools once they are empty
  (doc/design.md, *Re-slicing while pods hold addresses*).
- The pool is deleted when the last NAD asking for it is gone, by the pool's name (Go deletes by the
  NAD's name, so a pool named after `network_name` stays behind).
- Two replicas are safe: only the holder of a Lease writes (`whereabouts.operator.election`; the Go
  controller has no election).
- IPv6 ranges are sliced (the Go controller crashes on them); no flat file or kubeconfig is needed.

Writes carry the resourceVersion they were computed from; a conflict reads the pool again.
NADs and Nodes are watched (`whereabouts.operator.mirror`: resuming from the last resourceVersion,
listing again on 410 Gone); every change, and a periodic resync, runs one pass over all NADs
(`NodeSlices.reconcile`), each read as `whereabouts.operator.nads` reads it.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import socket
import sys
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import structlog

from whereabouts.core.pool import API_VERSION, decode_pool
from whereabouts.core.slices import (KIND, NAD_KIND, OWNERS_ANNOTATION, PLURAL, SlicePool, SliceSpec, annotated_owners,
                                     assign, fresh_allocations, nad_owner_uids, owner_references, parse_slice_size,
                                     slice_pool_name, slice_pool_of, slices_over, unassign, unassigned_nodes)
from whereabouts.errors import CorruptPool
from whereabouts.k8s.store import POOLS, dig
from whereabouts.operator.election import Elector
from whereabouts.operator.kubeclient import Kube, KubeError
from whereabouts.operator.mirror import MAX_BACKOFF, Mirror, presence
from whereabouts.operator.nads import NAD, NAD_GROUP, NAD_PLURAL, NAD_VERSION, keep_nad, nad_slice_spec

CONFLICT_RETRIES = 8

log = structlog.get_logger("node-slices")


class NotLeader(Exception):
    """The Lease was lost in the middle of a pass: write nothing more."""


@dataclass(frozen=True)
class Owner:
    """A NAD asking for a NodeSlicePool, with what it asks."""

    nad: NAD
    spec: SliceSpec


class NodeSlices:
    """The passes: every NodeSlicePool brought to what the NADs and Nodes in the mirrors ask for."""

    def __init__(self, kube: Kube, nads: Mirror, nodes: Mirror, leading: threading.Event) -> None:
        self.kube, self.nads, self.nodes, self.leading = kube, nads, nodes, leading
        self.reported: dict[tuple[str, str], str] = {}  # what was last logged per (subject, topic), to log changes only
        self.held: set[tuple[str, str]] = set()  # (pool, node) kept for live pods after their node went away
        self.withholding = False  # an old slice pool with live addresses overlaps the slicing (last pass)
        self.live: dict[str, bool] = {}  # podref -> the pod exists (read once per pass)
        self.passes = 0

    def _report(self, subject: str, topic: str, text: str, level: str = "warning", **kw: Any) -> None:
        """Log `text` once, until it or its fields change: a pass runs on every change and would repeat it."""
        said = text + json.dumps(kw, sort_keys=True, default=str)
        if self.reported.get((subject, topic)) != said:
            self.reported[(subject, topic)] = said
            getattr(log, level)(text, **kw)

    def _check_leading(self) -> None:
        if not self.leading.is_set():
            raise NotLeader()

    def _pod_exists(self, podref: str) -> bool:
        if podref not in self.live:
            self.live[podref] = self.kube.pod_exists(podref)
        return self.live[podref]

    def reconcile(self) -> bool:
        """One pass over every NAD; True while a slice is kept or withheld for live pods (to be checked again).

        Ends with a debug `synced` event naming the resourceVersions of the NADs and Nodes it saw: a
        pass that saw a change has decided on it."""
        groups: dict[str, list[Owner]] = {}
        undecided: set[str] = set()  # NADs whose config cannot be read now: their pools are left as they are
        nads, nad_version = self.nads.snapshot()
        for key, nad in sorted(nads.items()):
            try:
                spec = nad_slice_spec(nad)
            except ValueError as e:
                self._report(key, "config", "NAD ignored: its config cannot be read", nad=key, error=str(e))
                undecided.add(nad.uid)
                continue
            self.reported.pop((key, "config"), None)
            if spec is not None:
                groups.setdefault(spec.set_name, []).append(Owner(nad, spec))
        found, node_version = self.nodes.snapshot()
        nodes = set(found)
        pools = {o["metadata"]["name"]: o for o in self.kube.list(PLURAL)}
        ippools = self.kube.list(POOLS) if groups else []
        self.held, self.withholding, self.live = set(), False, {}
        current: set[str] = set()  # the slice pools some node is on now
        drained: dict[str, dict[str, Any]] = {}  # empty slice pools of the networks decided on
        for name, owners in sorted(groups.items()):
            owners.sort(key=lambda o: (o.nad.created, o.nad.namespace, o.nad.name))
            network_names = sorted({o.spec.network_name for o in owners})
            found_pools = _slice_pools(network_names, owners[0].spec.range, ippools)
            allocations = self._sync(name, owners, pools.get(name), nodes, undecided, found_pools)
            if allocations is None:
                continue
            current.update(_on(allocations, network_names))
            drained.update((sp.name, obj) for sp, obj in found_pools if not dig(obj, "spec", "allocations"))
        self._delete_drained(drained, current)
        for name, obj in sorted(pools.items()):
            uids = nad_owner_uids(obj)
            if name not in groups and uids and not undecided.intersection(uids):
                self._delete(obj)
        self.passes += 1
        log.debug("synced", passes=self.passes, nad_version=nad_version, node_version=node_version)
        return bool(self.held) or self.withholding

    def _live_addresses(self, obj: dict[str, Any], sp: SlicePool) -> int:
        """How many addresses of a pool may be a live pod's: those of pods that exist, and those whose
        owner cannot be told (no `namespace/name` podref, an entry or a pool that does not decode)."""
        try:
            pool = decode_pool(obj, str(sp.network))
        except CorruptPool:
            allocations = dig(obj, "spec", "allocations")
            return len(allocations) if isinstance(allocations, dict) else 1
        return len(pool.undecodable) + sum(1 for a in pool.allocations.values()
                                           if "/" not in a.podref or self._pod_exists(a.podref))

    def _desired(self, name: str, owners: list[Owner], obj: dict[str, Any] | None) -> dict[str, str] | None:
        """The spec all `owners` agree on; when they disagree, the stored one (no re-slicing), else none."""
        specs = {json.dumps(o.spec.spec, sort_keys=True) for o in owners}
        if len(specs) == 1:
            self.reported.pop((name, "conflict"), None)
            return owners[0].spec.spec
        asks = {f"{o.nad.namespace}/{o.nad.name}": o.spec.spec for o in owners}
        self._report(name, "conflict", "NADs of one network ask for different slicing: left as it is",
                     level="error", node_slice_pool=name, asks=asks)
        spec = (obj or {}).get("spec")
        return {"range": spec.get("range"), "sliceSize": spec.get("sliceSize")} if isinstance(spec, dict) else None

    def _sync(self, name: str, owners: list[Owner], obj: dict[str, Any] | None, nodes: set[str],
              undecided: set[str], found_pools: list[tuple[SlicePool, dict[str, Any]]]
              ) -> list[dict[str, Any]] | None:
        """Write the NodeSlicePool `name`; its `status.allocations` as stored now (None: undecided)."""
        desired = self._desired(name, owners, obj)
        if desired is None:
            return None
        network_names = sorted({o.spec.network_name for o in owners})
        # Owner references only while every asking NAD is of the pool's namespace: the garbage collector
        # deletes a pool whose referenced owners are all gone, even while a NAD elsewhere still asks for it.
        local = ([(o.nad.name, o.nad.uid) for o in owners]
                 if all(o.nad.namespace == self.kube.namespace for o in owners) else [])
        asking = {o.nad.uid: f"{o.nad.namespace}/{o.nad.name}" for o in owners}
        for _ in range(CONFLICT_RETRIES):
            self._check_leading()
            if obj is None:
                busy = self._busy(found_pools, set())
                allocations = fresh_allocations(desired, nodes, list(busy))
                self._report_withheld(name, desired, allocations, busy, nodes)
                body = {"apiVersion": API_VERSION, "kind": KIND,
                        "metadata": {"name": name, "namespace": self.kube.namespace,
                                     "annotations": {OWNERS_ANNOTATION: _owners_text(asking)},
                                     **({"ownerReferences": owner_references([], local)} if local else {})},
                        "spec": desired, "status": {"allocations": allocations}}
                if self.kube.create(PLURAL, body) is not None:
                    log.info("created", node_slice_pool=name, spec=desired, nodes=_assigned(allocations))
                    return allocations
                obj = self.kube.get(PLURAL, name)  # made meanwhile: start from it
                continue
            before = list((obj.get("status") or {}).get("allocations") or [])
            spec = obj.get("spec") or {}
            if {"range": spec.get("range"), "sliceSize": spec.get("sliceSize")} != desired:
                busy = self._busy(found_pools, set())
                superseded = _superseded(before, network_names)
                allocations = fresh_allocations(desired, nodes, list(busy) + superseded)
                if superseded:
                    # An ADD that read the old slicing may still write into its slice after the pool listing
                    # this pass decided on: what overlaps the old slices waits for a pass that lists after.
                    self.withholding = True
                    log.info("slices overlapping the old slicing withheld until the next pass",
                             node_slice_pool=name, old=[str(sp.network) for sp in superseded])
                why = f"range or slice size changed from {spec.get('range')} {spec.get('sliceSize')}"
            else:
                # The pools nodes are on now keep their slices: only the others are looked into.
                busy = self._busy(found_pools, _on(before, network_names))
                held = self._held_nodes(name, network_names, unassigned_nodes(before, nodes))
                allocations = assign(unassign(before, nodes, held), nodes, list(busy))
                why = "nodes changed"
            self._report_withheld(name, desired, allocations, busy, nodes)
            meta = obj["metadata"]
            stale = set(nad_owner_uids(obj)) - {uid for _, uid in local} - (undecided if local else set())
            refs = owner_references(list(meta.get("ownerReferences") or []), local, stale) or None
            kept = {u: ref for u, ref in annotated_owners(obj).items() if u in undecided}
            annotations = {**(meta.get("annotations") or {}), OWNERS_ANNOTATION: _owners_text({**kept, **asking})}
            if (allocations, refs, annotations, spec) == (before, meta.get("ownerReferences"),
                                                          meta.get("annotations"), desired):
                return allocations
            new = {**obj, "metadata": {**meta, "ownerReferences": refs, "annotations": annotations},
                   "spec": desired, "status": {"allocations": allocations}}
            if refs is None:  # stored without the key: an empty list would differ on every pass
                del new["metadata"]["ownerReferences"]
            if self.kube.replace(PLURAL, new) is not None:
                log.info("updated", node_slice_pool=name, why=why, spec=desired, nodes=_assigned(allocations),
                         freed=sorted(_assigned(before).keys() - _assigned(allocations).keys()))
                return allocations
            obj = self.kube.get(PLURAL, name)  # changed or deleted meanwhile: decide again on what is stored
        log.warning("gave up for now: the pool kept changing", node_slice_pool=name)
        return None

    def _busy(self, found_pools: list[tuple[SlicePool, dict[str, Any]]], skip: set[str]) -> dict[SlicePool, int]:
        """The slice pools (but those named in `skip`) holding addresses that may be live, with their count."""
        counts = {sp: self._live_addresses(obj, sp) for sp, obj in found_pools if sp.name not in skip}
        return {sp: n for sp, n in counts.items() if n}

    def _report_withheld(self, name: str, desired: dict[str, str], allocations: list[dict[str, Any]],
                         busy: dict[SlicePool, int], nodes: set[str]) -> None:
        """Log what old slice pools with live addresses keep from the nodes (and when they stop), a slice
        that overlaps one anyway (the Go controller gives such slices), and the nodes left without a slice."""
        prefix = parse_slice_size(desired["sliceSize"])
        on = {a.get("sliceRange"): a.get("nodeName") or "" for a in allocations}
        now: set[tuple[str, str]] = set()
        for sp, live in busy.items():
            over = [(r, on[r]) for r in slices_over(sp.network, prefix) if r in on]
            withheld = [r for r, node in over if not node]
            clash = [f"{node} {r}" for r, node in over if node and (node, r) != (sp.node, str(sp.network))]
            subject = f"{name}/{sp.name}"
            if withheld:
                now.add((subject, "withheld"))
                self._report(subject, "withheld", "slice withheld: an old slice pool holds live addresses there",
                             level="info", node_slice_pool=name, old_pool=sp.name, addresses=live, slices=withheld)
            if clash:
                now.add((subject, "clash"))
                self._report(subject, "clash", "a node's slice overlaps an old slice pool holding live addresses: "
                             "an address may be handed out twice", level="error", node_slice_pool=name,
                             old_pool=sp.name, addresses=live, slices=clash)
        for key in [k for k in self.reported if k[1] in ("withheld", "clash") and k[0].startswith(f"{name}/")]:
            if key not in now:
                del self.reported[key]
                if key[1] == "withheld":
                    log.info("slice no longer withheld: the old slice pool holds no live address",
                             node_slice_pool=name, old_pool=key[0][len(name) + 1:])
        self.withholding = self.withholding or bool(now)
        waiting = sorted(nodes - set(on.values()))
        if waiting:
            self._report(name, "waiting", "nodes wait for a slice: every free slice is withheld or taken",
                         node_slice_pool=name, nodes=waiting)
        else:
            self.reported.pop((name, "waiting"), None)

    def _delete_drained(self, drained: dict[str, dict[str, Any]], current: set[str]) -> None:
        """Delete the empty slice pools no node is on, as they were read: a write since keeps them."""
        for name, obj in sorted(drained.items()):
            if name in current:
                continue
            self._check_leading()
            if self.kube.delete(POOLS, name, obj["metadata"]["resourceVersion"]):
                log.info("deleted an empty old slice pool", ippool=name, range=dig(obj, "spec", "range"))

    def _held_nodes(self, name: str, network_names: list[str], gone: list[tuple[str, str]]) -> set[str]:
        """The gone nodes whose slice must stay theirs: its IPPool still holds an address of a live pod."""
        held = set()
        for node, cidr in gone:
            why = self._holder(network_names, node, cidr)
            if why:
                held.add(node)
                self.held.add((name, node))
                self._report(f"{name}/{node}", "held", "kept the slice of a deleted node", level="info",
                             node_slice_pool=name, node=node, slice=cidr, why=why)
            else:
                self.reported.pop((f"{name}/{node}", "held"), None)
        return held

    def _holder(self, network_names: list[str], node: str, cidr: str) -> str:
        """Why the slice `cidr` of `node` must be kept ("" when it may be freed)."""
        for network_name in network_names:
            pool_name = slice_pool_name(network_name, node, cidr)
            obj = self.kube.get(POOLS, pool_name)
            if obj is None:
                continue
            try:
                pool = decode_pool(obj, (obj.get("spec") or {}).get("range"))
            except CorruptPool as e:
                return f"IPPool {pool_name} cannot be read ({e.msg})"
            if pool.undecodable:
                return f"IPPool {pool_name} has entries that cannot be read: {', '.join(pool.undecodable)}"
            for podref in sorted({a.podref for a in pool.allocations.values() if a.podref}):
                if "/" in podref and self._pod_exists(podref):
                    return f"pod {podref} still holds an address in IPPool {pool_name}"
        return ""

    def _delete(self, obj: dict[str, Any]) -> None:
        self._check_leading()
        meta = obj["metadata"]
        if self.kube.delete(PLURAL, meta["name"], meta["resourceVersion"]):
            log.info("deleted: no NAD asks for it any more", node_slice_pool=meta["name"])


def _slice_pools(network_names: list[str], network: str, ippools: list[dict[str, Any]]
                 ) -> list[tuple[SlicePool, dict[str, Any]]]:
    """Every slice pool of the network (any node, any slice size inside its range), with its object."""
    rng = ipaddress.ip_network(network)
    found = []
    for obj in ippools:
        sp = next((p for n in network_names if (p := slice_pool_of(obj, n, rng)) is not None), None)
        if sp is not None:
            found.append((sp, obj))
    return found


def _on(allocations: list[dict[str, Any]], network_names: list[str]) -> set[str]:
    """The names of the slice pools that nodes are on in `allocations`."""
    return {slice_pool_name(n, a["nodeName"], a.get("sliceRange", ""))
            for a in allocations if a.get("nodeName") for n in network_names}


def _superseded(allocations: list[dict[str, Any]], network_names: list[str]) -> list[SlicePool]:
    """The slices a slicing gave to nodes, as the pools they stand for (empty or not yet made)."""
    out = []
    for a in allocations:
        node, cidr = a.get("nodeName"), a.get("sliceRange")
        try:
            net = ipaddress.ip_network(str(cidr))
        except ValueError:
            continue
        if node:
            out.append(SlicePool(slice_pool_name(network_names[0] if network_names else "", node, str(net)), node, net))
    return out


def _owners_text(owners: dict[str, str]) -> str:
    return json.dumps(dict(sorted(owners.items())), separators=(",", ":"))


def _assigned(allocations: list[dict[str, Any]]) -> dict[str, str]:
    return {a["nodeName"]: a.get("sliceRange", "") for a in allocations if a.get("nodeName")}


# --- the command -------------------------------------------------------------------------


def configure_logging(debug: bool) -> None:
    """JSON lines on stderr, one per event, as the cluster's log collectors expect."""
    import logging

    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.EventRenamer("msg"), structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if debug else logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr), cache_logger_on_first_use=True)


def run(args: Any, kube: Kube) -> int:
    """Watch, elect, and reconcile until SIGTERM or SIGINT; then release the Lease and exit 0."""
    from kubernetes import client

    configure_logging(args.debug)
    stop, wake = threading.Event(), threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: (stop.set(), wake.set()))
    custom, core = client.CustomObjectsApi(kube.api), client.CoreV1Api(kube.api)
    nads = Mirror("NetworkAttachmentDefinition",
                  lambda **kw: custom.list_cluster_custom_object(NAD_GROUP, NAD_VERSION, NAD_PLURAL, **kw),
                  keep_nad, wake.set, stop, kube.timeout)
    nodes = Mirror("Node", core.list_node, presence, wake.set, stop, kube.timeout)
    identity = f"{socket.gethostname()}_{uuid.uuid4().hex[:12]}"
    elector = Elector(kube, args.lease_name, identity, args.lease_duration, args.renew_deadline,
                      args.retry_period, wake.set, stop)
    log.info("starting", namespace=kube.namespace, lease=args.lease_name, identity=identity, nad_kind=NAD_KIND)
    for target in (nads.run, nodes.run, elector.run):
        threading.Thread(target=target, daemon=True).start()
    controller = NodeSlices(kube, nads, nodes, elector.leading)
    due: float | None = None  # seconds until the next pass without an event
    backoff = 0.5
    while not stop.is_set():
        wake.wait(due)
        wake.clear()
        if stop.is_set():
            break
        if not (elector.leading.is_set() and nads.synced.is_set() and nodes.synced.is_set()):
            due = None
            continue
        try:
            holding = controller.reconcile()
            due, backoff = (args.recheck_interval if holding else args.resync_interval), 0.5
        except NotLeader:
            due = None
        except KubeError as e:
            log.error("pass failed, trying again", error=str(e), retry_in=backoff)
            due, backoff = backoff, min(MAX_BACKOFF, backoff * 2)
    elector.release()
    log.info("stopped")
    return 0

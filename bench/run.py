"""Side-by-side benchmark of this plugin and the Go whereabouts plugin, in every allocation mode, on one
local control plane.

    .venv/bin/python bench/run.py --quick     # a few minutes (CI): smaller counts, every mode
    .venv/bin/python bench/run.py --full      # the figures in the README
    .venv/bin/python bench/run.py --modes go-default,ours-blocks --scenarios burst

Modes: go-default (the Go plugin, one pool and one Lease per range), go-fast (the Go plugin with
`node_slice_size`, its nodeslicecontroller running), ours-default, ours-slices (ours with
`node_slice_size`, our `whereabouts node-slices` controller running) and ours-blocks (`block_size: 32`).
Scenarios: single (cold ADD / DEL one at a time), burst (many ADDs from 10 nodes, 10 at a time per node),
pods (Go issue #313: pods of 16 interfaces, each pod's ADDs in sequence), one-node (one node's share of
the burst alone: what a node sees when the plugin's CPU is not shared with nine others), scale (a /16
pre-filled) and memory. Plugins run as a runtime runs them (a cold process per call, CNI_* env, config on stdin); every
simulated node has its own NODENAME, config files and node_lock_dir, and each mode its own namespace.
Prints a table and writes report.json, table.txt and chart.png under bench/results/<timestamp>/.
Shared machines are noisy: compare the ratios of one run, not absolute times.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import ipaddress
import json
import math
import os
import platform
import re
import secrets
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GROUP, VERSION = "whereabouts.cni.cncf.io", "v1alpha1"
NAD_GROUP, NAD_VERSION, NAD_PLURAL = "k8s.cni.cncf.io", "v1", "network-attachment-definitions"


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A mode could not be set up for a scenario (no node slice, say): reported in its entry, the run goes on."""


# --- modes and shapes ------------------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    name: str
    plugin: str  # "go" or "ours"
    slices: bool = False
    block_size: int = 0


MODES = {m.name: m for m in (
    Mode("go-default", "go"),
    Mode("go-fast", "go", slices=True),
    Mode("ours-default", "ours"),
    Mode("ours-slices", "ours", slices=True),
    Mode("ours-blocks", "ours", block_size=32),
)}
SCENARIOS = ("single", "burst", "pods", "one-node", "scale", "memory")


@dataclass(frozen=True)
class Shape:
    """Where a scenario allocates: `prefix` is the range of the default and block modes (big enough for all
    its ADDs); the slice modes cut a range into `/slice_prefix` slices, one per node, each big enough
    for one node's ADDs, and that range is widened until every Node of the cluster gets a slice
    (the controllers give one to each Node, in no fixed order)."""
    name: str
    base: str
    prefix: int
    slice_prefix: int

    def cidr(self, mode: Mode, nodes_in_cluster: int) -> str:
        prefix = self.prefix
        if mode.slices:
            prefix = min(prefix, self.slice_prefix - math.ceil(math.log2(max(nodes_in_cluster, 2))))
        return str(ipaddress.ip_network(f"{self.base}/{prefix}"))


SHAPES = {s.name: s for s in (
    Shape("single", "10.60.0.0", 24, 26),
    # 1,000 ADDs into one /22 (1,022 usable); a node takes 100, a /25 slice holds 126.
    Shape("burst", "10.70.0.0", 22, 25),
    # 64 x 16 = 1,024 ADDs need a /21; a node takes 256, a /23 slice holds 510.
    Shape("pods", "10.80.0.0", 21, 23),
    # One node's share of the burst (100 ADDs, 10 at a time) with the machine to itself.
    Shape("one-node", "10.90.0.0", 24, 25),
)}


# --- setup -----------------------------------------------------------------------------


def sh(*argv: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, env=env, text=True)
    if proc.returncode != 0:
        sys.exit(f"[bench] failed: {' '.join(argv)}")
    return proc.stdout


def cluster_env() -> tuple[dict[str, str], bool]:
    """Exports of the running local control plane (started by hack/cluster.sh if needed), and
    whether it was started here (and so is to be stopped at the end)."""
    running = subprocess.run(["bash", "hack/cluster.sh", "status"], cwd=ROOT, capture_output=True).returncode == 0
    exports = {}
    for line in sh("bash", "hack/cluster.sh", "up").splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            exports[key] = value.strip("'\"")
    return exports, not running


def our_plugin(rev: str | None = None) -> list[str]:
    """Our plugin as a node has it: the single folder `hack/build.sh` makes (what the image ships),
    of this checkout or, with `rev`, of that git revision (for before/after figures in one run;
    built with this checkout's build.sh), from a regular (non-editable) install. A revision
    without hack/build.sh runs from the install's console script."""
    venv = ROOT / "build" / ("bench-venv" if rev is None else "bench-baseline-venv")
    if not (venv / "bin" / "python").exists():
        say(f"creating {venv.relative_to(ROOT)}")
        sh(sys.executable, "-m", "venv", str(venv))
    src = ROOT
    if rev is not None:
        src = ROOT / "build" / "bench-baseline-src"
        subprocess.run(["rm", "-rf", str(src)], check=True)
        src.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", rev], cwd=ROOT, stdout=subprocess.PIPE, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    say(f"installing {'this checkout' if rev is None else rev} into {venv.relative_to(ROOT)}")
    sh(str(venv / "bin" / "pip"), "install", "-q", "--no-warn-script-location", "--force-reinstall", "--no-deps",
       f"{src}")
    sh(str(venv / "bin" / "pip"), "install", "-q", "--no-warn-script-location", f"{src}")
    # A node needs no setuptools, whose .pth hook would run at every start.
    subprocess.run([str(venv / "bin" / "pip"), "uninstall", "-q", "-y", "setuptools"], cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not (src / "hack" / "build.sh").exists():
        return [str(venv / "bin" / "whereabouts")]
    if rev is not None:  # the same packaging for both: this checkout's build.sh (its spec keeps setuptools out)
        for part in ("build.sh", "lib/common.sh"):  # build.sh and the helpers it sources
            (src / "hack" / part).parent.mkdir(parents=True, exist_ok=True)
            (src / "hack" / part).write_bytes((ROOT / "hack" / part).read_bytes())
    say(f"building the single folder of {'this checkout' if rev is None else rev} (hack/build.sh)")
    proc = subprocess.run(["bash", str(src / "hack" / "build.sh"), "--no-bench"], cwd=src,
                          env={**os.environ, "PYTHON": str(venv / "bin" / "python")},
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"[bench] hack/build.sh failed:\n{proc.stderr[-2000:]}")
    return [str(src / "dist" / "cni-bin" / "whereabouts")]


def go_plugin() -> tuple[list[str], str]:
    path = sh("bash", "hack/build-go-whereabouts.sh").strip().splitlines()[-1]
    version = Path(path).parent.name.removeprefix("go-whereabouts-")
    return [path], version


class Cluster:
    def __init__(self, env: dict[str, str]) -> None:
        from kubernetes import client, config

        self.env = env
        self.api = config.new_client_from_config(config_file=env["WHEREABOUTS_KUBECONFIG"])
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.token = secrets.token_hex(3)
        self.workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"wb-bench-{self.token}"
        self.workdir.mkdir(parents=True)
        self.namespaces: list[str] = []
        self.nodes: list[str] = []

    def namespace(self, prefix: str) -> str:
        """A fresh namespace, deleted by `cleanup`."""
        from kubernetes import client

        name = f"{prefix}-{secrets.token_hex(3)}"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        self.namespaces.append(name)
        return name

    def node_files(self, namespace: str, d: Path) -> Path:
        """What a node has in `d`: a kubeconfig whose context points at `namespace`, and the flat file
        naming it (the Go plugin needs one). Returns the flat file."""
        d.mkdir(parents=True, exist_ok=True)
        kubeconfig = d / "kubeconfig"
        # JSON, as the DaemonSet's installer writes it (a YAML kubeconfig costs the plugin a YAML import).
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "b",
            "clusters": [{"name": "c", "cluster": {"server": self.env["WHEREABOUTS_APISERVER"],
                                                  "certificate-authority": self.env["WHEREABOUTS_CA_FILE"]}}],
            "users": [{"name": "u", "user": {"token": self.env["WHEREABOUTS_ADMIN_TOKEN"]}}],
            "contexts": [{"name": "b", "context": {"cluster": "c", "user": "u", "namespace": namespace}}]}))
        flat = d / "whereabouts.conf"
        flat.write_text(json.dumps({"datastore": "kubernetes", "kubernetes": {"kubeconfig": str(kubeconfig)}}))
        return flat

    def create_nodes(self, count: int) -> list[str]:
        """Node objects for the simulated nodes (the slice controllers give slices to Nodes), named apart
        from any other user's of this shared API server."""
        from kubernetes import client

        names = [f"bench{self.token}-node-{i}" for i in range(count)]
        for name in names:
            self.core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name, labels={"bench": "1"})))
            self.nodes.append(name)
        return names

    def node_count(self) -> int:
        return len(self.core.list_node().items)

    def pools(self, namespace: str) -> list[dict[str, Any]]:
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "ippools")["items"]

    def put_pool(self, namespace: str, name: str, cidr: str, allocations: dict[str, Any],
                 metadata: dict[str, Any] | None = None) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "IPPool",
                "metadata": {**(metadata or {}), "name": name},
                "spec": {"range": cidr, "allocations": allocations}}
        self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "ippools", body)

    def create_nad(self, namespace: str, name: str, conf: dict[str, Any]) -> None:
        body = {"apiVersion": f"{NAD_GROUP}/{NAD_VERSION}", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": name}, "spec": {"config": json.dumps(conf)}}
        self.custom.create_namespaced_custom_object(NAD_GROUP, NAD_VERSION, namespace, NAD_PLURAL, body)

    def slices_of(self, namespace: str, name: str) -> dict[str, str]:
        """node -> slice CIDR of the NodeSlicePool `name`, empty while it does not exist."""
        from kubernetes.client.exceptions import ApiException

        try:
            obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "nodeslicepools", name)
        except ApiException as e:
            if e.status == 404:
                return {}
            raise
        return {a["nodeName"]: a["sliceRange"] for a in (obj.get("status") or {}).get("allocations") or []
                if a.get("nodeName")}

    def cleanup(self) -> None:
        """Delete what this run created (the namespace controller removes their contents later)."""
        for name in self.namespaces:
            self.core.delete_namespace(name)
        for name in self.nodes:
            self.core.delete_node(name)


class ApiCounter:
    """kube-apiserver's `apiserver_request_total` for the resources the plugins use, by verb: the delta
    around a scenario is what its invocations asked (controllers are idle then; other users of the shared
    API server would count too, which `other` shows as requests on every other resource)."""

    RESOURCES = frozenset({"ippools", "overlappingrangeipreservations", "nodeslicepools", "leases"})

    def __init__(self, env: dict[str, str]) -> None:
        self.url = env["WHEREABOUTS_APISERVER"] + "/metrics"
        self.headers = {"Authorization": "Bearer " + env["WHEREABOUTS_ADMIN_TOKEN"]}
        self.ctx = ssl.create_default_context(cafile=env["WHEREABOUTS_CA_FILE"])

    def scrape(self) -> Counter[str]:
        """verb -> requests so far on RESOURCES; the key `other` sums every other resource."""
        req = urllib.request.Request(self.url, headers=self.headers)
        with urllib.request.urlopen(req, context=self.ctx, timeout=30) as r:
            text = r.read().decode()
        counts: Counter[str] = Counter()
        for line in text.splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels_text, _, value = line.rpartition(" ")
            labels = dict(re.findall(r'(\w+)="([^"]*)"', labels_text))
            mine = labels.get("resource") in self.RESOURCES
            # A DELETE of a whole collection is the namespace controller emptying a deleted namespace.
            mine = mine and not (labels.get("verb") == "DELETE" and labels.get("scope") == "namespace")
            key = labels.get("verb", "?") if mine else "other"
            counts[key] += int(float(value))
        return counts


# --- one invocation --------------------------------------------------------------------


@dataclass
class Call:
    seconds: float
    rc: int
    out: dict[str, Any]
    cpu: float  # user + system seconds of the plugin process, all its threads
    max_rss_kb: int


def invoke(argv: list[str], conf: dict[str, Any], command: str, cid: str, node: str = "node0",
           ifname: str = "net1", memory: bool = False) -> Call:
    """One cold call, reaped with wait4 for its CPU time. With `memory`, under GNU time for the peak
    resident memory of the plugin process alone (the rusage of a child forked from this large Python
    process would report our own size)."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "CNI_PATH": "/usr/lib/cni", "CNI_COMMAND": command,
           "CNI_CONTAINERID": cid, "CNI_NETNS": "/var/run/netns/bench", "CNI_IFNAME": ifname, "NODENAME": node,
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid};K8S_POD_INFRA_CONTAINER_ID={cid}"}
    cmd = ["/usr/bin/time", "-f", "maxrss=%M", *argv] if memory else argv
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err if memory else subprocess.DEVNULL)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps(conf).encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            out = proc.stdout.read()
            proc.stdout.close()
        finally:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    try:
        doc = json.loads(out) if out.strip() else {}
    except ValueError:
        doc = {"msg": out.decode(errors="replace")[:200]}
    rss = [int(line.split("=", 1)[1]) for line in stderr.splitlines() if line.startswith("maxrss=")]
    return Call(seconds, proc.returncode, doc, usage.ru_utime + usage.ru_stime, rss[-1] if rss else 0)


def conf_for(flat: Path, cidr: str, lock_dir: Path, **ipam: Any) -> dict[str, Any]:
    return {"cniVersion": "0.3.1", "name": "bench", "type": "macvlan",
            "ipam": {"type": "whereabouts", "range": cidr, "configuration_path": str(flat),
                     "node_lock_dir": str(lock_dir), **ipam}}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


# --- one mode, set up --------------------------------------------------------------------


class ModeRun:
    """A mode on the cluster: its namespace, each simulated node's files, the NADs and NodeSlicePools of
    the slice modes and the controller that makes them."""

    def __init__(self, cluster: Cluster, mode: Mode, argv: list[str], nodes: list[str]) -> None:
        self.cluster, self.mode, self.argv, self.nodes = cluster, mode, argv, nodes
        self.ns = cluster.namespace(f"bench-{mode.name}")
        self.dir = cluster.workdir / mode.name
        self.flats = [cluster.node_files(self.ns, self.dir / node) for node in nodes]
        self.cidrs: dict[str, str] = {}
        self.controller: subprocess.Popen[bytes] | None = None

    def network(self, shape: Shape) -> str:
        return f"{self.mode.name}-{shape.name}"

    def conf(self, shape: Shape, node: int, **extra: Any) -> dict[str, Any]:
        """Node `node`'s config of this mode for `shape` (its own files and lock dir)."""
        ipam: dict[str, Any] = {"network_name": self.network(shape), **extra}
        if self.mode.slices:
            ipam["node_slice_size"] = f"/{shape.slice_prefix}"
        if self.mode.block_size:
            ipam["block_size"] = self.mode.block_size
        return conf_for(self.flats[node], self.cidrs[shape.name], self.dir / self.nodes[node] / "locks", **ipam)

    def prepare(self, shapes: list[Shape], controller: list[str] | None, nodes_in_cluster: int) -> None:
        """Choose each shape's range; for the slice modes start `controller` and create one NAD per shape."""
        for shape in shapes:
            self.cidrs[shape.name] = shape.cidr(self.mode, nodes_in_cluster)
        if not self.mode.slices:
            return
        assert controller is not None
        log = (self.dir / "controller.log").open("wb")
        self.controller = subprocess.Popen(
            [*controller, *self._controller_args(controller)], stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "WHEREABOUTS_NAMESPACE": self.ns})
        for shape in shapes:
            self.cluster.create_nad(self.ns, self.network(shape), self.conf(shape, 0))

    def _controller_args(self, controller: list[str]) -> list[str]:
        kubeconfig = str(self.flats[0].parent / "kubeconfig")
        if Path(controller[0]).name == "nodeslicecontroller":
            return ["-kubeconfig", kubeconfig]
        # Its leader renews every 60 s rather than every 2 s: those Lease requests would count as the plugins'.
        return ["--kubeconfig", kubeconfig, "-n", self.ns, "node-slices",
                "--lease-duration", "120", "--renew-deadline", "100", "--retry-period", "60"]

    def wait_for_slices(self, shapes: list[Shape], timeout: float = 90) -> None:
        """Until every simulated node has a slice of every shape's range."""
        deadline = time.monotonic() + timeout
        for shape in shapes:
            while True:
                have = self.cluster.slices_of(self.ns, self.network(shape))
                missing = [n for n in self.nodes if n not in have]
                if not missing:
                    break
                if self.controller is not None and self.controller.poll() is not None:
                    raise BenchError(f"{self.mode.name}: the controller exited ({self.dir / 'controller.log'})")
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.mode.name}: no slice of {self.cidrs[shape.name]} for "
                                     f"{len(missing)} node(s) after {timeout:.0f}s")
                time.sleep(0.5)

    def stop(self) -> None:
        if self.controller is not None and self.controller.poll() is None:
            self.controller.terminate()
            try:
                self.controller.wait(10)
            except subprocess.TimeoutExpired:
                self.controller.kill()
                self.controller.wait()


# --- scenarios -------------------------------------------------------------------------


Request = tuple[str, str]  # (container id, ifname): one ADD


def check_pools(cluster: Cluster, ns: str, cidr: str, handed: list[str]) -> dict[str, int]:
    """What the stored pools of `cidr` hold against the addresses the ADDs returned: addresses stored
    twice or returned twice, and returned ones missing from the pools."""
    within = ipaddress.ip_network(cidr)
    stored: list[str] = []
    for pool in cluster.pools(ns):
        spec = pool.get("spec") or {}
        try:
            net = ipaddress.ip_network(spec.get("range", ""), strict=False)
        except ValueError:
            continue
        if net.version != within.version or not net.subnet_of(within):  # type: ignore[arg-type]
            continue
        stored += [str(net.network_address + int(off)) for off in spec.get("allocations") or {}]
    twice = sum(c - 1 for c in Counter(stored).values()) + sum(c - 1 for c in Counter(handed).values())
    return {"stored": len(stored), "duplicates": twice, "not_stored": len(set(handed) - set(stored))}


VERB_LETTERS = {"GET": "G", "LIST": "L", "WATCH": "W", "POST": "C", "PUT": "U", "PATCH": "P", "DELETE": "D"}


def per_verb(delta: Counter[str], calls: int) -> dict[str, float]:
    order = [*VERB_LETTERS, *sorted(set(delta) - set(VERB_LETTERS) - {"other"})]
    return {verb: round(delta[verb] / calls, 2) for verb in order if delta[verb] > 0}


def median_per_call(windows: list[Counter[str]]) -> dict[str, float]:
    """Per verb, the median over windows of one call each: another client of a shared API server lands
    in some windows, not in most, where a sum over all of them would count it."""
    verbs = [*VERB_LETTERS, *sorted({v for w in windows for v in w} - set(VERB_LETTERS) - {"other"})]
    medians = {verb: statistics.median(w[verb] for w in windows) for verb in verbs}
    return {verb: n for verb, n in medians.items() if n}


def load(cluster: Cluster, counter: ApiCounter, run: ModeRun, shape: Shape, units: dict[int, list[list[Request]]],
         concurrency: int) -> dict[str, Any]:
    """Each node k runs its `units[k]` (a unit: ADDs in sequence, e.g. one pod's interfaces), `concurrency`
    units at a time, all nodes at once."""
    confs = {k: run.conf(shape, k) for k in units}
    results: list[tuple[float, float, Call]] = []
    lock = threading.Lock()
    before = counter.scrape()
    t0 = time.perf_counter()

    def worker(k: int, queue: collections.deque[list[Request]]) -> None:
        while True:
            try:
                unit = queue.popleft()
            except IndexError:
                return
            for cid, ifname in unit:
                start = time.perf_counter() - t0
                call = invoke(run.argv, confs[k], "ADD", cid, node=run.nodes[k], ifname=ifname)
                with lock:
                    results.append((start, start + call.seconds, call))

    threads = []
    for k, node_units in units.items():
        queue = collections.deque(node_units)
        threads += [threading.Thread(target=worker, args=(k, queue)) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    delta = counter.scrape() - before
    ok = [c for _, _, c in results if c.rc == 0]
    handed = [c.out["ips"][0]["address"].split("/")[0] for c in ok if c.out.get("ips")]
    lat = [c.seconds for _, _, c in results]
    errors = Counter(str(c.out.get("msg", ""))[:80] for _, _, c in results if c.rc != 0)
    return {"adds": len(results), "nodes": len(units), "concurrency": concurrency, "range": run.cidrs[shape.name],
            "wall": wall, "ok": len(ok), "failures": len(results) - len(ok),
            **check_pools(cluster, run.ns, run.cidrs[shape.name], handed),
            "p50": statistics.median(lat), "p99": pct(lat, 99),
            "cpu_per_add": sum(c.cpu for _, _, c in results) / len(results),
            "requests_per_add": per_verb(delta, len(results)), "other_requests": delta["other"],
            "errors": dict(errors.most_common(3)),
            "timeline": sorted((round(s, 3), round(e, 3), c.rc) for s, e, c in results)}


def burst(cluster: Cluster, counter: ApiCounter, run: ModeRun, total: int, nodes: int,
          per_node: int) -> dict[str, Any]:
    """`total` single-interface ADDs from `nodes` nodes, `per_node` at a time per node, into one range."""
    units = {k: [[(f"b{i}", "net1")] for i in range(total) if i % nodes == k] for k in range(nodes)}
    return load(cluster, counter, run, SHAPES["burst"], units, per_node)


def pods(cluster: Cluster, counter: ApiCounter, run: ModeRun, count: int, interfaces: int, nodes: int,
         per_node: int) -> dict[str, Any]:
    """Go issue #313 scaled: `count` pods of `interfaces` interfaces each (one container id, net1..netN
    in sequence, as Multus calls them) from `nodes` nodes, `per_node` pods at a time per node."""
    units = {k: [[(f"p{p}", f"net{j}") for j in range(1, interfaces + 1)] for p in range(count) if p % nodes == k]
             for k in range(nodes)}
    return load(cluster, counter, run, SHAPES["pods"], units, per_node)


SINGLE = ("ADD", "DEL", "ADD with log_file")


def single(cluster: Cluster, counter: ApiCounter, runs: dict[str, ModeRun], n: int, counted: int) -> dict[str, Any]:
    """Cold ADD then DEL, modes interleaved (the order rotating), each on its own pool; then the same
    ADD with a `log_file` (level verbose), as most installs run it. Then, mode by mode, `counted` ADDs
    (whose addresses are checked against the pools) and their DELs, with the API server's request
    counter read around each call."""
    shape = SHAPES["single"]
    times: dict[str, dict[str, list[Call]]] = {name: {what: [] for what in SINGLE} for name in runs}
    names = list(runs)
    for i in range(n):
        for name in names[i % len(names):] + names[:i % len(names)]:
            run = runs[name]
            conf = run.conf(shape, 0)
            logged = run.conf(shape, 0, log_file=str(run.dir / "single.log"), log_level="verbose")
            for what, verb, c in (("ADD", "ADD", conf), ("DEL", "DEL", conf),
                                  ("ADD with log_file", "ADD", logged), (None, "DEL", logged)):
                call = invoke(run.argv, c, verb, f"s{i}", node=run.nodes[0])
                if what:
                    times[name][what].append(call)
    out: dict[str, Any] = {}
    for name, run in runs.items():
        conf = run.conf(shape, 0)
        requests, held = {}, {}
        for verb in ("ADD", "DEL"):
            calls, windows = [], []
            last = counter.scrape()
            for j in range(counted):
                calls.append(invoke(run.argv, conf, verb, f"c{j}", node=run.nodes[0]))
                now = counter.scrape()
                windows.append(now - last)
                last = now
            requests[verb] = median_per_call(windows)
            if verb == "ADD":
                handed = [c.out["ips"][0]["address"].split("/")[0] for c in calls if c.rc == 0 and c.out.get("ips")]
                held = check_pools(cluster, run.ns, run.cidrs[shape.name], handed)
        for what in SINGLE:
            calls = times[name][what]
            lat = [c.seconds for c in calls]
            out[f"{name} {what}"] = {
                "n": len(calls), "wall": sum(lat), "p50": statistics.median(lat), "p90": pct(lat, 90),
                "p99": pct(lat, 99), "failures": sum(c.rc != 0 for c in calls), "duplicates": held["duplicates"],
                "cpu_per_add": sum(c.cpu for c in calls) / len(calls), "range": run.cidrs[shape.name],
                "requests_per_add": requests.get(what, {}), "samples": lat}
    return out


def scale(cluster: Cluster, argv: list[str], name: str, live_counts: list[int], samples: int,
          block_size: int | None) -> dict[str, Any]:
    """ADD latency in a /16 pre-filled to each count of live allocations (written directly)."""
    from whereabouts.core.blocks import Layout
    from whereabouts.plugin.config import parse_range

    out: dict[str, Any] = {"block_size": block_size}
    rng = parse_range("range", "10.62.0.0/16")
    for live in live_counts:
        ns = cluster.namespace(f"scale-{name}")
        flat = cluster.node_files(ns, cluster.workdir / ns)
        layout = Layout(rng, "", block_size or 0)
        by_block: dict[str, dict[str, Any]] = {}
        # Spread evenly, as owners' hashed home blocks fill a block layout (and as any fill looks to one pool).
        offsets = [rng.first + i * rng.size // live for i in range(live)]
        for off in offsets:
            blk = layout.block_of(rng.address(off))
            entry = {"id": f"{secrets.token_hex(32)}", "podref": f"bench/pre-{off}", "ifname": "net1"}
            by_block.setdefault(blk.name, {})[str(off - (int(blk.local.network.network_address)
                                                       - int(rng.network.network_address)))] = entry
        try:
            for blk in layout.blocks():
                if blk.name in by_block or layout.sharded:
                    cluster.put_pool(ns, blk.name, blk.local.cidr, by_block.get(blk.name, {}), layout.metadata())
        except Exception as e:  # noqa: BLE001 - an object too large for etcd is a result
            body = getattr(e, "body", None)
            try:
                message = json.loads(body)["message"] if body else str(e)
            except (ValueError, KeyError, TypeError):
                message = str(body or e)
            out[str(live)] = {"error": message[:160]}
            continue
        largest = max(len(json.dumps(p)) for p in cluster.pools(ns))
        conf = conf_for(flat, "10.62.0.0/16", cluster.workdir / f"scale-{name}-{live}",
                        enable_overlapping_ranges=False, **({"block_size": block_size} if block_size else {}))
        lat, fails = [], 0
        for i in range(samples):
            call = invoke(argv, conf, "ADD", f"x{live}-{i}")
            fails += call.rc != 0
            lat.append(call.seconds)
        out[str(live)] = {"median": statistics.median(lat), "failures": fails, "largest_object_bytes": largest}
    return out


def memory(cluster: Cluster, plugins: dict[str, list[str]]) -> dict[str, int]:
    """Peak resident memory (KiB) of one ADD, the largest of three."""
    out = {}
    for name, argv in plugins.items():
        ns = cluster.namespace(f"mem-{name}")
        conf = conf_for(cluster.node_files(ns, cluster.workdir / ns), "10.63.0.0/24", cluster.workdir / f"m-{name}")
        out[name] = max(invoke(argv, conf, "ADD", f"m{i}", memory=True).max_rss_kb for i in range(3))
    return out


# --- output ----------------------------------------------------------------------------


@dataclass
class Report:
    meta: dict[str, Any]
    entries: list[dict[str, Any]] = field(default_factory=list)  # one per mode and scenario
    scale: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)

    def entry(self, mode: str, scenario: str) -> dict[str, Any] | None:
        return next((e for e in self.entries if e["mode"] == mode and e["scenario"] == scenario), None)


def requests_text(per: dict[str, float]) -> str:
    if not per:
        return "-"
    parts = " ".join(f"{VERB_LETTERS.get(v, v)}{n:g}" for v, n in per.items())
    return f"{sum(per.values()):.1f} ({parts})"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def print_table(rep: Report) -> list[str]:
    m = rep.meta
    lines = [f"whereabouts benchmark {m['date']} on {m['machine']}",
             f"ours {m['ours']} ({m['revision']}) vs Go whereabouts {m['go']} ({m['size']}); "
             f"controllers: {m['controllers']}",
             "requests per ADD by verb: G GET, L LIST, W WATCH, C POST, U PUT, P PATCH, D DELETE", ""]
    scenarios = list(dict.fromkeys(e["scenario"] for e in rep.entries))
    for scenario in scenarios:
        load_like = not scenario.startswith("single")
        key = "wall" if load_like else "p50"
        lines.append(f"{scenario}: {m['scenarios'].get(scenario, '')}")
        lines.append(f"  {'mode':13} {'wall s' if load_like else 'n':>7} {'p50 ms':>8} {'p99 ms':>8} "
                     f"{'fail':>5} {'dup':>4} {'cpu ms':>7}  {'vs go-def':>9} {'vs go-fast':>10}  "
                     f"{'range':16} requests per call")
        for e in (e for e in rep.entries if e["scenario"] == scenario):
            if "error" in e:
                lines.append(f"  {e['mode']:13} {e['error']}")
                continue
            base = [rep.entry(g, scenario) for g in ("go-default", "go-fast")]
            vs = [ratio(e[key], b[key]) if b and "error" not in b else "-" for b in base]
            first = f"{e['wall']:.1f}" if load_like else str(e["n"])
            lines.append(f"  {e['mode']:13} {first:>7} {e['p50'] * 1000:>8.1f} "
                         f"{e['p99'] * 1000:>8.1f} {e['failures']:>5} {e['duplicates']:>4} "
                         f"{e['cpu_per_add'] * 1000:>7.1f}  {vs[0]:>9} {vs[1]:>10}  {e.get('range', ''):16} "
                         f"{requests_text(e['requests_per_add'])}")
        lines.append("")
    for name in ("ours", "go"):
        for live, v in rep.scale.get(name, {}).items():
            if live == "block_size":
                continue
            what = f"scale /16, {live} live: ADD median ({name})"
            if "error" in v:
                lines.append(f"{what:44} refused: {v['error'][:60]}")
            else:
                lines.append(f"{what:44} {v['median'] * 1000:9.1f} ms, largest object "
                             f"{v['largest_object_bytes'] / 1024:.0f} KiB, {v['failures']} failed")
    mem = rep.memory
    if mem:
        lines.append(f"{'peak memory of one ADD (MiB)':44} ours {mem['ours'] / 1024:.1f}, Go {mem['go'] / 1024:.1f}, "
                     f"ours/Go {ratio(mem['ours'], mem['go'])}")
    return lines


def chart(rep: Report, path: Path) -> None:
    """Single ADD latencies per mode, and for burst, pods and one-node one timeline per mode: ADDs done over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(24, 5))
    singles = [e for e in rep.entries if e["scenario"] == "single ADD" and "error" not in e]
    if singles:
        axes[0].boxplot([[x * 1000 for x in e["samples"]] for e in singles],
                        tick_labels=[e["mode"].replace("-", "\n") for e in singles])
    axes[0].set_ylabel("ms (cold process)")
    axes[0].set_title("single ADD")
    for ax, scenario in ((axes[1], "burst"), (axes[2], "pods"), (axes[3], "one-node")):
        entries = [e for e in rep.entries if e["scenario"] == scenario and "error" not in e]
        for e in entries:
            ends = sorted(end for _, end, rc in e["timeline"] if rc == 0)
            ax.plot(ends, range(1, len(ends) + 1), label=f"{e['mode']} ({e['wall']:.1f}s, {e['failures']} failed)")
        ax.set_title(textwrap.fill(f"{scenario}: {rep.meta['scenarios'].get(scenario, '')}", 70), fontsize=9)
        ax.set_xlabel("s since start")
        ax.set_ylabel("ADDs done")
        if entries:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --- main --------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small counts, every mode, a few minutes (default)")
    size.add_argument("--full", action="store_true", help="the counts of the targets (tens of minutes)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}")
    parser.add_argument("--out", type=Path, help="results folder (default bench/results/<timestamp>)")
    parser.add_argument("--baseline", metavar="REV", help="also time single ADD/DEL of this git revision of ours")
    args = parser.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    if unknown := sorted(set(args.modes) - set(MODES)) + sorted(set(args.scenarios) - set(SCENARIOS)):
        parser.error(f"unknown mode or scenario: {', '.join(unknown)}")
    env, started = cluster_env()
    try:
        return run_all(args, env)
    finally:
        if started:
            subprocess.run(["bash", "hack/cluster.sh", "down"], cwd=ROOT, stdout=subprocess.DEVNULL)


def our_controller(ours: list[str], go: list[str]) -> list[str]:
    """`whereabouts node-slices` of the installed checkout, or Go's nodeslicecontroller where this
    checkout has none yet (the report says which ran)."""
    probe = subprocess.run([*ours, "node-slices", "--help"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if probe.returncode == 0:
        return ours
    say("this checkout has no `whereabouts node-slices`: ours-slices runs Go's nodeslicecontroller")
    return [str(Path(go[0]).parent / "nodeslicecontroller")]


def revision() -> str:
    """The commit measured; `-dirty` when the working tree (which is what gets installed) differs from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "whereabouts", "setup.cfg"], cwd=ROOT)
    return head.stdout.strip() + ("-dirty" if dirty.returncode else "")


def run_all(args: argparse.Namespace, env: dict[str, str]) -> int:
    full = args.full
    sizes = dict(n=40 if full else 30, counted=20 if full else 10,
                 burst=(1000, 10, 10) if full else (200, 10, 10),
                 pods=(64, 16, 4, 4) if full else (16, 8, 4, 4),
                 live=[100, 10_000, 60_000] if full else [100, 10_000], samples=15 if full else 7)
    sys.path.insert(0, str(ROOT))
    cluster = Cluster(env)
    counter = ApiCounter(env)
    ours = our_plugin()
    go, go_version = go_plugin()
    from whereabouts import __version__

    total, nodes, per_node = sizes["burst"]
    count, interfaces, pod_nodes, pods_per_node = sizes["pods"]
    rep = Report(meta={
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "ours": __version__, "go": go_version, "size": "full" if full else "quick", "sizes": sizes,
        "kube-apiserver": Path(env.get("WHEREABOUTS_BIN_DIR", "")).name, "modes": args.modes,
        "revision": revision(),
        "scenarios": {**{f"single {what}": f"{sizes['n']} cold calls one at a time, modes interleaved; "
                                           f"requests from {sizes['counted']} more" for what in SINGLE[:2]},
                      "single ADD with log_file": "the same with log_file and log_level verbose",
                      "burst": f"{total} ADDs from {nodes} nodes, {per_node} at a time per node",
                      "pods": f"{count} pods x {interfaces} interfaces from {pod_nodes} nodes, "
                              f"{pods_per_node} pods at a time per node, each pod's ADDs in sequence",
                      "one-node": f"{total // nodes} ADDs from one node, {per_node} at a time (one node's share "
                                  "of the burst, the machine to itself)"}})
    plugins = {"go": go, "ours": ours}
    controllers = {"go": [str(Path(go[0]).parent / "nodeslicecontroller")]}
    if "ours-slices" in args.modes:
        controllers["ours"] = our_controller(ours, go)
    rep.meta["controllers"] = ", ".join(f"{k}: {Path(v[0]).name}{' node-slices' if v == ours else ''}"
                                        for k, v in controllers.items())
    shapes = [shape for name, shape in SHAPES.items() if name in args.scenarios]
    runs: dict[str, ModeRun] = {}
    setup_errors: dict[str, str] = {}
    try:
        node_names = cluster.create_nodes(max(nodes, pod_nodes))
        in_cluster = cluster.node_count()
        rep.meta["nodes_in_cluster"] = in_cluster
        for name in args.modes:
            mode = MODES[name]
            runs[name] = ModeRun(cluster, mode, plugins[mode.plugin], node_names)
            runs[name].prepare(shapes, controllers.get(mode.plugin) if mode.slices else None, in_cluster)
        for name, run in runs.items():
            if run.mode.slices:
                say(f"{name}: waiting for the controller to give every node a slice")
                try:
                    run.wait_for_slices(shapes)
                except BenchError as e:
                    setup_errors[name] = str(e)
                    say(str(e))
        measured = {n: r for n, r in runs.items() if n not in setup_errors}
        if "single" in args.scenarios:
            singles = dict(measured)
            if args.baseline:
                base = ModeRun(cluster, Mode("baseline", "ours"), our_plugin(args.baseline), node_names)
                base.prepare([SHAPES["single"]], None, in_cluster)
                singles["baseline"] = base
                rep.meta["baseline"] = args.baseline
            say(f"single ADD/DEL x{sizes['n']}: {', '.join(singles)}")
            out = single(cluster, counter, singles, sizes["n"], sizes["counted"])
            for what in SINGLE:
                for name in [*args.modes, *(["baseline"] if args.baseline else [])]:
                    rep.entries.append({"mode": name, "scenario": f"single {what}",
                                        **out.get(f"{name} {what}", {"error": setup_errors.get(name, "")})})
        for scenario in ("burst", "pods", "one-node"):
            if scenario not in args.scenarios:
                continue
            for name in args.modes:
                entry: dict[str, Any] = {"mode": name, "scenario": scenario}
                if name in setup_errors:
                    entry["error"] = setup_errors[name]
                else:
                    say(f"{scenario}: {name}")
                    if scenario == "burst":
                        entry.update(burst(cluster, counter, runs[name], total, nodes, per_node))
                    elif scenario == "one-node":
                        entry.update(load(cluster, counter, runs[name], SHAPES["one-node"],
                                          {0: [[(f"o{i}", "net1")] for i in range(total // nodes)]}, per_node))
                    else:
                        entry.update(pods(cluster, counter, runs[name], count, interfaces, pod_nodes, pods_per_node))
                    say(f"{scenario}: {name}: {entry['wall']:.1f}s, {entry['failures']} failed, "
                        f"{entry['duplicates']} duplicates")
                rep.entries.append(entry)
        if "scale" in args.scenarios:
            for name, block in (("ours", 256), ("go", None)):
                say(f"scale {sizes['live']}: {name}")
                rep.scale[name] = scale(cluster, plugins[name], name, sizes["live"], sizes["samples"], block)
        if "memory" in args.scenarios:
            rep.memory = memory(cluster, {"ours": ours, "go": go})
    finally:
        for run in runs.values():
            run.stop()
        cluster.cleanup()
    out_dir = args.out or ROOT / "bench" / "results" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(rep.__dict__, indent=1, default=str))
    lines = print_table(rep)
    (out_dir / "table.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        chart(rep, out_dir / "chart.png")
    except ImportError:
        say("matplotlib is not installed: no chart (pip install -e '.[bench]')")
    say(f"results in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A real node: the image built by hack/image.sh, installed by the DaemonSet of doc/install/ on a kubelet
(hack/node.sh) that runs pods through containerd, Multus and the main plugins, which call ours.

Fixtures of this package (torn down when its last test is done, so the rest of the suite runs as before):
  - ``node``: builds the image (hack/image.sh), starts the node (hack/node.sh up) with the image loaded,
    and stops it at the end (unless it was running before, or WHEREABOUTS_KEEP_NODE=1). The node is
    registered with the taint ``whereabouts.test/node=true:NoSchedule``, so that pods of other tests
    (which do not tolerate it) never land on it; the pods made here tolerate it.
  - the host's FORWARD policy is DROP while these tests run, as a Docker engine leaves it: pods on a
    bridge reach each other only because their networks chain the ``firewall`` plugin.
  - ``installed``: doc/crds (applied by hack/cluster.sh), doc/install/rbac.yaml and
    doc/install/daemonset.yaml in kube-system, as documented, with one addition: the node runs no
    kube-proxy, so the DaemonSet is told the API server's address (WHEREABOUTS_API_SERVER).
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
NODE_SH = ROOT / "hack" / "node.sh"
IMAGE_SH = ROOT / "hack" / "image.sh"
INSTALL = ROOT / "doc" / "install"
SYSTEM = "kube-system"
GROUP, VERSION = "whereabouts.cni.cncf.io", "v1alpha1"
NAD = ("k8s.cni.cncf.io", "v1", "network-attachment-definitions")
TAINT_KEY = "whereabouts.test/node"
TOLERATION = {"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
STATUS_ANNOTATION = "k8s.v1.cni.cncf.io/network-status"
FIELD_MANAGER = "whereabouts-node-tests"


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.node)
            # The first one also builds the image and starts the node (minutes on a cold machine).
            item.add_marker(pytest.mark.timeout(1800))


def run(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = 600,
        check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def exports(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        parts = shlex.split(line)
        if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
            key, _, value = parts[1].partition("=")
            out[key] = value
    return out


def rand(n: int = 6) -> str:
    return secrets.token_hex(n)[:n]


@dataclass
class Node:
    name: str
    env: dict[str, str]
    image: str
    busybox: str

    def sh(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return run(["bash", str(NODE_SH), *args], env={**os.environ, **self.env}, timeout=timeout, check=True)


@pytest.fixture(scope="package")
def forward_drop():
    """FORWARD policy DROP for the node tests, as a Docker engine leaves it; the old policy afterwards."""
    proc = run(["iptables", "-w", "-S", "FORWARD"])
    if proc.returncode != 0:
        pytest.skip(f"iptables is not usable here: {proc.stderr.strip()}")
    before = next((line.split()[2] for line in proc.stdout.splitlines() if line.startswith("-P FORWARD")), "ACCEPT")
    run(["iptables", "-w", "-P", "FORWARD", "DROP"], check=True)
    try:
        yield
    finally:
        run(["iptables", "-w", "-P", "FORWARD", before])


NODE_PATHS = ["/opt/cni", "/etc/cni/net.d/whereabouts.d", "/opt/containerd"]


def host_state() -> dict[str, Any]:
    """What of the host hack/node.sh may change, for a check that `down` leaves it as it was."""
    links = run(["ip", "-o", "link", "show"]).stdout
    return {
        "links": sorted(line.split(": ")[1].split("@")[0] for line in links.splitlines()
                        if line.split(": ")[1].startswith("wbn")),
        "chains": sorted(c for c in ("CNI-FORWARD", "CNI-ADMIN") if run(["iptables", "-w", "-S", c]).returncode == 0),
        "paths": sorted(p for p in NODE_PATHS if os.path.lexists(p)),
    }


def leftovers_of(node_dir: Path) -> list[str]:
    """Processes and mounts that still name the node's state directory."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"{node_dir}/" in cmd:
            found.append(f"process {proc.name}: {cmd[:200]}")
    found += [f"mount {line.split()[4]}" for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if line.split()[4].startswith(f"{node_dir}/")]
    return found


@pytest.fixture(scope="package")
def node(cluster, forward_drop):
    if os.geteuid() != 0:
        pytest.skip("a real node needs root")
    before = host_state()
    proc = run(["bash", str(IMAGE_SH)], timeout=3600)
    if proc.returncode != 0:
        pytest.fail(f"hack/image.sh failed ({proc.returncode}):\n{proc.stderr[-6000:]}", pytrace=False)
    image = proc.stdout.strip().splitlines()[-1]
    already = run(["bash", str(NODE_SH), "status"]).returncode == 0
    env = {**os.environ, "WHEREABOUTS_NODE_TAINTS": f"{TAINT_KEY}=true:NoSchedule", "WHEREABOUTS_NODE_IMAGES": image}
    proc = run(["bash", str(NODE_SH), "up"], env=env, timeout=3600)
    if proc.returncode != 0:
        pytest.fail(f"hack/node.sh up failed ({proc.returncode}):\n{proc.stderr[-6000:]}", pytrace=False)
    found = exports(proc.stdout)
    node = Node(found["WHEREABOUTS_NODE_NAME"], found, image, found["WHEREABOUTS_BUSYBOX_IMAGE"])
    node.sh("load", image)
    yield node
    if not already and os.environ.get("WHEREABOUTS_KEEP_NODE") != "1":
        down = run(["bash", str(NODE_SH), "down"], timeout=600)
        assert down.returncode == 0, f"hack/node.sh down failed:\n{down.stderr[-4000:]}"
        # Nothing of the node is left: no process or mount of its state dir, no bridge, chain or path it made.
        node_dir = Path(found["WHEREABOUTS_NODE_DIR"])
        assert not node_dir.exists()
        assert leftovers_of(node_dir) == []
        assert host_state() == before
        # And the install leaves the shared control plane (after down: the pods' DELs needed its credential).
        from kubernetes import config

        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        try:
            kube = Kube(api)
            for doc in reversed(install_docs(node, cluster.server)):
                kube.delete(doc)
        finally:
            api.close()


class Kube:
    """The admin's view of the cluster through the official client, with the waits the tests need."""

    def __init__(self, api) -> None:
        from kubernetes import client, dynamic

        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.dyn = dynamic.DynamicClient(api)

    # --- objects -------------------------------------------------------------------------

    def apply(self, doc: dict[str, Any]) -> None:
        resource = self.dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        ns = doc["metadata"].get("namespace") if resource.namespaced else None
        resource.server_side_apply(body=doc, name=doc["metadata"]["name"], namespace=ns,
                                   field_manager=FIELD_MANAGER, force_conflicts=True)

    def delete(self, doc: dict[str, Any], *, wait: float = 0) -> None:
        from kubernetes.client.rest import ApiException
        from kubernetes.dynamic.exceptions import NotFoundError

        resource = self.dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        ns = doc["metadata"].get("namespace") if resource.namespaced else None
        try:
            resource.delete(name=doc["metadata"]["name"], namespace=ns, body={"propagationPolicy": "Foreground"})
        except (NotFoundError, ApiException) as e:
            if getattr(e, "status", 404) != 404:
                raise
        if wait:
            self.wait(lambda: not self.exists(doc), wait, f"{doc['kind']} {doc['metadata']['name']} deleted")

    def exists(self, doc: dict[str, Any]) -> bool:
        from kubernetes.dynamic.exceptions import NotFoundError

        resource = self.dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        ns = doc["metadata"].get("namespace") if resource.namespaced else None
        try:
            resource.get(name=doc["metadata"]["name"], namespace=ns)
            return True
        except NotFoundError:
            return False

    @staticmethod
    def wait(cond: Callable[[], Any], timeout: float, what: str, every: float = 1.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            got = cond()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for: {what}")
            time.sleep(every)

    # --- networks and pods -----------------------------------------------------------------

    def nad(self, namespace: str, name: str, config: dict[str, Any]) -> str:
        body = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": name, "namespace": namespace}, "spec": {"config": json.dumps(config)}}
        self.custom.create_namespaced_custom_object(*NAD[:2], namespace, NAD[2], body)
        return name

    def pods(self, namespace: str, selector: str = "") -> list[Any]:
        return self.core.list_namespaced_pod(namespace, label_selector=selector).items

    def wait_running(self, namespace: str, names: list[str], timeout: float = 180) -> list[Any]:
        def ready():
            pods = [p for p in self.pods(namespace) if p.metadata.name in names]
            if len(pods) == len(names) and all(p.status.phase == "Running" for p in pods):
                return pods
            return None

        try:
            return self.wait(ready, timeout, f"pods {names} Running in {namespace}")
        except AssertionError:
            raise AssertionError(self.describe(namespace)) from None

    def describe(self, namespace: str) -> str:
        lines = [f"pods of {namespace}:"]
        for p in self.pods(namespace):
            lines.append(f"  {p.metadata.name} {p.status.phase} {p.spec.node_name} "
                         f"{(p.metadata.annotations or {}).get(STATUS_ANNOTATION, '')[:300]}")
        events = self.core.list_namespaced_event(namespace).items
        for e in sorted(events, key=lambda e: str(e.last_timestamp or e.event_time or ""))[-15:]:
            lines.append(f"  event {e.involved_object.name}: {e.reason}: {(e.message or '')[:400]}")
        return "\n".join(lines)

    def exec(self, namespace: str, pod: str, command: list[str], timeout: float = 30) -> tuple[int, str]:
        from kubernetes.stream import stream

        ws = stream(self.core.connect_get_namespaced_pod_exec, pod, namespace, command=command, stderr=True,
                    stdin=False, stdout=True, tty=False, _preload_content=False)
        ws.run_forever(timeout=timeout)
        status = json.loads(ws.read_channel(3) or "{}")  # the error channel: the exit status
        out = (ws.read_stdout() or "") + (ws.read_stderr() or "")
        ws.close()
        if status.get("status") == "Success":
            return 0, out
        codes = [c.get("message") for c in (status.get("details") or {}).get("causes", []) if c.get("reason") == "ExitCode"]
        return (int(codes[0]) if codes else -1), out + json.dumps(status)

    # --- the store ---------------------------------------------------------------------------

    def allocations(self, cidr: str) -> dict[str, str]:
        """address -> podref, over every IPPool of kube-system whose range lies in `cidr` (blocks too)."""
        net = ipaddress.ip_network(cidr)
        out: dict[str, str] = {}
        pools = self.custom.list_namespaced_custom_object(GROUP, VERSION, SYSTEM, "ippools")["items"]
        for pool in pools:
            rng = ipaddress.ip_network(pool["spec"]["range"], strict=False)
            if rng.version != net.version or not rng.subnet_of(net):
                continue
            for offset, alloc in (pool["spec"].get("allocations") or {}).items():
                addr = str(rng.network_address + int(offset))
                assert addr not in out, f"{addr} allocated twice: {out[addr]} and {alloc.get('podref')}"
                out[addr] = alloc.get("podref", "")
        return out

    def reservations(self, namespace: str) -> list[str]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, SYSTEM,
                                                          "overlappingrangeipreservations")["items"]
        return sorted(i["metadata"]["name"] for i in items
                      if (i.get("spec") or {}).get("podref", "").startswith(namespace + "/"))

    def forget_range(self, cidr: str) -> None:
        """Delete the pools of `cidr` (blocks too) so that a rerun starts empty."""
        net = ipaddress.ip_network(cidr)
        for pool in self.custom.list_namespaced_custom_object(GROUP, VERSION, SYSTEM, "ippools")["items"]:
            rng = ipaddress.ip_network(pool["spec"]["range"], strict=False)
            if rng.version == net.version and rng.subnet_of(net):
                self.custom.delete_namespaced_custom_object(GROUP, VERSION, SYSTEM, "ippools",
                                                            pool["metadata"]["name"])


def network_status(pod, ifname: str = "net1") -> list[str]:
    """The addresses Multus recorded for `ifname` in the pod's network-status annotation."""
    raw = (pod.metadata.annotations or {}).get(STATUS_ANNOTATION)
    assert raw, f"{pod.metadata.name} has no {STATUS_ANNOTATION} annotation"
    return [ip for entry in json.loads(raw) if entry.get("interface") == ifname for ip in entry.get("ips", [])]


def pod_body(name: str, image: str, networks: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}, "annotations": {NETWORKS_ANNOTATION: networks}},
            "spec": pod_spec(image)}


def pod_spec(image: str) -> dict[str, Any]:
    return {"containers": [{"name": "main", "image": image, "imagePullPolicy": "Never",
                            "command": ["sleep", "100000"]}],
            "tolerations": [TOLERATION], "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": False}


@pytest.fixture
def k8s(kube) -> Kube:
    return Kube(kube)


def install_docs(node: Node, server: str) -> list[dict[str, Any]]:
    """rbac.yaml and daemonset.yaml as documented; the DaemonSet also gets WHEREABOUTS_API_SERVER."""
    docs = []
    for name in ("rbac.yaml", "daemonset.yaml"):
        docs += [d for d in yaml.safe_load_all((INSTALL / name).read_text()) if d]
    for doc in docs:
        if doc["kind"] == "DaemonSet":
            container = doc["spec"]["template"]["spec"]["containers"][0]
            assert container["image"] == node.image, f"the DaemonSet names {container['image']}, built: {node.image}"
            container["env"].append({"name": "WHEREABOUTS_API_SERVER", "value": server})
    return docs


def ensure_installed(k8s: Kube, node: Node, server: str) -> list[dict[str, Any]]:
    from kubernetes.client.rest import ApiException

    docs = install_docs(node, server)
    # An install being deleted (an earlier session's teardown) goes first: applying to it would not stay.
    for doc in docs:
        if k8s.exists(doc) and k8s.dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"]).get(
                name=doc["metadata"]["name"], namespace=doc["metadata"].get("namespace")).metadata.deletionTimestamp:
            k8s.wait(lambda doc=doc: not k8s.exists(doc), 120, f"{doc['kind']} {doc['metadata']['name']} deleted")
    for doc in docs:
        k8s.apply(doc)

    def ready():
        try:
            ds = k8s.apps.read_namespaced_daemon_set("whereabouts", SYSTEM)
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        st = ds.status
        return (st.desired_number_scheduled == 1 and st.number_ready == 1 and st.updated_number_scheduled == 1
                and (st.observed_generation or 0) >= ds.metadata.generation)

    try:
        k8s.wait(ready, 180, "DaemonSet whereabouts ready on the node")
    except AssertionError:
        raise AssertionError(k8s.describe(SYSTEM)) from None
    kubeconfig = Path("/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig")

    def ours() -> bool:
        try:
            return json.loads(kubeconfig.read_text())["clusters"][0]["cluster"]["server"] == server
        except (OSError, ValueError, KeyError, IndexError):
            return False

    if not ours():
        # Another installer (a DaemonSet of another cluster or namespace) wrote the node's kubeconfig:
        # a new pod of ours writes it again.
        k8s.core.delete_collection_namespaced_pod(SYSTEM, label_selector="app.kubernetes.io/name=whereabouts")
        k8s.wait(ready, 180, "DaemonSet whereabouts ready again")
        k8s.wait(ours, 60, "the node kubeconfig written by this install")
    assert Path("/opt/cni/bin/whereabouts").exists()
    return docs


@pytest.fixture
def installed(k8s, node, cluster) -> list[dict[str, Any]]:
    """The install of doc/install/ on the node (made again if an earlier test removed it)."""
    return ensure_installed(k8s, node, cluster.server)


@pytest.fixture
def bridge_net(k8s, namespace):
    """A factory of NADs (bridge or macvlan + whereabouts, then firewall); links and pools removed afterwards."""
    made: list[tuple[str, str]] = []

    def make(name: str, ipam: dict[str, Any], main: str = "bridge") -> str:
        bridge = f"wbn{rand(8)}"
        if main == "macvlan":
            # macvlans in bridge mode on one parent reach each other without leaving the node: a dummy
            # parent, or one end of a veth pair where the kernel has no dummy links.
            if run(["ip", "link", "add", bridge, "type", "dummy"]).returncode != 0:
                run(["ip", "link", "add", bridge, "type", "veth", "peer", "name", f"{bridge}p"], check=True)
                run(["ip", "link", "set", f"{bridge}p", "up"], check=True)
            run(["ip", "link", "set", bridge, "up"], check=True)
            first = {"type": "macvlan", "master": bridge, "mode": "bridge", "ipam": {"type": "whereabouts", **ipam}}
        else:
            first = {"type": "bridge", "bridge": bridge, "ipam": {"type": "whereabouts", **ipam}}
        conf = {"cniVersion": "1.0.0", "name": name, "plugins": [first, {"type": "firewall", "backend": "iptables"}]}
        k8s.nad(namespace, name, conf)
        ranges = [r["range"] for r in ipam.get("ipRanges", [])] or [ipam["range"]]
        for r in ranges:
            k8s.forget_range(r)
            made.append((bridge, r))
        return name

    yield make
    for bridge, r in made:
        subprocess.run(["ip", "link", "delete", bridge], stderr=subprocess.DEVNULL, check=False)
        try:
            k8s.forget_range(r)
        except Exception as e:  # noqa: BLE001 - cleanup goes on
            print(f"could not delete the pools of {r}: {e}")

"""The install manifests of doc/ on the real API server, and what their service accounts may do.

Everything in doc/install/ and doc/examples/ is created in this test's namespace
(kube-system replaced by it; cluster-scoped names suffixed by it) with strict
field validation, so a misspelt field fails here. Then tokens are minted for the
DaemonSet's and the reconciler's service accounts with the TokenRequest API:
hack/install-cni.sh turns the DaemonSet's into the node kubeconfig, the plugin
allocates and releases with it for every example network, and requests outside
either Role are refused by the API server.
"""

from __future__ import annotations

import copy
import json
import os
import re
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import ROOT, GROUP, VERSION
from tests.e2e.test_install_cni import SCRIPT as INSTALL_SCRIPT, fake_build

DOC = ROOT / "doc"
NAD_CRD = Path(__file__).parent / "fixtures" / "network-attachment-definition-crd.yaml"
INSTALL_FILES = ["rbac.yaml", "daemonset.yaml", "reconciler-cronjob.yaml", "reconciler-deployment.yaml",
                 "node-slice-controller.yaml"]
NAD = ("k8s.cni.cncf.io", "v1", "network-attachment-definitions")
PLUGIN = [sys.executable, "-m", "whereabouts"]


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def localize(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    """Move a manifest object from kube-system into `namespace`; suffix cluster-scoped names."""
    text = json.dumps(doc).replace('"kube-system"', json.dumps(namespace))
    doc = json.loads(text)
    if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
        doc["metadata"]["name"] += f"-{namespace}"
    if doc["kind"] == "ClusterRoleBinding":
        doc["roleRef"]["name"] += f"-{namespace}"
    # Checked here, never run: the DaemonSet tolerates every taint, and on a real node (tests/node) its
    # pods would install this test's credentials over the node's.
    if doc["kind"] == "DaemonSet":
        doc["spec"]["template"]["spec"]["nodeSelector"]["whereabouts.test/manifests-only"] = "true"
    # Nor the node-slice controller: tests/ops/test_nodeslices.py runs it as a process.
    if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "whereabouts-node-slices":
        doc["spec"]["template"]["spec"]["nodeSelector"] = {"whereabouts.test/manifests-only": "true"}
    # The reconciler's kubeconfig names its namespace inside a string.
    if doc["kind"] == "ConfigMap":
        doc["data"] = {k: v.replace("namespace: kube-system", f"namespace: {namespace}")
                       for k, v in doc["data"].items()}
    return doc


def ensure_nad_crd(api) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    ext = client.ApiextensionsV1Api(api)
    body = load_docs(NAD_CRD)[0]
    try:
        ext.create_custom_resource_definition(body)
    except ApiException as e:
        if e.status != 409:
            raise
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        crd = ext.read_custom_resource_definition(body["metadata"]["name"])
        if any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])):
            return
        time.sleep(0.2)
    raise AssertionError("the NetworkAttachmentDefinition CRD did not become Established")


class Installed:
    def __init__(self, api, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.objects: list[dict[str, Any]] = []
        self.nads: list[dict[str, Any]] = []
        self.cluster_scoped: list[tuple[str, str]] = []

    def apply(self, doc: dict[str, Any]) -> None:
        from kubernetes import client, utils
        from kubernetes.client.rest import ApiException

        if doc["kind"] == "NetworkAttachmentDefinition":
            client.CustomObjectsApi(self.api).create_namespaced_custom_object(*NAD[:2], self.namespace, NAD[2], doc)
            self.nads.append(doc)
            return
        try:
            utils.create_from_dict(self.api, doc, namespace=self.namespace, field_validation="Strict")
        except utils.FailToCreateError as e:
            # The two reconciler files carry the same ConfigMap: a second create of an equal object is fine.
            exc = e.api_exceptions[0]
            if not (isinstance(exc, ApiException) and exc.status == 409
                    and any(doc == o for o in self.objects)):
                raise
        self.objects.append(doc)
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            self.cluster_scoped.append((doc["kind"], doc["metadata"]["name"]))

    def cleanup(self) -> None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        rbac = client.RbacAuthorizationV1Api(self.api)
        for kind, name in self.cluster_scoped:
            try:
                (rbac.delete_cluster_role if kind == "ClusterRole" else rbac.delete_cluster_role_binding)(name)
            except ApiException as e:
                if e.status != 404:
                    raise

    def find(self, kind: str, name: str | None = None) -> dict[str, Any]:
        return next(o for o in self.objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))

    def token(self, service_account: str) -> str:
        from kubernetes import client

        req = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[],
                                                                                expiration_seconds=3600))
        return client.CoreV1Api(self.api).create_namespaced_service_account_token(
            service_account, self.namespace, req).status.token


@pytest.fixture
def installed(kube, namespace):
    ensure_nad_crd(kube)
    inst = Installed(kube, namespace)
    try:
        for name in INSTALL_FILES:
            for doc in load_docs(DOC / "install" / name):
                inst.apply(localize(doc, namespace))
        for path in sorted((DOC / "examples").glob("*.yaml")):
            for doc in load_docs(path):
                inst.apply(doc)
        yield inst
    finally:
        inst.cleanup()


class Caller:
    """Raw requests with one bearer token, to see what the API server allows it."""

    def __init__(self, cluster, token: str) -> None:
        self.server = cluster.server
        self.token = token
        self.ctx = ssl.create_default_context(cafile=str(cluster.ca_file))

    def status(self, method: str, path: str, body: Any = None) -> int:
        req = urllib.request.Request(self.server + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=20) as resp:
                resp.read()
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code


# --- the manifests themselves ------------------------------------------------------------


def test_every_manifest_is_accepted_with_strict_validation(installed):
    kinds = sorted({o["kind"] for o in installed.objects})
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "CronJob", "DaemonSet", "Deployment", "Pod",
                     "Role", "RoleBinding", "Secret", "ServiceAccount"]
    assert len(installed.nads) == 7
    for nad in installed.nads:
        conf = json.loads(nad["spec"]["config"])
        assert conf["ipam"]["type"] == "whereabouts"
        assert "kubernetes" not in conf["ipam"], "the kubeconfig comes from the DaemonSet's flat file"


def test_the_workloads_agree_with_the_image(installed):
    """Same image everywhere; the commands name what the Dockerfile puts in it."""
    ds = installed.find("DaemonSet")
    cron = installed.find("CronJob")
    deploy = installed.find("Deployment")
    pods = [ds["spec"]["template"]["spec"], cron["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            deploy["spec"]["template"]["spec"]]
    images = {c["image"] for p in pods for c in p["containers"]}
    assert len(images) == 1
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "/opt/whereabouts/bin/whereabouts" in dockerfile and "/opt/whereabouts/install-cni.sh" in dockerfile
    for p in pods[1:]:
        assert p["containers"][0]["command"][:2] == ["/opt/whereabouts/bin/whereabouts", "reconcile"]
        assert p["serviceAccountName"] == "whereabouts-reconciler"
    assert pods[0]["serviceAccountName"] == "whereabouts"
    slices = installed.find("Deployment", "whereabouts-node-slices")["spec"]
    assert slices["replicas"] == 2
    assert slices["template"]["spec"]["containers"][0]["image"] in images
    assert slices["template"]["spec"]["containers"][0]["command"] == ["/opt/whereabouts/bin/whereabouts", "node-slices"]
    assert slices["template"]["spec"]["serviceAccountName"] == "whereabouts-node-slices"
    mounts = {m["mountPath"] for m in ds["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in ds["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {env["CNI_BIN_DIR"], env["CNI_NET_DIR"]} <= mounts


# --- the plugin with the DaemonSet's token ----------------------------------------------


@pytest.fixture
def node_files(installed, cluster, tmp_path):
    """What the DaemonSet writes on a node, made by hack/install-cni.sh from a minted token."""
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text(installed.token("whereabouts"))
    (sa / "ca.crt").write_bytes(Path(cluster.ca_file).read_bytes())
    (sa / "namespace").write_text(installed.namespace)
    src = tmp_path / "image"
    fake_build(src, "0.1.0-000000000000")
    host_net = tmp_path / "etc-cni-net.d"
    (tmp_path / "opt-cni-bin").mkdir()
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SRC": str(src), "CNI_BIN_DIR": str(tmp_path / "opt-cni-bin"),
           "CNI_NET_DIR": str(host_net), "CNI_NET_DIR_HOST": str(host_net), "SA_DIR": str(sa),
           "WHEREABOUTS_API_SERVER": cluster.server}
    proc = subprocess.run(["sh", str(INSTALL_SCRIPT), "--once"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return host_net / "whereabouts.d"


def plugin(command: str, conf: dict, cid: str, env: dict | None = None) -> tuple[int, Any]:
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
            "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "net1",
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=apps;K8S_POD_NAME={cid}",
            "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.run(PLUGIN, input=json.dumps(conf), env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=120)
    out = json.loads(proc.stdout) if proc.stdout.strip() else None
    return proc.returncode, out


def with_node_config(nad: dict, conf_dir: Path, tmp_path: Path, **runtime: Any) -> dict:
    conf = json.loads(nad["spec"]["config"])
    conf["ipam"].update({"configuration_path": str(conf_dir / "whereabouts.conf"),
                         "node_lock_dir": str(tmp_path / "locks")})
    if runtime:
        conf["runtimeConfig"] = runtime
    return conf


def test_the_plugin_allocates_and_releases_with_the_daemonset_token(installed, node_files, kube, tmp_path):
    from kubernetes import client

    assert (node_files / "whereabouts.kubeconfig").stat().st_mode & 0o777 == 0o600
    custom = client.CustomObjectsApi(kube)
    got = {}
    for nad in installed.nads:
        name = nad["metadata"]["name"]
        runtime = {"ips": ["10.33.0.50/24"]} if name == "static-whereabouts" else {}
        conf = with_node_config(nad, node_files, tmp_path, **runtime)
        rc, out = plugin("ADD", conf, f"c-{name}")
        assert rc == 0, (name, out)
        got[name] = [ip["address"] for ip in out["ips"]]
    assert got == {
        "bridge-whereabouts": ["10.30.0.1/24"],
        "dual-stack-whereabouts": ["10.32.0.1/24", "fd00:32::100/64"],
        "ipvlan-whereabouts": ["10.31.0.10/24"],
        "macvlan-whereabouts": ["192.168.20.10/24"],
        "static-whereabouts": ["10.33.0.50/24"],
        # Named networks: the same range, independent pools, so the same first address.
        "tenant-blue": ["10.40.0.1/24"],
        "tenant-red": ["10.40.0.1/24"],
    }
    pools = custom.list_namespaced_custom_object(GROUP, VERSION, installed.namespace, "ippools")["items"]
    names = sorted(p["metadata"]["name"] for p in pools)
    assert names == ["10.30.0.0-24", "10.31.0.0-24", "10.32.0.0-24", "10.33.0.0-24", "192.168.20.0-24",
                     "blue-10.40.0.0-24", "fd00-32---64", "red-10.40.0.0-24"]
    leases = client.CoordinationV1Api(kube).list_namespaced_lease(installed.namespace).items
    assert {le.metadata.name for le in leases} == {"whereabouts"}, "the Go plugin's one Lease, by default"

    for nad in installed.nads:
        name = nad["metadata"]["name"]
        rc, out = plugin("DEL", with_node_config(nad, node_files, tmp_path), f"c-{name}")
        assert rc == 0, (name, out)
    pools = custom.list_namespaced_custom_object(GROUP, VERSION, installed.namespace, "ippools")["items"]
    assert all(not p["spec"].get("allocations") for p in pools)
    assert custom.list_namespaced_custom_object(GROUP, VERSION, installed.namespace,
                                                "overlappingrangeipreservations")["items"] == []


def test_the_plugin_is_refused_outside_its_namespace(installed, node_files, tmp_path):
    """The same token, pointed at another namespace: the API server says no, and the plugin says so."""
    kubeconfig = yaml.safe_load((node_files / "whereabouts.kubeconfig").read_text())
    kubeconfig["contexts"][0]["context"]["namespace"] = "default"
    other = tmp_path / "other-namespace.kubeconfig"
    other.write_text(yaml.safe_dump(kubeconfig))
    conf = with_node_config(installed.nads[0], node_files, tmp_path)
    conf["ipam"]["kubernetes"] = {"kubeconfig": str(other)}
    rc, out = plugin("ADD", conf, "c-outside")
    assert rc != 0
    assert out["code"] == 5 and "forbidden" in out["msg"], out


def test_the_daemonset_role_allows_only_what_the_plugin_needs(installed, cluster):
    ns = installed.namespace
    api = Caller(cluster, installed.token("whereabouts"))
    wb = f"/apis/{GROUP}/{VERSION}/namespaces/{ns}"
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
    pool = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "IPPool", "metadata": {"name": "10.99.0.0-24"},
            "spec": {"range": "10.99.0.0/24", "allocations": {}}}
    # What the plugin does.
    assert api.status("POST", f"{wb}/ippools", pool) == 201
    assert api.status("GET", f"{wb}/ippools/10.99.0.0-24") == 200
    assert api.status("GET", f"{leases}?watch=1&fieldSelector=metadata.name%3Dx&timeoutSeconds=1") == 200
    # What it does not.
    refused = [
        ("DELETE", f"{wb}/ippools/10.99.0.0-24"),
        ("GET", f"{wb}/overlappingrangeipreservations"),
        ("GET", f"{leases}"),
        ("DELETE", f"{leases}/whereabouts-10.99.0.0-24"),
        ("GET", f"/api/v1/namespaces/{ns}/secrets"),
        ("GET", f"/api/v1/namespaces/{ns}/pods"),
        ("GET", "/api/v1/nodes"),
        ("GET", f"/apis/k8s.cni.cncf.io/v1/namespaces/{ns}/network-attachment-definitions"),
        ("GET", f"/apis/{GROUP}/{VERSION}/namespaces/default/ippools/10.99.0.0-24"),
        ("GET", f"/apis/{GROUP}/{VERSION}/ippools"),
    ]
    assert {(m, p): api.status(m, p) for m, p in refused} == {(m, p): 403 for m, p in refused}
    assert api.status("POST", f"/apis/{GROUP}/{VERSION}/namespaces/default/ippools", pool) == 403


def test_the_reconciler_role_reads_pods_and_sweeps_with_nothing_more(installed, cluster, kube, tmp_path):
    from kubernetes import client

    ns = installed.namespace
    token = installed.token("whereabouts-reconciler")
    api = Caller(cluster, token)
    wb = f"/apis/{GROUP}/{VERSION}/namespaces/{ns}"
    assert api.status("GET", "/api/v1/pods?limit=1") == 200
    assert api.status("GET", f"/api/v1/namespaces/{ns}/pods/static-ip-example") == 200
    refused = [("GET", f"/api/v1/namespaces/{ns}/secrets"),
               ("DELETE", f"/api/v1/namespaces/{ns}/pods/static-ip-example"),
               ("GET", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"),
               ("GET", f"/apis/{GROUP}/{VERSION}/namespaces/default/ippools")]
    assert {(m, p): api.status(m, p) for m, p in refused} == {(m, p): 403 for m, p in refused}
    pool = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "IPPool", "metadata": {"name": "10.98.0.0-24"},
            "spec": {"range": "10.98.0.0/24", "allocations": {}}}
    assert api.status("POST", f"{wb}/ippools", pool) == 403

    # A real sweep with this token: an allocation of a pod that does not exist is freed,
    # the one of the pod that exists (static-ip-example) is kept.
    custom = client.CustomObjectsApi(kube)
    pool["spec"]["allocations"] = {
        "5": {"id": "gone", "podref": "apps/ghost", "ifname": "net1"},
        "6": {"id": "alive", "podref": f"{ns}/static-ip-example", "ifname": "net1"},
    }
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "ippools", pool)
    from tests.helpers.kubeconfig import write_kubeconfig

    kubeconfig = write_kubeconfig(tmp_path / "reconciler.kubeconfig", cluster.server, ca_file=cluster.ca_file,
                                  token=token, namespace=ns)
    proc = subprocess.run([*PLUGIN, "--kubeconfig", str(kubeconfig), "reconcile"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120,
                          env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    left = custom.get_namespaced_custom_object(GROUP, VERSION, ns, "ippools", "10.98.0.0-24")["spec"]["allocations"]
    assert set(left) == {"6"}


def test_the_node_slice_controller_works_with_its_token_and_nothing_more(installed, cluster, kube, tmp_path):
    """A real run of `whereabouts node-slices` with the Deployment's account: it slices for a NAD and a node."""
    from kubernetes import client

    from tests.helpers.kubeconfig import write_kubeconfig

    ns = installed.namespace
    token = installed.token("whereabouts-node-slices")
    api = Caller(cluster, token)
    refused = [("GET", f"/api/v1/namespaces/{ns}/secrets"),
               ("GET", "/api/v1/pods"),
               ("DELETE", "/api/v1/nodes/x"),
               ("GET", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/whereabouts"),
               ("POST", f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/ippools"),
               ("PUT", f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/ippools/x"),
               ("GET", f"/apis/{GROUP}/{VERSION}/namespaces/default/nodeslicepools")]
    assert {(m, p): api.status(m, p) for m, p in refused} == {(m, p): 403 for m, p in refused}

    node = f"{ns}-node"
    core = client.CoreV1Api(kube)
    core.create_node({"metadata": {"name": node}})
    try:
        conf = {"cniVersion": "0.3.1", "name": "sliced", "type": "macvlan",
                "ipam": {"type": "whereabouts", "range": "10.97.0.0/16", "node_slice_size": "/24"}}
        client.CustomObjectsApi(kube).create_namespaced_custom_object(*NAD[:2], ns, NAD[2], {
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": "sliced"}, "spec": {"config": json.dumps(conf)}})
        kubeconfig = write_kubeconfig(tmp_path / "node-slices.kubeconfig", cluster.server, ca_file=cluster.ca_file,
                                      token=token, namespace=ns)
        proc = subprocess.Popen([*PLUGIN, "--kubeconfig", str(kubeconfig), "node-slices", "--retry-period", "0.2",
                                 "--renew-deadline", "0.8", "--lease-duration", "1.5"], stderr=subprocess.PIPE,
                                text=True, env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT),
                                                "HOME": str(tmp_path)})
        custom = client.CustomObjectsApi(kube)
        deadline = time.monotonic() + 20
        allocations: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not any(a["nodeName"] == node for a in allocations):
            time.sleep(0.2)
            # (other NADs of the shared cluster may get pools here too)
            pools = custom.list_namespaced_custom_object(GROUP, VERSION, ns, "nodeslicepools")["items"]
            allocations = next((p["status"]["allocations"] for p in pools if p["metadata"]["name"] == "sliced"), [])
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert any(a["nodeName"] == node for a in allocations), err
        lines = [json.loads(line) for line in err.splitlines()]  # its log: one JSON object per line
        assert any(line["msg"] == "leading" for line in lines), err  # it got as far as making requests
        refused = [line for line in lines if re.search(r"\b403\b|Forbidden", str(line.get("error", "")))]
        assert not refused, refused  # every request it made was allowed
    finally:
        core.delete_node(node)


def test_localize_keeps_the_documents_intact():
    """The namespace rewrite used above touches only namespaces and cluster-scoped names."""
    for name in INSTALL_FILES:
        for doc in load_docs(DOC / "install" / name):
            moved = localize(copy.deepcopy(doc), "t-x")
            assert json.dumps(moved).count("kube-system") == 0
            assert moved["kind"] == doc["kind"] and moved.get("spec", {}).keys() == doc.get("spec", {}).keys()

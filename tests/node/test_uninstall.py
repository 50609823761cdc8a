"""Removing the install in the documented order (doc/install.md, "Uninstalling") frees every address."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from tests.node.conftest import SYSTEM, network_status, pod_body

NODE_KUBECONFIG = Path("/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig")
RANGE = "10.124.10.0/24"


def _node_credential_status(server: str, ca_file: Path) -> int:
    """What the API server answers the node's kubeconfig token (a GET of the pools it may read)."""
    cfg = yaml.safe_load(NODE_KUBECONFIG.read_text())
    token = cfg["users"][0]["user"]["token"]
    req = urllib.request.Request(f"{server}/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/{SYSTEM}/ippools/x",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=str(ca_file)), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_daemonset_deleted_first_then_pods_still_free_their_addresses(k8s, node, installed, namespace, bridge_net,
                                                                      cluster):
    nad = bridge_net("br-uninstall", {"range": RANGE})
    for name in ("u1", "u2"):
        k8s.core.create_namespaced_pod(namespace, pod_body(name, node.busybox, nad))
    pods = k8s.wait_running(namespace, ["u1", "u2"])
    addrs = sorted(a for p in pods for a in network_status(p))
    assert sorted(k8s.allocations(RANGE)) == addrs

    # 1. The DaemonSet first: its pod (and that pod's own token) is gone.
    ds = next(d for d in installed if d["kind"] == "DaemonSet")
    k8s.delete(ds, wait=90)
    k8s.wait(lambda: not k8s.pods(SYSTEM, "app.kubernetes.io/name=whereabouts"), 90, "the installer pod gone")
    # The node's credential is the Secret's token: still accepted (404: no such pool, not 401).
    assert _node_credential_status(cluster.server, cluster.ca_file) == 404

    # 2. Then the workloads: every DEL still reaches the API server, the pods go away, the pool empties.
    for name in ("u1", "u2"):
        k8s.core.delete_namespaced_pod(name, namespace)
    try:
        k8s.wait(lambda: not k8s.pods(namespace), 90, "the pods deleted (their CNI DEL succeeded)")
    except AssertionError:
        raise AssertionError(k8s.describe(namespace)) from None
    assert k8s.allocations(RANGE) == {}
    assert k8s.reservations(namespace) == []

    # 3. Last the access: deleting rbac.yaml revokes the node's credential.
    for doc in reversed([d for d in installed if d["kind"] != "DaemonSet"]):
        k8s.delete(doc, wait=60)
    k8s.wait(lambda: _node_credential_status(cluster.server, cluster.ca_file) == 401, 60,
             "the node's token refused once its Secret is deleted")


def test_a_pod_bound_token_would_die_with_the_installer(k8s, node, installed, cluster):
    """Why the credential is a Secret: the installer pod's own token stops working when the pod is deleted."""
    ds = next(d for d in installed if d["kind"] == "DaemonSet")
    old = yaml.safe_load(yaml.safe_dump(ds))
    spec = old["spec"]["template"]["spec"]
    spec["automountServiceAccountToken"] = True
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] != "credential"]
    container = spec["containers"][0]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "credential"]
    container["env"] = [e for e in container["env"] if e["name"] != "SA_DIR"]
    k8s.delete(ds, wait=90)
    k8s.apply(old)
    k8s.wait(lambda: (k8s.apps.read_namespaced_daemon_set("whereabouts", SYSTEM).status.number_ready or 0) == 1,
             180, "the installer with its own token ready")
    k8s.wait(lambda: _node_credential_status(cluster.server, cluster.ca_file) == 404, 60,
             "the node kubeconfig written with the pod's token")
    k8s.delete(old, wait=90)
    k8s.wait(lambda: _node_credential_status(cluster.server, cluster.ca_file) == 401, 60,
             "the pod-bound token refused once the installer pod is gone")

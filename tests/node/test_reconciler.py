"""A leaked address, freed by the reconciler CronJob of doc/install/ run by the real CronJob controller."""

from __future__ import annotations

import subprocess

import yaml

from tests.node.conftest import INSTALL, SYSTEM, TOLERATION, network_status, pod_body

RANGE = "10.124.40.0/24"


def _drop_firewall_rules(*addresses: str) -> None:
    """The firewall plugin's rules for these addresses (a node that lost its state lost them too)."""
    rules = subprocess.run(["iptables", "-w", "-S", "CNI-FORWARD"], stdout=subprocess.PIPE, text=True).stdout
    for rule in rules.splitlines():
        if rule.startswith("-A ") and any(f" {a}/32 " in rule + " " for a in addresses):
            subprocess.run(["iptables", "-w", "-D", *rule.split()[1:]], capture_output=True, check=False)


def _drop_sandbox_without_cni(node, namespace: str, pod: str) -> None:
    """What a node that crashed and lost its runtime state does: the sandbox is gone and no CNI DEL ran."""
    bin_dir, sock = node.env["WHEREABOUTS_NODE_BIN"], node.env["CONTAINERD_ADDRESS"]
    crictl = [f"{bin_dir}/crictl", "--runtime-endpoint", f"unix://{sock}"]
    ctr = [f"{bin_dir}/ctr", "--address", sock, "--namespace", "k8s.io"]
    ids = subprocess.run([*crictl, "pods", "--namespace", namespace, "--name", pod, "-q"], stdout=subprocess.PIPE,
                         text=True, check=True).stdout.split()
    assert ids, f"no sandbox of {namespace}/{pod}"
    for sandbox in ids:
        containers = subprocess.run([*crictl, "ps", "-a", "--pod", sandbox, "-q"], stdout=subprocess.PIPE,
                                    text=True, check=True).stdout.split()
        for cid in [*containers, sandbox]:
            subprocess.run([*ctr, "tasks", "kill", "-s", "KILL", cid], capture_output=True, check=False)
            subprocess.run([*ctr, "tasks", "delete", "-f", cid], capture_output=True, check=False)
            subprocess.run([*ctr, "containers", "delete", cid], capture_output=True, check=False)
        subprocess.run([*ctr, "sandboxes", "rm", "-f", sandbox], capture_output=True, check=False)
    # containerd forgets what it no longer has on disk when it starts again.
    node.sh("stop", "containerd")
    node.sh("start", "containerd")


def test_a_pod_force_deleted_while_the_kubelet_is_down_leaks_and_the_cronjob_frees_it(
        k8s, node, installed, namespace, bridge_net, cluster):
    nad = bridge_net("br-leak", {"range": RANGE})
    k8s.core.create_namespaced_pod(namespace, pod_body("leaky", node.busybox, nad))
    k8s.core.create_namespaced_pod(namespace, pod_body("kept", node.busybox, nad))
    running = k8s.wait_running(namespace, ["leaky", "kept"])
    pods = {p.metadata.name: network_status(p)[0] for p in running}
    leaky_eth0 = next(p.status.pod_ip for p in running if p.metadata.name == "leaky")

    node.sh("stop", "kubelet")
    try:
        k8s.core.delete_namespaced_pod("leaky", namespace, grace_period_seconds=0)
        k8s.wait(lambda: [p.metadata.name for p in k8s.pods(namespace)] == ["kept"], 30, "leaky force-deleted")
        _drop_sandbox_without_cni(node, namespace, "leaky")
        _drop_firewall_rules(pods["leaky"], leaky_eth0)
    finally:
        node.sh("start", "kubelet")
    k8s.wait_running(namespace, ["kept"])
    stored = k8s.allocations(RANGE)
    assert stored == {pods["leaky"]: f"{namespace}/leaky", pods["kept"]: f"{namespace}/kept"}, "the address leaked"

    # The reconciler CronJob as documented, every minute instead of every ten. This node has no
    # kube-proxy: its pod uses the host's network and the API server's address.
    docs = [d for d in yaml.safe_load_all((INSTALL / "reconciler-cronjob.yaml").read_text()) if d]
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            doc["data"]["kubeconfig"] = doc["data"]["kubeconfig"].replace("https://kubernetes.default.svc",
                                                                          cluster.server)
        if doc["kind"] == "CronJob":
            assert doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] == node.image
            doc["spec"]["schedule"] = "* * * * *"
            pod = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            pod["hostNetwork"] = True
            pod["tolerations"] = [TOLERATION]
    try:
        for doc in docs:
            k8s.apply(doc)
        try:
            k8s.wait(lambda: pods["leaky"] not in k8s.allocations(RANGE), 240,
                     "the CronJob's reconciler freed the leaked address", every=3)
        except AssertionError:
            raise AssertionError(k8s.describe(SYSTEM)) from None
        assert k8s.allocations(RANGE) == {pods["kept"]: f"{namespace}/kept"}
        jobs = [j for j in k8s.batch.list_namespaced_job(SYSTEM).items
                if any(o.kind == "CronJob" and o.name == "whereabouts-reconciler"
                       for o in j.metadata.owner_references or [])]
        assert jobs, "the address was freed by a Job of the CronJob"
        k8s.wait(lambda: any((j.status.succeeded or 0) >= 1 for j in k8s.batch.list_namespaced_job(SYSTEM).items
                             if j.metadata.name in {x.metadata.name for x in jobs}), 120, "the Job succeeded")
        assert k8s.reservations(namespace) == [pods["kept"]]
    finally:
        for doc in docs:
            k8s.delete(doc)

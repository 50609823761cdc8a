"""hack/docker-run.sh for real: a container of the node's Docker engine on a CNI network served by our plugin."""

from __future__ import annotations

import json
import os
import subprocess

from tests.node.conftest import ROOT, rand


def test_docker_run_attaches_a_busybox_container_through_bridge_and_whereabouts_and_frees_it(
        node, namespace, namespace_kubeconfig, k8s, tmp_path):
    from kubernetes import client

    bridge = f"wbn{rand(8)}"
    conf = tmp_path / "10-docker.conflist"
    conf.write_text(json.dumps({"cniVersion": "1.0.0", "name": "docker-run", "plugins": [
        {"type": "bridge", "bridge": bridge, "ipam": {
            "type": "whereabouts", "range": "10.124.30.0/24",
            "kubernetes": {"kubeconfig": str(namespace_kubeconfig)},
            "configuration_path": str(tmp_path / "no-flat-file.conf"), "node_lock_dir": str(tmp_path / "locks")}},
        {"type": "firewall", "backend": "iptables"}]}))
    env = {**os.environ, **node.env, "PAUSE_IMAGE": node.busybox}
    try:
        proc = subprocess.run(
            ["bash", str(ROOT / "hack" / "docker-run.sh"), "-c", str(conf), "-a",
             f"K8S_POD_NAMESPACE={namespace};K8S_POD_NAME=web-0", "--", node.busybox,
             "sh", "-c", "ip -4 -o addr show dev eth0; cat /proc/net/route | wc -l"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "10.124.30.1/24" in proc.stdout, proc.stdout
        # The DEL after the container ended freed the address; the pause container is gone.
        pool = client.CustomObjectsApi(k8s.api).get_namespaced_custom_object(
            "whereabouts.cni.cncf.io", "v1alpha1", namespace, "ippools", "10.124.30.0-24")
        assert not pool["spec"].get("allocations"), pool["spec"]
        left = subprocess.run(["docker", "ps", "-aq", "--filter", "label=whereabouts.hack/docker-run=pause"],
                              stdout=subprocess.PIPE, text=True, env=env, check=True).stdout.split()
        assert left == []
    finally:
        subprocess.run(["ip", "link", "delete", bridge], stderr=subprocess.DEVNULL, check=False)

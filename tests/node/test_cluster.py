"""hack/cluster.sh with its scheduler and controller manager: what a node needs from it, and a clean `down`."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.node.conftest import ROOT, exports, leftovers_of, run

CLUSTER_SH = ROOT / "hack" / "cluster.sh"


def test_a_second_control_plane_gives_pods_tokens_runs_controllers_and_leaves_nothing_on_down(tmp_path):
    from kubernetes import client, config

    state = tmp_path / "cluster"
    env = {**os.environ, "WHEREABOUTS_CLUSTER_DIR": str(state)}
    up = run(["bash", str(CLUSTER_SH), "up"], env=env, timeout=600)
    try:
        assert up.returncode == 0, up.stderr[-4000:]
        status = run(["bash", str(CLUSTER_SH), "status"], env=env)
        assert status.returncode == 0 and "kube-scheduler pid" in status.stdout and "kube-controller-manager pid" in \
            status.stdout, status.stdout
        api = config.new_client_from_config(config_file=exports(up.stdout)["WHEREABOUTS_KUBECONFIG"])
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="sa-check")))
        # The controller manager makes the namespace's default ServiceAccount and its root CA ConfigMap ...
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            names = {s.metadata.name for s in core.list_namespaced_service_account("sa-check").items}
            cms = {c.metadata.name for c in core.list_namespaced_config_map("sa-check").items}
            if "default" in names and "kube-root-ca.crt" in cms:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("no default ServiceAccount or kube-root-ca.crt in a new namespace")
        # ... and ServiceAccount admission gives a pod its projected token.
        pod = core.create_namespaced_pod("sa-check", client.V1Pod(
            metadata=client.V1ObjectMeta(name="p"),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")])))
        assert pod.spec.service_account_name == "default"
        assert any(v.projected and any(s.service_account_token for s in v.projected.sources)
                   for v in pod.spec.volumes), pod.spec.volumes
        # Namespace deletion now finishes (the namespace controller empties it).
        core.delete_namespace("sa-check")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "sa-check" in {n.metadata.name for n in core.list_namespace().items}:
            time.sleep(1)
        assert "sa-check" not in {n.metadata.name for n in core.list_namespace().items}
        api.close()
    finally:
        down = run(["bash", str(CLUSTER_SH), "down"], env=env, timeout=300)
    assert down.returncode == 0, down.stderr[-4000:]
    assert not state.exists()
    assert leftovers_of(Path(state)) == []

"""Deployments and StatefulSets on the real node: scaling, rollouts and re-created pods never share an address."""

from __future__ import annotations

import datetime
import threading
from collections import Counter

from tests.node.conftest import NETWORKS_ANNOTATION, STATUS_ANNOTATION, network_status, pod_spec


def _template(node, nad: str, app: str) -> dict:
    return {"metadata": {"labels": {"app": app}, "annotations": {NETWORKS_ANNOTATION: nad}},
            "spec": pod_spec(node.busybox)}


def _live_addresses(k8s, namespace: str, selector: str) -> dict[str, list[str]]:
    """net1 addresses of every pod that Multus has reported and that is not being deleted."""
    out = {}
    for p in k8s.pods(namespace, selector):
        if p.metadata.deletion_timestamp is None and (p.metadata.annotations or {}).get(STATUS_ANNOTATION):
            out[p.metadata.name] = network_status(p)
    return out


class DuplicateWatch:
    """Samples the live pods' addresses and the pool in the background; remembers any duplicate."""

    def __init__(self, k8s, namespace: str, selector: str, cidr: str) -> None:
        self.k8s, self.namespace, self.selector, self.cidr = k8s, namespace, selector, cidr
        self.problems: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                live = _live_addresses(self.k8s, self.namespace, self.selector)
                counts = Counter(a for v in live.values() for a in v)
                dup = [a for a, n in counts.items() if n > 1]
                if dup:
                    self.problems.append(f"live pods share {dup}: {live}")
                self.k8s.allocations(self.cidr)  # asserts that no address is stored twice
                self.samples += 1
            except AssertionError as e:
                self.problems.append(str(e))
            except Exception:  # noqa: BLE001 - a failed read is not a finding; the next sample retries
                pass
            self._stop.wait(0.5)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_deployment_scaled_0_30_0_leaves_the_pool_empty_and_a_rollout_restart_never_duplicates(
        k8s, node, installed, namespace, bridge_net):
    cidr = "10.124.20.0/24"
    nad = bridge_net("br-deploy", {"range": cidr})
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": namespace},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 5, "maxUnavailable": 5}},
                     "template": _template(node, nad, "web")}}
    k8s.apps.create_namespaced_deployment(namespace, body)

    with DuplicateWatch(k8s, namespace, "app=web", cidr) as watch:
        k8s.apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 30}})
        try:
            k8s.wait(lambda: len([a for v in _live_addresses(k8s, namespace, "app=web").values() for a in v]) == 30
                     and sum(p.status.phase == "Running" for p in k8s.pods(namespace, "app=web")) == 30,
                     600, "30 pods Running with an address", every=2)
        except AssertionError:
            raise AssertionError(k8s.describe(namespace)) from None
        live = _live_addresses(k8s, namespace, "app=web")
        stored = k8s.allocations(cidr)
        assert sorted(stored) == sorted(a for v in live.values() for a in v)
        assert {ref.split("/")[1] for ref in stored.values()} == set(live)

        # A rollout restart replaces every pod, five at a time.
        now = datetime.datetime.now(datetime.timezone.utc).isoformat()
        k8s.apps.patch_namespaced_deployment("web", namespace, {"spec": {"template": {"metadata": {
            "annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}})

        def rolled():
            d = k8s.apps.read_namespaced_deployment("web", namespace)
            pods = k8s.pods(namespace, "app=web")
            return (d.status.updated_replicas == 30 and d.status.ready_replicas == 30
                    and (d.status.replicas or 0) == 30 and len(pods) == 30
                    and len(_live_addresses(k8s, namespace, "app=web")) == 30)

        try:
            k8s.wait(rolled, 600, "the rollout restart done", every=2)
        except AssertionError:
            raise AssertionError(k8s.describe(namespace)) from None
        after = _live_addresses(k8s, namespace, "app=web")
        assert not set(after) & set(live), "every pod was replaced"
        assert sorted(k8s.allocations(cidr)) == sorted(a for v in after.values() for a in v)

        k8s.apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 0}})
        k8s.wait(lambda: not k8s.pods(namespace, "app=web"), 300, "every pod gone", every=2)
        k8s.wait(lambda: not k8s.allocations(cidr), 60, "the pool empty")
    assert watch.samples > 10
    assert not watch.problems, watch.problems[:5]
    assert k8s.reservations(namespace) == []


def test_a_statefulset_pod_recreated_under_its_name_never_shares_a_live_address(
        k8s, node, installed, namespace, bridge_net):
    cidr = "10.124.21.0/24"
    nad = bridge_net("br-sts", {"range": cidr})
    body = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": namespace},
            "spec": {"replicas": 3, "serviceName": "db", "podManagementPolicy": "Parallel",
                     "selector": {"matchLabels": {"app": "db"}}, "template": _template(node, nad, "db")}}
    k8s.apps.create_namespaced_stateful_set(namespace, body)
    names = ["db-0", "db-1", "db-2"]
    with DuplicateWatch(k8s, namespace, "app=db", cidr) as watch:
        k8s.wait_running(namespace, names)
        k8s.wait(lambda: len(_live_addresses(k8s, namespace, "app=db")) == 3, 60, "three addresses")
        for round_ in range(3):
            before = k8s.core.read_namespaced_pod("db-1", namespace).metadata.uid
            k8s.core.delete_namespaced_pod("db-1", namespace)

            def recreated():
                p = [p for p in k8s.pods(namespace, "app=db") if p.metadata.name == "db-1"]
                return (p and p[0].metadata.uid != before and p[0].status.phase == "Running"
                        and (p[0].metadata.annotations or {}).get(STATUS_ANNOTATION))

            try:
                k8s.wait(recreated, 120, f"db-1 recreated (round {round_})")
            except AssertionError:
                raise AssertionError(k8s.describe(namespace)) from None
            live = _live_addresses(k8s, namespace, "app=db")
            flat = [a for v in live.values() for a in v]
            assert len(flat) == len(set(flat)) == 3, live
            k8s.wait(lambda: sorted(k8s.allocations(cidr)) == sorted(
                a for v in _live_addresses(k8s, namespace, "app=db").values() for a in v), 60,
                "the pool holds exactly the live pods' addresses")
        k8s.apps.delete_namespaced_stateful_set("db", namespace)
        k8s.wait(lambda: not k8s.pods(namespace, "app=db"), 180, "the StatefulSet's pods gone", every=2)
        k8s.wait(lambda: not k8s.allocations(cidr), 60, "the pool empty")
    assert not watch.problems, watch.problems[:5]

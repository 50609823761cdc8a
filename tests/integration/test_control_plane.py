"""The local control plane behaves like a real cluster for what the plugin uses:
our CRDs (schema validation, optimistic concurrency) and coordination Leases."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import urllib.error
import urllib.request

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.helpers.kubeconfig import write_kubeconfig

GROUP = "whereabouts.cni.cncf.io"
VERSION = "v1alpha1"


def ippool(name: str, cidr: str, allocations: dict | None = None) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {"range": cidr, "allocations": allocations or {}},
    }


def alloc(container: str, pod: str, ifname: str = "eth0") -> dict:
    return {"id": container, "podref": pod, "ifname": ifname}


def raw(cluster, method, path, body=None, content_type="application/json", accept="application/json"):
    """One request with the admin token, independent of the client's version."""
    ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
    req = urllib.request.Request(
        cluster.server + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {cluster.token}", "Content-Type": content_type, "Accept": accept},
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture
def crds(kube):
    return client.CustomObjectsApi(kube)


def create(crds, namespace, plural, body):
    return crds.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)


def get(crds, namespace, plural, name):
    return crds.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)


def replace(crds, namespace, plural, body):
    name = body["metadata"]["name"]
    return crds.replace_namespaced_custom_object(GROUP, VERSION, namespace, plural, name, body)


def test_crds_are_installed(kube):
    ext = client.ApiextensionsV1Api(kube)
    for plural in ("ippools", "overlappingrangeipreservations", "nodeslicepools"):
        crd = ext.read_custom_resource_definition(f"{plural}.{GROUP}")
        assert crd.spec.scope == "Namespaced"
        assert [v.name for v in crd.spec.versions] == [VERSION]
        established = {c.type: c.status for c in crd.status.conditions}
        assert established.get("Established") == "True"


def test_ippool_create_read_update(crds, namespace):
    created = create(crds, namespace, "ippools", ippool("10.0.0.0-24", "10.0.0.0/24", {"1": alloc("c1", f"{namespace}/p1")}))
    assert created["spec"]["allocations"]["1"]["podref"] == f"{namespace}/p1"

    pool = get(crds, namespace, "ippools", "10.0.0.0-24")
    assert pool["spec"]["range"] == "10.0.0.0/24"
    assert pool["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]

    pool["spec"]["allocations"]["2"] = {**alloc("c2", f"{namespace}/p2", "net1"), "ipamclaimref": f"{namespace}/claim"}
    updated = replace(crds, namespace, "ippools", pool)
    assert updated["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]

    again = get(crds, namespace, "ippools", "10.0.0.0-24")
    assert set(again["spec"]["allocations"]) == {"1", "2"}
    assert again["spec"]["allocations"]["2"]["ipamclaimref"] == f"{namespace}/claim"
    assert again["spec"]["allocations"]["2"]["ifname"] == "net1"


def test_ippool_stale_resource_version_conflicts(crds, namespace):
    create(crds, namespace, "ippools", ippool("10.1.0.0-24", "10.1.0.0/24"))
    first = get(crds, namespace, "ippools", "10.1.0.0-24")
    second = get(crds, namespace, "ippools", "10.1.0.0-24")

    first["spec"]["allocations"]["1"] = alloc("c1", f"{namespace}/a")
    replace(crds, namespace, "ippools", first)

    second["spec"]["allocations"]["1"] = alloc("c2", f"{namespace}/b")
    with pytest.raises(ApiException) as err:
        replace(crds, namespace, "ippools", second)
    assert err.value.status == 409

    # The loser re-reads and retries on top of the winner's write.
    fresh = get(crds, namespace, "ippools", "10.1.0.0-24")
    assert fresh["spec"]["allocations"]["1"]["id"] == "c1"
    fresh["spec"]["allocations"]["2"] = alloc("c2", f"{namespace}/b")
    replace(crds, namespace, "ippools", fresh)


def test_ippool_json_patch_with_resource_version_test(crds, cluster, namespace):
    """The Go plugin writes pools with a JSON Patch guarded by a `test` op."""
    created = create(crds, namespace, "ippools", ippool("10.2.0.0-24", "10.2.0.0/24"))
    rv = created["metadata"]["resourceVersion"]
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/ippools/10.2.0.0-24"
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/spec/allocations/1", "value": alloc("c1", f"{namespace}/p")},
    ]
    status, body = raw(cluster, "PATCH", path, ops, content_type="application/json-patch+json")
    assert status == 200
    assert body["spec"]["allocations"]["1"]["id"] == "c1"

    status, body = raw(cluster, "PATCH", path, ops, content_type="application/json-patch+json")
    assert status in (409, 422), body  # rv is stale now: the test op fails


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"range": "10.3.0.0/24", "allocations": {"1": {"id": "c1"}}}, id="allocation-without-podref"),
        pytest.param({"range": "10.3.0.0/24", "allocations": {"1": {"podref": "x/y"}}}, id="allocation-without-id"),
        pytest.param({"range": 167968768, "allocations": {}}, id="range-not-a-string"),
        pytest.param({"range": "10.3.0.0/24"}, id="no-allocations"),
        pytest.param({"allocations": {}}, id="no-range"),
        pytest.param({"range": "10.3.0.0/24", "allocations": {"1": {"id": 7, "podref": "x/y"}}}, id="id-not-a-string"),
    ],
)
def test_ippool_schema_rejects_malformed(crds, namespace, spec):
    body = ippool("bad", "unused")
    body["spec"] = spec
    with pytest.raises(ApiException) as err:
        create(crds, namespace, "ippools", body)
    assert err.value.status == 422


def test_ippool_unknown_fields_are_pruned(crds, namespace):
    body = ippool("10.4.0.0-24", "10.4.0.0/24", {"1": {**alloc("c1", f"{namespace}/p"), "bogus": "x"}})
    body["spec"]["bogus"] = 1
    create(crds, namespace, "ippools", body)
    pool = get(crds, namespace, "ippools", "10.4.0.0-24")
    assert "bogus" not in pool["spec"]
    assert "bogus" not in pool["spec"]["allocations"]["1"]


def test_ippool_printer_columns(cluster, crds, namespace):
    create(crds, namespace, "ippools", ippool("10.5.0.0-24", "10.5.0.0/24"))
    status, table = raw(
        cluster, "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/ippools",
        accept="application/json;as=Table;v=v1;g=meta.k8s.io",
    )
    assert status == 200
    columns = [c["name"] for c in table["columnDefinitions"]]
    assert columns[:3] == ["Name", "Range", "Age"]
    assert table["rows"][0]["cells"][:2] == ["10.5.0.0-24", "10.5.0.0/24"]


def test_overlapping_reservation_create(crds, namespace):
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "OverlappingRangeIPReservation",
        "metadata": {"name": "10.6.0.5"},
        "spec": {"podref": f"{namespace}/p", "ifname": "eth0", "containerid": "c1"},
    }
    create(crds, namespace, "overlappingrangeipreservations", body)
    got = get(crds, namespace, "overlappingrangeipreservations", "10.6.0.5")
    assert got["spec"] == body["spec"]

    # The name is the claim: a second reservation of the same IP conflicts.
    with pytest.raises(ApiException) as err:
        create(crds, namespace, "overlappingrangeipreservations", body)
    assert err.value.status == 409

    no_podref = {**body, "metadata": {"name": "10.6.0.6"}, "spec": {"containerid": "c2"}}
    with pytest.raises(ApiException) as err:
        create(crds, namespace, "overlappingrangeipreservations", no_podref)
    assert err.value.status == 422


def test_nodeslicepool_keeps_status(crds, namespace):
    """No status subresource (as in Go): status is written with the object."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "NodeSlicePool",
        "metadata": {"name": "net1"},
        "spec": {"range": "10.7.0.0/16", "sliceSize": "/24"},
        "status": {"allocations": [{"nodeName": "node-a", "sliceRange": "10.7.0.0/24"}]},
    }
    create(crds, namespace, "nodeslicepools", body)
    got = get(crds, namespace, "nodeslicepools", "net1")
    assert got["status"] == body["status"]

    got["status"]["allocations"].append({"nodeName": "node-b"})
    with pytest.raises(ApiException) as err:
        replace(crds, namespace, "nodeslicepools", got)
    assert err.value.status == 422


def _lease(name: str, holder: str) -> client.V1Lease:
    # MicroTime wants microseconds on the wire; isoformat() drops them when 0.
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=123456)
    return client.V1Lease(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1LeaseSpec(
            holder_identity=holder, lease_duration_seconds=2, acquire_time=now, renew_time=now, lease_transitions=0
        ),
    )


def test_lease_create_read_update_and_conflict(kube, namespace):
    coord = client.CoordinationV1Api(kube)
    created = coord.create_namespaced_lease(namespace, _lease("whereabouts", f"{namespace}/pod-a"))
    assert created.spec.holder_identity == f"{namespace}/pod-a"

    first = coord.read_namespaced_lease("whereabouts", namespace)
    stale = coord.read_namespaced_lease("whereabouts", namespace)
    assert first.metadata.resource_version == created.metadata.resource_version

    first.spec.holder_identity = f"{namespace}/pod-b"
    first.spec.lease_transitions = 1
    updated = coord.replace_namespaced_lease("whereabouts", namespace, first)
    assert updated.spec.holder_identity == f"{namespace}/pod-b"
    assert updated.metadata.resource_version != created.metadata.resource_version

    stale.spec.holder_identity = f"{namespace}/pod-c"
    with pytest.raises(ApiException) as err:
        coord.replace_namespaced_lease("whereabouts", namespace, stale)
    assert err.value.status == 409
    assert coord.read_namespaced_lease("whereabouts", namespace).spec.holder_identity == f"{namespace}/pod-b"


def test_namespace_scoped_kubeconfig(cluster, namespace, tmp_path):
    """write_kubeconfig() produces a file the official client can use."""
    from kubernetes import config

    path = write_kubeconfig(
        tmp_path / "kc", cluster.server, ca_file=cluster.ca_file, token=cluster.token, namespace=namespace
    )
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    contexts, active = config.list_kube_config_contexts(config_file=str(path))
    assert active["context"]["namespace"] == namespace
    api = config.new_client_from_config(config_file=str(path))
    try:
        names = [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items]
        assert namespace in names
    finally:
        api.close()

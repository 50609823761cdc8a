"""Shared fixtures: one real control plane per session, a namespace per test.

The ``cluster`` fixture attaches to the cluster that ``WHEREABOUTS_KUBECONFIG``
points at when it answers, and otherwise starts one with
``hack/cluster.sh up``; a cluster it started is stopped at the end of the
session unless ``WHEREABOUTS_KEEP_CLUSTER=1``. Tests that use ``cluster``,
``kube`` or ``namespace`` get the ``cluster`` marker automatically, so
``pytest -m "not cluster"`` runs everything else without a control plane.
"""

from __future__ import annotations

import base64
import copy
import os
import secrets
import shlex
import ssl
import string
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers.store import Pods, Pools  # noqa: E402 - needs ROOT on sys.path

CLUSTER_SCRIPT = ROOT / "hack" / "cluster.sh"
CLUSTER_FIXTURES = {"cluster", "kube", "namespace", "namespace_kubeconfig"}


@dataclass(frozen=True)
class Cluster:
    """How to reach the test control plane as the admin user."""

    kubeconfig: Path
    server: str
    token: str
    ca_file: Path
    started_here: bool = False

    def env(self) -> dict[str, str]:
        return {
            "WHEREABOUTS_KUBECONFIG": str(self.kubeconfig),
            "WHEREABOUTS_APISERVER": self.server,
            "WHEREABOUTS_ADMIN_TOKEN": self.token,
            "WHEREABOUTS_CA_FILE": str(self.ca_file),
        }


def pytest_collection_modifyitems(config, items):
    for item in items:
        if CLUSTER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)


def _readyz(server: str, token: str, ca_file: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    req = urllib.request.Request(server.rstrip("/") + "/readyz", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


def _cluster_from_kubeconfig(path: Path, tmpdir: Path) -> Cluster | None:
    """Read server, token and CA of the current context; None if unusable."""
    try:
        cfg = yaml.safe_load(path.read_text())
        ctx_name = cfg["current-context"]
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cl = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
    except (OSError, KeyError, TypeError, StopIteration, yaml.YAMLError):
        return None
    server = cl.get("server")
    token = os.environ.get("WHEREABOUTS_ADMIN_TOKEN") or user.get("token")
    ca = os.environ.get("WHEREABOUTS_CA_FILE") or cl.get("certificate-authority")
    if not ca and cl.get("certificate-authority-data"):
        ca = tmpdir / "ca.crt"
        ca.write_bytes(base64.b64decode(cl["certificate-authority-data"]))
    if not (server and token and ca):
        return None
    cluster = Cluster(kubeconfig=path, server=server, token=token, ca_file=Path(ca))
    return cluster if _readyz(server, token, cluster.ca_file) else None


def _cluster_sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _start_cluster() -> Cluster:
    # A cluster that hack/cluster.sh already runs is reused and left running.
    already_running = _cluster_sh("status").returncode == 0
    proc = _cluster_sh("up")
    if proc.returncode != 0:
        pytest.fail(f"hack/cluster.sh up failed (exit {proc.returncode}):\n{proc.stderr}", pytrace=False)
    exports = {}
    for line in proc.stdout.splitlines():
        parts = shlex.split(line)
        if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
            key, _, value = parts[1].partition("=")
            exports[key] = value
    return Cluster(
        kubeconfig=Path(exports["WHEREABOUTS_KUBECONFIG"]),
        server=exports["WHEREABOUTS_APISERVER"],
        token=exports["WHEREABOUTS_ADMIN_TOKEN"],
        ca_file=Path(exports["WHEREABOUTS_CA_FILE"]),
        started_here=not already_running,
    )


@pytest.fixture(scope="session")
def cluster():
    """The session's control plane (attached to or started here)."""
    with tempfile.TemporaryDirectory(prefix="wb-cluster-") as tmp:
        found = None
        env_kubeconfig = os.environ.get("WHEREABOUTS_KUBECONFIG")
        if env_kubeconfig:
            found = _cluster_from_kubeconfig(Path(env_kubeconfig), Path(tmp))
            if found is None:
                print(f"WHEREABOUTS_KUBECONFIG={env_kubeconfig} is not reachable: starting a cluster", file=sys.stderr)
        if found is None:
            found = _start_cluster()

        saved = {k: os.environ.get(k) for k in found.env()}
        os.environ.update(found.env())
        try:
            yield found
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            if found.started_here and os.environ.get("WHEREABOUTS_KEEP_CLUSTER") != "1":
                proc = _cluster_sh("down")
                if proc.returncode != 0:
                    print(f"hack/cluster.sh down failed:\n{proc.stderr}", file=sys.stderr)


@pytest.fixture
def kube(cluster):
    """An admin ``kubernetes.client.ApiClient`` built from the kubeconfig."""
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def new_namespace(kube):
    """A factory of fresh namespaces ``<prefix><random>``; all deleted (not waited for) afterwards."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(kube)
    made: list[str] = []

    def make(prefix: str = "t-") -> str:
        alphabet = string.ascii_lowercase + string.digits
        name = prefix + "".join(secrets.choice(alphabet) for _ in range(10))
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        made.append(name)
        return name

    yield make
    for name in made:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture
def namespace(new_namespace):
    """A fresh namespace ``t-<random>``; deleted (not waited for) afterwards."""
    return new_namespace()


@pytest.fixture
def namespace_kubeconfig(cluster, namespace, tmp_path):
    """An admin kubeconfig whose context points at this test's namespace."""
    from tests.helpers.kubeconfig import write_kubeconfig

    return write_kubeconfig(
        tmp_path / "admin.kubeconfig",
        cluster.server,
        ca_file=cluster.ca_file,
        token=cluster.token,
        namespace=namespace,
    )


# --- fixtures shared by the tests that run the plugin -----------------------------------


@pytest.fixture
def pools(kube, namespace) -> Pools:
    return Pools(kube, namespace)


@pytest.fixture
def netconf(namespace_kubeconfig, tmp_path):
    """Build a bridge-style network config whose ipam points at this test's namespace."""

    def make(ipam: dict[str, Any] | None = None, version: str = "1.0.0", **top: Any) -> dict[str, Any]:
        base_ipam = {
            "type": "whereabouts",
            "range": "10.10.0.0/24",
            "kubernetes": {"kubeconfig": str(namespace_kubeconfig)},
            "configuration_path": str(tmp_path / "no-flat-file.conf"),
            "node_lock_dir": str(tmp_path / "locks"),
            "log_file": str(tmp_path / "whereabouts.log"),
            "log_level": "debug",
        }
        base_ipam.update(ipam or {})
        conf = {"cniVersion": version, "name": "testnet", "type": "bridge", "bridge": "br-test",
                "ipam": {k: v for k, v in base_ipam.items() if v is not None}}
        conf.update(copy.deepcopy(top))
        return conf

    return make


@pytest.fixture
def pods(kube, namespace) -> Pods:
    return Pods(kube, namespace)


# --- the fault proxy (tests/helpers/faultproxy.py) in front of the test API server -----------


@pytest.fixture(scope="session")
def fault_proxy_certs(tmp_path_factory):
    """The fault proxy's CA and serving certificate, made once per session (openssl takes a moment)."""
    from tests.helpers.faultproxy import make_certs

    return make_certs(tmp_path_factory.mktemp("faultproxy-certs"))


@pytest.fixture
def fault_proxies(cluster, tmp_path, fault_proxy_certs):
    """A factory: `make(namespace)` starts a `FaultProxy` in front of the test API server, with
    `.kubeconfig`: the admin token, the proxy's CA and that namespace. All are stopped at teardown;
    no thread of them may outlive the test."""
    from tests.helpers.faultproxy import FaultProxy
    from tests.helpers.kubeconfig import write_kubeconfig

    started: list[FaultProxy] = []

    def make(namespace: str) -> FaultProxy:
        proxy = FaultProxy(cluster.server, cluster.ca_file, fault_proxy_certs).start()
        started.append(proxy)
        proxy.kubeconfig = write_kubeconfig(tmp_path / f"faultproxy-{len(started)}.kubeconfig", proxy.url,
                                            ca_file=fault_proxy_certs.ca, token=cluster.token, namespace=namespace)
        return proxy

    try:
        yield make
    finally:
        for proxy in started:
            proxy.stop()
        assert not any(proxy.alive() for proxy in started), "fault proxy threads still running"


@pytest.fixture
def fault_proxy(fault_proxies, namespace):
    """A `FaultProxy` in front of the test API server for this test's namespace."""
    return fault_proxies(namespace)

"""Fixtures for running the Go whereabouts plugin and ours side by side.

Both plugins are run the same way (a process, the same CNI_* environment, the
same bytes on stdin) against the same control plane, namespace and pools. The
Go plugin is built once per machine by hack/build-go-whereabouts.sh (cached
outside the repo); WHEREABOUTS_GO_PLUGIN points at a prebuilt binary instead.

How the two plugins find their store, checked in the Go source (v0.9.4,
pkg/storage/kubernetes and pkg/config):
- The namespace is the one of the kubeconfig's current context, else
  kube-system: the same rule as ours, so a per-test kubeconfig puts both in
  the test's namespace.
- The Go plugin fails with "config file not found" unless a flat file exists
  (the inline `configuration_path` or one of the well-known paths), so every
  config here names a flat file that exists, holding what the DaemonSet
  writes (`datastore` and the kubeconfig).
- The Go plugin needs K8S_POD_NAME in CNI_ARGS; tests/helpers/cni.py always
  sends it unless a test asks otherwise.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import cni
from tests.helpers.store import Pools
from tests.helpers.kubeconfig import write_kubeconfig

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "hack" / "build-go-whereabouts.sh"
GROUP, VERSION = "whereabouts.cni.cncf.io", "v1alpha1"
POOLS, RESERVATIONS = "ippools", "overlappingrangeipreservations"
# Metadata the API server fills in and that never can match between two objects.
VOLATILE_METADATA = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "namespace",
                     "selfLink")


@pytest.fixture(scope="session")
def go_binary(request) -> str:
    """The Go plugin's binary: $WHEREABOUTS_GO_PLUGIN, else built (or found cached) by the build script."""
    override = os.environ.get("WHEREABOUTS_GO_PLUGIN")
    if override:
        if not os.access(override, os.X_OK):
            pytest.fail(f"WHEREABOUTS_GO_PLUGIN={override} is not an executable file", pytrace=False)
        return override
    # The first build takes minutes: let its progress through to the terminal.
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        proc = subprocess.run(["bash", str(BUILD_SCRIPT)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=None, text=True, cwd=ROOT)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not os.access(lines[-1], os.X_OK):
        pytest.fail(f"hack/build-go-whereabouts.sh failed (exit {proc.returncode}); its progress is above",
                    pytrace=False)
    return lines[-1]


@dataclass
class Plugin:
    """One of the two plugins, run as a runtime runs it. Each writes its own log file."""

    name: str
    argv: list[str]
    log_dir: Path

    def __str__(self) -> str:
        return self.name

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def _conf(self, conf: dict[str, Any]) -> dict[str, Any]:
        conf = copy.deepcopy(conf)
        conf["ipam"].setdefault("log_file", str(self.log_file))
        return conf

    def start(self, conf: dict[str, Any], command: str = "ADD", **kw: Any):
        return cni.start(self._conf(conf), command, plugin=self.argv, **kw)

    def run(self, conf: dict[str, Any], command: str = "ADD", **kw: Any) -> cni.Run:
        return cni.finish(self.start(conf, command, **kw))

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@pytest.fixture
def ours(tmp_path) -> Plugin:
    return Plugin("ours", list(cni.PLUGIN), tmp_path)


@pytest.fixture
def go(go_binary, tmp_path) -> Plugin:
    return Plugin("go", [go_binary], tmp_path)


@pytest.fixture
def both(ours, go) -> tuple[Plugin, Plugin]:
    return ours, go


# --- the store as the official client sees it (independent of both plugins) ----------


class Store(Pools):
    """The store as the official client sees it, with what the comparisons below need besides."""

    def leases(self) -> list[str]:
        return sorted(lease.metadata.name for lease in self.coord.list_namespaced_lease(self.namespace).items)

    def remove_allocation(self, name: str, offset: str) -> None:
        """Drop one entry of a pool (to simulate what a half-done earlier call left behind)."""
        pool = self.pool(name)
        del pool["spec"]["allocations"][offset]
        self.custom.replace_namespaced_custom_object(GROUP, VERSION, self.namespace, POOLS, name, pool)

    def pool_ips(self, name: str) -> dict[str, dict[str, Any]]:
        """`{ip: allocation}` of a pool, decoding the offsets against spec.range."""
        pool = self.pool(name)
        if pool is None:
            return {}
        base = ipaddress.ip_network(pool["spec"]["range"]).network_address
        return {str(base + int(k)): v for k, v in (pool["spec"].get("allocations") or {}).items()}


def comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """An object without what the API server fills in (uid, resourceVersion, timestamps, managedFields)."""
    obj = copy.deepcopy(obj)
    meta = obj.get("metadata") or {}
    for key in VOLATILE_METADATA:
        meta.pop(key, None)
    return obj


# --- one namespace with its kubeconfig, flat file and config builder -------------------


@dataclass
class Env:
    """A namespace both plugins use through the same kubeconfig and flat file."""

    namespace: str
    kubeconfig: Path
    dir: Path
    store: Store
    flat_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.flat_file = self.dir / "whereabouts.d" / "whereabouts.conf"
        self.flat_file.parent.mkdir(parents=True, exist_ok=True)
        # What the Go DaemonSet writes next to the kubeconfig.
        self.flat_file.write_text(json.dumps({"datastore": "kubernetes",
                                              "kubernetes": {"kubeconfig": str(self.kubeconfig)}}))

    def conf(self, ipam: dict[str, Any] | None = None, version: str = "1.0.0", **top: Any) -> dict[str, Any]:
        """A bridge-style network config; `ipam` keys set to None are dropped."""
        base = {
            "type": "whereabouts",
            "range": "10.40.0.0/24",
            "kubernetes": {"kubeconfig": str(self.kubeconfig)},
            "configuration_path": str(self.flat_file),
            "node_lock_dir": str(self.dir / "locks"),  # ours only; the Go plugin ignores unknown keys
            "log_level": "debug",
        }
        base.update(ipam or {})
        conf = {"cniVersion": version, "name": "compatnet", "type": "bridge", "bridge": "br-compat",
                "ipam": {k: v for k, v in base.items() if v is not None}}
        conf.update(copy.deepcopy(top))
        return conf


@pytest.fixture
def new_env(cluster, kube, new_namespace, tmp_path) -> Callable[[], Env]:
    """A factory of fresh namespaces (deleted afterwards), each with its own kubeconfig."""

    def make() -> Env:
        name = new_namespace("compat-")
        d = tmp_path / name
        d.mkdir()
        kubeconfig = write_kubeconfig(d / "kubeconfig", cluster.server, ca_file=cluster.ca_file, token=cluster.token,
                                      namespace=name)
        return Env(name, kubeconfig, d, Store(kube, name))

    return make


@pytest.fixture
def env(new_env) -> Env:
    return new_env()


def finish_all(procs: list, timeout: float = 600) -> list[cni.Run]:
    """Wait for many invocations at once, draining every pipe meanwhile: the Go plugin logs to stderr
    as well, and one process blocked on a full pipe while it holds the Lease would stall the rest."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, len(procs))) as pool:
        return list(pool.map(lambda proc: cni.finish(proc, timeout=timeout), procs))

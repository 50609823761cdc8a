"""End-to-end fixtures: real network namespaces, the real main plugins in /usr/lib/cni, our plugin on CNI_PATH.

Every namespace, bridge and parent link gets a random name and is removed in the
fixture's teardown, also when the test fails half-way. Each bridge also gets an
ACCEPT rule for traffic between its own ports in the host's FORWARD chain (iptables
and ip6tables), removed with it: once Docker has run on a machine, FORWARD's
policy is DROP and br_netfilter passes bridged frames through it, so without the
rule namespaces on one bridge could not reach each other. Addresses come from
10.123.0.0/16 and fd00:123::/48 and live only inside the namespaces and links
made here: the links in the host namespace carry no address.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CNI_DIR = Path("/usr/lib/cni")
GROUP, VERSION = "whereabouts.cni.cncf.io", "v1alpha1"


def sh(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def rand(n: int = 6) -> str:
    return secrets.token_hex(n // 2 + 1)[:n]


@pytest.fixture(scope="session")
def netns_ready():
    """Skip (with the reason) where namespaces or the reference plugins are unavailable."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if not (CNI_DIR / "bridge").exists():
        pytest.skip(f"{CNI_DIR}/bridge is missing: install containernetworking-plugins (hack/setup.sh)")
    for tool in ("ip", "ping"):
        if shutil.which(tool) is None:
            pytest.skip(f"'{tool}' is missing (hack/setup.sh installs it)")


@pytest.fixture(scope="session")
def plugin_bin(tmp_path_factory) -> Path:
    """A directory whose `whereabouts` runs the plugin of this checkout (first on CNI_PATH)."""
    d = tmp_path_factory.mktemp("cni-bin")
    script = Path(sys.executable).parent / "whereabouts"
    if script.exists():
        (d / "whereabouts").symlink_to(script)
    else:
        wrapper = d / "whereabouts"
        wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m whereabouts \"$@\"\n")
        wrapper.chmod(0o755)
    return d


@dataclass
class CNIRun:
    rc: int
    out: Any
    stdout: str
    stderr: str

    def ok(self) -> Any:
        assert self.rc == 0, f"rc={self.rc} stdout={self.stdout} stderr={self.stderr}"
        return self.out

    @property
    def ips(self) -> list[str]:
        return [ip["address"] for ip in self.ok()["ips"]]


class Lab:
    """Namespaces, links and CNI calls of one test; `close()` removes everything it made."""

    def __init__(self, plugin_bin: Path, kubeconfig: Path, tmp: Path, kube_namespace: str) -> None:
        self.plugin_bin = plugin_bin
        self.kubeconfig = kubeconfig
        self.tmp = tmp
        self.kube_namespace = kube_namespace
        self.cni_path = f"{plugin_bin}:{CNI_DIR}"
        self.namespaces: list[str] = []
        self.links: list[str] = []
        self.forward_rules: list[tuple[str, list[str]]] = []  # (iptables or ip6tables, rule spec)
        self.attached: list[tuple[dict, str, str, str]] = []  # conf, netns, container id, ifname

    # --- resources -----------------------------------------------------------------

    def netns(self) -> str:
        name = f"wbt-{rand(8)}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        return name

    def bridge_name(self) -> str:
        """A name for a bridge that the bridge plugin will create (removed at the end).

        Traffic between the bridge's own ports is accepted in FORWARD (see the module doc).
        """
        name = f"wbtbr{rand(8)}"
        self.links.append(name)
        for tool in ("iptables", "ip6tables"):
            if shutil.which(tool) is None:
                continue
            rule = ["FORWARD", "-i", name, "-o", name, "-m", "comment", "--comment", "whereabouts-e2e", "-j", "ACCEPT"]
            if sh(tool, "-w", "-I", *rule, check=False).returncode == 0:
                self.forward_rules.append((tool, rule))
        return name

    def parent_link(self) -> str:
        """An up link in the host namespace to hang macvlans on: a dummy, or one end of a veth pair."""
        name = f"wbtp{rand(8)}"
        if sh("ip", "link", "add", name, "type", "dummy", check=False).returncode != 0:
            sh("ip", "link", "add", name, "type", "veth", "peer", "name", f"wbtq{name[4:]}")
            sh("ip", "link", "set", f"wbtq{name[4:]}", "up")
        self.links.append(name)
        sh("ip", "link", "set", name, "up")
        return name

    def close(self) -> None:
        errors = []
        for conf, netns, cid, ifname in reversed(self.attached):
            run = self.cni("DEL", conf, netns, cid, ifname, track=False)
            if run.rc != 0:
                errors.append(f"DEL {cid}/{ifname}: {run.stdout}")
        for name in self.namespaces:
            if Path(f"/var/run/netns/{name}").exists():
                proc = sh("ip", "netns", "delete", name, check=False)
                if proc.returncode != 0:
                    errors.append(f"ip netns delete {name}: {proc.stderr}")
        for name in self.links:
            if sh("ip", "link", "show", name, check=False).returncode == 0:
                proc = sh("ip", "link", "delete", name, check=False)
                if proc.returncode != 0:
                    errors.append(f"ip link delete {name}: {proc.stderr}")
        for tool, rule in self.forward_rules:
            proc = sh(tool, "-w", "-D", *rule, check=False)
            if proc.returncode != 0:
                errors.append(f"{tool} -D {' '.join(rule)}: {proc.stderr}")
        if errors:
            print("lab cleanup problems:\n  " + "\n  ".join(errors), file=sys.stderr)

    # --- configs and calls ---------------------------------------------------------

    def ipam(self, **keys: Any) -> dict[str, Any]:
        ipam = {
            "type": "whereabouts",
            "range": "10.123.0.0/24",
            "kubernetes": {"kubeconfig": str(self.kubeconfig)},
            "configuration_path": str(self.tmp / "no-flat-file.conf"),
            "node_lock_dir": str(self.tmp / "locks"),
            "log_file": str(self.tmp / "whereabouts.log"),
            "log_level": "debug",
        }
        ipam.update(keys)
        return ipam

    def bridge_conf(self, bridge: str, version: str = "1.0.0", **ipam: Any) -> dict[str, Any]:
        return {"cniVersion": version, "name": f"br-{bridge}", "type": "bridge", "bridge": bridge,
                "ipam": self.ipam(**ipam)}

    def macvlan_conf(self, master: str, version: str = "1.0.0", **ipam: Any) -> dict[str, Any]:
        return {"cniVersion": version, "name": f"mv-{master}", "type": "macvlan", "master": master,
                "mode": "bridge", "ipam": self.ipam(**ipam)}

    def env(self, command: str, netns: str, cid: str, ifname: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": f"/var/run/netns/{netns}" if netns else "",
            "CNI_IFNAME": ifname,
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=e2e;K8S_POD_NAME={cid};K8S_POD_INFRA_CONTAINER_ID={cid}",
            "CNI_PATH": self.cni_path,
        }

    def cni(self, command: str, conf: dict, netns: str, cid: str, ifname: str = "eth0", *,
            plugin: str | None = None, track: bool = True) -> CNIRun:
        """One call of the main plugin named by `type` (or `plugin`), as a runtime makes it."""
        exe = str(CNI_DIR / conf["type"]) if plugin is None else plugin
        proc = subprocess.run([exe], input=json.dumps(conf), env=self.env(command, netns, cid, ifname),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
        try:
            out = json.loads(proc.stdout) if proc.stdout.strip() else None
        except ValueError:
            out = None
        if track and command == "ADD":
            # The runtime calls DEL even after a failed ADD: so does close().
            self.attached.append((conf, netns, cid, ifname))
        if track and command == "DEL" and proc.returncode == 0:
            self.attached = [a for a in self.attached if (a[2], a[3]) != (cid, ifname)]
        return CNIRun(proc.returncode, out, proc.stdout, proc.stderr)

    def add(self, conf: dict, netns: str, cid: str | None = None, ifname: str = "eth0") -> CNIRun:
        return self.cni("ADD", conf, netns, cid or netns, ifname)

    def delete(self, conf: dict, netns: str, cid: str | None = None, ifname: str = "eth0") -> CNIRun:
        return self.cni("DEL", conf, netns, cid or netns, ifname)

    def addresses(self, netns: str, ifname: str = "eth0") -> list[str]:
        out = json.loads(sh("ip", "netns", "exec", netns, "ip", "-j", "address", "show", "dev", ifname).stdout)
        return [f"{a['local']}/{a['prefixlen']}" for link in out for a in link.get("addr_info", [])
                if a.get("scope") == "global"]

    def ping(self, netns: str, ip: str, tries: int = 5) -> None:
        """Ping until one reply (IPv6 may need a moment for duplicate address detection)."""
        ip = ip.split("/")[0]
        flag = "-6" if ":" in ip else "-4"
        last = None
        for _ in range(tries):
            last = sh("ip", "netns", "exec", netns, "ping", flag, "-c1", "-W2", ip, check=False)
            if last.returncode == 0:
                return
        raise AssertionError(f"{netns} cannot reach {ip}: {last.stdout}{last.stderr}")


@pytest.fixture
def netns_lab(netns_ready, plugin_bin, namespace_kubeconfig, namespace, tmp_path):
    lab = Lab(plugin_bin, namespace_kubeconfig, tmp_path, namespace)
    try:
        yield lab
    finally:
        lab.close()


class Store:
    """What the plugin stored, read with the official client."""

    def __init__(self, api, namespace: str) -> None:
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace

    def pool(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.rest import ApiException

        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "ippools", name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def allocations(self, name: str) -> dict[str, Any]:
        pool = self.pool(name)
        return (pool["spec"].get("allocations") or {}) if pool else {}

    def reservations(self) -> list[str]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace,
                                                          "overlappingrangeipreservations")["items"]
        return sorted(i["metadata"]["name"] for i in items)

    def create_pool(self, name: str, cidr: str, allocations: dict[str, Any]) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "IPPool", "metadata": {"name": name},
                "spec": {"range": cidr, "allocations": allocations}}
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, "ippools", body)


@pytest.fixture
def store(kube, namespace) -> Store:
    return Store(kube, namespace)

"""The single-folder build (hack/build.sh) runs on a host with no Python at all.

Builds dist/ when it is missing or older than the sources (about a minute on two
cores), then runs the bundle through the CNI bin dir symlink with PATH holding no
Python, and once more with every Python installation of this machine hidden by
empty mounts in a private mount namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import CNI_DIR, ROOT, rand, sh

pytestmark = pytest.mark.build

LINK = ROOT / "dist" / "cni-bin" / "whereabouts"
FOLDER = ROOT / "dist" / "whereabouts"


def _sources_mtime() -> float:
    files = list((ROOT / "whereabouts").rglob("*.py")) + [ROOT / "setup.cfg", ROOT / "hack" / "build.sh",
                                                         ROOT / "hack" / "lib" / "common.sh"]
    return max(f.stat().st_mtime for f in files if f.exists())


@pytest.fixture(scope="module")
def bundle() -> Path:
    """dist/, rebuilt when stale, held under a shared lock so that no other build replaces it meanwhile."""
    import fcntl

    (ROOT / "build").mkdir(exist_ok=True)
    with open(ROOT / "build" / ".build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        exe = FOLDER / "whereabouts"
        if not (LINK.exists() and exe.exists() and exe.stat().st_mtime >= _sources_mtime()):
            fcntl.flock(lock, fcntl.LOCK_UN)  # hack/build.sh takes it exclusively
            proc = subprocess.run(["bash", str(ROOT / "hack" / "build.sh"), "--no-bench"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, timeout=900)
            if proc.returncode != 0:
                pytest.fail(f"hack/build.sh failed:\n{proc.stderr[-4000:]}", pytrace=False)
            fcntl.flock(lock, fcntl.LOCK_SH)
        assert LINK.is_symlink() and not os.path.isabs(os.readlink(LINK)), "the CNI bin entry is a relative symlink"
        yield LINK


def bare_env(tmp_path: Path, **cni: str) -> dict[str, str]:
    """An environment whose PATH has no Python (nor anything else)."""
    empty = tmp_path / "empty-path"
    empty.mkdir(exist_ok=True)
    return {"PATH": str(empty), **cni}


def run(exe: Path | str, env: dict[str, str], stdin: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe)], input=json.dumps(stdin), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60)


def test_the_bundle_holds_no_test_tooling_and_no_python_launcher(bundle):
    internal = FOLDER / "_internal"
    assert (internal / "whereabouts" / "plugin" / "cni.pyc").exists() and list(internal.glob("libpython3*"))
    names = {p.name for p in internal.iterdir()}
    assert not {"hypothesis", "pytest", "_pytest"} & names
    # setuptools in the bundle brings PyInstaller's run-time hook that imports it on every start (~100 ms)
    assert not {"setuptools", "pkg_resources", "_distutils_hack"} & names
    # No interpreter executable is shipped: the bootloader embeds libpython.
    assert not [p for p in FOLDER.rglob("python*") if p.is_file() and os.access(p, os.X_OK)
                and not p.name.startswith("libpython")]


def test_version_without_python_on_path(bundle, tmp_path):
    proc = run(bundle, bare_env(tmp_path, CNI_COMMAND="VERSION"), {"cniVersion": "0.3.1"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"cniVersion": "0.3.1",
                                       "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}


def _conf(kubeconfig: Path, tmp_path: Path) -> dict:
    return {"cniVersion": "1.0.0", "name": "bundle", "type": "bridge", "bridge": "unused",
            "ipam": {"type": "whereabouts", "range": "10.123.20.0/24",
                     "kubernetes": {"kubeconfig": str(kubeconfig)},
                     "configuration_path": str(tmp_path / "none.conf"),
                     "node_lock_dir": str(tmp_path / "locks")}}


def _cni_env(tmp_path: Path, command: str, cid: str) -> dict[str, str]:
    return bare_env(tmp_path, CNI_COMMAND=command, CNI_CONTAINERID=cid, CNI_NETNS="/proc/self/ns/net",
                    CNI_IFNAME="net1", CNI_ARGS=f"K8S_POD_NAMESPACE=build;K8S_POD_NAME={cid}")


def test_add_and_del_without_python_on_path(bundle, namespace_kubeconfig, kube, namespace, tmp_path):
    from kubernetes import client

    conf = _conf(namespace_kubeconfig, tmp_path)
    add = run(bundle, _cni_env(tmp_path, "ADD", "b1"), conf)
    assert add.returncode == 0, add.stdout + add.stderr
    assert json.loads(add.stdout)["ips"] == [{"address": "10.123.20.1/24"}]
    custom = client.CustomObjectsApi(kube)
    pool = custom.get_namespaced_custom_object("whereabouts.cni.cncf.io", "v1alpha1", namespace, "ippools",
                                               "10.123.20.0-24")
    assert pool["spec"]["allocations"] == {"1": {"id": "b1", "podref": "build/b1", "ifname": "net1"}}
    dele = run(bundle, _cni_env(tmp_path, "DEL", "b1"), conf)
    assert dele.returncode == 0, dele.stdout + dele.stderr
    pool = custom.get_namespaced_custom_object("whereabouts.cni.cncf.io", "v1alpha1", namespace, "ippools",
                                               "10.123.20.0-24")
    assert not pool["spec"].get("allocations")


def test_exec_credential_kubeconfig_uses_the_bundled_official_client(bundle, cluster, namespace, tmp_path):
    """Exec auth is served by the official client: it must be in the bundle and work without Python."""
    plugin = tmp_path / "credential.sh"
    plugin.write_text("#!/bin/sh\nprintf '%s' '" + json.dumps({
        "apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
        "status": {"token": cluster.token}}) + "'\n")
    plugin.chmod(0o755)
    from tests.helpers.kubeconfig import write_kubeconfig

    kubeconfig = write_kubeconfig(tmp_path / "exec.kubeconfig", cluster.server, ca_file=cluster.ca_file,
                                  namespace=namespace,
                                  exec={"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin),
                                        "interactiveMode": "Never"})
    conf = _conf(kubeconfig, tmp_path)
    add = run(bundle, _cni_env(tmp_path, "ADD", "e1"), conf)
    assert add.returncode == 0, add.stdout + add.stderr
    assert json.loads(add.stdout)["ips"] == [{"address": "10.123.20.1/24"}]
    assert run(bundle, _cni_env(tmp_path, "DEL", "e1"), conf).returncode == 0


def _python_dirs() -> list[str]:
    """Every place a Python installation could be found on this machine."""
    found = set()
    for pattern in ("/usr/lib/python3*", "/usr/local/lib/python3*", "/usr/lib/x86_64-linux-gnu/libpython3*",
                    "/usr/bin/python3*"):
        found.update(str(p) for p in Path("/").glob(pattern.lstrip("/")) if p.exists())
    for d in (Path.home() / ".pyenv", ROOT / ".venv", Path("/opt/python"), Path("/usr/local/bin")):
        if d.exists():
            found.add(str(d))
    return sorted(found)


@pytest.mark.netns
def test_add_through_the_bridge_with_every_python_hidden(bundle, netns_ready, namespace_kubeconfig, tmp_path):
    """The real bridge plugin runs the bundle while the interpreters of this machine are covered up."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is missing")
    ns = f"wbt-{rand(8)}"
    bridge = f"wbtbr{rand(8)}"
    cni_bin = tmp_path / "cni-bin"
    shutil.copytree(bundle.parent, cni_bin, symlinks=True)
    conf = _conf(namespace_kubeconfig, tmp_path)
    conf["bridge"] = bridge
    (tmp_path / "conf.json").write_text(json.dumps(conf))
    # Files first: some are symlinks into directories that the tmpfs mounts cover up.
    hide = sorted((d for d in _python_dirs() if not str(tmp_path).startswith(d)), key=os.path.isdir)
    mounts = "".join(f"mount -t tmpfs -o ro,size=4k none '{d}' && " if os.path.isdir(d)
                     else f"mount --bind /dev/null '{d}' && " for d in hide)
    probe = ("if command -v python3 || ls /usr/lib/python3*/os.py; then echo 'a Python is still visible' >&2; "
             "exit 99; fi; ")

    def call(command: str) -> subprocess.CompletedProcess:
        script = (f"{mounts}{probe}exec env -i PATH=/nonexistent CNI_COMMAND={command} CNI_CONTAINERID={ns} "
                  f"CNI_NETNS=/var/run/netns/{ns} CNI_IFNAME=eth0 CNI_PATH={cni_bin}:{CNI_DIR} "
                  f"{CNI_DIR}/bridge < {tmp_path}/conf.json")
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)

    sh("ip", "netns", "add", ns)
    try:
        add = call("ADD")
        assert add.returncode == 0, add.stdout + add.stderr
        assert [ip["address"] for ip in json.loads(add.stdout)["ips"]] == ["10.123.20.1/24"]
        out = sh("ip", "netns", "exec", ns, "ip", "-br", "address", "show", "eth0").stdout
        assert "10.123.20.1/24" in out
        dele = call("DEL")
        assert dele.returncode == 0, dele.stdout + dele.stderr
    finally:
        sh("ip", "netns", "delete", ns, check=False)
        sh("ip", "link", "delete", bridge, check=False)

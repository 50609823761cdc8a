"""hack/install-cni.sh, the image's entrypoint, against directories standing in for the node's.

Runs under dash (a plain POSIX sh) with a fake plugin folder: no root, no cluster.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import ROOT

SCRIPT = ROOT / "hack" / "install-cni.sh"
SH = shutil.which("dash") or "/bin/sh"


def fake_build(src: Path, build_id: str, answers: bool = True) -> None:
    """An image's cni-bin layout whose `whereabouts` is a tiny script answering VERSION."""
    folder = src / ".whereabouts" / build_id
    folder.mkdir(parents=True)
    (folder / "_internal").mkdir()
    (folder / "_internal" / "lib.so").write_bytes(b"\0" * 100)
    reply = '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}' if answers else "boom"
    exe = folder / "whereabouts"
    exe.write_text(f"#!/bin/sh\necho '{reply}'\n")
    exe.chmod(0o755)
    link = src / "whereabouts"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(f".whereabouts/{build_id}/whereabouts")


class Node:
    def __init__(self, tmp: Path) -> None:
        self.src = tmp / "image" / "cni-bin"
        self.bin = tmp / "host" / "opt" / "cni" / "bin"
        self.net = tmp / "host" / "etc" / "cni" / "net.d"
        self.sa = tmp / "sa"
        for d in (self.src, self.bin, self.net, self.sa):
            d.mkdir(parents=True)
        self.set_sa("token-1", "CA-1", "whereabouts-ns")

    def set_sa(self, token: str, ca: str, namespace: str | None = None) -> None:
        # The kubelet swaps the projected files atomically; so do we.
        for name, value in (("token", token), ("ca.crt", ca), ("namespace", namespace)):
            if value is not None:
                tmp = self.sa / f".{name}.tmp"
                tmp.write_text(value)
                os.replace(tmp, self.sa / name)

    def env(self, **extra: str) -> dict[str, str]:
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SRC": str(self.src), "CNI_BIN_DIR": str(self.bin),
                "CNI_NET_DIR": str(self.net), "CNI_NET_DIR_HOST": "/etc/cni/net.d", "SA_DIR": str(self.sa),
                "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", **extra}

    def once(self, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([SH, str(SCRIPT), "--once"], env=self.env(**extra), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=60)

    @property
    def kubeconfig_path(self) -> Path:
        return self.net / "whereabouts.d" / "whereabouts.kubeconfig"

    def kubeconfig(self) -> dict:
        return yaml.safe_load(self.kubeconfig_path.read_text())


@pytest.fixture
def node(tmp_path) -> Node:
    return Node(tmp_path)


def test_installs_the_folder_the_symlink_the_flat_file_and_a_private_kubeconfig(node):
    fake_build(node.src, "0.1.0-aaaaaaaaaaaa")
    proc = node.once()
    assert proc.returncode == 0, proc.stderr

    link = node.bin / "whereabouts"
    assert os.readlink(link) == ".whereabouts/0.1.0-aaaaaaaaaaaa/whereabouts"
    assert subprocess.run([str(link)], stdout=subprocess.PIPE, text=True).stdout.startswith('{"cniVersion"')

    conf = json.loads((node.net / "whereabouts.d" / "whereabouts.conf").read_text())
    assert conf == {"datastore": "kubernetes",
                    "kubernetes": {"kubeconfig": "/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig"},
                    "configuration_path": "/etc/cni/net.d/whereabouts.d"}
    assert not (node.net / "whereabouts.d" / "nodename").exists()

    assert stat.S_IMODE(node.kubeconfig_path.stat().st_mode) == 0o600
    kc = node.kubeconfig()
    cluster = kc["clusters"][0]["cluster"]
    assert cluster["server"] == "https://10.96.0.1:443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == b"CA-1"
    assert kc["users"][0]["user"] == {"token": "token-1"}
    assert kc["contexts"][0]["context"]["namespace"] == "whereabouts-ns"
    assert "token-1" not in proc.stderr, "the token must never be logged"


def test_the_kubeconfig_is_read_by_the_plugin(node):
    from whereabouts.k8s import kubeconfig

    fake_build(node.src, "0.1.0-aaaaaaaaaaaa")
    assert node.once().returncode == 0
    conn = kubeconfig.load(str(node.kubeconfig_path))
    assert (conn.server, conn.token, conn.namespace, conn.ca_data) == (
        "https://10.96.0.1:443", "token-1", "whereabouts-ns", "CA-1")


def test_ipv6_service_host_and_log_settings(node):
    fake_build(node.src, "0.1.0-aaaaaaaaaaaa")
    proc = node.once(KUBERNETES_SERVICE_HOST="fd00:10:96::1", KUBERNETES_SERVICE_PORT="6443",
                     WHEREABOUTS_LOG_FILE="/var/log/whereabouts.log", WHEREABOUTS_LOG_LEVEL="debug")
    assert proc.returncode == 0, proc.stderr
    assert node.kubeconfig()["clusters"][0]["cluster"]["server"] == "https://[fd00:10:96::1]:6443"
    conf = json.loads((node.net / "whereabouts.d" / "whereabouts.conf").read_text())
    assert conf["log_file"] == "/var/log/whereabouts.log" and conf["log_level"] == "debug"


def test_the_node_name_is_written_where_both_plugins_look_for_it(node):
    """The runtime gives a CNI plugin no node name: node slices and blocks read whereabouts.d/nodename."""
    fake_build(node.src, "0.1.0-aaaaaaaaaaaa")
    proc = node.once(NODENAME="worker-7.example.com")
    assert proc.returncode == 0, proc.stderr
    assert (node.net / "whereabouts.d" / "nodename").read_text() == "worker-7.example.com\n"


def test_upgrade_swaps_the_symlink_keeps_the_previous_folder_and_prunes_older(node):
    for i, build_id in enumerate(["0.1.0-111111111111", "0.1.1-222222222222", "0.1.2-333333333333"]):
        if i:
            shutil.rmtree(node.src / ".whereabouts")
        fake_build(node.src, build_id)
        proc = node.once()
        assert proc.returncode == 0, proc.stderr
        assert os.readlink(node.bin / "whereabouts") == f".whereabouts/{build_id}/whereabouts"
    assert sorted(p.name for p in (node.bin / ".whereabouts").iterdir()) == ["0.1.1-222222222222",
                                                                            "0.1.2-333333333333"]
    # Running again changes nothing.
    proc = node.once()
    assert "already installed" in proc.stderr


def test_replaces_a_plain_binary_left_by_the_go_plugin(node):
    (node.bin / "whereabouts").write_bytes(b"\x7fELF go binary")
    fake_build(node.src, "0.1.0-aaaaaaaaaaaa")
    assert node.once().returncode == 0
    assert os.readlink(node.bin / "whereabouts") == ".whereabouts/0.1.0-aaaaaaaaaaaa/whereabouts"


def test_a_folder_overwritten_through_the_symlink_is_copied_again(node):
    """A plain `cp go-binary /opt/cni/bin/whereabouts` lands in our folder; the next install repairs it."""
    fake_build(node.src, "0.1.0-aaaaaaaaaaaa")
    assert node.once().returncode == 0
    installed = node.bin / ".whereabouts" / "0.1.0-aaaaaaaaaaaa" / "whereabouts"
    installed.write_text('#!/bin/sh\necho \'{"cniVersion":"1.0.0","supportedVersions":["0.4.0"]} go\'\n')
    proc = node.once()
    assert proc.returncode == 0 and "copying the plugin" in proc.stderr
    assert installed.read_bytes() == (node.src / ".whereabouts" / "0.1.0-aaaaaaaaaaaa" / "whereabouts").read_bytes()


def test_a_build_that_does_not_answer_version_is_not_switched_to(node):
    fake_build(node.src, "0.1.0-aaaaaaaaaaaa")
    assert node.once().returncode == 0
    shutil.rmtree(node.src / ".whereabouts")
    fake_build(node.src, "0.2.0-bbbbbbbbbbbb", answers=False)
    proc = node.once()
    assert proc.returncode != 0
    assert "does not answer VERSION" in proc.stderr
    assert os.readlink(node.bin / "whereabouts") == ".whereabouts/0.1.0-aaaaaaaaaaaa/whereabouts"


def test_missing_token_is_a_clear_failure(node):
    fake_build(node.src, "0.1.0-aaaaaaaaaaaa")
    (node.sa / "token").unlink()
    proc = node.once()
    assert proc.returncode != 0
    assert "FAILED at step: read" in proc.stderr and "token" in proc.stderr


def test_rotation_rewrites_the_kubeconfig_and_sigterm_stops_at_once(node):
    fake_build(node.src, "0.1.0-aaaaaaaaaaaa")
    proc = subprocess.Popen([SH, str(SCRIPT)], env=node.env(WHEREABOUTS_SYNC_INTERVAL="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def wait_for(check, what: str, timeout: float = 15) -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    if check():
                        return
                except (OSError, yaml.YAMLError, KeyError, TypeError):
                    pass
                time.sleep(0.1)
            raise AssertionError(f"timed out waiting for {what}")

        wait_for(lambda: node.kubeconfig()["users"][0]["user"]["token"] == "token-1", "the first kubeconfig")
        node.set_sa("token-2", "CA-1")
        wait_for(lambda: node.kubeconfig()["users"][0]["user"]["token"] == "token-2", "the rotated token")
        node.set_sa("token-2", "CA-2")
        wait_for(lambda: base64.b64decode(node.kubeconfig()["clusters"][0]["cluster"]["certificate-authority-data"])
                 == b"CA-2", "the rotated CA")
        assert stat.S_IMODE(node.kubeconfig_path.stat().st_mode) == 0o600
        # Deleted on the node: written again.
        node.kubeconfig_path.unlink()
        wait_for(node.kubeconfig_path.exists, "the kubeconfig to come back")
        (node.bin / "whereabouts").unlink()
        wait_for(lambda: (node.bin / "whereabouts").is_symlink(), "the plugin link to come back")

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)
        assert time.monotonic() - started < 3
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert "token-1" not in err and "token-2" not in err
    assert not list(node.net.rglob("*.tmp.*")), "no temporary files left behind"


def test_an_invalid_single_lease_writes_nothing(node):
    fake_build(node.src, "0.1.0-aaaaaaaaaaaa")
    proc = node.once(WHEREABOUTS_SINGLE_LEASE="yes")
    assert proc.returncode != 0
    assert "WHEREABOUTS_SINGLE_LEASE" in proc.stdout + proc.stderr
    assert not (node.net / "whereabouts.d").exists() and not list(node.bin.iterdir())


def test_flat_file_options_from_the_daemonset(node):
    fake_build(node.src, "0.1.0-aaaaaaaaaaaa")
    proc = node.once(WHEREABOUTS_LOG_FILE="/var/log/whereabouts.log", WHEREABOUTS_LOG_LEVEL="debug",
                     WHEREABOUTS_SINGLE_LEASE="false")
    assert proc.returncode == 0, proc.stderr
    conf = json.loads((node.net / "whereabouts.d" / "whereabouts.conf").read_text())
    assert conf["log_file"] == "/var/log/whereabouts.log" and conf["log_level"] == "debug"
    assert conf["single_lease"] is False
    # The kubeconfig is JSON, so the plugin reads it without a YAML parser.
    assert json.loads(node.kubeconfig_path.read_text())["current-context"] == "whereabouts-context"

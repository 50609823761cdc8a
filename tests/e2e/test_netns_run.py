"""hack/netns-run.sh: ADD, command, DEL in reverse with prevResult, namespace gone, whatever fails."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, rand

pytestmark = pytest.mark.netns

SCRIPT = ROOT / "hack" / "netns-run.sh"


def netns_run(lab, confs: list[dict], *command: str, name: str, extra: tuple[str, ...] = (),
              env: dict | None = None) -> subprocess.CompletedProcess:
    files = []
    for i, conf in enumerate(confs):
        path = lab.tmp / f"{i:02d}-{conf['name']}.conf"
        path.write_text(json.dumps(conf))
        files += ["-c", str(path)]
    argv = ["bash", str(SCRIPT), "-n", name, "-p", lab.cni_path, *extra, *files, "--", *command]
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=180,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **(env or {})})


def gone(name: str) -> bool:
    return not Path(f"/var/run/netns/{name}").exists()


def test_runs_the_command_attached_then_tears_down(netns_lab, store):
    one = netns_lab.bridge_conf(netns_lab.bridge_name(), version="1.0.0", range="10.123.10.0/24")
    two = netns_lab.bridge_conf(netns_lab.bridge_name(), version="0.3.1", range="10.123.11.0/24")
    name = f"wbt-{rand(8)}"
    proc = netns_run(netns_lab, [one, two], "ip", "-j", "address", "show", name=name,
                     extra=("-a", "K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web-0"))
    assert proc.returncode == 0, proc.stderr
    inside = {a["local"] for link in json.loads(proc.stdout) for a in link.get("addr_info", [])}
    assert {"10.123.10.1", "10.123.11.1"} <= inside
    # DEL ran in reverse order of ADD.
    assert proc.stderr.index("DEL br-" + two["bridge"]) < proc.stderr.index("DEL br-" + one["bridge"])
    assert gone(name)
    assert store.allocations("10.123.10.0-24") == {} and store.allocations("10.123.11.0-24") == {}
    assert store.reservations() == []


def test_del_gets_the_add_result_as_prev_result(netns_lab, tmp_path):
    """A recording plugin chained after bridge shows what DEL hands each plugin."""
    record = tmp_path / "calls.jsonl"
    spy = tmp_path / "spy-bin" / "spy"
    spy.parent.mkdir()
    spy.write_text(
        "#!/bin/sh\n"
        f"conf=$(cat); printf '%s\\t%s\\n' \"$CNI_COMMAND\" \"$conf\" >> {record}\n"
        # A chained plugin passes prevResult on as its result.
        "[ \"$CNI_COMMAND\" = ADD ] && printf '%s' \"$conf\" | python3 -c "
        "'import json,sys; print(json.dumps(json.load(sys.stdin)[\"prevResult\"]))'\n"
        "exit 0\n")
    spy.chmod(0o755)
    bridge = netns_lab.bridge_name()
    conflist = {"cniVersion": "1.0.0", "name": "chained", "plugins": [
        {"type": "bridge", "bridge": bridge, "ipam": netns_lab.ipam(range="10.123.12.0/24")},
        {"type": "spy"}]}
    path = tmp_path / "chained.conflist"
    path.write_text(json.dumps(conflist))
    name = f"wbt-{rand(8)}"
    proc = subprocess.run(["bash", str(SCRIPT), "-n", name, "-p", f"{spy.parent}:{netns_lab.cni_path}",
                           "-c", str(path), "--", "true"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    calls = [line.split("\t", 1) for line in record.read_text().splitlines()]
    assert [c[0] for c in calls] == ["ADD", "DEL"]
    add_conf, del_conf = (json.loads(c[1]) for c in calls)
    assert add_conf["name"] == "chained" and add_conf["cniVersion"] == "1.0.0"
    assert add_conf["prevResult"]["ips"][0]["address"] == "10.123.12.1/24"
    # DEL carries the ADD result of the whole list (libcni's cached result).
    assert del_conf["prevResult"] == add_conf["prevResult"]
    assert gone(name)


@pytest.mark.parametrize("command,status", [("true", 126), ("false", 1)])
def test_exit_status_is_the_commands_or_126_for_a_failed_teardown(netns_lab, tmp_path, command, status):
    """A plugin whose DEL fails: the teardown goes on (the namespace is deleted) and the exit status
    is the command's when it failed, else 126."""
    plugin = tmp_path / "bad-del-bin" / "baddel"
    plugin.parent.mkdir()
    plugin.write_text(
        "#!/bin/sh\n"
        "conf=$(cat)\n"
        "if [ \"$CNI_COMMAND\" = DEL ]; then\n"
        "  echo '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"DEL refused\"}'; exit 1\n"
        "fi\n"
        "printf '%s' \"$conf\" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)[\"prevResult\"]))'\n")
    plugin.chmod(0o755)
    conflist = {"cniVersion": "1.0.0", "name": "baddel", "plugins": [
        {"type": "bridge", "bridge": netns_lab.bridge_name(), "ipam": netns_lab.ipam(range="10.123.16.0/24")},
        {"type": "baddel"}]}
    path = tmp_path / "baddel.conflist"
    path.write_text(json.dumps(conflist))
    name = f"wbt-{rand(8)}"
    proc = subprocess.run(["bash", str(SCRIPT), "-n", name, "-p", f"{plugin.parent}:{netns_lab.cni_path}",
                           "-c", str(path), "--", command],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == status, proc.stderr
    assert "FAILED at step: DEL of the networks" in proc.stderr
    assert gone(name)


def test_add_failing_half_way_undoes_everything(netns_lab, store):
    good = netns_lab.bridge_conf(netns_lab.bridge_name(), range="10.123.13.0/24")
    full = netns_lab.bridge_conf(netns_lab.bridge_name(), range="10.123.14.0/30")
    store.create_pool("10.123.14.0-30", "10.123.14.0/30", {
        "1": {"id": "other-1", "podref": "x/a", "ifname": "eth0"},
        "2": {"id": "other-2", "podref": "x/b", "ifname": "eth0"}})
    name = f"wbt-{rand(8)}"
    proc = netns_run(netns_lab, [good, full], "touch", str(netns_lab.tmp / "should-not-run"), name=name)
    assert proc.returncode == 125, proc.stderr
    assert "no free address left in range 10.123.14.0/30" in proc.stderr
    assert not (netns_lab.tmp / "should-not-run").exists()
    assert gone(name)
    # The first network's address went back, the other holders kept theirs.
    assert store.allocations("10.123.13.0-24") == {}
    assert set(store.allocations("10.123.14.0-30")) == {"1", "2"}


def test_command_failure_is_reported_and_still_torn_down(netns_lab, store):
    conf = netns_lab.bridge_conf(netns_lab.bridge_name(), range="10.123.15.0/24")
    name = f"wbt-{rand(8)}"
    proc = netns_run(netns_lab, [conf], "sh", "-c", "exit 7", name=name)
    assert proc.returncode == 7
    assert gone(name)
    assert store.allocations("10.123.15.0-24") == {}


def test_static_ip_through_the_ips_capability(netns_lab, store):
    conf = netns_lab.bridge_conf(netns_lab.bridge_name(), range="10.123.16.0/24")
    conf["capabilities"] = {"ips": True}
    plain = netns_lab.bridge_conf(netns_lab.bridge_name(), range="10.123.17.0/24")  # no capability declared
    name = f"wbt-{rand(8)}"
    proc = netns_run(netns_lab, [conf, plain], "ip", "-j", "address", "show", name=name,
                     extra=("-r", json.dumps({"ips": ["10.123.16.50/24"]})))
    assert proc.returncode == 0, proc.stderr
    inside = {a["local"] for link in json.loads(proc.stdout) for a in link.get("addr_info", [])}
    assert "10.123.16.50" in inside
    assert "10.123.17.1" in inside  # the network that did not declare `ips` allocated dynamically
    assert gone(name)
    assert store.allocations("10.123.16.0-24") == {}



FAKE_DOCKER = r"""#!/bin/bash
# A stand-in for the docker CLI: the "pause container" is a sleep in a network
# namespace of its own; `run --net=container:ID` runs the command in it.
set -euo pipefail
state=STATE
case "$1" in
  run)
    shift
    if [[ "$1" == -d ]]; then
      id=$(head -c16 /dev/urandom | od -An -tx1 | tr -d ' \n')
      ns=wbt-d${id:0:7}
      ip netns add "$ns"
      ip netns exec "$ns" sleep 600 >/dev/null 2>&1 </dev/null &
      echo $! >"$state/$id.pid"; echo "$ns" >"$state/$id.ns"; echo "$@" >"$state/$id.args"
      echo "$id"
    else
      while [[ "$1" != --net=container:* ]]; do shift; done
      id=${1#--net=container:}; shift
      shift  # the image
      exec ip netns exec "$(cat "$state/$id.ns")" "$@"
    fi ;;
  inspect) cat "$state/${*: -1}.pid" ;;
  rm)
    id=${*: -1}
    kill "$(cat "$state/$id.pid")" 2>/dev/null || true
    ip netns delete "$(cat "$state/$id.ns")"
    echo "$id" >"$state/$id.removed" ;;
  *) echo "fake docker: $*" >&2; exit 1 ;;
esac
"""


def test_docker_run_with_a_stand_in_for_docker(netns_lab, store, tmp_path):
    """hack/docker-run.sh cannot meet a Docker engine here: a fake `docker` checks its logic."""
    state = tmp_path / "docker-state"
    state.mkdir()
    fake = tmp_path / "fake-bin" / "docker"
    fake.parent.mkdir()
    fake.write_text(FAKE_DOCKER.replace("STATE", str(state)))
    fake.chmod(0o755)
    conf = netns_lab.bridge_conf(netns_lab.bridge_name(), range="10.123.18.0/24")
    path = tmp_path / "net.conf"
    path.write_text(json.dumps(conf))
    env = {"PATH": f"{fake.parent}:/usr/sbin:/usr/bin:/sbin:/bin"}

    proc = subprocess.run(["bash", str(ROOT / "hack" / "docker-run.sh"), "-p", netns_lab.cni_path, "-c", str(path),
                           "--", "busybox", "ip", "-j", "address", "show"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    inside = {a["local"] for link in json.loads(proc.stdout) for a in link.get("addr_info", [])}
    assert "10.123.18.1" in inside
    (pause_id,) = [p.stem for p in state.glob("*.pid")]
    assert "--net=none" in (state / f"{pause_id}.args").read_text()
    assert (state / f"{pause_id}.removed").exists(), "the pause container was removed"
    assert store.allocations("10.123.18.0-24") == {}

    # A failing ADD still removes the pause container and exits 125.
    store.create_pool("10.123.19.0-30", "10.123.19.0/30", {
        "1": {"id": "x1", "podref": "x/a", "ifname": "eth0"}, "2": {"id": "x2", "podref": "x/b", "ifname": "eth0"}})
    full = netns_lab.bridge_conf(netns_lab.bridge_name(), range="10.123.19.0/30")
    path.write_text(json.dumps(full))
    proc = subprocess.run(["bash", str(ROOT / "hack" / "docker-run.sh"), "-p", netns_lab.cni_path, "-c", str(path),
                           "--", "busybox", "true"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=120)
    assert proc.returncode == 125, proc.stderr
    assert "no free address left" in proc.stderr
    assert len(list(state.glob("*.removed"))) == 2

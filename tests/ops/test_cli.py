"""The operator commands tried as a new user would: help, tables, JSON, refusals and errors."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys

import pytest

from tests.fakes.store import FakeStore
from tests.helpers.cni import run
from whereabouts.k8s.store import POOLS
from tests.ops.conftest import Result, cli_env, run_cli

COMMANDS = ["pools", "show", "check", "release", "reconcile"]


@pytest.mark.parametrize("argv", [["--help"], *[[c, "--help"] for c in COMMANDS]])
def test_help_everywhere(argv):
    out = run_cli(*argv)
    assert out.rc == 0 and out.out.startswith("usage: whereabouts") and "Exit status" in out.out


def test_usage_errors_exit_2_without_a_traceback(tmp_path):
    env = cli_env(tmp_path / "none")
    for argv in (["-o", "json"], ["-n", "x"], ["frobnicate"], ["release", "10.0.0.1"],
                 ["release", "10.0.0.1", "--pod", "x"], ["reconcile", "--grace", "-1"], ["pools", "-o", "xml"]):
        out = run_cli(*argv, env=env)
        assert out.rc == 2 and "Traceback" not in out.err and "error:" in out.err, (argv, out)


def test_failures_are_one_line(tmp_path, cluster):
    from tests.helpers.kubeconfig import write_kubeconfig

    missing = run_cli("pools", env=cli_env(tmp_path / "absent"))
    assert missing.rc == 1 and missing.err == f"whereabouts: error: kubeconfig {tmp_path / 'absent'} does not exist " \
                                              "(use --kubeconfig or set $KUBECONFIG)\n"
    dead = write_kubeconfig(tmp_path / "dead", "https://127.0.0.1:1", ca_file=cluster.ca_file, token="x")
    for argv in (["pools"], ["check"], ["reconcile"]):
        out = run_cli(*argv, env=cli_env(dead))
        assert out.rc == 1 and out.err.count("\n") == 1 and "Traceback" not in out.err, out
        assert out.err.startswith("whereabouts: error: cannot list")
    garbage = tmp_path / "garbage"
    garbage.write_text("{{{ not yaml")
    out = run_cli("pools", env=cli_env(garbage))
    assert out.rc == 1 and out.err.startswith(f"whereabouts: error: cannot load kubeconfig {garbage}")


def test_pools_and_show(netconf, pods, wb, wb_proc):
    ns = pods.namespace
    pods.create("a", "b")
    run(netconf({"range": "10.10.0.0/28"}), "ADD", container_id="0123456789abcdef", pod="a", pod_namespace=ns).ok()
    run(netconf({"range": "10.10.0.0/28"}), "ADD", container_id="c2", pod="b", pod_namespace=ns).ok()
    run(netconf({"range": "fd00::/120", "network_name": "blue"}), "ADD", container_id="c3", pod="b",
        pod_namespace=ns, ifname="net2").ok()

    table = wb_proc("pools")
    assert table.rc == 0
    assert table.out.splitlines() == [
        "NAME             RANGE         USED  FREE  USE%",
        "10.10.0.0-28     10.10.0.0/28  2     12    14.3%",
        "blue-fd00---120  fd00::/120    1     253   0.4%",
    ]
    assert wb("pools", "-o", "json").json == [
        {"name": "10.10.0.0-28", "range": "10.10.0.0/28", "used": 2, "free": 12, "percent": 14.3, "blocks": []},
        {"name": "blue-fd00---120", "range": "fd00::/120", "used": 1, "free": 253, "percent": 0.4, "blocks": []}]

    shown = wb_proc("show", "10.10.0.0/28")  # a CIDR names its pool
    assert shown.rc == 0 and [line.split() for line in shown.out.splitlines()] == [
        ["ADDRESS", "POD", "CONTAINER", "INTERFACE"],
        ["10.10.0.1", f"{ns}/a", "0123456789ab", "net1"],
        ["10.10.0.2", f"{ns}/b", "c2", "net1"],
    ]
    blue = wb("show", "blue-fd00---120", "-o", "json").json
    assert blue["allocations"] == [{"address": "fd00::1", "pool": "blue-fd00---120", "offset": 1, "pod": f"{ns}/b",
                                    "container": "c3", "interface": "net2"}]
    missing = wb("show", "nope")
    assert missing.rc == 1 and f"no IPPool nope in namespace {ns}" in missing.err


def test_empty_namespace(wb):
    assert wb("pools").out.startswith("No IPPools in namespace")
    assert wb("check").rc == 0
    assert wb("reconcile", "--dry-run").out.startswith("Nothing to free")


def test_check_finds_each_planted_inconsistency(pools, reserve, wb, wb_proc):
    pools.create_pool("10.20.0.0-24", "10.20.0.0/24", {
        "5": {"id": "a", "podref": "ns/a", "ifname": "net1"},      # healthy: has its reservation
        "6": {"id": "b", "podref": "ns/b", "ifname": "net1"},      # no reservation
        "0": {"id": "n", "podref": "ns/n", "ifname": "net1"},      # the network address
        "300": {"id": "o", "podref": "ns/o", "ifname": "net1"},    # beyond the /24
        "junk": {"id": "j", "podref": "ns/j", "ifname": "net1"},   # not an offset
        "7": {"id": "s", "podref": "ns/s", "ifname": "net1"},
        "07": {"id": "t", "podref": "ns/t", "ifname": "net1"},     # a second key for offset 7
    })
    pools.create_pool("10.20.0.0-28", "10.20.0.0/28", {"5": {"id": "c", "podref": "ns/c", "ifname": "net1"}})
    pools.create_pool("broken", "not-a-cidr", {})
    for name, pod in (("10.20.0.5", "ns/a"), ("10.20.0.0", "ns/n"), ("10.20.0.9", "ns/x")):
        reserve(name, pod, pod[-1])

    out = wb("check", "-o", "json")
    assert out.rc == 1 and out.json["ok"] is False
    found = {(f["kind"], f["pool"], f["address"]) for f in out.json["findings"]}
    assert found == {
        ("undecodable", "broken", ""),
        ("undecodable", "10.20.0.0-24", ""),
        ("out-of-range", "10.20.0.0-24", "10.20.0.0"),
        ("out-of-range", "10.20.0.0-24", ""),
        ("duplicate", "10.20.0.0-24", "10.20.0.7"),
        ("duplicate", "10.20.0.0-24", "10.20.0.5"),
        ("duplicate", "10.20.0.0-28", "10.20.0.5"),
        ("reservation-without-allocation", "", ""),
        ("allocation-without-reservation", "10.20.0.0-24", "10.20.0.6"),
        ("allocation-without-reservation", "10.20.0.0-24", "10.20.0.7"),
    }
    details = " ".join(f["detail"] for f in out.json["findings"])
    assert "'junk'" in details and "10.20.0.9" in details and "offset 300" in details and "'07'" in details

    table = wb_proc("check")
    assert table.rc == 1 and table.out.splitlines()[0].split() == ["KIND", "POOL", "ADDRESS", "DETAIL"]
    assert table.out.splitlines()[-1].startswith("10 problem(s) in 3 pool(s) and 3 reservation(s)")
    # Without reservations expected, the unreserved allocations are not findings.
    assert "allocation-without-reservation" not in wb("check", "--expect-reservations", "no").out
    every = {f["address"] for f in wb("check", "--expect-reservations", "yes", "-o", "json").json["findings"]
             if f["kind"] == "allocation-without-reservation"}
    assert every == {"10.20.0.5", "10.20.0.6", "10.20.0.7"}


def test_check_is_quiet_on_a_healthy_namespace(netconf, pods, wb_proc):
    ns = pods.namespace
    for i, conf in enumerate([netconf(), netconf({"range": "10.10.0.0/28"}),
                              netconf({"network_name": "blue"}), netconf({"range": "fd00::/64"}),
                              netconf({"range": "10.10.1.0/24", "enable_overlapping_ranges": False})]):
        run(conf, "ADD", container_id=f"c{i}", pod=f"p{i}", pod_namespace=ns).ok()
    out = wb_proc("check")
    assert out.rc == 0 and out.out == f"No problems found in 5 pool(s) and 4 reservation(s) of namespace {ns}.\n"


def test_release(netconf, pools, pods, reserve, wb, wb_proc):
    ns = pods.namespace
    pods.create("a", "b")
    conf = netconf()
    for pod in ("a", "b", "c"):
        run(conf, "ADD", container_id=f"id-{pod}", pod=pod, pod_namespace=ns).ok()
    run(netconf({"network_name": "blue"}, runtimeConfig={"ips": ["10.10.0.3/24"]}), "ADD", container_id="id-c",
        pod="c", pod_namespace=ns).ok()

    wrong = wb_proc("release", "10.10.0.1", "--pod", f"{ns}/b")
    assert wrong.rc == 1 and wrong.err == (f"whereabouts: error: 10.10.0.1 is held by pod {ns}/a container id-a "
                                           f"in pool 10.10.0.0-24, not by pod {ns}/b: nothing released\n")
    live = wb("release", "10.10.0.1", "--pod", f"{ns}/a")
    assert live.rc == 1 and f"pod {ns}/a still exists" in live.err and "--force" in live.err
    both = wb("release", "10.10.0.3", "--pod", f"{ns}/c")  # c holds 10.10.0.3 in two networks
    assert both.rc == 1 and "choose one with --pool" in both.err
    assert len(pools.allocations("10.10.0.0-24")) == 3 and len(pools.reservations()) == 4

    done = wb_proc("release", "10.10.0.3", "--pod", f"{ns}/c", "--pool", "blue-10.10.0.0-24")
    assert done.rc == 0 and done.out.splitlines()[-1] == f"Released 1 allocation(s) and 1 reservation(s) in namespace {ns}."
    assert pools.allocations("blue-10.10.0.0-24") == {} and pools.reservation("blue-10.10.0.3") is None
    forced = wb("release", "10.10.0.1", "--container", "id-a", "--force", "-o", "json").json
    assert [(r["kind"], r["name"]) for r in forced["released"]] == [("allocation", "10.10.0.0-24"),
                                                                     ("reservation", "10.10.0.1")]
    assert set(pools.allocations("10.10.0.0-24")) == {"2", "3"} and pools.reservation("10.10.0.1") is None

    reserve("10.10.0.50", "gone/x")  # a reservation no allocation holds
    assert wb("release", "10.10.0.50", "--pod", "other/y").rc == 1
    assert wb("release", "10.10.0.50", "--pod", "gone/x").rc == 0 and pools.reservation("10.10.0.50") is None
    nothing = wb("release", "10.10.0.99", "--pod", "gone/x")
    assert nothing.rc == 1 and "10.10.0.99 is not allocated" in nothing.err
    bad = wb("release", "not-an-ip", "--pod", "gone/x")
    assert bad.rc == 2 and bad.err.endswith("error: argument ADDRESS: 'not-an-ip' is not an IP address\n")
    assert wb("check").rc == 0



def test_a_range_split_into_blocks(netconf, pods, wb, wb_proc):
    import yaml

    ns = pods.namespace
    conf = netconf({"range": "10.64.0.0/22", "block_size": 256})
    pods.create("web-0")
    for i in range(12):  # from three nodes: three blocks
        run(conf, "ADD", container_id=f"c{i}", pod=f"p{i}", pod_namespace=ns, env={"NODENAME": f"n{i % 3}"}).ok()
    run(netconf({"range": "10.10.0.0/28"}), "ADD", container_id="c", pod="web-0", pod_namespace=ns).ok()

    pools = wb("pools", "-o", "json").json
    assert [(p["name"], p["range"], p["used"], p["free"]) for p in pools] == [
        ("10.10.0.0-28", "10.10.0.0/28", 1, 13), ("10.64.0.0-22", "10.64.0.0/22", 12, 1010)]
    blocks = [b["name"] for b in pools[1]["blocks"]]
    assert len(blocks) > 1 and all(b.startswith("10.64.0.0-22-blk") for b in blocks)
    assert sum(b["used"] for b in pools[1]["blocks"]) == 12
    assert [line.split()[0] for line in wb_proc("pools").out.splitlines()] == ["NAME", "10.10.0.0-28", "10.64.0.0-22"]

    shown = wb_proc("show", "10.64.0.0/22")  # the range's CIDR, though no IPPool holds that range
    assert shown.rc == 0 and len(shown.out.splitlines()) == 13, shown
    data = wb("show", "10.64.0.0-22", "-o", "json").json
    assert data["blocks"] == sorted(blocks, key=lambda b: int(b.rsplit("blk", 1)[1]))
    assert {a["pod"] for a in data["allocations"]} == {f"{ns}/p{i}" for i in range(12)}
    assert yaml.safe_load(wb("show", "10.64.0.0-22", "-o", "yaml").out) == data

    first = data["allocations"][0]
    done = wb("release", first["address"], "--pod", first["pod"], "--pool", "10.64.0.0/22", "-o", "yaml")
    released = yaml.safe_load(done.out)["released"]
    assert done.rc == 0 and [r["name"] for r in released] == [first["pool"], first["address"]]
    assert wb("check").rc == 0

# --- without a cluster: arguments, output formats, failures ------------------------------------------------


def offline(*argv: str) -> Result:
    """`whereabouts ARGS...` in this process, with a kubeconfig that does not exist."""
    import contextlib
    import io

    from whereabouts.operator.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(["--kubeconfig", "/nonexistent/kubeconfig", *argv])
        except SystemExit as e:
            rc = int(e.code or 0)
    return Result(rc, out.getvalue(), err.getvalue())


@pytest.mark.parametrize("argv,message", [
    (["release", "10.10.0.300", "--pod", "a/b"], "argument ADDRESS: '10.10.0.300' is not an IP address"),
    (["release", "10.0.0.1", "--container", ""], "argument --container: must not be empty"),
    (["release", "10.0.0.1", "--pod", "a/b", "--pool", "10.0.0.0/40"], "argument --pool: '10.0.0.0/40' is not a CIDR"),
    (["show", "10.64.0.0/33"], "argument POOL: '10.64.0.0/33' is not a CIDR"),
    (["show", "Not_A_Pool"], "argument POOL: 'Not_A_Pool' is neither an IPPool name nor a CIDR"),
    (["pools", "-n", "Kube_System"], "argument -n/--namespace: 'Kube_System' is not a namespace name (a DNS label)"),
    (["pools", "--context", ""], "argument --context: must not be empty"),
    (["pools", "--request-timeout", "0"], "argument --request-timeout: '0': must be above 0s"),
    (["reconcile", "--grace", "nan"], "argument --grace: 'nan': must be at least 0s"),
    (["reconcile", "--loop", "--interval", "0"], "argument --interval: '0': must be at least 1s"),
    (["reconcile", "--loop", "--interval", "0.2"], "argument --interval: '0.2': must be at least 1s"),
    (["reconcile", "--loop", "--interval", "inf"], "argument --interval: 'inf': must be at least 1s"),
])
def test_bad_arguments_are_usage_errors_naming_the_argument(argv, message):
    out = offline(*argv)
    assert out.rc == 2 and out.err.startswith("usage: whereabouts") and out.err.endswith(f"error: {message}\n"), out


SHORT_GRACE = ("usage: whereabouts", "error: --grace {} is below 70s: an ADD in flight holds an unheld reservation "
               "for up to 60s (the plugin's default lock_timeout_ms), and timestamps need 10s more for resolution "
               "and clock skew; add --unsafe-short-grace if no ADD can be running\n")


@pytest.mark.parametrize("grace", ["0", "60", "69.5"])
def test_a_grace_not_above_the_longest_add_is_refused_naming_the_rule(grace):
    out = offline("reconcile", "--dry-run", "--grace", grace)
    assert out.rc == 2 and out.out == "", out
    assert out.err.startswith(SHORT_GRACE[0]) and out.err.endswith(SHORT_GRACE[1].format(grace)), out.err


@pytest.mark.parametrize("argv", [["--grace", "70"], ["--grace", "0", "--unsafe-short-grace"]])
def test_a_grace_above_the_longest_add_or_asked_for_explicitly_is_used(argv):
    # It gets as far as the kubeconfig: the arguments were accepted.
    out = offline("reconcile", *argv)
    assert out.rc == 1 and out.err.startswith("whereabouts: error: kubeconfig /nonexistent/kubeconfig does not exist")


def test_the_default_grace_is_above_the_longest_add_with_its_margin():
    from whereabouts.operator import cli
    from whereabouts.plugin.keys import KEYS

    assert cli.LONGEST_ADD == KEYS["lock_timeout_ms"].default / 1000
    assert cli.build_parser().parse_args(["reconcile"]).grace >= cli.LONGEST_ADD + cli.GRACE_MARGIN > cli.LONGEST_ADD


def test_request_timeout_defaults_to_ten_seconds():
    from whereabouts.operator.cli import build_parser

    assert build_parser().parse_args(["pools"]).request_timeout == 10
    assert build_parser().parse_args(["pools", "--request-timeout", "2.5"]).request_timeout == 2.5


def test_without_the_kubernetes_package_a_command_fails_in_one_line(tmp_path):
    code = ("import sys; sys.modules['kubernetes'] = None; from whereabouts.__main__ import main; "
            f"sys.argv = ['whereabouts', '--kubeconfig', {str(tmp_path / 'none')!r}, 'pools']; sys.exit(main())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(tmp_path),
                          timeout=60)
    assert proc.returncode == 1 and proc.stdout == "", proc
    assert proc.stderr.startswith("whereabouts: error: the operator commands need the Python package kubernetes")
    assert proc.stderr.count("\n") == 1 and "install whereabouts with its dependencies" in proc.stderr


def _kubeconfig(path, *servers: str):
    """A kubeconfig with one context per server, `c0` current; context i uses namespace `ns-i`."""
    import yaml

    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "c0",
           "users": [{"name": "u", "user": {"token": "x"}}],
           "clusters": [{"name": f"k{i}", "cluster": {"server": s, "insecure-skip-tls-verify": True}}
                        for i, s in enumerate(servers)],
           "contexts": [{"name": f"c{i}", "context": {"cluster": f"k{i}", "user": "u", "namespace": f"ns-{i}"}}
                        for i in range(len(servers))]}
    path.write_text(yaml.safe_dump(doc))
    return path


def test_context_picks_the_kubeconfig_context(tmp_path):
    from whereabouts.operator.kubeclient import KubeError, connect

    config = _kubeconfig(tmp_path / "config", "https://127.0.0.1:1", "https://127.0.0.2:2")
    assert (connect(str(config), None).server, connect(str(config), None).namespace) == ("https://127.0.0.1:1", "ns-0")
    other = connect(str(config), None, "c1")
    assert (other.server, other.namespace) == ("https://127.0.0.2:2", "ns-1")
    assert connect(str(config), "mine", "c1").namespace == "mine"
    with pytest.raises(KubeError, match=r"no context 'c9' in kubeconfig .* \(it has: c0, c1\)"):
        connect(str(config), None, "c9")
    out = run_cli("--context", "c1", "pools", env=cli_env(config))
    assert out.rc == 1 and out.err == ("whereabouts: error: cannot list ippools in namespace ns-1: cannot connect to "
                                       "https://127.0.0.2:2: Connection refused\n")


def test_a_hung_api_server_fails_after_the_request_timeout(tmp_path):
    import socket
    import time

    with socket.socket() as hung:  # connections queue in the backlog and are never answered
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        server = f"https://127.0.0.1:{hung.getsockname()[1]}"
        env = cli_env(_kubeconfig(tmp_path / "config", server))
        began = time.monotonic()
        out = run_cli("pools", "--request-timeout", "1", env=env, timeout=60)
        took = time.monotonic() - began
    assert out.rc == 1 and out.err == (f"whereabouts: error: cannot list ippools in namespace ns-0: {server} did not "
                                       "answer within 1s (--request-timeout)\n"), out
    assert took < 8, took


def test_a_loop_whose_sweeps_fail_exits_1(tmp_path):
    env = cli_env(_kubeconfig(tmp_path / "config", "https://127.0.0.1:1"))
    loop = subprocess.Popen([sys.executable, "-m", "whereabouts", "reconcile", "--loop", "--interval", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = loop.stderr.readline()
        loop.send_signal(signal.SIGTERM)
        rest = loop.stderr.read()
        loop.wait(timeout=60)
    finally:
        loop.kill()
    assert first.startswith("whereabouts: error: cannot list overlappingrangeipreservations")
    assert "Traceback" not in rest
    assert loop.returncode == 1


@pytest.mark.parametrize("sweeps,status", [([1, 0], 0), ([0, "error"], 1), (["error"], 1), ([0, 1], 1)])
def test_a_loop_exits_with_the_status_of_its_last_sweep(monkeypatch, sweeps, status):
    import argparse

    from whereabouts.operator import sweep
    from whereabouts.operator.kubeclient import KubeError

    todo = list(sweeps)

    def sweep_once(args, kube):
        result = todo.pop(0)
        if not todo:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop stops after this sweep
        if result == "error":
            raise KubeError("cannot list ippools: refused")
        return result

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    monkeypatch.setattr(sweep, "_sweep_once", sweep_once)
    try:
        assert sweep.cmd_reconcile(argparse.Namespace(loop=True, interval=0.01), None) == status
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert todo == []


class FakeKube(FakeStore):
    """The operator's client over the in-memory store, holding the given IPPool objects."""

    def __init__(self, *pools: dict) -> None:
        super().__init__("ns")
        for pool in pools:
            self.put(POOLS, pool)

    def close(self) -> None:
        pass


@pytest.fixture
def fake(monkeypatch):
    """Run `whereabouts ARGS...` in this process against a `FakeKube` of the given pools."""
    from whereabouts.operator import cli

    def run(pools: list[dict], *argv: str) -> Result:
        monkeypatch.setattr(cli, "connect", lambda *a: FakeKube(*pools))
        return offline(*argv)

    return run


def pool_obj(name: str, cidr: str, offsets, metadata: dict | None = None) -> dict:
    from whereabouts.core.pool import new_pool_object

    obj = new_pool_object(name, cidr, "ns", metadata)
    obj["spec"]["allocations"] = {str(o): {"id": f"c{o}" * 8, "podref": f"apps/p{o}", "ifname": "net1"}
                                  for o in offsets}
    return obj


def split_range(cidr: str, block_size: int, network_name: str = "", **offsets) -> list[dict]:
    """The blocks of a range as the plugin writes them; `blk<i>=[offsets]` fills block i."""
    from whereabouts.core.blocks import Layout
    from whereabouts.core.ranges import IPRange

    net = ipaddress.ip_network(cidr)
    layout = Layout(IPRange(net, 1, net.num_addresses - 2), network_name, block_size)
    return [pool_obj(b.name, b.local.cidr, offsets.get(f"blk{b.index}", ()), layout.metadata())
            for b in layout.blocks() if f"blk{b.index}" in offsets]


def test_block_label_is_the_plugins():
    from whereabouts.core.blocks import BLOCK_OF_LABEL, block_label

    [block] = split_range("10.64.0.0/22", 256, "blue", blk2=[5])
    assert block["metadata"]["labels"][BLOCK_OF_LABEL] == block_label("blue-10.64.0.0-22")


def test_huge_counts_print_readably_but_exactly_in_json_and_yaml(fake):
    import yaml

    pools = [pool_obj("fd00---64", "fd00::/64", [1, 2]), pool_obj("10.0.0.0-8", "10.0.0.0/8", [1])]
    assert fake(pools, "pools").out.splitlines() == [
        "NAME        RANGE       USED  FREE      USE%",
        "10.0.0.0-8  10.0.0.0/8  1     16777213  0.0%",
        "fd00---64   fd00::/64   2     1.8e19    0.0%",
    ]
    free = 2**64 - 2 - 2
    assert fake(pools, "pools", "-o", "json").json[1]["free"] == free
    assert yaml.safe_load(fake(pools, "pools", "-o", "yaml").out)[1]["free"] == free


def test_pools_group_the_blocks_of_a_range(fake):
    pools = [pool_obj("10.10.0.0-24", "10.10.0.0/24", [1]),
             *split_range("10.64.0.0/22", 256, blk0=[1, 2], blk3=[254, 255]),
             *split_range("fd00:64::/64", 256, "blue", blk1=[0, 7])]
    table = fake(pools, "pools")
    assert table.rc == 0 and table.out.splitlines() == [
        "NAME               RANGE         USED  FREE    USE%",
        "10.10.0.0-24       10.10.0.0/24  1     253     0.4%",
        "10.64.0.0-22       10.64.0.0/22  3     1019    0.3%",
        "blue-fd00-64---64  fd00:64::/64  2     1.8e19  0.0%",
    ]
    wide = fake(pools, "pools", "-o", "wide")
    assert wide.out.splitlines() == [
        "NAME                      RANGE             BLOCKS  USED  FREE    USE%",
        "10.10.0.0-24              10.10.0.0/24      -       1     253     0.4%",
        "10.64.0.0-22              10.64.0.0/22      2       3     1019    0.3%",
        "  10.64.0.0-22-blk0       10.64.0.0/24      -       2     253     0.8%",
        "  10.64.0.0-22-blk3       10.64.3.0/24      -       1     254     0.4%",
        "blue-fd00-64---64         fd00:64::/64      1       2     1.8e19  0.0%",
        "  blue-fd00-64---64-blk1  fd00:64::100/120  -       2     254     0.8%",
    ]
    data = fake(pools, "pools", "-o", "json").json
    assert [(d["name"], [b["name"] for b in d["blocks"]]) for d in data] == [
        ("10.10.0.0-24", []), ("10.64.0.0-22", ["10.64.0.0-22-blk0", "10.64.0.0-22-blk3"]),
        ("blue-fd00-64---64", ["blue-fd00-64---64-blk1"])]


def test_show_a_range_across_its_blocks(fake):
    import yaml

    pools = [*split_range("10.64.0.0/22", 256, blk0=[1, 2], blk3=[7]),
             *split_range("10.64.0.0/22", 256, "blue", blk1=[9])]
    shown = fake(pools, "show", "10.64.0.0/22")
    assert shown.rc == 0 and shown.out.splitlines() == [
        "ADDRESS    POD      CONTAINER     INTERFACE",
        "10.64.0.1  apps/p1  c1c1c1c1c1c1  net1",
        "10.64.0.2  apps/p2  c2c2c2c2c2c2  net1",
        "10.64.3.7  apps/p7  c7c7c7c7c7c7  net1",
    ]
    wide = fake(pools, "show", "10.64.0.0-22", "-o", "wide").out.splitlines()
    assert wide[0].split() == ["ADDRESS", "POOL", "OFFSET", "POD", "CONTAINER", "INTERFACE"]
    assert wide[3].split() == ["10.64.3.7", "10.64.0.0-22-blk3", "7", "apps/p7", "c7" * 8, "net1"]
    data = fake(pools, "show", "blue-10.64.0.0-22", "-o", "json").json
    assert (data["range"], data["blocks"], [a["address"] for a in data["allocations"]]) == (
        "10.64.0.0/22", ["blue-10.64.0.0-22-blk1"], ["10.64.1.9"])
    assert yaml.safe_load(fake(pools, "show", "blue-10.64.0.0-22", "-o", "yaml").out) == data
    one = fake(pools, "show", "10.64.0.0-22-blk3", "-o", "json").json  # a block by its own name
    assert (one["range"], one["blocks"], len(one["allocations"])) == ("10.64.3.0/24", [], 1)
    missing = fake(pools, "show", "10.65.0.0/22")
    assert missing.rc == 1 and missing.err.startswith("whereabouts: error: no IPPool 10.65.0.0-22 in namespace ns")

"""The operator commands tried as a new user would: help, tables, JSON, refusals and errors."""

from __future__ import annotations

import pytest

from tests.helpers.cni import run
from tests.ops.conftest import cli_env, run_cli

COMMANDS = ["pools", "show", "check", "release", "reconcile"]


@pytest.mark.parametrize("argv", [["--help"], *[[c, "--help"] for c in COMMANDS]])
def test_help_everywhere(argv):
    out = run_cli(*argv)
    assert out.rc == 0 and out.out.startswith("usage: whereabouts") and "Exit status" in out.out


def test_usage_errors_exit_2_without_a_traceback(tmp_path):
    env = cli_env(tmp_path / "none")
    for argv in (["-o", "json"], ["-n", "x"], ["frobnicate"], ["release", "10.0.0.1"],
                 ["release", "10.0.0.1", "--pod", "x"], ["reconcile", "--grace", "-1"], ["pools", "-o", "yaml"]):
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
        {"name": "10.10.0.0-28", "range": "10.10.0.0/28", "used": 2, "free": 12, "percent": 14.3},
        {"name": "blue-fd00---120", "range": "fd00::/120", "used": 1, "free": 253, "percent": 0.4}]

    shown = wb_proc("show", "10.10.0.0/28")  # a CIDR names its pool
    assert shown.rc == 0 and [line.split() for line in shown.out.splitlines()] == [
        ["ADDRESS", "POD", "CONTAINER", "INTERFACE"],
        ["10.10.0.1", f"{ns}/a", "0123456789ab", "net1"],
        ["10.10.0.2", f"{ns}/b", "c2", "net1"],
    ]
    blue = wb("show", "blue-fd00---120", "-o", "json").json
    assert blue["allocations"] == [{"address": "fd00::1", "offset": 1, "pod": f"{ns}/b", "container": "c3",
                                    "interface": "net2"}]
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
    assert wb("release", "not-an-ip", "--pod", "gone/x").err == "whereabouts: error: 'not-an-ip' is not an IP address\n"
    assert wb("check").rc == 0

"""Every verb at the CNI boundary, with the objects stored on the real API server."""

import json
import os

import pytest

from tests.helpers.cni import finish, run, start
from tests.helpers.faultproxy import Rule
from tests.helpers.leases import start_waiter_and_outlast_it

VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


@pytest.mark.parametrize("version", VERSIONS)
def test_add_result_per_version(netconf, pools, version):
    conf = netconf({"gateway": "10.10.0.1", "routes": [{"dst": "0.0.0.0/0"}],
                    "dns": {"nameservers": ["10.10.0.53"]}}, version=version)
    out = run(conf, "ADD").ok().json
    ip = {"address": "10.10.0.2/24", "gateway": "10.10.0.1"}
    if version < "1.0.0":
        ip["version"] = "4"
    assert out == {"cniVersion": version, "ips": [ip], "routes": [{"dst": "0.0.0.0/0"}],
                   "dns": {"nameservers": ["10.10.0.53"]}}
    assert pools.allocations("10.10.0.0-24") == {"2": {"id": "c1", "podref": "default/pod-a", "ifname": "net1"}}
    assert pools.reservation("10.10.0.2")["spec"] == {"containerid": "c1", "podref": "default/pod-a", "ifname": "net1"}


def test_add_is_idempotent_and_follows_a_new_container(netconf, pools):
    conf = netconf()
    first = run(conf, "ADD", container_id="c1").ok().ips
    assert run(conf, "ADD", container_id="c1").ok().ips == first
    # The same pod and interface from a new sandbox keeps its address, now under the new id.
    assert run(conf, "ADD", container_id="c2").ok().ips == first
    assert pools.allocations("10.10.0.0-24") == {"1": {"id": "c2", "podref": "default/pod-a", "ifname": "net1"}}
    assert pools.reservation("10.10.0.1")["spec"]["containerid"] == "c2"
    # Another interface of the same pod is another allocation.
    assert run(conf, "ADD", container_id="c2", ifname="net2").ok().ips == ["10.10.0.2/24"]


def test_del_frees_and_is_repeatable(netconf, pools):
    conf = netconf()
    run(conf, "ADD", container_id="a", pod="a").ok()
    run(conf, "ADD", container_id="b", pod="b").ok()
    run(conf, "DEL", container_id="a", pod="a").ok()
    assert set(pools.allocations("10.10.0.0-24")) == {"2"}
    assert pools.reservation("10.10.0.1") is None
    run(conf, "DEL", container_id="a", pod="a").ok()
    run(conf, "DEL", container_id="never", pod="never").ok()
    # The freed address is the lowest free one again.
    assert run(conf, "ADD", container_id="c", pod="c").ok().ips == ["10.10.0.1/24"]


def test_del_matches_container_and_interface(netconf, pools):
    conf = netconf()
    run(conf, "ADD", container_id="a", ifname="net1").ok()
    run(conf, "ADD", container_id="a", ifname="net2").ok()
    run(conf, "DEL", container_id="a", ifname="net2").ok()
    assert pools.allocations("10.10.0.0-24") == {"1": {"id": "a", "podref": "default/pod-a", "ifname": "net1"}}


def test_del_before_any_pool_exists(netconf, pools):
    run(netconf(), "DEL").ok()
    assert pools.pool("10.10.0.0-24") is None


def test_del_fails_with_11_when_the_store_is_unreachable(netconf, tmp_path, cluster):
    from tests.helpers.kubeconfig import write_kubeconfig

    dead = write_kubeconfig(tmp_path / "dead.kubeconfig", "https://127.0.0.1:1", ca_file=cluster.ca_file, token="x")
    err = run(netconf({"kubernetes": {"kubeconfig": str(dead)}, "lock_timeout_ms": 3000}), "DEL").error(11)
    assert "127.0.0.1:1" in err["msg"]


def test_exhaustion_is_a_clean_error(netconf, pools):
    conf = netconf({"range": "10.10.0.0/30"})
    assert run(conf, "ADD", container_id="a", pod="a").ok().ips == ["10.10.0.1/30"]
    assert run(conf, "ADD", container_id="b", pod="b").ok().ips == ["10.10.0.2/30"]
    err = run(conf, "ADD", container_id="c", pod="c").error(100)
    assert "10.10.0.0/30" in err["msg"]
    assert set(pools.allocations("10.10.0.0-30")) == {"1", "2"}
    assert {r["metadata"]["name"] for r in pools.reservations()} == {"10.10.0.1", "10.10.0.2"}


def test_exclusions_and_span(netconf):
    conf = netconf({"range": "10.10.0.0/24", "range_start": "10.10.0.10", "range_end": "10.10.0.13",
                    "exclude": ["10.10.0.10/31", "10.10.0.12"]})
    assert run(conf, "ADD", container_id="a", pod="a").ok().ips == ["10.10.0.13/24"]
    run(conf, "ADD", container_id="b", pod="b").error(100)


def test_start_end_range_form(netconf, pools):
    conf = netconf({"range": "10.10.0.200-10.10.0.201/24"})
    assert run(conf, "ADD", container_id="a", pod="a").ok().ips == ["10.10.0.200/24"]
    assert pools.pool("10.10.0.0-24")["spec"]["range"] == "10.10.0.0/24"


@pytest.mark.parametrize("cidr,pool,first", [
    ("fd00:10::/64", "fd00-10---64", "fd00:10::1/64"),
    ("fd00:10::/112", "fd00-10---112", "fd00:10::1/112"),
    ("::/64", "0---64", "::1/64"),
    ("::1:0/112", "0--1-0-112", "::1:1/112"),
])
def test_ipv6_ranges(netconf, pools, cidr, pool, first):
    out = run(netconf({"range": cidr}, version="0.3.1"), "ADD").ok().json
    assert out["ips"][0] == {"address": first, "version": "6"}
    assert pools.allocations(pool) == {"1": {"id": "c1", "podref": "default/pod-a", "ifname": "net1"}}


def test_ipv6_top_of_a_64_has_an_exact_offset(netconf, pools):
    conf = netconf({"range": "fd00:20::/64", "range_start": "fd00:20::ffff:ffff:ffff:fffe"})
    assert run(conf, "ADD").ok().ips == ["fd00:20::ffff:ffff:ffff:fffe/64"]
    assert list(pools.allocations("fd00-20---64")) == [str(2**64 - 2)]
    assert pools.reservation("fd00-20--ffff-ffff-ffff-fffe") is not None


def test_ipv4_30_holds_two(netconf):
    conf = netconf({"range": "192.168.7.4/30"})
    assert run(conf, "ADD", container_id="a", pod="a").ok().ips == ["192.168.7.5/30"]
    assert run(conf, "ADD", container_id="b", pod="b").ok().ips == ["192.168.7.6/30"]


@pytest.mark.parametrize("cidr", ["10.10.0.0/31", "10.10.0.0/32", "fd00::/127", "fd00::/128"])
def test_ranges_without_usable_addresses(netconf, cidr):
    run(netconf({"range": cidr}), "ADD").error(7)


def test_dual_stack_and_static_addresses(netconf, pools):
    conf = netconf({"range": "10.10.0.0/24", "gateway": "10.10.0.1",
                    "ipRanges": [{"range": "fd00:30::/64", "exclude": ["fd00:30::1"]}],
                    "addresses": [{"address": "192.168.100.5/24", "gateway": "192.168.100.1"}]}, version="0.4.0")
    out = run(conf, "ADD").ok().json
    assert out["ips"] == [{"address": "10.10.0.2/24", "gateway": "10.10.0.1", "version": "4"},
                          {"address": "fd00:30::2/64", "version": "6"},
                          {"address": "192.168.100.5/24", "gateway": "192.168.100.1", "version": "4"}]
    assert pools.pool("192.168.100.0-24") is None
    run(conf, "DEL").ok()
    assert pools.allocations("10.10.0.0-24") == {} and pools.allocations("fd00-30---64") == {}


def test_dual_stack_rolls_back_the_first_range(netconf, pools):
    conf = netconf({"range": "10.10.0.0/24", "ipRanges": [{"range": "fd00:40::/126"}]})
    run(conf, "ADD", container_id="a", pod="a").ok()
    run(conf, "ADD", container_id="b", pod="b").ok()
    err = run(conf, "ADD", container_id="c", pod="c").error(100)
    assert "fd00:40::/126" in err["msg"]
    assert set(pools.allocations("10.10.0.0-24")) == {"1", "2"}
    assert pools.reservation("10.10.0.3") is None


def test_named_networks_are_independent_pools(netconf, pools):
    blue = netconf({"network_name": "blue"})
    red = netconf({"network_name": "red"})
    assert run(blue, "ADD").ok().ips == ["10.10.0.1/24"]
    assert run(red, "ADD").ok().ips == ["10.10.0.1/24"]
    assert pools.allocations("blue-10.10.0.0-24") and pools.allocations("red-10.10.0.0-24")
    assert pools.reservation("blue-10.10.0.1") and pools.reservation("red-10.10.0.1")
    run(blue, "DEL").ok()
    assert pools.allocations("blue-10.10.0.0-24") == {} and pools.reservation("blue-10.10.0.1") is None
    assert pools.reservation("red-10.10.0.1") is not None


def test_overlapping_ranges_never_share_an_address(netconf, pools):
    wide = netconf({"range": "10.10.0.0/24"})
    narrow = netconf({"range": "10.10.0.0/28"})
    assert run(wide, "ADD", container_id="a", pod="a").ok().ips == ["10.10.0.1/24"]
    assert run(narrow, "ADD", container_id="b", pod="b").ok().ips == ["10.10.0.2/28"]
    assert run(wide, "ADD", container_id="c", pod="c").ok().ips == ["10.10.0.3/24"]


def test_overlapping_check_off_lets_ranges_share(netconf, pools):
    wide = netconf({"range": "10.10.0.0/24", "enable_overlapping_ranges": False})
    narrow = netconf({"range": "10.10.0.0/28", "enable_overlapping_ranges": False})
    assert run(wide, "ADD", container_id="a", pod="a").ok().ips == ["10.10.0.1/24"]
    assert run(narrow, "ADD", container_id="b", pod="b").ok().ips == ["10.10.0.1/28"]
    assert pools.reservations() == []


@pytest.mark.parametrize("channel", ["runtimeConfig", "args", "CNI_ARGS"])
def test_static_ip_request_is_reserved_in_the_pool(netconf, pools, channel):
    top, extra = {}, ""
    if channel == "runtimeConfig":
        top = {"runtimeConfig": {"ips": ["10.10.0.77/24"]}}
    elif channel == "args":
        top = {"args": {"cni": {"ips": ["10.10.0.77"]}}}
    else:
        extra = "IP=10.10.0.77/24"
    conf = netconf(**top)
    assert run(conf, "ADD", container_id="a", pod="a", extra_args=extra).ok().ips == ["10.10.0.77/24"]
    assert pools.allocations("10.10.0.0-24")["77"]["podref"] == "default/pod-a".replace("pod-a", "a")
    # A dynamic ADD afterwards does not get it; a second request for it is refused.
    assert run(netconf(), "ADD", container_id="b", pod="b").ok().ips == ["10.10.0.1/24"]
    err = run(conf, "ADD", container_id="c", pod="c", extra_args=extra).error(101)
    assert "10.10.0.77" in err["msg"] and "default/a" in err["msg"]


def test_static_request_precedence(netconf):
    conf = netconf(runtimeConfig={"ips": ["10.10.0.50"]}, args={"cni": {"ips": ["10.10.0.60"]}})
    assert run(conf, "ADD", extra_args="IP=10.10.0.70").ok().ips == ["10.10.0.50/24"]


def test_check(netconf):
    conf = netconf(version="1.1.0")
    add = run(conf, "ADD").ok().json
    run({**conf, "prevResult": add}, "CHECK").ok()
    err = run({**conf, "prevResult": add}, "CHECK", container_id="other").error(103)
    assert "10.10.0.1" in err["msg"]
    wrong = {**add, "ips": [{"address": "10.10.0.99/24"}]}
    run({**conf, "prevResult": wrong}, "CHECK").error(103)
    run(conf, "CHECK").error(7)


def test_gc_frees_what_is_not_valid(netconf, pools):
    conf = netconf(version="1.1.0")
    for c in ("a", "b", "c"):
        run(conf, "ADD", container_id=c, pod=c).ok()
    gc = {**conf, "cni.dev/valid-attachments": [{"containerID": "b", "ifname": "net1"}]}
    out = run(gc, "GC")
    assert out.rc == 0 and out.stdout == ""
    assert pools.allocations("10.10.0.0-24") == {"2": {"id": "b", "podref": "default/b", "ifname": "net1"}}
    assert [r["metadata"]["name"] for r in pools.reservations()] == ["10.10.0.2"]
    legacy = {**conf, "cni.dev/attachments": []}
    run(legacy, "GC").ok()
    assert pools.allocations("10.10.0.0-24") == {}


def test_status(netconf, tmp_path, cluster):
    from tests.helpers.kubeconfig import write_kubeconfig

    conf = netconf({"range": "10.10.0.0/30"}, version="1.1.0")
    run(conf, "STATUS").ok()
    run(conf, "ADD", container_id="a", pod="a").ok()
    run(conf, "ADD", container_id="b", pod="b").ok()
    err = run(conf, "STATUS").error(50)
    assert "no free address" in err["msg"]
    dead = write_kubeconfig(tmp_path / "dead.kubeconfig", "https://127.0.0.1:1", ca_file=cluster.ca_file, token="x")
    run(netconf({"kubernetes": {"kubeconfig": str(dead)}}, version="1.1.0"), "STATUS").error(50)


def test_pod_without_kubernetes_args_is_keyed_by_container(netconf, pools):
    conf = netconf()
    assert run(conf, "ADD", container_id="x1", pod=None).ok().ips == ["10.10.0.1/24"]
    assert run(conf, "ADD", container_id="x2", pod=None).ok().ips == ["10.10.0.2/24"]
    assert run(conf, "ADD", container_id="x1", pod=None).ok().ips == ["10.10.0.1/24"]
    run(conf, "DEL", container_id="x1", pod=None).ok()
    assert set(pools.allocations("10.10.0.0-24")) == {"2"}


def test_log_file_lines(netconf, tmp_path, cluster):
    conf = netconf()
    run(conf, "ADD").ok()
    log = tmp_path / "whereabouts.log"
    assert oct(os.stat(log).st_mode & 0o777) == "0o600"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    done = [line for line in lines if line["event"] == "done"][-1]
    assert done["verb"] == "ADD" and done["container_id"] == "c1" and done["pod"] == "default/pod-a"
    assert done["addresses"] == ["10.10.0.1"] and done["outcome"] == "ok" and "lock_wait" in done
    assert cluster.token not in log.read_text()


def test_a_log_file_that_cannot_be_written_does_not_fail_the_add(netconf, pools):
    """/dev/full opens but every write fails with ENOSPC, like a full /var/log."""
    conf = netconf({"log_file": "/dev/full", "log_level": "debug"})
    assert run(conf, "ADD").ok().ips == ["10.10.0.1/24"]
    assert set(pools.allocations("10.10.0.0-24")) == {"1"}
    run(conf, "DEL").ok()
    assert pools.allocations("10.10.0.0-24") == {}


def test_log_file_symlink_is_not_followed(netconf, tmp_path):
    target = tmp_path / "target"
    target.write_text("")
    link = tmp_path / "planted.log"
    link.symlink_to(target)
    run(netconf({"log_file": str(link)}), "ADD").ok()
    assert target.read_text() == ""


def test_corrupt_pool_is_left_untouched(netconf, pools):
    pools.create_pool("10.10.0.0-24", "10.9.9.0/24", {})
    err = run(netconf(), "ADD").error(102)
    assert "10.9.9.0/24" in err["msg"]
    assert pools.pool("10.10.0.0-24")["spec"] == {"range": "10.9.9.0/24", "allocations": {}}


def test_undecodable_entries_are_kept_and_their_addresses_skipped(netconf, pools):
    pools.create_pool("10.10.0.0-24", "10.10.0.0/24", {
        "1": {"id": "x", "podref": "ns/x"}, "junk": {"id": "y", "podref": "ns/y"},
        "999": {"id": "z", "podref": "ns/z"}, "02": {"id": "w", "podref": "ns/w"}})
    assert run(netconf(), "ADD").ok().ips == ["10.10.0.3/24"]
    allocs = pools.allocations("10.10.0.0-24")
    assert {"1", "junk", "999", "02", "3"} == set(allocs)


def test_fifty_concurrent_adds_from_five_nodes(netconf, pools, tmp_path):
    procs = []
    for i in range(50):
        node = f"node{i % 5}"
        conf = netconf({"node_lock_dir": str(tmp_path / node / "locks"), "log_file": None})
        procs.append(start(conf, "ADD", container_id=f"c{i}", pod=f"p{i}", env={"NODENAME": node}))
    results = [finish(p) for p in procs]
    for r in results:
        r.ok()
    ips = [r.ips[0] for r in results]
    assert len(set(ips)) == 50
    stored = pools.allocations("10.10.0.0-24")
    assert {f"10.10.0.{k}/24" for k in stored} == set(ips)
    assert {v["id"] for v in stored.values()} == {f"c{i}" for i in range(50)}


def test_a_slow_holder_renews_its_lease(netconf, pools, tmp_path, fault_proxy):
    """A holder busy for longer than the Lease's duration (its pool write held at the fault proxy)
    keeps the Lease by renewing it, so a waiter on another node (ours here; the Go plugin in
    test_mixed) that has read the Lease does not take it over half-way."""
    write = Rule("hold", "PUT", "ippools")
    fault_proxy.set_rules(write)

    def conf(node: str) -> dict:
        return netconf({"node_lock_dir": str(tmp_path / node), "log_file": str(tmp_path / f"{node}.log"),
                        "kubernetes": {"kubeconfig": str(fault_proxy.kubeconfig)}})

    slow = start(conf("a"), "ADD", container_id="slow", pod="slow", env={"NODENAME": "a"})
    write.wait_held()  # the slow ADD holds the Lease, in the middle of its pool update
    waiter = start_waiter_and_outlast_it(
        pools, fault_proxy, lambda: start(conf("b"), "ADD", container_id="waiter", pod="waiter", env={"NODENAME": "b"}))
    write.release()
    assert finish(slow).ok().ips == ["10.10.0.1/24"]
    assert finish(waiter).ok().ips == ["10.10.0.2/24"]
    renewed = [line for line in log_lines(tmp_path / "a.log") if line["event"] == "lease renewed"]
    assert renewed and renewed[0]["renewals"] >= 2, renewed


def test_blocks_belong_to_nodes_spill_when_full_and_are_freed(netconf, pools, tmp_path):
    base = netconf({"range": "10.11.0.0/22", "block_size": 16})

    def on(node: str) -> dict:
        return {**base, "ipam": {**base["ipam"], "node_lock_dir": str(tmp_path / node)}}

    ips = {}
    for i in range(20):
        node = "node-b" if i % 6 == 5 else "node-a"
        ips[i] = run(on(node), "ADD", container_id=f"c{i}", pod=f"p{i}", env={"NODENAME": node}).ok().ips[0]
    assert len(set(ips.values())) == 20
    owners = {p["metadata"]["name"]: p["metadata"]["annotations"]["whereabouts.cni.cncf.io/node"]
              for p in pools.custom.list_namespaced_custom_object(
                  "whereabouts.cni.cncf.io", "v1alpha1", pools.namespace, "ippools")["items"]}
    # node-a fills blk0 (15 addresses) and spills into blk2; node-b claimed blk1 on its first ADD.
    assert owners == {"10.11.0.0-22-blk0": "node-a", "10.11.0.0-22-blk1": "node-b", "10.11.0.0-22-blk2": "node-a"}
    assert [ips[i] for i in (5, 11, 17)] == ["10.11.0.16/22", "10.11.0.17/22", "10.11.0.18/22"]
    assert pools.coord.list_namespaced_lease(pools.namespace).items == []  # no Lease on this path
    # Idempotent, and freed whichever node's block holds it.
    assert run(on("node-a"), "ADD", container_id="c3", pod="p3", env={"NODENAME": "node-a"}).ok().ips[0] == ips[3]
    for i in range(20):
        run(on("node-a"), "DEL", container_id=f"c{i}", pod=f"p{i}", env={"NODENAME": "node-a"}).ok()
    assert all(pools.allocations(n) == {} for n in owners)
    assert pools.reservations() == []


def test_block_layout_fills_the_whole_range(netconf, pools):
    small = netconf({"range": "10.12.0.0/26", "block_size": 16, "enable_overlapping_ranges": False,
                     "log_file": None})
    got = [run(small, "ADD", container_id=f"c{i}", pod=f"p{i}").ok().ips[0] for i in range(62)]
    assert len(set(got)) == 62
    err = run(small, "ADD", container_id="x", pod="x").error(100)
    assert "4 blocks of 16" in err["msg"]
    run({**small, "cniVersion": "1.1.0"}, "STATUS").error(50)
    # A static request lands in its own block; GC frees across blocks.
    run(small, "DEL", container_id="c0", pod="p0").ok()
    freed = got[0].split("/")[0]
    assert run({**small, "args": {"cni": {"ips": [freed]}}}, "ADD", container_id="s", pod="s").ok().ips[0] == got[0]
    gc = {**small, "cniVersion": "1.1.0", "cni.dev/valid-attachments": [{"containerID": "s", "ifname": "net1"}]}
    run(gc, "GC").ok()
    assert sum(len(pools.allocations(f"10.12.0.0-26-blk{i}")) for i in range(4)) == 1


def log_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _plant_lease(kube, namespace: str, duration_s: int, renewed_ago_s: float) -> None:
    """The shared Lease as a holder left it when it was SIGKILLed `renewed_ago_s` seconds ago."""
    from datetime import datetime, timedelta, timezone

    from kubernetes import client

    renewed = datetime.now(timezone.utc) - timedelta(seconds=renewed_ago_s)
    client.CoordinationV1Api(kube).create_namespaced_lease(namespace, client.V1Lease(
        metadata=client.V1ObjectMeta(name="whereabouts"),
        spec=client.V1LeaseSpec(holder_identity="dead-node/4242/gone", lease_duration_seconds=duration_s,
                                 acquire_time=renewed, renew_time=renewed, lease_transitions=3)))


def test_a_dead_holders_long_lease_is_taken_by_its_renew_time(netconf, pools, kube, namespace, tmp_path):
    """A holder with leader_lease_duration 20 s died 25 s ago. Counting its duration from the
    waiter's first look, no waiter with an 8 s deadline ever took it over; its renewTime says it
    ran out already, so the waiter takes it at its first look: one GET, one PUT."""
    _plant_lease(kube, namespace, duration_s=20, renewed_ago_s=25)
    assert run(netconf({"lock_timeout_ms": 8000}), "ADD").ok().ips == ["10.10.0.1/24"]
    lock = [line for line in log_lines(tmp_path / "whereabouts.log") if line["event"] == "lock"][0]
    assert lock["lease_attempts"] == 2, lock
    assert pools.lease()[0] == ""  # taken, used and released


def test_a_dead_holder_with_the_default_lease_is_taken_over(netconf, pools, kube, namespace):
    """Taken over, and not before its record ran out: by the waiter's own count (from a first look
    after the plant) or by the renewTime plus skew, both at least the duration after the renewTime."""
    _plant_lease(kube, namespace, duration_s=2, renewed_ago_s=0)
    _, _, planted, duration = pools.lease()
    assert run(netconf({"lock_timeout_ms": 10000}), "ADD").ok().ips == ["10.10.0.1/24"]
    holder, taken, _, _ = pools.lease()
    assert holder == "" and taken - planted >= duration - 1e-3, (taken, planted)


def test_a_live_holders_lease_is_not_taken_by_its_renew_time(netconf, kube, namespace):
    """A renewTime in the future (a holder whose clock runs ahead, within the skew) is honoured."""
    _plant_lease(kube, namespace, duration_s=30, renewed_ago_s=-1)
    err = run(netconf({"lock_timeout_ms": 3000}), "ADD").error(11)
    assert "dead-node/4242/gone" in err["msg"]

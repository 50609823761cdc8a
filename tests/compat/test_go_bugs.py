"""Where the Go plugin (v0.9.x) is wrong and ours is not, side by side.

Each test runs the same situation through both plugins and asserts both
outcomes: ours as it must be, the Go plugin's as it is. doc/compat.md names
these tests. A Go release that fixes one of them makes its test fail here:
then move the case to the shared behaviour and update doc/compat.md.
"""

from __future__ import annotations

import pytest

from tests.compat.conftest import GROUP, RESERVATIONS, VERSION, Env
from tests.helpers.faultproxy import Rule
from tests.helpers.cni import finish

pytestmark = pytest.mark.timeout(900)


def create_reservation(env: Env, name: str, podref: str, ifname: str = "net1") -> None:
    env.store.custom.create_namespaced_custom_object(GROUP, VERSION, env.namespace, RESERVATIONS, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "OverlappingRangeIPReservation",
        "metadata": {"name": name}, "spec": {"podref": podref, "ifname": ifname}})


def delete_reservation(env: Env, name: str) -> None:
    env.store.custom.delete_namespaced_custom_object(GROUP, VERSION, env.namespace, RESERVATIONS, name)


def test_gateway_is_not_handed_out(env, ours, go):
    """Go gives the configured gateway to the first pod; ours keeps it out of allocation."""
    go_out = go.run(env.conf({"range": "10.70.0.0/24", "gateway": "10.70.0.1"}), "ADD").ok()
    assert go_out.json["ips"] == [{"address": "10.70.0.1/24", "gateway": "10.70.0.1"}]  # the Go bug
    our_out = ours.run(env.conf({"range": "10.71.0.0/24", "gateway": "10.71.0.1"}), "ADD").ok()
    assert our_out.json["ips"] == [{"address": "10.71.0.2/24", "gateway": "10.71.0.1"}]
    assert "1" not in env.store.allocations("10.71.0.0-24")


def test_ranges_and_addresses_beginning_with_double_colon(env, ours, go):
    """Go names the pool of ::/64 "---64", which the API server refuses; ours names it "0---64"."""
    conf = env.conf({"range": "::/64"})
    err = go.run(conf, "ADD", container_id="g", pod="g")
    assert err.rc != 0 and '"---64" is invalid' in err.json["msg"]
    assert ours.run(conf, "ADD", container_id="o", pod="o").ok().ips == ["::1/64"]
    assert env.store.allocations("0---64") == {"1": {"id": "o", "podref": "default/o", "ifname": "net1"}}
    assert env.store.reservation("0--1")["spec"]["podref"] == "default/o"


def test_offsets_from_2_63_up_in_a_64(env, ours, go):
    """Go writes offsets >= 2**63 but cannot read them back: its next write drops such entries,
    and without reservations it hands the same address out again. Ours keeps them exact."""
    for overlapping, net in ((True, "fd00:72::"), (False, "fd00:73::")):
        conf = env.conf({"range": f"{net}/64", "range_start": f"{net}8000:0:0:1",
                         "enable_overlapping_ranges": overlapping})
        pool = net.replace(":", "-") + "-64"
        a = ours.run(conf, "ADD", container_id="a", pod="a").ok().ips
        assert a == [f"{net}8000:0:0:1/64"]
        assert env.store.allocations(pool) == {str(2**63 + 1): {"id": "a", "podref": "default/a", "ifname": "net1"}}
        b = go.run(conf, "ADD", container_id="b", pod="b").ok().ips
        # The Go bug: a's entry is gone from the pool after Go's write ...
        assert list(env.store.allocations(pool).values()) == [{"id": "b", "podref": "default/b", "ifname": "net1"}]
        if overlapping:
            # ... its reservation kept Go off a's address, and ours' repeated ADD for a restores it.
            assert b == [f"{net}8000:0:0:2/64"]
            assert ours.run(conf, "ADD", container_id="a", pod="a").ok().ips == a
            assert len(env.store.allocations(pool)) == 2
        else:
            # ... and without reservations Go hands a's address to b: a duplicate.
            assert b == a
    # Ours alone, in the upper half: distinct addresses, exact offsets (also tests/cni/test_verbs.py::
    # test_ipv6_top_of_a_64_has_an_exact_offset).
    conf = env.conf({"range": "fd00:74::/64", "range_start": "fd00:74::ffff:ffff:ffff:fffd"})
    got = [ours.run(conf, "ADD", container_id=f"o{i}", pod=f"o{i}").ok().ips[0] for i in range(2)]
    assert got == ["fd00:74::ffff:ffff:ffff:fffd/64", "fd00:74::ffff:ffff:ffff:fffe/64"]
    assert set(env.store.allocations("fd00-74---64")) == {str(2**64 - 3), str(2**64 - 2)}


def test_static_ip_request_is_reserved_in_the_pool(env, ours, go):
    """Go returns a requested IP (CNI_ARGS IP=) next to a dynamic one and records neither request nor
    protection: a later pod gets the same address. Ours allocates the requested IP in the pool."""
    go_conf = env.conf({"range": "10.75.0.0/24"})
    out = go.run(go_conf, "ADD", container_id="s", pod="s", extra_args="IP=10.75.0.3/24").ok()
    assert out.ips == ["10.75.0.1/24", "10.75.0.3/24"]  # a dynamic address as well
    assert set(env.store.allocations("10.75.0.0-24")) == {"1"}
    later = [go.run(go_conf, "ADD", container_id=f"d{i}", pod=f"d{i}").ok().ips[0] for i in range(2)]
    assert later == ["10.75.0.2/24", "10.75.0.3/24"]  # the static pod's address, again

    our_conf = env.conf({"range": "10.76.0.0/24"})
    assert ours.run(our_conf, "ADD", container_id="s", pod="s", extra_args="IP=10.76.0.3/24").ok().ips == \
        ["10.76.0.3/24"]
    assert env.store.allocations("10.76.0.0-24") == {"3": {"id": "s", "podref": "default/s", "ifname": "net1"}}
    later = [ours.run(our_conf, "ADD", container_id=f"d{i}", pod=f"d{i}").ok().ips[0] for i in range(3)]
    assert later == ["10.76.0.1/24", "10.76.0.2/24", "10.76.0.4/24"]


def test_del_with_several_ranges_frees_every_range(env, ours, go):
    """Go's DEL stops at the first range where the container has no entry; ours frees every range."""
    conf = env.conf({"range": "10.77.0.0/24", "ipRanges": [{"range": "10.78.0.0/24"}]})
    for plugin, pod in ((go, "g"), (ours, "o")):
        plugin.run(conf, "ADD", container_id=pod, pod=pod).ok()
    # An earlier DEL freed the first range and then timed out (the runtime retries DEL).
    for offset, pod in (("1", "g"), ("2", "o")):
        env.store.remove_allocation("10.77.0.0-24", offset)
        delete_reservation(env, f"10.77.0.{offset}")
    go.run(conf, "DEL", container_id="g", pod="g").ok()
    ours.run(conf, "DEL", container_id="o", pod="o").ok()
    left = env.store.allocations("10.78.0.0-24")
    assert left == {"1": {"id": "g", "podref": "default/g", "ifname": "net1"}}  # Go leaked its second range
    assert {r["metadata"]["name"] for r in env.store.reservations()} == {"10.78.0.1"}


def test_del_leaves_a_reservation_it_does_not_own(env, ours, go):
    """Go's DEL deletes the reservation named after the freed address whoever holds it; ours only
    deletes its own. (The state arises when a Go ADD failed after writing its pool entry and another
    range then reserved the address: see test_reservation_taken_after_a_go_pool_write.)"""
    env.store.custom.create_namespaced_custom_object(GROUP, VERSION, env.namespace, "ippools", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "IPPool", "metadata": {"name": "10.79.0.0-24"},
        "spec": {"range": "10.79.0.0/24", "allocations": {
            "5": {"id": "g", "podref": "default/g", "ifname": "net1"},
            "6": {"id": "o", "podref": "default/o", "ifname": "net1"}}}})
    create_reservation(env, "10.79.0.5", "default/other")
    create_reservation(env, "10.79.0.6", "default/other")
    conf = env.conf({"range": "10.79.0.0/24"})
    go.run(conf, "DEL", container_id="g", pod="g").ok()
    ours.run(conf, "DEL", container_id="o", pod="o").ok()
    assert env.store.allocations("10.79.0.0-24") == {}
    assert env.store.reservation("10.79.0.5") is None  # the Go bug: another pod's reservation is gone
    assert env.store.reservation("10.79.0.6")["spec"]["podref"] == "default/other"


def test_reservation_taken_after_a_go_pool_write(env, ours, go, fault_proxies):
    """Go writes the pool entry before it creates the reservation: when another range reserved the
    address in between, Go's ADD fails and its pool entry stays behind. Ours creates the reservation
    first, so the same race ends with both ADDs done and nothing leaked. The race needs separate
    locks: ours runs with `single_lease` off (by default the two take turns on one Lease). The slow
    side's pool write is held at the fault proxy while the other side's ADD runs."""
    proxy = fault_proxies(env.namespace)
    via_proxy = {"kubernetes": {"kubeconfig": str(proxy.kubeconfig)}}
    wide, narrow = {"range": "10.80.0.0/24", **via_proxy}, {"range": "10.80.0.0/25", "single_lease": False}

    # Go on the wide range has checked 10.80.0.1 and its pool write (a JSON patch) is held; meanwhile
    # ours serves a pod of the narrow range.
    write = Rule("hold", "PATCH", "ippools")
    proxy.set_rules(write)
    slow_go = go.start(env.conf(wide), "ADD", container_id="g", pod="g")
    write.wait_held()
    assert ours.run(env.conf(narrow), "ADD", container_id="o", pod="o").ok().ips == ["10.80.0.1/25"]
    write.release()
    go_out = finish(slow_go)
    assert go_out.rc != 0 and 'overlappingrangeipreservations.whereabouts.cni.cncf.io "10.80.0.1" already exists' \
        in go_out.json["msg"]
    # The Go bug: the failed ADD left its entry for 10.80.0.1 in the wide pool.
    assert env.store.allocations("10.80.0.0-24") == {"1": {"id": "g", "podref": "default/g", "ifname": "net1"}}

    # The mirror image: ours' pool write on the wide range is held (its reservation made), Go serves
    # the narrow one meanwhile.
    wide2, narrow2 = {"range": "10.81.0.0/24", "single_lease": False, **via_proxy}, {"range": "10.81.0.0/25"}
    write = Rule("hold", "PUT", "ippools")
    proxy.set_rules(write)
    slow_ours = ours.start(env.conf(wide2), "ADD", container_id="o2", pod="o2")
    write.wait_held()
    assert env.store.reservation("10.81.0.1")["spec"]["podref"] == "default/o2"
    assert go.run(env.conf(narrow2), "ADD", container_id="g2", pod="g2").ok().ips == ["10.81.0.2/25"]
    write.release()
    assert finish(slow_ours).ok().ips == ["10.81.0.1/24"]
    assert set(env.store.allocations("10.81.0.0-24")) == {"1"}
    assert set(env.store.allocations("10.81.0.0-25")) == {"2"}


def test_many_candidates_reserved_through_another_range(env, ours, go):
    """Go checks reserved candidates one at a time, two requests each, under client-go's default
    limit of 5 requests/s and a 10 s budget: past ~25 candidates held through another range its ADD
    fails. Ours gets through."""
    for i in range(1, 41):
        create_reservation(env, f"10.82.0.{i}", "default/other")
    conf = env.conf({"range": "10.82.0.0/24"})
    err = go.run(conf, "ADD", container_id="g", pod="g")
    assert err.rc != 0 and "rate limiter" in err.json["msg"] and "deadline" in err.json["msg"], err.stdout
    assert ours.run(conf, "ADD", container_id="o", pod="o").ok().ips == ["10.82.0.41/24"]


def limited_kubeconfig(env: Env, cluster, kube, pool_verbs: list[str]):
    """A kubeconfig for a service account that may use everything the plugins need, except that on
    IPPools it only has `pool_verbs`."""
    from kubernetes import client

    from tests.helpers.kubeconfig import write_kubeconfig

    core, rbac = client.CoreV1Api(kube), client.RbacAuthorizationV1Api(kube)
    core.create_namespaced_service_account(env.namespace, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="limited")))
    rbac.create_namespaced_role(env.namespace, client.V1Role(metadata=client.V1ObjectMeta(name="limited"), rules=[
        client.V1PolicyRule(api_groups=[GROUP], resources=["ippools"], verbs=pool_verbs),
        client.V1PolicyRule(api_groups=[GROUP], resources=[RESERVATIONS], verbs=["*"]),
        client.V1PolicyRule(api_groups=["coordination.k8s.io"], resources=["leases"], verbs=["*"])]))
    rbac.create_namespaced_role_binding(env.namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="limited"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="limited"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="limited", namespace=env.namespace)]))
    token = core.create_namespaced_service_account_token("limited", env.namespace, client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))).status.token
    return write_kubeconfig(env.dir / "limited.kubeconfig", cluster.server, ca_file=cluster.ca_file, token=token,
                            namespace=env.namespace)


def test_failed_pool_write_fails_the_add(env, ours, go, cluster, kube):
    """When the pool write is refused (here: RBAC allows get/list/create on IPPools but not
    update/patch), Go still creates the reservation, drops the write error and returns an address
    that is in no pool. Ours fails the ADD and stores nothing."""
    kubeconfig = limited_kubeconfig(env, cluster, kube, ["get", "list", "watch", "create"])
    limited = {"kubernetes": {"kubeconfig": str(kubeconfig)}}
    go_out = go.run(env.conf({"range": "10.83.0.0/24", **limited}), "ADD", container_id="g", pod="g")
    assert go_out.rc == 0 and go_out.ips == ["10.83.0.1/24"]  # the Go bug: a success ...
    assert env.store.allocations("10.83.0.0-24") == {}  # ... for an address that no pool holds
    assert env.store.reservation("10.83.0.1")["spec"]["podref"] == "default/g"

    err = ours.run(env.conf({"range": "10.84.0.0/24", "lock_timeout_ms": 10000, **limited}), "ADD",
                   container_id="o", pod="o")
    assert err.rc != 0 and "forbidden (403) on PUT" in err.json["msg"], err.stdout
    assert env.store.allocations("10.84.0.0-24") == {}


def test_failed_pool_write_leaves_no_reservation(env, ours, cluster, kube):
    """A pool write the API server refuses (403) stored nothing, so the reservation made for it is
    deleted again by the same ADD."""
    kubeconfig = limited_kubeconfig(env, cluster, kube, ["get", "list", "watch", "create"])
    conf = env.conf({"range": "10.84.0.0/24", "lock_timeout_ms": 10000, "kubernetes": {"kubeconfig": str(kubeconfig)}})
    assert ours.run(conf, "ADD", container_id="o", pod="o").rc != 0
    ours.run(conf, "DEL", container_id="o", pod="o")
    assert env.store.reservation("10.84.0.1") is None


def test_second_interface_of_a_pod_on_an_overlapping_range(env, ours, go):
    """Go's reservation check compares the pod only: a pod's second interface, on a range that overlaps
    the first one's, gets the same address. Ours compares pod and interface."""
    for plugin, net in ((go, "10.85"), (ours, "10.86")):
        first = plugin.run(env.conf({"range": f"{net}.0.0/24"}), "ADD", container_id="c", pod="p", ifname="net1")
        second = plugin.run(env.conf({"range": f"{net}.0.0/25"}), "ADD", container_id="c", pod="p", ifname="net2")
        if plugin is go:
            assert first.ok().ips[0].split("/")[0] == second.ok().ips[0].split("/")[0] == "10.85.0.1"  # the Go bug
        else:
            assert (first.ok().ips, second.ok().ips) == (["10.86.0.1/24"], ["10.86.0.2/25"])
            assert env.store.reservation("10.86.0.2")["spec"]["ifname"] == "net2"


def test_reservation_of_a_later_range_after_a_repeated_one(env, ours, go):
    """Once Go finds the pod's reservation in place for one range (a repeated ADD), it skips creating
    the reservation of every later range. Here a second range was added to the network and the pod's
    ADD repeated: Go leaves the new address unreserved, ours reserves it."""
    for plugin, a, b in ((go, "10.87", "10.88"), (ours, "10.89", "10.90")):
        plugin.run(env.conf({"range": f"{a}.0.0/24"}), "ADD", container_id="c", pod=f"p-{plugin}").ok()
        out = plugin.run(env.conf({"range": f"{a}.0.0/24", "ipRanges": [{"range": f"{b}.0.0/24"}]}), "ADD",
                         container_id="c", pod=f"p-{plugin}").ok()
        assert out.ips == [f"{a}.0.1/24", f"{b}.0.1/24"]
        assert env.store.allocations(f"{b}.0.0-24") == {"1": {"id": "c", "podref": f"default/p-{plugin}",
                                                              "ifname": "net1"}}
    assert env.store.reservation("10.88.0.1") is None  # the Go bug
    assert env.store.reservation("10.90.0.1")["spec"]["podref"] == "default/p-ours"

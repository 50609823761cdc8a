"""Object names and the allocation encoding, compatible with the Go plugin."""

import ipaddress

import re

import pytest
from hypothesis import given, strategies as st

from whereabouts.errors import CorruptPool
from whereabouts.core.pool import (Allocation, decode_pool, is_dns_subdomain, lease_name, new_pool_object, pool_name,
                              remove_allocation, reservation_name, set_allocation)


@pytest.mark.parametrize("cidr,net,name", [
    ("10.0.0.0/8", "", "10.0.0.0-8"),
    ("caa5::/64", "", "caa5---64"),
    ("192.168.2.224/28", "blue", "blue-192.168.2.224-28"),
    ("fd00:1:2::/112", "", "fd00-1-2---112"),
    ("::/64", "", "0---64"),
    ("::1:0/112", "", "0--1-0-112"),
    ("::/64", "net", "net----64"),
])
def test_pool_names(cidr, net, name):
    assert pool_name(cidr, net) == name
    assert is_dns_subdomain(name)


@pytest.mark.parametrize("ip,net,name", [
    ("10.0.0.5", "", "10.0.0.5"), ("fd00::5", "", "fd00--5"), ("fd00::", "", "fd00--0"), ("::5", "", "0--5"),
    ("10.0.0.5", "blue", "blue-10.0.0.5"),
])
def test_reservation_names(ip, net, name):
    assert reservation_name(ipaddress.ip_address(ip), net) == name
    assert is_dns_subdomain(name)


def test_lease_name_is_valid_and_bounded():
    assert lease_name("10.0.0.0-24") == "whereabouts-10.0.0.0-24"
    long = lease_name("a" * 250)
    assert len(long) <= 253 and is_dns_subdomain(long)


def pool_obj(allocs):
    obj = new_pool_object("10.0.0.0-24", "10.0.0.0/24", "ns")
    obj["metadata"]["resourceVersion"] = "7"
    obj["spec"]["allocations"] = allocs
    return obj


def test_decode_and_encode_round_trip_keeps_unknown_entries():
    obj = pool_obj({"5": {"id": "c1", "podref": "ns/a", "ifname": "net1", "ipamclaimref": "ns/claim"},
                    "x": {"id": "junk", "podref": ""}, "07": {"id": "c2", "podref": "ns/b"}, "9": "garbage"})
    pool = decode_pool(obj, "10.0.0.0/24")
    assert pool.resource_version == "7"
    assert pool.taken == {5, 7, 9}
    assert pool.allocations[5].extra == {"ipamclaimref": "ns/claim"}
    assert pool.undecodable == ["x", "9"]
    set_allocation(pool, 6, Allocation("c3", "ns/c", "eth0"))
    remove_allocation(pool, 7)
    allocs = obj["spec"]["allocations"]
    assert allocs["6"] == {"id": "c3", "podref": "ns/c", "ifname": "eth0"}
    assert "07" not in allocs and "x" in allocs and allocs["9"] == "garbage"
    assert allocs["5"]["ipamclaimref"] == "ns/claim"


@pytest.mark.parametrize("obj", [None, {"metadata": {}}, {"metadata": {}, "spec": "x"},
                                 {"metadata": {}, "spec": {"range": "10.9.0.0/24", "allocations": {}}},
                                 {"metadata": {}, "spec": {"range": "10.0.0.0/24", "allocations": []}}])
def test_corrupt_pools_are_refused(obj):
    with pytest.raises(CorruptPool):
        decode_pool(obj, "10.0.0.0/24")


def test_missing_allocations_map_is_an_empty_pool():
    pool = decode_pool({"metadata": {"name": "p"}, "spec": {"range": "10.0.0.0/24"}}, "10.0.0.0/24")
    assert pool.taken == set()


_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@given(st.text(alphabet="ab9-.\nZ_é", max_size=70))
def test_dns_names_are_checked_as_the_kubernetes_patterns_say(text):
    from whereabouts.core.pool import is_dns_label

    assert is_dns_subdomain(text) == (len(text) <= 253 and bool(_SUBDOMAIN_RE.fullmatch(text)))
    assert is_dns_label(text) == bool(_LABEL_RE.fullmatch(text))

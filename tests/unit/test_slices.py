"""Node slices, pure: what a NAD asks for, slicing, and who gets which slice (the Go controller's order)."""

from __future__ import annotations

import ipaddress
import json

import pytest

from whereabouts.core.slices import (NAD_API_VERSION, NAD_KIND, SlicePool, assign, blockers, divide,
                                     fresh_allocations, nad_ipam, nad_owner_uids, node_slice, owner_references,
                                     parse_slice_size, slice_pool_name, slice_pool_of, slice_set_name, slice_spec,
                                     slices_over, unassign, unassigned_nodes)


def net(ipam: dict, **top) -> dict:
    return {"cniVersion": "0.3.1", "name": "net1", "type": "macvlan", "ipam": {"type": "whereabouts", **ipam}, **top}


# --- what a NAD asks for -------------------------------------------------------------------


def test_nad_ipam_of_a_plugin_and_of_a_list_whose_name_is_the_lists():
    assert nad_ipam(net({"range": "10.0.0.0/24"})) == ("net1", {"type": "whereabouts", "range": "10.0.0.0/24"})
    conflist = {"cniVersion": "0.3.1", "name": "list1",
                "plugins": [{"type": "macvlan", "ipam": {"type": "whereabouts", "range": "10.0.0.0/24"}},
                            {"type": "tuning"}]}
    assert nad_ipam(conflist)[0] == "list1"


@pytest.mark.parametrize("config", [
    {"name": "x", "type": "macvlan", "ipam": {"type": "host-local"}},
    {"name": "x", "type": "macvlan"},
    {"name": "x", "plugins": []},
    {"name": "x", "plugins": [{"type": "tuning"}, {"type": "macvlan", "ipam": {"type": "whereabouts"}}]},
    ["not", "an", "object"],
])
def test_nad_ipam_is_none_unless_whereabouts_serves_it(config):
    assert nad_ipam(config) is None


def test_slice_spec_as_the_go_controller_writes_it():
    spec = slice_spec("net1", {"range": "10.0.0.7/24", "node_slice_size": "/26"})
    assert (spec.set_name, spec.network_name, spec.spec) == ("net1", "", {"range": "10.0.0.0/24", "sliceSize": "/26"})
    # network_name names the pool; the size is kept verbatim; a start-end range counts by its network
    spec = slice_spec("net1", {"range": "10.0.1.10-10.0.1.20/23", "node_slice_size": "25", "network_name": "blue"})
    assert (spec.set_name, spec.network_name) == ("blue", "blue")
    assert spec.spec == {"range": "10.0.0.0/23", "sliceSize": "25"}
    # without a top-level range, the first of ipRanges; IPv6 too (the Go controller crashes on it)
    spec = slice_spec("n", {"ipRanges": [{"range": "fd00::/64"}, {"range": "10.0.0.0/24"}], "node_slice_size": "/80"})
    assert spec.range == "fd00::/64"


def test_slice_spec_takes_what_the_nad_leaves_empty_from_the_flat_file():
    flat = {"node_slice_size": "/28", "network_name": "flat", "range": "10.9.0.0/24"}
    assert slice_spec("n", {"range": "10.0.0.0/24"}, flat).spec == {"range": "10.0.0.0/24", "sliceSize": "/28"}
    assert slice_spec("n", {"range": "10.0.0.0/24"}, flat).set_name == "flat"
    assert slice_spec("n", {"range": "10.0.0.0/24"}, {"range": "10.9.0.0/24"}) is None


@pytest.mark.parametrize("ipam, why", [
    ({"range": "10.0.0.0/24", "node_slice_size": "/20"}, "wider than the range"),
    ({"range": "10.0.0.0/24", "node_slice_size": "/31"}, "no address"),
    ({"range": "10.0.0.0/8", "node_slice_size": "/30"}, "more than"),
    ({"range": "10.0.0.0/24", "node_slice_size": "big"}, "prefix length"),
    ({"range": "10.0.0.0/24", "node_slice_size": 26}, "not a string"),
    ({"node_slice_size": "/26"}, "without a range"),
    ({"range": "10.0.0.0", "node_slice_size": "/26"}, "not a CIDR"),
    ({"range": "10.0.0.0/24", "node_slice_size": "/26", "network_name": "Not_A_Name"}, "not a valid object name"),
])
def test_slice_spec_says_what_is_wrong(ipam, why):
    with pytest.raises(ValueError, match=why):
        slice_spec("net1", ipam)


# --- slicing and names (the Go controller's and plugin's) ----------------------------------


def test_divide_in_order_and_names():
    assert divide(ipaddress.ip_network("10.0.0.0/24"), parse_slice_size("/26")) == [
        "10.0.0.0/26", "10.0.0.64/26", "10.0.0.128/26", "10.0.0.192/26"]
    assert slice_set_name("", "net1") == "net1" and slice_set_name("blue", "net1") == "blue"
    assert slice_pool_name("blue", "node-1", "10.0.0.64/26") == "blue-node-1-10.0.0.64-26"


# --- who gets which slice --------------------------------------------------------------------


SPEC = {"range": "10.0.0.0/24", "sliceSize": "/26"}


def nodes_of(allocations: list[dict]) -> list[str]:
    return [a["nodeName"] for a in allocations]


def test_fresh_allocations_list_every_slice_with_nodes_in_name_order_on_the_lowest():
    allocations = fresh_allocations(SPEC, ["c", "a", "b"])
    assert allocations == [{"nodeName": "a", "sliceRange": "10.0.0.0/26"},
                           {"nodeName": "b", "sliceRange": "10.0.0.64/26"},
                           {"nodeName": "c", "sliceRange": "10.0.0.128/26"},
                           {"nodeName": "", "sliceRange": "10.0.0.192/26"}]
    assert node_slice({"status": {"allocations": allocations}}, "b") == "10.0.0.64/26"


def test_assign_keeps_every_held_slice_and_fills_the_lowest_free_ones():
    allocations = fresh_allocations(SPEC, ["a", "b", "c"])
    allocations[0]["nodeName"] = ""  # a's slice was freed
    after = assign(allocations, ["b", "c", "d", "e", "f"])
    assert nodes_of(after) == ["d", "b", "c", "e"]  # f finds none free: it waits for one
    assert nodes_of(allocations) == ["", "b", "c", ""]  # the input is not changed


def test_unassign_frees_gone_nodes_but_not_held_ones():
    allocations = fresh_allocations(SPEC, ["a", "b", "c"])
    assert unassigned_nodes(allocations, {"b"}) == [("a", "10.0.0.0/26"), ("c", "10.0.0.128/26")]
    assert nodes_of(unassign(allocations, {"b"}, held={"c"})) == ["", "b", "c", ""]
    assert nodes_of(unassign(allocations, {"a", "b", "c"})) == ["a", "b", "c", ""]


# --- old slice pools: a re-slicing while pods hold addresses -----------------------------------------


def ippool(name: str, cidr: str) -> dict:
    return {"metadata": {"name": name}, "spec": {"range": cidr, "allocations": {}}}


def busy_pool(node: str, cidr: str) -> SlicePool:
    return SlicePool(slice_pool_name("", node, cidr), node, ipaddress.ip_network(cidr))


RANGE = ipaddress.ip_network("10.0.0.0/24")


def test_slice_pool_of_knows_a_networks_slice_pools_by_their_go_names():
    assert slice_pool_of(ippool("blue-node-1.x-10.0.0.64-26", "10.0.0.64/26"), "blue", RANGE) == SlicePool(
        "blue-node-1.x-10.0.0.64-26", "node-1.x", ipaddress.ip_network("10.0.0.64/26"))
    assert slice_pool_of(ippool("n-10.0.0.128-25", "10.0.0.128/25"), "", RANGE).node == "n"
    assert slice_pool_of(ippool("a-b-10.0.0.0-24", "10.0.0.0/24"), "a", RANGE).node == "b"  # one slice: the range


@pytest.mark.parametrize("obj", [
    ippool("red-n-10.0.0.64-26", "10.0.0.64/26"),  # another network
    ippool("blue-10.0.0.0-24", "10.0.0.0/24"),  # the range's own pool, without node slices
    ippool("blue-n-10.0.1.0-26", "10.0.1.0/26"),  # outside the range
    ippool("blue-n-10.0.0.64-26", "10.0.0.0/26"),  # the name is not of its range
    ippool("blue-n-10.0.0.64-26", "10.0.0.64/026"),  # not the range as stored by a plugin
    ippool("blue-N-10.0.0.64-26", "10.0.0.64/26"),  # not a node name
    {"metadata": {"name": "blue-n-10.0.0.64-26"}},
    "not an object",
])
def test_slice_pool_of_ignores_every_other_pool(obj):
    assert slice_pool_of(obj, "blue", RANGE) is None


def test_slices_over_an_old_pool_of_another_size():
    assert slices_over(ipaddress.ip_network("10.0.0.64/26"), 25) == ["10.0.0.0/25"]
    assert slices_over(ipaddress.ip_network("10.0.0.0/25"), 27) == ["10.0.0.0/27", "10.0.0.32/27",
                                                                   "10.0.0.64/27", "10.0.0.96/27"]


def test_a_resize_withholds_the_slices_an_old_pool_with_live_addresses_overlaps():
    old = busy_pool("a", "10.0.0.0/26")  # a's /26 before the resize to /25
    after = fresh_allocations({"range": "10.0.0.0/24", "sliceSize": "/25"}, ["a", "b"], [old])
    assert after == [{"nodeName": "", "sliceRange": "10.0.0.0/25"}, {"nodeName": "a", "sliceRange": "10.0.0.128/25"}]
    assert blockers("10.0.0.0/25", "", [old]) == [old]
    assert blockers("10.0.0.0/25", "a", [old]) == [old]  # a new pool of a on it would hand out a's addresses again
    # b waits for a slice while the old pool holds live addresses; it gets the withheld one once it is drained
    assert nodes_of(assign(after, ["a", "b"], [old])) == ["", "a"]
    assert nodes_of(assign(after, ["a", "b"])) == ["b", "a"]


def test_a_nad_made_again_gives_each_node_the_slice_of_its_old_pool_back_first():
    old = [busy_pool("b", "10.0.0.0/26"), busy_pool("c", "10.0.0.128/26")]
    after = fresh_allocations(SPEC, ["a", "b", "c"], old)
    assert nodes_of(after) == ["b", "a", "c", ""]
    assert blockers("10.0.0.0/26", "b", old) == [] and blockers("10.0.0.0/26", "a", old) == [old[0]]


# --- owner references --------------------------------------------------------------------------


def ref(name: str, uid: str, controller: bool = False) -> dict:
    out = {"apiVersion": NAD_API_VERSION, "kind": NAD_KIND, "name": name, "uid": uid}
    return {**out, "controller": True, "blockOwnerDeletion": True} if controller else out


def test_owner_references_controller_on_the_first_plain_on_the_others():
    assert owner_references([], [("a", "1"), ("b", "2")]) == [ref("a", "1", True), ref("b", "2")]


def test_owner_references_keep_the_controller_drop_stale_and_promote_when_it_is_gone():
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "9"}
    current = [ref("a", "1", True), ref("b", "2"), other]
    assert owner_references(current, [("b", "2"), ("a", "1"), ("c", "3")]) == current + [ref("c", "3")]
    assert owner_references(current, [("b", "2")], stale={"1"}) == [ref("b", "2", True), other]
    assert nad_owner_uids({"metadata": {"ownerReferences": current}}) == ["1", "2"]


def test_spec_round_trips_through_json_as_stored():
    spec = slice_spec("net1", json.loads('{"range": "10.0.0.0/24", "node_slice_size": "/26"}'))
    assert json.loads(json.dumps(spec.spec)) == SPEC

"""Node slices, pure: what a NAD asks for, slicing, and who gets which slice (the Go controller's order)."""

from __future__ import annotations

import ipaddress
import json

import pytest

from whereabouts.core.slices import (NAD_API_VERSION, NAD_KIND, assign, divide, fresh_allocations, nad_ipam,
                                     nad_owner_uids, node_slice, owner_references, parse_slice_size,
                                     slice_pool_name, slice_set_name, slice_spec, unassign, unassigned_nodes)


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

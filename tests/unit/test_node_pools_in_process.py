"""Node slices and node-affine blocks, in-process over the FakeStore: which pool a node uses,
that blocks need no Lease, claims that race or lose their answer, and the fallbacks when full."""

from __future__ import annotations

import time

import pytest

from tests.fakes.store import FakeStore
from whereabouts.core.blocks import BLOCK_NODE_ANNOTATION
from whereabouts.core.pool import Allocation
from whereabouts.errors import AddressUnavailable, CorruptPool, NotAllocated, TryAgainLater
from whereabouts.k8s.store import NODE_SLICES, POOLS
from whereabouts.plugin.config import parse_ipam
from whereabouts.plugin.log import Log
from whereabouts.plugin.verbs import IPAM


class RecordedLease:
    taken: list[str] = []

    def __init__(self, name: str) -> None:
        self.name, self.waited, self.attempts, self.renewals = name, 0.0, 1, 0

    def acquire(self) -> None:
        RecordedLease.taken.append(self.name)

    def release(self) -> None:
        pass


@pytest.fixture
def store() -> FakeStore:
    RecordedLease.taken = []
    return FakeStore()


@pytest.fixture
def ipam(store, tmp_path, mocker):
    """`ipam(node, **keys)`: one node's IPAM (its own lock dir, as on a real node)."""
    mocker.patch("whereabouts.plugin.txn.time.sleep")

    def make(node: str, **keys) -> IPAM:
        store.new_invocation()
        conf = parse_ipam({"type": "whereabouts", "range": "10.1.0.0/24", "kubernetes": {"kubeconfig": "k"},
                           "node_lock_dir": str(tmp_path / node), **keys}, name="blue-net")
        return IPAM(conf, store, RecordedLease, time.monotonic() + 10, Log(), node)

    return make


def owner(name: str) -> Allocation:
    return Allocation(f"c-{name}", f"ns/{name}", "net1")


def ip(ipam: IPAM, name: str) -> str:
    (a,) = ipam.add(owner(name), {})
    return str(a.address)


def block_owners(store: FakeStore) -> dict[str, str]:
    return {n: (store.obj(POOLS, n)["metadata"].get("annotations") or {}).get(BLOCK_NODE_ANNOTATION, "")
            for n in store.names(POOLS)}


# --- node-affine blocks ------------------------------------------------------------------------


def test_each_node_claims_a_block_of_its_own_and_takes_no_lease(ipam, store):
    a, b = ipam("node-a", block_size=16), ipam("node-b", block_size=16)
    assert [ip(a, "a1"), ip(a, "a2"), ip(b, "b1"), ip(a, "a3"), ip(b, "b2")] == [
        "10.1.0.1", "10.1.0.2", "10.1.0.16", "10.1.0.3", "10.1.0.17"]
    assert block_owners(store) == {"10.1.0.0-24-blk0": "node-a", "10.1.0.0-24-blk1": "node-b"}
    assert RecordedLease.taken == []


def test_the_common_path_is_one_get_and_one_put_of_the_block(ipam, store):
    a = ipam("node-a", block_size=16, enable_overlapping_ranges=False)
    ip(a, "first")
    store.calls.clear()
    ip(ipam("node-a", block_size=16, enable_overlapping_ranges=False), "second")
    assert dict(store.calls) == {("get", POOLS): 1, ("replace", POOLS): 1}


def test_a_full_block_makes_the_node_claim_the_next_free_one(ipam, store):
    a = ipam("node-a", block_size=16, enable_overlapping_ranges=False)
    got = [ip(a, f"p{i}") for i in range(17)]
    assert len(set(got)) == 17 and got[-3:] == ["10.1.0.15", "10.1.0.16", "10.1.0.17"]
    assert block_owners(store) == {"10.1.0.0-24-blk0": "node-a", "10.1.0.0-24-blk1": "node-a"}


def test_a_node_with_several_blocks_reads_each_once_and_finds_an_owner_in_any_of_them(ipam, store):
    """An idempotent ADD must find the owner's address in whichever of the node's blocks holds it;
    a new address goes to the block that served last (the note names it first)."""
    def node_a():
        return ipam("node-a", block_size=16, enable_overlapping_ranges=False)

    got = {i: ip(node_a(), f"p{i}") for i in range(40)}  # blocks 0 and 1 full, block 2 in use
    node_a().delete(owner("p20"))  # room in block 1 again, behind the block that served last
    store.calls.clear()
    assert ip(node_a(), "next") == "10.1.0.41"
    assert dict(store.calls) == {("get", POOLS): 3, ("replace", POOLS): 1}
    assert [ip(node_a(), f"p{i}") for i in (3, 18, 39)] == [got[3], got[18], got[39]]


def test_a_block_another_node_created_first_is_left_to_it(ipam, store):
    ip(ipam("node-b", block_size=16), "b1")
    store.inject("create", POOLS, "conflict")  # node-b (say) created blk1 between our listing and our create
    assert ip(ipam("node-a", block_size=16), "a1") == "10.1.0.32"
    assert block_owners(store)["10.1.0.0-24-blk2"] == "node-a"


def test_a_claim_whose_answer_was_lost_is_recognised_as_ours(ipam, store):
    store.inject("create", POOLS, "lost_applied")
    assert ip(ipam("node-a", block_size=16, enable_overlapping_ranges=False), "a1") == "10.1.0.1"
    assert block_owners(store) == {"10.1.0.0-24-blk0": "node-a"}


def test_an_unclaimed_block_with_room_is_adopted_before_a_new_one_is_claimed(ipam, store):
    store.put(POOLS, {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool",
                      "metadata": {"name": "10.1.0.0-24-blk3", "labels": {
                          "whereabouts.cni.cncf.io/block-of": ipam("x", block_size=16).txn.layout(
                              ipam("x", block_size=16).config.ranges[0]).label}},
                      "spec": {"range": "10.1.0.48/28", "allocations": {"0": {"id": "c", "podref": "ns/old"}}}})
    assert ip(ipam("node-a", block_size=16), "a1") == "10.1.0.49"
    assert block_owners(store)["10.1.0.0-24-blk3"] == "node-a"


def test_when_no_block_is_free_a_node_takes_room_in_another_nodes_block(ipam, store):
    a = ipam("node-a", range="10.1.0.0/27", block_size=16, enable_overlapping_ranges=False)
    got = [ip(a, f"a{i}") for i in range(20)]  # blk0 full (15), blk1 has 11 of 15 left... claimed by node-a
    b = ipam("node-b", range="10.1.0.0/27", block_size=16, enable_overlapping_ranges=False)
    stolen = ip(b, "b1")
    assert stolen not in got and block_owners(store) == {"10.1.0.0-27-blk0": "node-a", "10.1.0.0-27-blk1": "node-a"}


def test_a_stale_note_naming_another_nodes_block_is_not_trusted(ipam, store, tmp_path):
    ip(ipam("node-b", block_size=16), "b1")
    a = ipam("node-a", block_size=16)
    (tmp_path / "node-a").mkdir()
    (tmp_path / "node-a" / "10.1.0.0-24.lock").write_text("[0]")
    assert ip(a, "a1") == "10.1.0.16"
    assert (tmp_path / "node-a" / "10.1.0.0-24.lock").read_text() == "[1]"


def test_repeated_add_del_and_gc_on_blocks(ipam, store):
    a, b = ipam("node-a", block_size=16), ipam("node-b", block_size=16)
    first = ip(a, "a1")
    assert ip(ipam("node-a", block_size=16), "a1") == first
    ip(b, "b1")
    # GC of node-a frees only in node-a's blocks, whatever node-b runs.
    assert ipam("node-a", block_size=16).gc(set()) == [first]
    assert ipam("node-b", block_size=16).delete(owner("b1")) == ["10.1.0.16"]
    assert ipam("node-b", block_size=16).delete(owner("b1")) == []


# --- node slices ---------------------------------------------------------------------------------


def slices(store: FakeStore, **nodes: str) -> None:
    store.put(NODE_SLICES, {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "NodeSlicePool",
                            "metadata": {"name": "blue-net"},
                            "spec": {"range": "10.1.0.0/24", "sliceSize": "/26"},
                            "status": {"allocations": [{"nodeName": n, "sliceRange": r} for n, r in nodes.items()]}})


def test_a_node_allocates_in_its_slice_under_the_lease_named_as_the_go_plugin_names_it(ipam, store):
    slices(store, **{"node-a": "10.1.0.64/26", "node-b": "10.1.0.0/26"})
    assert ip(ipam("node-a", node_slice_size="/26"), "a1") == "10.1.0.65"
    assert ip(ipam("node-b", node_slice_size="26"), "b1") == "10.1.0.1"
    assert store.names(POOLS) == ["node-a-10.1.0.64-26", "node-b-10.1.0.0-26"]
    assert store.obj(POOLS, "node-a-10.1.0.64-26")["spec"]["range"] == "10.1.0.64/26"
    assert RecordedLease.taken == ["node-a-10.1.0.64-26", "node-b-10.1.0.0-26"]
    assert ipam("node-a", node_slice_size="/26").delete(owner("a1")) == ["10.1.0.65"]


def test_a_named_network_prefixes_its_slice_pools(ipam, store):
    store.put(NODE_SLICES, {"metadata": {"name": "red"}, "spec": {},
                            "status": {"allocations": [{"nodeName": "node-a", "sliceRange": "10.1.0.128/26"}]}})
    ip(ipam("node-a", node_slice_size="/26", network_name="red"), "a1")
    assert store.names(POOLS) == ["red-node-a-10.1.0.128-26"]


def test_a_node_without_a_slice_is_told_to_try_again_and_its_del_succeeds(ipam, store):
    with pytest.raises(TryAgainLater, match="node 'node-c' has no slice of range 10.1.0.0/24 yet"):
        ip(ipam("node-c", node_slice_size="/26"), "c1")
    slices(store, **{"node-a": "10.1.0.0/26"})
    with pytest.raises(TryAgainLater, match="NodeSlicePool ns/blue-net"):
        ip(ipam("node-c", node_slice_size="/26"), "c1")
    assert ipam("node-c", node_slice_size="/26").delete(owner("c1")) == []
    assert store.names(POOLS) == []


def test_a_requested_address_outside_the_slice_is_refused(ipam, store):
    slices(store, **{"node-a": "10.1.0.0/26"})
    from ipaddress import ip_address

    with pytest.raises(AddressUnavailable, match="outside this node's slice 10.1.0.0/26"):
        ipam("node-a", node_slice_size="/26").add(owner("a1"), {0: ip_address("10.1.0.100")})


@pytest.mark.parametrize("bad", ["10.2.0.0/26", "not-a-cidr", "10.1.0.0/16"])
def test_a_slice_outside_the_range_is_a_corrupt_object_not_an_allocation(ipam, store, bad):
    slices(store, **{"node-a": bad})
    with pytest.raises(CorruptPool, match="NodeSlicePool blue-net: node node-a"):
        ip(ipam("node-a", node_slice_size="/26"), "a1")
    assert store.names(POOLS) == []


# --- GC on a pool shared by nodes -------------------------------------------------------------------


def test_gc_frees_only_what_this_node_allocated_in_a_shared_pool(ipam, store):
    """The runtime's valid attachments are this node's only: node-b's pods are in no list node-a gets."""
    a, b = ipam("node-a"), ipam("node-b")
    ip(a, "a1")
    ip(b, "b1")
    ip(a, "a2")
    assert ipam("node-a").gc({("c-a2", "net1")}) == ["10.1.0.1"]
    assert sorted(store.obj(POOLS, "10.1.0.0-24")["spec"]["allocations"]) == ["2", "3"]
    assert ipam("node-a").gc(set()) == ["10.1.0.3"]
    assert ipam("node-b").gc(set()) == ["10.1.0.2"]


# --- old slice pools: left by a re-slicing while pods hold addresses there ----------------------------


def test_del_finds_an_entry_in_the_nodes_old_slice_pool_with_one_list_and_only_on_a_miss(ipam, store):
    slices(store, **{"node-a": "10.1.0.0/26", "node-b": "10.1.0.64/26"})
    a = ipam("node-a", node_slice_size="/26")
    assert ip(a, "old") == "10.1.0.1"
    ip(ipam("node-b", node_slice_size="/26"), "other")
    slices(store, **{"node-b": "10.1.0.0/25", "node-a": "10.1.0.128/25"})  # re-sliced to /25
    a = ipam("node-a", node_slice_size="/25")
    assert ip(a, "new") == "10.1.0.129"
    store.calls.clear()
    assert ipam("node-a", node_slice_size="/25").delete(owner("new")) == ["10.1.0.129"]
    assert store.calls[("list", POOLS)] == 0  # found in the node's slice: no LIST
    assert ipam("node-a", node_slice_size="/25").delete(owner("old")) == ["10.1.0.1"]
    assert store.calls[("list", POOLS)] == 1
    assert store.obj(POOLS, "node-a-10.1.0.0-26")["spec"]["allocations"] == {}
    # Another node's old pool is never looked into: its pods are not this node's.
    assert ipam("node-a", node_slice_size="/25").delete(owner("other")) == []
    assert list(store.obj(POOLS, "node-b-10.1.0.64-26")["spec"]["allocations"]) == ["1"]


def test_a_node_whose_slice_is_withheld_still_frees_in_its_old_pool(ipam, store):
    slices(store, **{"node-a": "10.1.0.0/26"})
    ip(ipam("node-a", node_slice_size="/26"), "old")
    slices(store)  # the node has no slice now
    assert ipam("node-a", node_slice_size="/25").delete(owner("old")) == ["10.1.0.1"]


def test_gc_frees_what_this_node_noted_in_its_old_slice_pools_too(ipam, store):
    slices(store, **{"node-a": "10.1.0.0/26"})
    ip(ipam("node-a", node_slice_size="/26"), "gone")
    ip(ipam("node-a", node_slice_size="/26"), "kept")
    slices(store, **{"node-a": "10.1.0.128/25"})
    ip(ipam("node-a", node_slice_size="/25"), "new")
    assert sorted(ipam("node-a", node_slice_size="/25").gc({("c-kept", "net1"), ("c-new", "net1")})) == ["10.1.0.1"]
    assert list(store.obj(POOLS, "node-a-10.1.0.0-26")["spec"]["allocations"]) == ["2"]


def test_check_finds_an_address_in_the_nodes_old_slice_pool(ipam, store):
    """Before, CHECK looked in the node's current slice only and called the pod's address unallocated."""
    import ipaddress

    slices(store, **{"node-a": "10.1.0.0/26"})
    ip(ipam("node-a", node_slice_size="/26"), "old")
    slices(store, **{"node-a": "10.1.0.128/25"})
    a = ipam("node-a", node_slice_size="/25")
    a.check("c-old", "net1", [ipaddress.ip_address("10.1.0.1")])
    with pytest.raises(NotAllocated, match="10.1.0.2 of prevResult is not allocated"):
        a.check("c-old", "net1", [ipaddress.ip_address("10.1.0.2")])


def test_an_idempotent_add_after_a_reslicing_keeps_the_address_in_the_old_slice_pool(ipam, store):
    """Found by the model test: the repeated ADD gave p0 10.1.0.129 in its new slice beside 10.1.0.1."""
    slices(store, **{"node-a": "10.1.0.0/26"})
    assert ip(ipam("node-a", node_slice_size="/26"), "p0") == "10.1.0.1"
    slices(store, **{"node-a": "10.1.0.128/25"})
    assert ip(ipam("node-a", node_slice_size="/25"), "p0") == "10.1.0.1"
    assert ip(ipam("node-a", node_slice_size="/25"), "p1") == "10.1.0.129"
    assert store.obj(POOLS, "node-a-10.1.0.128-25")["spec"]["allocations"].keys() == {"1"}


def test_an_add_whose_slice_changed_before_its_write_takes_the_address_back(ipam, store):
    """The ADD read the old slicing, the controller gave node-b a slice over it (the old pool was empty
    then), and the ADD wrote into its old slice: it must not keep 10.1.0.1, which node-b's slice holds.
    Found by the model test (slices: add in flight, reslice, the add's write, another add)."""
    slices(store, **{"node-a": "10.1.0.0/26"})
    a = ipam("node-a", node_slice_size="/26")
    rng = a.config.ranges[0]
    assert a.mode(rng).node_slice(rng).local.cidr == "10.1.0.0/26"  # read before the re-slicing
    slices(store, **{"node-b": "10.1.0.0/25", "node-a": "10.1.0.128/25"})
    with pytest.raises(TryAgainLater, match="changed during this ADD"):
        a.add(owner("p2"), {})
    assert store.obj(POOLS, "node-a-10.1.0.0-26")["spec"]["allocations"] == {}
    assert ip(ipam("node-a", node_slice_size="/25"), "p2") == "10.1.0.129"


def test_an_entry_left_in_a_slice_given_over_is_not_kept(ipam, store):
    """An entry written into the old slice after the slice over it was given (its ADD died before taking
    it back) is freed, not kept, by the owner's next ADD."""
    slices(store, **{"node-a": "10.1.0.0/26"})
    assert ip(ipam("node-a", node_slice_size="/26"), "p2") == "10.1.0.1"
    slices(store, **{"node-b": "10.1.0.0/25", "node-a": "10.1.0.128/25"})
    assert ip(ipam("node-a", node_slice_size="/25"), "p2") == "10.1.0.129"
    assert store.obj(POOLS, "node-a-10.1.0.0-26")["spec"]["allocations"] == {}

"""How a range maps onto IPPools: one Go-compatible pool, or aligned blocks."""

import ipaddress

from whereabouts.core.blocks import Layout
from whereabouts.plugin.config import parse_range
from whereabouts.core.pool import is_dns_subdomain


def test_default_is_one_pool_named_like_the_go_plugin():
    layout = Layout(parse_range("range", "10.0.0.0/16"))
    assert not layout.sharded and layout.count == 1
    (blk,) = layout.blocks()
    assert blk.name == "10.0.0.0-16" and blk.local.cidr == "10.0.0.0/16" and layout.metadata() == {}


def test_a_range_smaller_than_a_block_stays_one_pool():
    assert not Layout(parse_range("range", "10.0.0.0/24"), block_size=1024).sharded


def test_blocks_are_aligned_cidrs_covering_the_span():
    rng = parse_range("range", "10.0.0.0/16", exclude=["10.0.4.0/23"], gateway=ipaddress.ip_address("10.0.8.1"))
    layout = Layout(rng, "blue", 1024)
    blocks = layout.blocks()
    assert layout.count == 64
    assert [b.local.cidr for b in blocks[:3]] == ["10.0.0.0/22", "10.0.4.0/22", "10.0.8.0/22"]
    assert blocks[0].name == "blue-10.0.0.0-16-blk0" and all(is_dns_subdomain(b.name) for b in blocks)
    # The range's network and broadcast addresses stay out; inner block edges are usable.
    assert (blocks[0].local.first, blocks[0].local.last) == (1, 1023)
    assert (blocks[1].local.first, blocks[-1].local.last) == (0, 1022)
    assert blocks[1].local.excluded == ((0, 511),)
    assert blocks[2].local.gateway == 1
    assert sum(capacity(b.local) for b in blocks) == capacity(rng)


def capacity(rng) -> int:
    """How many offsets a range hands out dynamically: its span less its exclusions."""
    return sum(1 for o in range(rng.first, rng.last + 1) if rng.excluded_until(o) is None)


def test_block_of():
    layout = Layout(parse_range("range", "10.0.0.0/16"), block_size=1024)
    assert layout.block_of(ipaddress.ip_address("10.0.9.7")).index == 2
    assert layout.name == "10.0.0.0-16"


def test_a_node_slice_leaves_out_its_own_network_and_broadcast_like_the_go_plugin():
    from whereabouts.core.blocks import carve

    rng = parse_range("range", "10.0.0.0/24", exclude=["10.0.0.70/31"], gateway=ipaddress.ip_address("10.0.0.65"))
    blk = carve(rng, ipaddress.ip_network("10.0.0.64/26"), "node-1-10.0.0.64-26")
    assert (blk.local.cidr, blk.local.first, blk.local.last) == ("10.0.0.64/26", 1, 62)
    assert blk.local.excluded == ((1, 1), (6, 7)) and blk.local.gateway == 1 and blk.index is None
    # range_start/range_end still bound it
    narrow = parse_range("range", "10.0.0.0/24", start="10.0.0.100", end="10.0.0.120")
    blk = carve(narrow, ipaddress.ip_network("10.0.0.64/26"), "n")
    assert (blk.local.first, blk.local.last) == (36, 56)


def test_block_metadata_names_the_claiming_node():
    from whereabouts.core.blocks import block_node

    layout = Layout(parse_range("range", "10.0.0.0/16"), block_size=1024)
    meta = layout.metadata("node-1")
    assert block_node({"metadata": meta}) == "node-1"
    assert block_node({"metadata": layout.metadata()}) == ""
    assert block_node({"metadata": {"annotations": None}}) == "" and block_node({}) == ""


def test_wide_ipv6_ranges_use_a_bounded_number_of_blocks():
    layout = Layout(parse_range("range", "fd00::/64"), block_size=1024)
    assert layout.count == 4096
    assert layout.block(4095).local.cidr == "fd00::3f:fc00/118"
    assert layout.block_of(ipaddress.ip_address("fd00::40:0")) is None


def test_parent_pool_name_undoes_block_naming():
    from whereabouts.core.blocks import parent_pool_name

    layout = Layout(parse_range("range", "10.0.0.0/16"), "blue", 1024)
    assert {parent_pool_name(b.name) for b in layout.blocks()} == {"blue-10.0.0.0-16"}
    assert parent_pool_name("10.0.0.0-24") == "10.0.0.0-24"
    assert parent_pool_name("blk-10.0.0.0-24") == "blk-10.0.0.0-24"

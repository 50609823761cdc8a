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


def test_block_of_and_search_order():
    layout = Layout(parse_range("range", "10.0.0.0/16"), block_size=1024)
    assert layout.block_of(ipaddress.ip_address("10.0.9.7")).index == 2
    order = layout.search_order("ns/pod|net1")
    assert sorted(b.index for b in order) == list(range(64))
    assert order == layout.search_order("ns/pod|net1")  # stable
    homes = {layout.search_order(f"ns/p{i}|net1")[0].index for i in range(200)}
    assert len(homes) > 40  # owners spread over blocks


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

"""Every object name the plugin creates is a valid DNS-1123 subdomain, for every valid range."""

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from whereabouts.core.blocks import Layout
from whereabouts.plugin.config import parse_range
from whereabouts.core.pool import is_dns_subdomain, lease_name, pool_name, reservation_name

network_names = st.one_of(st.just(""), st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?\Z"))


@st.composite
def networks(draw):
    if draw(st.booleans()):
        prefix = draw(st.integers(0, 30))
        return ipaddress.IPv4Network((draw(st.integers(0, 2**32 - 1)), prefix), strict=False)
    prefix = draw(st.integers(0, 126))
    return ipaddress.IPv6Network((draw(st.sampled_from([0, 1, 2**112, 2**127]) | st.integers(0, 2**128 - 1)), prefix),
                                 strict=False)


@settings(max_examples=2000, deadline=None)
@given(net=networks(), network_name=network_names, block=st.sampled_from([0, 16, 1024]))
def test_names_are_valid(net, network_name, block):
    rng = parse_range("range", str(net))
    name = pool_name(rng.cidr, network_name)
    assert is_dns_subdomain(name), name
    assert is_dns_subdomain(lease_name(name))
    for ip in (rng.address(rng.first), rng.address(rng.last)):
        assert is_dns_subdomain(reservation_name(ip, network_name)), ip
    layout = Layout(rng, network_name, block)
    for i in {0, layout.count - 1}:
        blk = layout.block(i)
        assert is_dns_subdomain(blk.name) and is_dns_subdomain(lease_name(blk.name)), blk.name

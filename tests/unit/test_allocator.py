"""Pure allocation decisions."""

import ipaddress

import pytest

from whereabouts.core.allocator import check_requested, lowest_free, match_requests
from whereabouts.plugin.config import parse_range
from whereabouts.errors import AddressUnavailable, InvalidConfig, RangeExhausted
from whereabouts.core.ownership import attached, find_owned
from whereabouts.core.pool import Allocation


def test_lowest_free_skips_taken_and_excluded():
    rng = parse_range("range", "10.0.0.0/24", exclude=["10.0.0.0/30"])
    assert lowest_free(rng, set()) == 4
    assert lowest_free(rng, {4, 5}) == 6
    assert lowest_free(rng, {4}, skip={5}) == 6


def test_lowest_free_reuses_a_released_address():
    rng = parse_range("range", "10.0.0.0/29")
    assert lowest_free(rng, {1, 3}) == 2


def test_gateway_is_never_handed_out():
    rng = parse_range("range", "10.0.0.0/30", gateway=ipaddress.ip_address("10.0.0.1"))
    assert lowest_free(rng, set()) == 2
    with pytest.raises(RangeExhausted):
        lowest_free(rng, {2})


def test_exhaustion_names_the_range():
    rng = parse_range("range", "10.0.0.0/30")
    with pytest.raises(RangeExhausted, match="10.0.0.0/30"):
        lowest_free(rng, {1, 2})


def test_whole_ipv6_64_is_exact_at_the_top():
    rng = parse_range("range", "fd00::/64", start="fd00::ffff:ffff:ffff:fffd")
    off = lowest_free(rng, set())
    assert str(rng.address(off)) == "fd00::ffff:ffff:ffff:fffd"
    assert off == 2**64 - 3
    off2 = lowest_free(rng, {off})
    assert str(rng.address(off2)) == "fd00::ffff:ffff:ffff:fffe"
    with pytest.raises(RangeExhausted):
        lowest_free(rng, {off, off2})


def test_huge_exclusion_is_skipped_in_one_step():
    rng = parse_range("range", "fd00::/48", exclude=["fd00::/49"])
    assert str(rng.address(lowest_free(rng, set()))) == "fd00:0:0:8000::"


def test_find_owned_by_pod_and_interface_or_by_container():
    allocs = {1: Allocation("c1", "ns/a", "net1"), 2: Allocation("c2", "", "net1")}
    assert find_owned(allocs, Allocation("other", "ns/a", "net1")) == 1
    assert find_owned(allocs, Allocation("c1", "ns/a", "net2")) is None
    assert find_owned(allocs, Allocation("c2", "", "net1")) == 2
    assert [o for o, a in allocs.items() if attached(a, "c1", "net1")] == [1]
    assert [o for o, a in allocs.items() if attached(a, "c1", "eth0")] == []


def test_check_requested():
    rng = parse_range("range", "10.0.0.0/24", gateway=ipaddress.ip_address("10.0.0.1"))
    me = Allocation("c1", "ns/a", "net1")
    assert check_requested(rng, ipaddress.ip_address("10.0.0.9"), None, me) == 9
    assert check_requested(rng, ipaddress.ip_address("10.0.0.9"), Allocation("old", "ns/a", "net1"), me) == 9
    with pytest.raises(AddressUnavailable, match="ns/b"):
        check_requested(rng, ipaddress.ip_address("10.0.0.9"), Allocation("c2", "ns/b", "net1"), me)
    with pytest.raises(AddressUnavailable, match="gateway"):
        check_requested(rng, ipaddress.ip_address("10.0.0.1"), None, me)
    with pytest.raises(AddressUnavailable, match="outside"):
        check_requested(rng, ipaddress.ip_address("10.0.0.255"), None, me)


def test_match_requests():
    ranges = [parse_range("range", "10.0.0.0/24"), parse_range("range", "fd00::/64")]
    ip4, ip6 = ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("fd00::5")
    assert match_requests(ranges, [ip6, ip4], "args.cni.ips") == {0: ip4, 1: ip6}
    with pytest.raises(InvalidConfig, match="outside every"):
        match_requests(ranges, [ipaddress.ip_address("10.9.0.1")], "args.cni.ips")
    with pytest.raises(InvalidConfig, match="both fall"):
        match_requests(ranges, [ip4, ipaddress.ip_address("10.0.0.6")], "args.cni.ips")


class CountingIntervals(tuple):
    """The exclusions of a range, counting how many intervals a search looks at."""

    looked = 0

    def __getitem__(self, i):
        CountingIntervals.looked += 1
        return super().__getitem__(i)

    def __iter__(self):
        for item in super().__iter__():
            CountingIntervals.looked += 1
            yield item


def test_exclusions_are_searched_not_scanned():
    """2,000 single-address exclusions interleaved with 2,000 allocations: a scan of the exclusions
    for every address looked at ~4 million intervals; a binary search looks at some 50,000."""
    rng = parse_range("range", "10.0.0.0/16", exclude=[f"10.0.{(2 * i + 1) // 256}.{(2 * i + 1) % 256}"
                                                       for i in range(2000)])
    counted = type(rng)(rng.network, rng.first, rng.last, CountingIntervals(rng.excluded), rng.gateway)
    CountingIntervals.looked = 0
    assert lowest_free(counted, {2 * i for i in range(1, 2001)}) == 4001
    assert CountingIntervals.looked < 200_000, CountingIntervals.looked

"""One allocatable range: its network, the usable offsets inside it and what is excluded.

Addresses are handled as integer offsets from the network address, which is also
how `IPPool.spec.allocations` keys them, so IPv6 ranges of any width are exact.
The stdlib `ipaddress` is used rather than `netaddr`: this module is on the
per-invocation path (doc/design.md, *Start-up cost*).
"""

from __future__ import annotations

import bisect
import ipaddress

from whereabouts.core.record import Record

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class IPRange(Record):
    """A range as configured: `network` with offsets `first`..`last` usable.

    `excluded` holds sorted, merged, inclusive (lo, hi) offset intervals never handed
    out dynamically; `gateway` is the gateway's offset when it lies in the network.
    """

    __slots__ = ("network", "first", "last", "excluded", "gateway")
    _defaults = {"excluded": (), "gateway": None}
    network: Network
    first: int
    last: int
    excluded: tuple[tuple[int, int], ...]
    gateway: int | None

    @property
    def cidr(self) -> str:
        """The network in the form the Go plugin stores in `spec.range`."""
        return str(self.network)

    @property
    def version(self) -> int:
        return self.network.version

    @property
    def size(self) -> int:
        """How many offsets lie between first and last."""
        return self.last - self.first + 1

    def address(self, offset: int) -> Address:
        return self.network.network_address + offset

    def offset(self, ip: Address) -> int:
        return int(ip) - int(self.network.network_address)

    def in_span(self, offset: int) -> bool:
        return self.first <= offset <= self.last

    def excluded_until(self, offset: int) -> int | None:
        """The last offset of the exclusion containing `offset`, if any (a binary search: allocation
        asks this for every address it passes, and a range may carry thousands of exclusions)."""
        i = bisect.bisect_right(self.excluded, offset, key=_low) - 1
        if i >= 0 and self.excluded[i][1] >= offset:
            return self.excluded[i][1]
        return None


def usable_span(network: Network) -> tuple[int, int]:
    """The first and last offset a network hands out: network+1 to broadcast-1, for IPv6 too
    (first > last when there is none: a /31, /32, /127, /128)."""
    return 1, network.num_addresses - 2


def _low(interval: tuple[int, int]) -> int:
    return interval[0]


def merge_intervals(intervals: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sort and merge overlapping or adjacent inclusive intervals."""
    merged: list[list[int]] = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return tuple((lo, hi) for lo, hi in merged)

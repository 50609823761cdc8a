"""Pure address selection over a pool snapshot: no I/O, no Kubernetes, no env.

Given a range and the offsets already taken, decide which offset an owner gets,
or which offsets an owner frees. The store layer applies the decision.
"""

from __future__ import annotations


from whereabouts.errors import AddressUnavailable, InvalidConfig, RangeExhausted

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on the hot path (~3 ms)
if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from whereabouts.pool import Allocation
    from whereabouts.ranges import Address, IPRange


def lowest_free(rng: IPRange, taken: Collection[int], skip: Collection[int] = ()) -> int:
    """The lowest offset in the span that is neither taken, excluded nor in `skip`.

    Runs in O(len(taken) + len(skip) + len(exclusions)), whatever the width of the range.
    """
    offset = rng.first
    while offset <= rng.last:
        end = rng.excluded_until(offset)
        if end is not None:
            offset = end + 1
        elif offset in taken or offset in skip:
            offset += 1
        else:
            return offset
    raise RangeExhausted(
        f"no free address left in range {rng.cidr} "
        f"({rng.address(rng.first)}-{rng.address(rng.last)}, "
        f"{len(rng.excluded)} exclusion(s), {len(taken)} allocated)"
    )


def find_owned(
    allocations: dict[int, Allocation], podref: str, ifname: str, container_id: str
) -> int | None:
    """The offset already held by this owner, for an idempotent ADD."""
    for offset, alloc in allocations.items():
        if alloc.owned_by(podref, ifname, container_id):
            return offset
    return None


def check_requested(rng: IPRange, ip: Address, taken_by: Allocation | None, owner: Allocation) -> int:
    """The offset for a requested static address, if it may be given to `owner`."""
    offset = rng.offset(ip)
    if not rng.in_span(offset):
        raise AddressUnavailable(
            f"requested address {ip} is outside the usable span "
            f"{rng.address(rng.first)}-{rng.address(rng.last)} of range {rng.cidr}"
        )
    if offset == rng.gateway:
        raise AddressUnavailable(f"requested address {ip} is the gateway of range {rng.cidr}")
    if taken_by is not None and not taken_by.owned_by(owner.podref, owner.ifname, owner.container_id):
        holder = taken_by.podref or taken_by.container_id
        raise AddressUnavailable(f"requested address {ip} in range {rng.cidr} is already allocated to {holder}")
    return offset


def match_requests(ranges: Iterable[IPRange], requested: Iterable[Address], source: str) -> dict[int, Address]:
    """Map each requested address to the index of the one range that contains it."""
    ranges = list(ranges)
    matched: dict[int, Address] = {}
    for ip in requested:
        for i, rng in enumerate(ranges):
            if ip.version == rng.version and ip in rng.network:
                if i in matched:
                    raise InvalidConfig(f"{source}: {matched[i]} and {ip} both fall in range {rng.cidr}")
                matched[i] = ip
                break
        else:
            cidrs = ", ".join(r.cidr for r in ranges)
            raise InvalidConfig(f"{source}: requested address {ip} is outside every configured range ({cidrs})")
    return matched

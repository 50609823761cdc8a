"""Pure address selection over a pool snapshot: no I/O, no Kubernetes, no env.

Given a range and the offsets already taken, decide which offset an owner gets,
or which offsets an owner frees. The store layer applies the decision.
"""

from __future__ import annotations


from whereabouts.core.ownership import find_owned, same_owner
from whereabouts.core.record import Record
from whereabouts.errors import AddressUnavailable, InvalidConfig, RangeExhausted

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from whereabouts.core.pool import Allocation, Pool
    from whereabouts.core.ranges import Address, IPRange


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
    if taken_by is not None and not same_owner(taken_by, owner):
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


class Step(Record):
    """What one round of an ADD does in one pool, decided from the pool as read: keep the entry
    the owner holds at `offset` (idempotent ADD), or take `offset`, moving the owner away from
    `moves_from` when a requested address moves it."""

    __slots__ = ("offset", "keep", "moves_from")
    _defaults = {"moves_from": None}
    offset: int
    keep: bool
    moves_from: int | None


def next_step(rng: IPRange, pool: Pool, owner: Allocation, want: Address | None, skip: Collection[int]) -> Step:
    """The next step of an ADD of `owner` in `pool` (a range of its own, or a block's view), for the
    requested address `want` or else the lowest free one that is not in `skip`."""
    existing = find_owned(pool.allocations, owner)
    if want is None:
        if existing is not None:
            return Step(existing, keep=True)
        return Step(lowest_free(rng, pool.taken, skip), keep=False)
    offset = check_requested(rng, want, pool.holder(rng.offset(want)), owner)
    if existing == offset:
        return Step(offset, keep=True)
    return Step(offset, keep=False, moves_from=existing)

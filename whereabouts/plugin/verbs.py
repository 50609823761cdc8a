"""The verbs over the store, range by range: each range through its allocation mode
(`whereabouts.plugin.modes`), each pool write through `whereabouts.plugin.txn`.

- ADD is all-or-nothing over the ranges: what this call allocated in earlier ranges is released
  again, through its mode, when a later range fails. The attachment is noted in the node's
  ledger before the first write, so what a rollback cannot free GC frees later.
- DEL frees this container's interface in every range and reports the first error after trying all.
- GC frees what this node noted and the runtime no longer lists; CHECK and STATUS only read.
"""

from __future__ import annotations

from whereabouts.core.ownership import attached, holds_reservation
from whereabouts.errors import CNIError, NotAllocated, TryAgainLater
from whereabouts.plugin.modes import mode_for
from whereabouts.plugin.txn import Txn, holder_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from whereabouts.core.pool import Allocation
    from whereabouts.core.ranges import Address, IPRange
    from whereabouts.k8s.lease import LeaseLock
    from whereabouts.k8s.store import Store
    from whereabouts.plugin.config import IPAMConfig
    from whereabouts.plugin.log import Log
    from whereabouts.plugin.modes import Mode
    from whereabouts.plugin.txn import Assigned, Doomed, Stats


class IPAM:
    """The verbs of one invocation. `leases(name)` makes the (not yet taken) Lease of that name;
    `node` names this node (the key of node slices and block affinity)."""

    def __init__(self, config: IPAMConfig, store: Store, leases: Callable[[str], LeaseLock], deadline: float,
                 log: Log, node: str = "") -> None:
        self.config = config
        self.txn = Txn(config, store, leases, deadline, log, node)
        self.log = log
        self._modes: dict[type, Mode] = {}

    @property
    def stats(self) -> Stats:
        return self.txn.stats

    def mode(self, rng: IPRange) -> Mode:
        """The range's mode; one instance per kind for the whole call (node slices are read once)."""
        mode = mode_for(self.txn, rng)
        return self._modes.setdefault(type(mode), mode)

    def add(self, owner: Allocation, requested: dict[int, Address]) -> list[Assigned]:
        from whereabouts.plugin import ledger

        ledger.note(self.config.node_lock_dir, self.config.name, owner.container_id, owner.ifname)
        done: list[Assigned] = []
        try:
            for i, rng in enumerate(self.config.ranges):
                done.append(self.mode(rng).add(rng, owner, requested.get(i)))
        except CNIError:
            self._roll_back(owner, [a for a in done if a.new])
            raise
        return done

    def _roll_back(self, owner: Allocation, assigned: list[Assigned]) -> None:
        for a in reversed(assigned):
            try:
                self.mode(a.rng).roll_back(a, lambda o, al: o == a.offset and attached(al, owner.container_id,
                                                                                        owner.ifname))
            except CNIError as e:
                self.log.error("rollback failed: the node's ledger leaves it to GC or DEL", ip=str(a.address),
                               error=e.msg)

    def delete(self, owner: Allocation) -> list[str]:
        """Free this container's addresses in every range; errors are raised after trying all."""
        freed: list[str] = []
        first_error: CNIError | None = None

        def mine(_: int, a: Allocation) -> bool:
            return attached(a, owner.container_id, owner.ifname)

        for rng in self.config.ranges:
            try:
                freed += self.mode(rng).release(rng, mine, everywhere=True)
            except CNIError as e:
                first_error = first_error or e
        if first_error is not None:
            raise first_error
        return freed

    def gc(self, valid: set[tuple[str, str]]) -> list[str]:
        """Free every allocation made on this node whose (container id, ifname) is not a valid attachment.

        The runtime's list names this node's attachments only, so only what this node noted
        (`whereabouts.plugin.ledger`) is judged; with node slices or blocks, only in its own pools
        and those it spilled into."""
        from whereabouts.plugin import ledger

        noted = self.txn.noted()
        doomed: Doomed = lambda _, a: (a.container_id, a.ifname) in noted and (a.container_id, a.ifname) not in valid
        freed: list[str] = []
        errors: list[str] = []
        for rng in self.config.ranges:
            try:
                freed += self.mode(rng).release(rng, doomed, everywhere=False)
            except CNIError as e:
                errors.append(f"{rng.cidr}: {e.msg}")
        if errors:
            raise TryAgainLater(f"GC freed {len(freed)} address(es) but failed in: " + "; ".join(errors))
        ledger.keep(self.config.node_lock_dir, self.config.name, valid)
        return freed

    def check(self, container_id: str, ifname: str, addresses: list[Address]) -> None:
        """Every address of prevResult in our ranges is allocated to this container and interface, and
        (with overlapping ranges) reserved by its owner."""
        txn = self.txn
        for rng in self.config.ranges:
            mine = [a for a in addresses if a.version == rng.version and a in rng.network]
            if not mine:
                raise NotAllocated(f"prevResult has no address in range {rng.cidr}")
            for ip in mine:
                blk = self.mode(rng).block_of(rng, ip)
                pool = txn.read(blk, create=False) if blk else None
                holder = pool.allocations.get(blk.local.offset(ip)) if pool and blk else None
                if holder is None or not attached(holder, container_id, ifname):
                    who = f"held by container {holder.container_id}" if holder else "not allocated"
                    raise NotAllocated(f"{ip} of prevResult is {who} in range {rng.cidr}, "
                                       f"not by container {container_id} interface {ifname}")
                if self.config.overlapping_ranges:
                    name = txn.reservation_name(ip)
                    res = txn.pools.get_reservation(name)
                    if res is None or not holds_reservation(holder, res):
                        who = f"reserved by {holder_text(res)}" if res else "not reserved"
                        raise NotAllocated(f"{ip} of prevResult is {who} across overlapping ranges "
                                           f"(OverlappingRangeIPReservation {name})")

    def status(self) -> None:
        """Raise RangeExhausted (or TryAgainLater) unless every range could serve an ADD now."""
        for rng in self.config.ranges:
            self.mode(rng).check_room(rng)

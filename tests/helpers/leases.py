"""Watching the shared Lease while a holder is parked at the fault proxy and another invocation waits."""

from __future__ import annotations

import subprocess
from typing import Any

from tests.helpers.wait import wait_for
from whereabouts.k8s.lease import CLOCK_SKEW_S

TYPE_CHECKING = False
if TYPE_CHECKING:
    from tests.helpers.faultproxy import FaultProxy
    from tests.helpers.store import Pools


def lease_reads(proxy: FaultProxy, name: str) -> int:
    return sum(1 for e in list(proxy.log) if e.method == "GET" and e.path.endswith(f"/leases/{name}"))


def start_waiter_and_outlast_it(pools: Pools, proxy: FaultProxy, start_waiter: Any,
                                name: str = "whereabouts") -> subprocess.Popen:
    """With the Lease's holder parked (its pool write held at `proxy`), start the waiter, see it read
    the Lease at the proxy, then wait until the holder has renewed the Lease past its duration plus
    the clock skew a waiter allows: without renewals the waiter would have taken it over by then.
    Fails if the holder changes or the waiter ends meanwhile. Returns the waiter, still running."""
    holder, _, _, duration = pools.lease(name)
    assert holder, "nobody holds the Lease"
    reads = lease_reads(proxy, name)
    waiter = start_waiter()
    wait_for(lambda: lease_reads(proxy, name) > reads, 60, "the waiter to read the Lease")
    _, _, seen, _ = pools.lease(name)

    def renewed_past_its_duration() -> bool:
        now_holder, _, renewed, _ = pools.lease(name)
        assert now_holder == holder, f"the Lease was taken over from {holder} by {now_holder}"
        assert waiter.poll() is None, "the waiter ended while the Lease was held"
        return renewed >= seen + duration + CLOCK_SKEW_S

    wait_for(renewed_past_its_duration, 60, "the holder to renew the Lease past its duration")
    return waiter

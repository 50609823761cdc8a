"""Who may take a `coordination.k8s.io/v1` Lease, and what taking, renewing and releasing write.

One rule, without I/O, for both elections: the plugin's lock around one pool update
(`whereabouts.k8s.lease`) and the node-slice controller's leadership
(`whereabouts.operator.election`). It is client-go's: a Lease is taken when it has no holder,
names the contender, or its record (its resourceVersion) has not changed for its duration since
the contender first saw it, counted on the contender's own monotonic clock so that skew between
machines does not matter. A contender may also trust the record's `renewTime`, with a margin for
skew: a waiter that lives shorter than a dead holder's duration still gets it then (the plugin
does; the controller lives long enough to count).

Taking writes the holder, the contender's duration, acquireTime and renewTime, and counts a
transition unless the Lease named the contender; renewing writes renewTime; releasing clears
the holder with a duration of one second, as client-go releases, so the next one takes it at once.
"""

from __future__ import annotations

from whereabouts.core.rfc3339 import format_time, parse_time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Sighting:
    """When this contender first saw the Lease's current record (monotonic): a holder's time counts from there."""

    __slots__ = ("version", "since")

    def __init__(self) -> None:
        self.version: str | None = None
        self.since: float | None = None

    def see(self, version: str | None, now: float) -> float:
        """Note the record `version` read at `now`; when it was first seen."""
        if self.since is None or version != self.version:
            self.version, self.since = version, now
        return self.since


def holder_of(spec: dict[str, Any]) -> str:
    return spec.get("holderIdentity") or ""


def is_free(spec: dict[str, Any], identity: str) -> bool:
    """Whether `identity` may take the Lease whatever its times: it has no holder, or names `identity`."""
    holder = holder_of(spec)
    return not holder or holder == identity


def duration_of(spec: dict[str, Any], default_s: float) -> float:
    """The Lease's own duration; `default_s` when it has none that reads as a number."""
    try:
        return float(spec.get("leaseDurationSeconds") or default_s)
    except (TypeError, ValueError):
        return float(default_s)


def expiry(spec: dict[str, Any], since: float, default_s: float, now: float, wall: float | None = None,
           skew_s: float = 0.0) -> float:
    """When (on the monotonic clock of `now`) the holder's time is up: its duration after `since`.

    Given `wall` (the wall clock at `now`), the record is trusted too: its renewTime plus duration
    plus `skew_s`, when that comes first. Only then is a time parsed (and `datetime` imported).
    """
    duration = duration_of(spec, default_s)
    expires = since + duration
    if wall is not None:
        renewed = parse_time(spec.get("renewTime"))
        if renewed is not None:
            expires = min(expires, now + renewed + duration + skew_s - wall)
    return expires


def claim(spec: dict[str, Any] | None, identity: str, duration_s: int, wall: float) -> dict[str, Any]:
    """The spec that takes the Lease whose spec is `spec` (None: a Lease created now, no transition yet)."""
    if spec is None:
        spec, transitions = {}, 0
    else:
        previous = spec.get("leaseTransitions")
        transitions = (previous if isinstance(previous, int) else 0) + (0 if holder_of(spec) == identity else 1)
    now = format_time(wall)
    return {**spec, "holderIdentity": identity, "leaseDurationSeconds": duration_s, "acquireTime": now,
            "renewTime": now, "leaseTransitions": transitions}


def renewal(spec: dict[str, Any], wall: float) -> dict[str, Any]:
    """The spec that renews a Lease its holder keeps: acquireTime and transitions stay."""
    return {**spec, "renewTime": format_time(wall)}


def release(spec: dict[str, Any], wall: float) -> dict[str, Any]:
    """The spec that frees the Lease for the next contender at once."""
    return {**spec, "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": format_time(wall)}


def lease_object(name: str, namespace: str, spec: dict[str, Any], labels: dict[str, str] | None = None
                 ) -> dict[str, Any]:
    """A new Lease to create."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

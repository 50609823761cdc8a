"""The cluster-wide half of mutual exclusion per pool: a `coordination.k8s.io/v1` Lease.

(The node-local half, taken first, is `whereabouts.plugin.nodelock`.) Who may take the Lease and
what is written is `whereabouts.core.leases`, client-go's rules; this module does the requests. A
waiter also trusts the record itself: a Lease whose `renewTime` plus duration (and a
margin for clock skew between nodes) lies in the past is expired, so a dead holder's
Lease can be taken even when its duration is longer than any one waiter lives.
A waiter watches the Lease instead of polling, so it wakes as soon as it is freed.
The holder renews it every retry period, as client-go does, so a slow critical
section is not taken over by a waiter (ours, or the Go plugin's on the shared Lease).

Neither lock is what keeps addresses unique: every pool write carries the
resourceVersion it read. The locks only keep writers from colliding.
"""

from __future__ import annotations

import _thread
import math
import time

from whereabouts.core.leases import (Sighting, claim, duration_of, expiry, holder_of, is_free, lease_object, release,
                                     renewal)
from whereabouts.errors import IOFailure, OutcomeUnknown, TryAgainLater
from whereabouts.k8s.store import dig
from whereabouts.k8s.urls import quote

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from whereabouts.k8s.api import KubeAPI, Watch

MANAGED_BY = {"app.kubernetes.io/managed-by": "whereabouts"}
# How far the clocks of two nodes may disagree when a waiter judges a Lease by its renewTime.
CLOCK_SKEW_S = 2.0


class LeaseLock:
    """A `coordination.k8s.io/v1` Lease held for the span of one pool update."""

    def __init__(self, api: KubeAPI, name: str, identity: str, duration_ms: int, deadline: float,
                 renew_ms: int = 500, renew_deadline_ms: int = 1000) -> None:
        self.api = api
        self.name = name
        self.identity = identity
        self.duration_s = max(1, math.ceil(duration_ms / 1000))
        self.renew_s = renew_ms / 1000
        self.renew_deadline_s = renew_deadline_ms / 1000
        self.deadline = deadline
        self.held: dict[str, Any] | None = None
        self.waited = 0.0
        self.attempts = 0
        self.renewals = 0
        # `_thread` rather than `threading`: the renewer needs two locks and no more, and
        # `threading` would add its import to every invocation.
        self._guard = _thread.allocate_lock()  # the renewer and release() never write at once
        self._stop = _thread.allocate_lock()  # held while the renewer should keep going

    def acquire(self) -> None:
        """Take the Lease, waiting on a watch of it while someone else holds it.

        The watch delivers every new version of the Lease, so a waiter needs no GET after
        a change and no GET after losing a race (409): it reads on until the Lease is free
        again or its holder's time is up.
        """
        start = time.monotonic()
        lease = self._get_or_create()
        seen = Sighting()
        events, holder = None, ""
        try:
            while lease is not None:
                spec = dig(lease, "spec") or {}
                rv = dig(lease, "metadata", "resourceVersion")
                if not isinstance(spec, dict):
                    raise IOFailure(f"Lease {self.api.namespace}/{self.name}: the API server answered with a "
                                    "malformed object")
                holder = holder_of(spec)
                since = seen.see(rv, time.monotonic())
                free = is_free(spec, self.identity)
                expires = since + duration_of(spec, self.duration_s) if free else self._expiry(spec, since)
                if free or time.monotonic() >= expires:
                    if self._take(lease, spec):
                        break
                    lease = None  # lost the race: the watch brings the winner's version
                elif time.monotonic() >= self.deadline:
                    break
                if events is None:
                    events = self._watch(rv)
                lease = self._next_version(events, min(expires, self.deadline))
                if lease is None and time.monotonic() >= self.deadline:
                    break
                if lease is None:  # deleted, broken, or the holder's time is up: read afresh
                    events.close()
                    lease, events = self._get_or_create(), None
        finally:
            if events is not None:
                events.close()
        if self.held is None:
            last = f"held by {holder!r}" if holder else "free at times, but always taken by another waiter first"
            raise TryAgainLater(f"Lease {self.api.namespace}/{self.name} not obtained within "
                                f"{time.monotonic() - start:.1f}s before the deadline ({last})")
        self.waited = time.monotonic() - start
        self._stop.acquire()
        _thread.start_new_thread(self._renew, (self.api.sibling(),))

    def _expiry(self, spec: dict[str, Any], observed_at: float) -> float:
        """When (monotonic) the holder's time is up: its duration after we first saw this version,
        or after the record's own renewTime (plus CLOCK_SKEW_S), whichever comes first."""
        return expiry(spec, observed_at, self.duration_s, time.monotonic(), time.time(), CLOCK_SKEW_S)

    def _renew(self, api: KubeAPI) -> None:
        """Renew the held Lease every retry period until released (on its own thread and connection).

        As in client-go, a renewal that got no answer (within the Lease's duration, after which
        waiters take it over anyway) is tried again each period until the renew deadline has
        passed since the last one that succeeded; a Lease taken over (a 409) or past that deadline
        is given up. The pool write's resourceVersion still keeps addresses unique:
        the Lease only keeps writers from colliding.
        """
        renewed = time.monotonic()
        try:
            while not self._stop.acquire(timeout=self.renew_s):
                with self._guard:
                    if self.held is None:
                        return
                    spec = renewal(dig(self.held, "spec") or {}, time.time())
                    try:
                        resp = api.request("PUT", api.lease_path(self.name), {**self.held, "spec": spec},
                                           timeout=self.duration_s)
                    except TryAgainLater:  # no answer (OutcomeUnknown included): the next PUT settles it
                        if time.monotonic() - renewed >= self.renew_deadline_s:
                            return
                        continue
                    if resp.status == 409:  # taken over, or our previous renewal applied unseen
                        current = api.request("GET", api.lease_path(self.name), timeout=self.duration_s)
                        if current.status == 200 and self._adopt(current.body):
                            continue
                    if resp.status != 200:
                        return
                    self.held, renewed = resp.body, time.monotonic()
                    self.renewals += 1
        except Exception:  # noqa: BLE001 - see above; the main thread reports what matters
            return
        finally:
            api.close()

    def _get_or_create(self) -> dict[str, Any] | None:
        """The Lease as stored; None once we created it (and so hold it)."""
        while True:
            if time.monotonic() >= self.deadline:
                raise TryAgainLater(f"Lease {self.api.namespace}/{self.name}: not obtained before the deadline")
            self.attempts += 1
            resp = self.api.request("GET", self.api.lease_path(self.name))
            if resp.status == 200:
                return None if self._adopt(resp.body) else resp.body
            body = lease_object(self.name, self.api.namespace, claim(None, self.identity, self.duration_s, time.time()),
                                MANAGED_BY)
            try:
                created = self.api.request("POST", self.api.lease_path(), body)
            except OutcomeUnknown:
                continue  # the next GET tells whether it is ours
            if created.status in (200, 201):
                self.held = created.body
                return None

    def _adopt(self, lease: dict[str, Any]) -> bool:
        """Hold `lease` as read if it names us: a write of ours applied although its answer was lost."""
        if dig(lease, "spec", "holderIdentity") != self.identity:
            return False
        self.held = lease
        return True

    def _take(self, lease: dict[str, Any], spec: dict[str, Any]) -> bool:
        lease = {**lease, "spec": claim(spec, self.identity, self.duration_s, time.time())}
        self.attempts += 1
        try:
            updated = self.api.request("PUT", self.api.lease_path(self.name), lease)
        except OutcomeUnknown:
            current = self.api.request("GET", self.api.lease_path(self.name))
            return current.status == 200 and self._adopt(current.body)
        if updated.status == 200:
            self.held = updated.body
            return True
        return False

    def _watch(self, rv: str | None) -> Watch:
        selector = quote(f"metadata.name={self.name}")
        path = f"{self.api.lease_path()}?fieldSelector={selector}&resourceVersion={rv}"
        return self.api.watch(path, max(0.05, self.deadline - time.monotonic()))

    def _next_version(self, events: Watch, until: float) -> dict[str, Any] | None:
        """The Lease's next version from the watch; None when it must be read afresh: deleted, an
        ERROR or BOOKMARK event (e.g. a too old resourceVersion), the watch broke, or `until` came."""
        started = time.monotonic()
        event = events.next(until)
        if event is not None:
            if event.get("type") in ("ADDED", "MODIFIED") and isinstance(event.get("object"), dict):
                return event["object"]
            return None
        if time.monotonic() < until and time.monotonic() - started < 0.01:
            # The watch failed at once (e.g. not permitted): pause briefly before reading again.
            import random

            time.sleep(min(max(0.0, until - time.monotonic()), random.uniform(0.02, 0.08)))
        return None

    def release(self) -> None:
        """Clear the holder so the next waiter takes it at once. Best effort: it expires anyway, so
        the release waits no longer than the Lease's duration, all that it can spare a waiter."""
        if self.held is None:
            return
        self._stop.release()
        with self._guard:
            lease, self.held = self.held, None
        if lease is None:
            return
        lease["spec"] = release(dig(lease, "spec") or {}, time.time())
        try:
            self.api.request("PUT", self.api.lease_path(self.name), lease, timeout=self.duration_s)
        except Exception:  # noqa: BLE001 - a failed release only delays the next holder
            pass

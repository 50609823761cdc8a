"""The Lease's timing rules, with the clock and the API scripted: when a holder's time is up, and
how a holder keeps renewing through lost answers (the same Lease runs against the real API server
in tests/cni/test_verbs.py and tests/compat)."""

from __future__ import annotations

import threading
import time

import pytest

from whereabouts.errors import TryAgainLater
from whereabouts.k8s.api import Response
from whereabouts.k8s.lease import CLOCK_SKEW_S, LeaseLock
from whereabouts.core.rfc3339 import format_time as micro_time


class ScriptedAPI:
    """Answers each request with the next scripted outcome (a Response or an exception)."""

    namespace = "ns"

    def __init__(self, *outcomes) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[str] = []
        self.closed = threading.Event()

    def lease_path(self, name: str = "") -> str:
        return f"/leases/{name}"

    def request(self, method, path, body=None, timeout=10.0):
        self.calls.append(method)
        outcome = self.outcomes.pop(0) if self.outcomes else Response(200, body or {})
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def sibling(self):
        return self

    def close(self) -> None:
        self.closed.set()


def holding(api: ScriptedAPI, renew_ms: int, renew_deadline_ms: int) -> LeaseLock:
    lock = LeaseLock(api, "whereabouts", "me", 1500, time.monotonic() + 30, renew_ms, renew_deadline_ms)
    lock.held = {"metadata": {"name": "whereabouts"}, "spec": {"holderIdentity": "me"}}
    lock._stop.acquire()
    threading.Thread(target=lock._renew, args=(api,), daemon=True).start()
    return lock


def test_the_record_expires_a_dead_holders_lease_before_our_own_count_would(mocker):
    lock = LeaseLock(ScriptedAPI(), "whereabouts", "me", 1500, time.monotonic() + 8)
    now = time.time()
    mocker.patch("whereabouts.k8s.lease.time.time", return_value=now)
    observed = time.monotonic()
    dead = {"leaseDurationSeconds": 20, "renewTime": micro_time(now - 25)}
    assert lock._expiry(dead, observed) <= time.monotonic()  # it ran out 5 s ago by its own record
    older = {"leaseDurationSeconds": 20, "renewTime": micro_time(now - 10)}
    assert lock._expiry(older, observed) == pytest.approx(observed + 10 + CLOCK_SKEW_S, abs=0.5)
    fresh = {"leaseDurationSeconds": 20, "renewTime": micro_time(now + 1)}  # its clock runs ahead
    assert lock._expiry(fresh, observed) == pytest.approx(observed + 20, abs=0.5)
    unreadable = {"leaseDurationSeconds": 20, "renewTime": "yesterday"}
    assert lock._expiry(unreadable, observed) == observed + 20  # only our own count then


def test_a_renewal_without_answer_is_retried_until_the_renew_deadline(mocker):
    """Each unanswered PUT costs 30 ms on the renewer's clock (a scripted one: the count must not
    depend on how fast this machine runs the loop), so the 4th is the first past the 100 ms deadline."""
    clock = [1000.0]

    class SlowAPI(ScriptedAPI):
        def request(self, method, path, body=None, timeout=10.0):
            clock[0] += 0.03
            return super().request(method, path, body, timeout)

    mocker.patch("whereabouts.k8s.lease.time", wraps=time).monotonic = lambda: clock[0]
    api = SlowAPI(*[TryAgainLater("no answer")] * 100)
    lock = holding(api, renew_ms=10, renew_deadline_ms=100)
    assert api.closed.wait(30), "the renewer never gave up"
    assert api.calls == ["PUT"] * 4
    assert lock.renewals == 0


def test_a_renewal_that_applied_unseen_is_adopted_and_renewing_goes_on():
    mine = {"metadata": {"name": "whereabouts", "resourceVersion": "9"}, "spec": {"holderIdentity": "me"}}
    api = ScriptedAPI(Response(409, {}), Response(200, mine), Response(200, mine), Response(409, {}),
                      Response(200, {"spec": {"holderIdentity": "someone-else"}}))
    lock = holding(api, renew_ms=10, renew_deadline_ms=1000)
    assert api.closed.wait(5)
    assert api.calls == ["PUT", "GET", "PUT", "PUT", "GET"]  # adopted, renewed, then taken over: given up
    assert lock.renewals == 1

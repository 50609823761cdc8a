"""The one Lease election (`whereabouts.core.leases`): who may take a Lease and what is written, and
the node-slice controller's Elector on it (the plugin's LeaseLock: tests/unit/test_lease.py; both
against the real API server: tests/cni/test_verbs.py, tests/ops/test_nodeslices.py, tests/compat)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from whereabouts.core.leases import (Sighting, claim, duration_of, expiry, is_free, lease_object, release,
                                     renewal)
from whereabouts.core.rfc3339 import format_time

WALL = 1_796_378_400.0  # 2026-12-04T10:00:00Z


def test_a_holders_time_counts_from_the_first_sight_of_each_record():
    seen = Sighting()
    assert seen.see("7", 100.0) == 100.0
    assert seen.see("7", 130.0) == 100.0  # unchanged since: its time runs on
    assert seen.see("8", 131.0) == 131.0  # renewed: counted afresh
    unversioned = Sighting()
    assert unversioned.see(None, 50.0) == 50.0  # a record without a version is counted from its first sight too
    assert unversioned.see(None, 60.0) == 50.0


def test_free_is_no_holder_or_ourselves():
    assert is_free({}, "me") and is_free({"holderIdentity": ""}, "me") and is_free({"holderIdentity": "me"}, "me")
    assert not is_free({"holderIdentity": "other"}, "me")


def test_duration_is_the_records_own_else_ours():
    assert duration_of({"leaseDurationSeconds": 20}, 2) == 20.0
    assert duration_of({}, 2) == duration_of({"leaseDurationSeconds": "long"}, 2) == 2.0


def test_without_the_wall_clock_only_our_own_count_decides():
    dead = {"leaseDurationSeconds": 20, "renewTime": format_time(WALL - 3600)}
    assert expiry(dead, since=100.0, default_s=2, now=101.0) == 120.0


def test_with_the_wall_clock_the_record_may_end_it_sooner_never_later():
    dead = {"leaseDurationSeconds": 20, "renewTime": format_time(WALL - 25)}
    assert expiry(dead, 100.0, 2, now=101.0, wall=WALL, skew_s=2.0) == pytest.approx(101.0 - 3.0)
    ahead = {"leaseDurationSeconds": 20, "renewTime": format_time(WALL + 5)}  # its clock runs ahead
    assert expiry(ahead, 100.0, 2, now=101.0, wall=WALL, skew_s=2.0) == 120.0


def test_taking_counts_a_transition_only_when_the_holder_changes():
    new = claim(None, "me", 15, WALL)
    assert new == {"holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": format_time(WALL),
                   "renewTime": format_time(WALL), "leaseTransitions": 0}
    others = {"holderIdentity": "other", "leaseDurationSeconds": 30, "leaseTransitions": 4, "acquireTime": "x",
              "renewTime": "x", "preferredHolder": "p"}
    taken = claim(others, "me", 15, WALL + 1)
    assert taken == {**new, "leaseTransitions": 5, "acquireTime": format_time(WALL + 1),
                     "renewTime": format_time(WALL + 1), "preferredHolder": "p"}
    assert claim({**others, "holderIdentity": ""}, "me", 15, WALL)["leaseTransitions"] == 5  # released: still a change
    assert claim({**others, "holderIdentity": "me"}, "me", 15, WALL)["leaseTransitions"] == 4
    assert claim({**others, "leaseTransitions": "many"}, "me", 15, WALL)["leaseTransitions"] == 1


def test_renewing_writes_the_renew_time_only_and_releasing_frees_it_at_once():
    held = claim(None, "me", 15, WALL)
    assert renewal(held, WALL + 5) == {**held, "renewTime": format_time(WALL + 5)}
    assert release(held, WALL + 6) == {**held, "holderIdentity": "", "leaseDurationSeconds": 1,
                                       "renewTime": format_time(WALL + 6)}
    assert is_free(release(held, WALL + 6), "anyone")


def test_a_new_lease_carries_labels_only_when_given():
    assert lease_object("l", "ns", {})["metadata"] == {"name": "l", "namespace": "ns"}
    assert lease_object("l", "ns", {}, {"k": "v"})["metadata"]["labels"] == {"k": "v"}


def test_deciding_on_a_free_lease_imports_no_datetime():
    """The plugin pays for `datetime` only when it judges another holder's renewTime."""
    code = ("import sys; from whereabouts.core.leases import *; s = Sighting(); since = s.see('1', 0.0); "
            "spec = claim(None, 'me', 2, 0.0); assert is_free(spec, 'me'); renewal(spec, 1.0); release(spec, 2.0); "
            "expiry(spec, since, 2, 0.0); print('datetime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --- the controller's Elector, on a scripted CoordinationV1Api -----------------------------


class Coordination:
    """One namespace's Leases as the API server keeps them: resourceVersions, 404 and 409."""

    def __init__(self) -> None:
        self.stored: dict[str, dict] = {}
        self.version = 0

    def _store(self, obj: dict) -> SimpleNamespace:
        self.version += 1
        obj = json.loads(json.dumps(obj))
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.stored[obj["metadata"]["name"]] = obj
        return SimpleNamespace(data=json.dumps(obj).encode())

    def read_namespaced_lease(self, name, namespace, **_):
        from kubernetes.client.exceptions import ApiException

        if name not in self.stored:
            raise ApiException(status=404, reason="Not Found")
        return SimpleNamespace(data=json.dumps(self.stored[name]).encode())

    def create_namespaced_lease(self, namespace, body, **_):
        from kubernetes.client.exceptions import ApiException

        if body["metadata"]["name"] in self.stored:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(body)

    def replace_namespaced_lease(self, name, namespace, body, **_):
        from kubernetes.client.exceptions import ApiException

        if self.stored[name]["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        return self._store(body)


def elector(coord: Coordination, identity: str):
    from whereabouts.operator.election import Elector

    kube = SimpleNamespace(api=None, namespace="ns", timeout=5.0)
    e = Elector(kube, "slices", identity, duration=15.0, renew_deadline=10.0, retry_period=2.0,
                on_change=lambda: None, stop=threading.Event())
    e.coord = coord
    return e


def test_a_leader_renews_keeping_its_acquire_time_and_a_standby_takes_over_after_its_release():
    coord = Coordination()
    one, two = elector(coord, "one"), elector(coord, "two")
    assert one.try_once()
    first = coord.stored["slices"]["spec"]
    assert first["holderIdentity"] == "one" and first["leaseTransitions"] == 0
    assert first["leaseDurationSeconds"] == 15
    assert not two.try_once()  # held and fresh: stand by
    assert one.try_once()
    renewed = coord.stored["slices"]["spec"]
    assert (renewed["acquireTime"], renewed["leaseTransitions"]) == (first["acquireTime"], 0)
    assert renewed["renewTime"] >= first["renewTime"]
    one.leading.set()
    one.release()
    assert coord.stored["slices"]["spec"]["holderIdentity"] == ""
    assert two.try_once()
    taken = coord.stored["slices"]["spec"]
    assert (taken["holderIdentity"], taken["leaseTransitions"]) == ("two", 1)
    assert not one.try_once()


def test_a_standby_takes_a_silent_leaders_lease_after_its_duration_on_its_own_clock(mocker):
    coord = Coordination()
    one, two = elector(coord, "one"), elector(coord, "two")
    now = [1000.0]
    mocker.patch("whereabouts.operator.election.time", SimpleNamespace(monotonic=lambda: now[0], time=time.time))
    assert one.try_once()
    assert not two.try_once()  # first sight of this record: its 15 s count from now
    now[0] = 1014.9
    assert not two.try_once()
    now[0] = 1015.0
    assert two.try_once()
    assert coord.stored["slices"]["spec"]["holderIdentity"] == "two"


def test_the_controller_counts_a_dead_leaders_time_on_its_own_clock_not_by_its_record():
    coord = Coordination()
    spec = {"holderIdentity": "gone", "leaseDurationSeconds": 15, "renewTime": format_time(WALL - 3600)}
    coord._store(lease_object("slices", "ns", spec))
    assert not elector(coord, "two").try_once()

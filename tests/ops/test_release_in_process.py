"""The reconciler's writes over the in-memory FakeStore: the failure branches of removing entries
and releasing reservations, deterministically (the same code runs against the real API server in
tests/ops/test_reconcile.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.fakes.store import FakeStore
from whereabouts.core.pool import Allocation, new_pool_object, reservation_object
from whereabouts.k8s.store import POOLS, RESERVATIONS
from whereabouts.operator.kubeclient import KubeError
from whereabouts.operator.reconcile import plan, snapshot, unchanged
from whereabouts.operator.release import release_reservations, remove_allocations

POOL = "10.1.0.0-24"


@pytest.fixture
def store(mocker) -> FakeStore:
    mocker.patch("whereabouts.operator.release.time.sleep")
    s = FakeStore()
    pool = new_pool_object(POOL, "10.1.0.0/24", "ns")
    for offset, pod in ((1, "dead"), (2, "live")):
        alloc = Allocation(f"c-{pod}", f"ns/{pod}", "net1")
        pool["spec"]["allocations"][str(offset)] = alloc.encode()
        s.put(RESERVATIONS, reservation_object(f"10.1.0.{offset}", "ns", alloc))
    s.put(POOLS, pool)
    return s


def sweep(store: FakeStore) -> tuple[list, list]:
    """One reconcile of the pools against the live pod `ns/live`: what was removed and released."""
    snap = snapshot(store.list(POOLS), store.list(RESERVATIONS))
    todo = plan(snap, {"ns/live"}, datetime.now(timezone.utc), timedelta(0))
    view = snap.pools[0]
    removed = remove_allocations(store, view.name, lambda v: unchanged(v, todo.allocations), first=view.pool.raw)
    return removed, release_reservations(store, removed)


def test_a_dead_pods_entry_and_reservation_go(store):
    removed, released = sweep(store)
    assert [r.alloc.podref for r in removed] == ["ns/dead"] and [r.name for r in released] == ["10.1.0.1"]
    assert list(store.obj(POOLS, POOL)["spec"]["allocations"]) == ["2"]
    assert store.names(RESERVATIONS) == ["10.1.0.2"]


def test_a_conflict_re_decides_on_a_fresh_read(store):
    store.inject("replace", POOLS, "conflict")
    removed, _ = sweep(store)
    assert [r.alloc.podref for r in removed] == ["ns/dead"]
    assert store.calls[("get", POOLS)] == 1  # the fresh read after the conflict


def test_an_entry_taken_over_by_a_new_sandbox_after_the_snapshot_is_kept(store):
    snap = snapshot(store.list(POOLS), store.list(RESERVATIONS))
    todo = plan(snap, {"ns/live"}, datetime.now(timezone.utc), timedelta(0))
    obj = store.obj(POOLS, POOL)
    obj["spec"]["allocations"]["1"]["id"] = "c-dead-restarted"  # the pod came back meanwhile
    store.put(POOLS, obj)
    view = snap.pools[0]
    assert remove_allocations(store, view.name, lambda v: unchanged(v, todo.allocations), first=view.pool.raw) == []
    assert set(store.obj(POOLS, POOL)["spec"]["allocations"]) == {"1", "2"}


def test_endless_conflicts_give_up_with_a_named_error(store):
    store.inject("replace", POOLS, "conflict", nth=None)
    with pytest.raises(KubeError, match="write conflicts in a row"):
        sweep(store)


def test_a_corrupt_pool_is_not_touched(store):
    obj = store.obj(POOLS, POOL)
    obj["spec"]["allocations"] = ["not", "a", "map"]
    store.put(POOLS, obj)
    with pytest.raises(KubeError, match="cannot be decoded"):
        remove_allocations(store, POOL, lambda v: [1])


def test_a_reservation_changed_since_it_was_read_is_kept(store):
    store.inject("delete", RESERVATIONS, "conflict")
    removed, released = sweep(store)
    assert [r.alloc.podref for r in removed] == ["ns/dead"] and released == []
    assert store.names(RESERVATIONS) == ["10.1.0.1", "10.1.0.2"]  # left for the next sweep

"""The CNI verbs run in-process over the in-memory FakeStore: every failure branch of ADD, DEL and
GC reached deterministically (a conflict, a lost answer applied or not, a timeout, a stale read),
in addition to the same verbs on the real API server (tests/cni, tests/reliability)."""

from __future__ import annotations

import ipaddress
import time

import pytest

from tests.fakes.store import FakeStore
from whereabouts.core.pool import Allocation
from whereabouts.errors import TryAgainLater
from whereabouts.k8s.store import POOLS, RESERVATIONS
from whereabouts.plugin.config import parse_ipam
from whereabouts.plugin.log import Log
from whereabouts.plugin.verbs import IPAM

REAL_SLEEP = time.sleep  # the fixture patches time.sleep for the verbs' backoff


class FreeLease:
    """A Lease nobody else holds: the fake runs one invocation at a time."""

    def __init__(self, name: str) -> None:
        self.name, self.waited, self.attempts, self.renewals = name, 0.0, 1, 0
        self.held = False

    def acquire(self) -> None:
        self.held = True

    def release(self) -> None:
        self.held = False


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def ipam(store, tmp_path, mocker):
    """`ipam(range=..., ...)`: an IPAM over the fake store; sleeps between retries are skipped."""
    sleep = mocker.patch("whereabouts.plugin.txn.time.sleep")

    def make(seconds: float = 10.0, **keys) -> IPAM:
        store.new_invocation()
        conf = parse_ipam({"type": "whereabouts", "range": "10.1.0.0/24", "kubernetes": {"kubeconfig": "k"},
                           "node_lock_dir": str(tmp_path / "locks"), **keys})
        made = IPAM(conf, store, FreeLease, time.monotonic() + seconds, Log())
        made.sleep = sleep
        return made

    return make


def owner(name: str, container: str | None = None, ifname: str = "net1") -> Allocation:
    return Allocation(container or f"c-{name}", f"ns/{name}", ifname)


def addresses(result) -> list[str]:
    return [str(a.address) for a in result]


def allocations(store: FakeStore, pool: str = "10.1.0.0-24") -> dict[str, str]:
    obj = store.obj(POOLS, pool)
    return {k: v["podref"] for k, v in (obj["spec"]["allocations"] if obj else {}).items()}


def reservations(store: FakeStore) -> dict[str, str]:
    return {name: store.obj(RESERVATIONS, name)["spec"]["podref"] for name in store.names(RESERVATIONS)}


# --- ADD -------------------------------------------------------------------------------------


def test_add_reserves_then_writes(ipam, store):
    assert addresses(ipam().add(owner("a"), {})) == ["10.1.0.1"]
    assert allocations(store) == {"1": "ns/a"}
    assert reservations(store) == {"10.1.0.1": "ns/a"}


def test_add_retries_a_conflicting_pool_write_after_a_pause(ipam, store):
    store.inject("replace", POOLS, "conflict")
    verbs = ipam()
    assert addresses(verbs.add(owner("a"), {})) == ["10.1.0.1"]
    assert verbs.stats.retries == 1 and verbs.sleep.call_count == 1
    assert store.calls[("get", POOLS)] == 2  # decided again on a fresh read
    assert reservations(store) == {"10.1.0.1": "ns/a"}  # created once, kept across the retry
    assert store.calls[("create", RESERVATIONS)] == 1


def test_add_whose_pool_write_answer_is_lost_after_it_applied_keeps_its_reservation(ipam, store):
    """The reported duplicate: the entry was stored, the answer lost; the reservation must stay."""
    store.inject("replace", POOLS, "lost_applied")
    got = ipam().add(owner("a"), {})
    assert addresses(got) == ["10.1.0.1"] and got[0].new
    assert allocations(store) == {"1": "ns/a"}
    assert reservations(store) == {"10.1.0.1": "ns/a"}
    assert store.calls[("replace", POOLS)] == 1  # never resent: the next read showed it applied


def test_an_overlapping_range_never_gets_the_address_of_a_lost_answer(ipam, store):
    store.inject("replace", POOLS, "lost_applied")
    first = addresses(ipam().add(owner("a"), {}))
    second = addresses(ipam(range="10.1.0.0/16").add(owner("b"), {}))
    assert first == ["10.1.0.1"] and second == ["10.1.0.2"]


def test_add_whose_pool_write_was_lost_before_it_applied_writes_again_after_reading(ipam, store):
    store.inject("replace", POOLS, "lost")
    assert addresses(ipam().add(owner("a"), {})) == ["10.1.0.1"]
    assert store.calls[("replace", POOLS)] == 2 and store.calls[("get", POOLS)] == 2
    assert allocations(store) == {"1": "ns/a"} and reservations(store) == {"10.1.0.1": "ns/a"}


def test_a_lost_reservation_create_that_applied_is_recognised_as_ours(ipam, store):
    store.inject("create", RESERVATIONS, "lost_applied")
    assert addresses(ipam().add(owner("a"), {})) == ["10.1.0.1"]
    assert reservations(store) == {"10.1.0.1": "ns/a"}


def test_a_lost_reservation_create_that_did_not_apply_is_made_again(ipam, store):
    store.inject("create", RESERVATIONS, "lost")
    assert addresses(ipam().add(owner("a"), {})) == ["10.1.0.1"]
    assert reservations(store) == {"10.1.0.1": "ns/a"} and store.calls[("create", RESERVATIONS)] == 2


def test_an_address_reserved_through_another_range_is_skipped(ipam, store):
    store.put(RESERVATIONS, {"metadata": {"name": "10.1.0.1"}, "spec": {"podref": "ns/other", "containerid": "x"}})
    assert addresses(ipam().add(owner("a"), {})) == ["10.1.0.2"]
    assert reservations(store) == {"10.1.0.1": "ns/other", "10.1.0.2": "ns/a"}


def test_a_stale_pool_read_ends_in_a_conflict_and_a_fresh_read(ipam, store):
    ipam().add(owner("a"), {})
    store.inject("get", POOLS, "stale")  # the version before a's entry
    assert addresses(ipam().add(owner("b"), {})) == ["10.1.0.2"]
    assert allocations(store) == {"1": "ns/a", "2": "ns/b"}


def test_conflicts_until_the_deadline_end_in_try_again_and_leave_no_reservation(ipam, store):
    store.inject("replace", POOLS, "conflict", nth=None)
    verbs = ipam(seconds=0.5)
    verbs.sleep.side_effect = lambda s: REAL_SLEEP(min(s, 0.05))
    with pytest.raises(TryAgainLater, match="deadline"):
        verbs.add(owner("a"), {})
    assert allocations(store) == {} and reservations(store) == {}


def test_a_lost_answer_then_the_deadline_keeps_the_reservation_of_the_doubtful_write(ipam, store):
    """The write may still land: its reservation is what keeps an overlapping range off its address."""
    store.inject("replace", POOLS, "lost")
    store.inject("get", POOLS, "timeout", nth=2)
    with pytest.raises(TryAgainLater):
        ipam().add(owner("a"), {})
    assert reservations(store) == {"10.1.0.1": "ns/a"}


def test_an_unreachable_store_fails_add_with_nothing_written(ipam, store):
    store.inject("get", POOLS, "timeout")
    with pytest.raises(TryAgainLater):
        ipam().add(owner("a"), {})
    assert store.names(POOLS) == [] and reservations(store) == {}


def test_add_over_two_ranges_rolls_the_first_back_when_the_second_fails(ipam, store):
    verbs = ipam(range="10.1.0.0/24", ipRanges=[{"range": "10.2.0.0/24"}])
    store.inject("create", POOLS, "error", nth=2)  # the second range's pool: 503, the server still answers
    with pytest.raises(TryAgainLater):
        verbs.add(owner("a"), {})
    assert allocations(store) == {} and reservations(store) == {}


@pytest.fixture
def timed_out_in_range_two(ipam, store):
    """A two-range ADD whose second range times out: every later request of it is refused, as
    `KubeAPI` refuses them, so it cannot roll range 1 back (the entry stays, "rollback failed")."""
    conf = {"range": "10.1.0.0/24", "ipRanges": [{"range": "10.2.0.0/24"}]}
    store.inject("create", POOLS, "timeout", nth=2)
    with pytest.raises(TryAgainLater):
        ipam(**conf).add(owner("a"), {})
    assert allocations(store) == {"1": "ns/a"}
    return conf


def test_a_del_frees_what_a_timed_out_multi_range_add_left(ipam, store, timed_out_in_range_two):
    assert ipam(**timed_out_in_range_two).delete(owner("a")) == ["10.1.0.1"]
    assert allocations(store) == {} and reservations(store) == {}


def test_gc_frees_what_a_timed_out_multi_range_add_left(ipam, store, timed_out_in_range_two):
    assert ipam(**timed_out_in_range_two).gc(set()) == ["10.1.0.1"]
    assert allocations(store) == {} and reservations(store) == {}


def test_idempotent_add_points_the_entry_at_the_new_sandbox(ipam, store):
    ipam().add(owner("a", "old"), {})
    got = ipam().add(owner("a", "new"), {})
    assert addresses(got) == ["10.1.0.1"] and not got[0].new
    assert store.obj(POOLS, "10.1.0.0-24")["spec"]["allocations"]["1"]["id"] == "new"
    assert store.obj(RESERVATIONS, "10.1.0.1")["spec"]["containerid"] == "new"


def test_a_requested_address_moves_the_owner_and_its_reservation(ipam, store):
    ipam().add(owner("a"), {})
    got = ipam().add(owner("a"), {0: ipaddress.ip_address("10.1.0.9")})
    assert addresses(got) == ["10.1.0.9"]
    assert allocations(store) == {"9": "ns/a"} and reservations(store) == {"10.1.0.9": "ns/a"}


# --- DEL -------------------------------------------------------------------------------------


@pytest.fixture
def allocated(ipam, store):
    ipam().add(owner("a"), {})
    ipam().add(owner("b"), {})
    return store


def test_del_frees_entry_then_reservation(ipam, allocated):
    assert ipam().delete(owner("a")) == ["10.1.0.1"]
    assert allocations(allocated) == {"2": "ns/b"} and reservations(allocated) == {"10.1.0.2": "ns/b"}


def test_del_whose_pool_write_answer_is_lost_still_frees_the_reservation(ipam, allocated):
    allocated.inject("replace", POOLS, "lost_applied")
    assert ipam().delete(owner("a")) == ["10.1.0.1"]
    assert allocations(allocated) == {"2": "ns/b"} and reservations(allocated) == {"10.1.0.2": "ns/b"}
    assert allocated.calls[("replace", POOLS)] == 3  # two ADDs, one DEL: never resent


def test_del_whose_pool_write_was_lost_before_it_applied_writes_again(ipam, allocated):
    allocated.inject("replace", POOLS, "lost")
    assert ipam().delete(owner("a")) == ["10.1.0.1"]
    assert allocations(allocated) == {"2": "ns/b"} and reservations(allocated) == {"10.1.0.2": "ns/b"}


def test_del_retries_a_conflict_and_a_lost_reservation_delete(ipam, allocated):
    allocated.inject("replace", POOLS, "conflict")
    allocated.inject("delete", RESERVATIONS, "lost_applied")
    assert ipam().delete(owner("a")) == ["10.1.0.1"]
    assert reservations(allocated) == {"10.1.0.2": "ns/b"}


def test_del_of_another_sandbox_frees_nothing(ipam, allocated):
    assert ipam().delete(owner("a", "some-other-sandbox")) == []
    assert allocations(allocated) == {"1": "ns/a", "2": "ns/b"}


def test_del_visits_every_range_and_then_reports_the_failure(ipam, store):
    verbs = ipam(range="10.1.0.0/24", ipRanges=[{"range": "10.2.0.0/24"}])
    verbs.add(owner("a"), {})
    store.inject("get", POOLS, "error")  # the first range's read fails (503); the second range's still goes out
    with pytest.raises(TryAgainLater):
        verbs.delete(owner("a"))
    assert allocations(store, "10.2.0.0-24") == {} and allocations(store) == {"1": "ns/a"}
    assert ipam(range="10.1.0.0/24", ipRanges=[{"range": "10.2.0.0/24"}]).delete(owner("a")) == ["10.1.0.1"]
    assert reservations(store) == {}


# --- GC --------------------------------------------------------------------------------------


def test_gc_frees_what_is_not_a_valid_attachment(ipam, allocated):
    assert ipam().gc({("c-b", "net1")}) == ["10.1.0.1"]
    assert allocations(allocated) == {"2": "ns/b"} and reservations(allocated) == {"10.1.0.2": "ns/b"}


def test_gc_reports_a_failed_range_after_freeing_the_others(ipam, store):
    verbs = ipam(range="10.1.0.0/24", ipRanges=[{"range": "10.2.0.0/24"}])
    verbs.add(owner("a"), {})
    store.inject("get", POOLS, "error")
    with pytest.raises(TryAgainLater, match="GC freed 1 address"):
        verbs.gc(set())
    assert allocations(store, "10.2.0.0-24") == {}


# --- requests per verb -------------------------------------------------------------------------


def test_requests_per_verb(ipam, store, mocker):
    """What one ADD and one DEL cost in API calls, on an existing pool (the figure a cluster pays)."""
    ipam().add(owner("warm"), {})
    spies = {op: mocker.spy(store, op) for op in ("get", "create", "replace", "delete", "list")}
    ipam().add(owner("a"), {})
    assert {op: s.call_count for op, s in spies.items()} == {"get": 1, "create": 1, "replace": 1, "delete": 0,
                                                            "list": 0}
    for s in spies.values():
        s.reset_mock()
    ipam().delete(owner("a"))
    # DEL reads once unlocked, once locked, writes, then reads and deletes the reservation.
    assert {op: s.call_count for op, s in spies.items()} == {"get": 3, "create": 0, "replace": 1, "delete": 1,
                                                            "list": 0}

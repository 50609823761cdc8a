"""Lost, reset, slow and hung API answers, injected on the wire by `FaultProxy`, on every CNI verb.

The plugin runs as a process whose kubeconfig points at the proxy; the stored objects are read
directly with the admin client. A faulted invocation must end within its deadline with a result
or code 11 (never an internal error, never a hang). Once the runtime has retried it without
faults, what is stored must be exactly consistent: every allocation reserved by its own pod, no
address in two containers across overlapping pools, nothing of a deleted container left in a
pool. A reservation without an allocation is the only residue allowed (it blocks an address
until the reconciler sweeps it); those are counted.

All networks here leave `network_name` unset: it prefixes reservation names (as in the Go
plugin), so networks with different names do not see each other's reservations at all, and
overlapping ranges are told apart by their pools (one per range) instead.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.helpers.cni import Run, finish, start
from tests.helpers.faultproxy import Rule
from tests.helpers.wait import wait_for

GROUP, VERSION = "whereabouts.cni.cncf.io", "v1alpha1"
RESERVATIONS = "overlappingrangeipreservations"
LOCK_MS = 8000
RANGE_A, RANGE_B = "10.72.0.0/24", "10.72.0.0/16"  # network A, and network B overlapping all of it
POOL_A, POOL_B = "10.72.0.0-24", "10.72.0.0-16"
FAULTS = ("drop_answer", "reset_before", "reset_after", "delay_answer")
DELAY_S = 2.0

_totals: dict[str, Any] = {"runs": 0, "failed": 0, "duplicates": 0, "leftovers": 0, "max": 0.0}
_leftovers: list[str] = []


# --- running the plugin -------------------------------------------------------------------


def conf_for(netconf, proxy, rng: str | None, lock_ms: int = LOCK_MS, **ipam: Any) -> dict[str, Any]:
    return netconf({"range": rng, "lock_timeout_ms": lock_ms, "kubernetes": {"kubeconfig": str(proxy.kubeconfig)},
                    **ipam}, version="1.1.0")


def timed(conf: dict[str, Any], command: str, limit: float, **kw: Any) -> tuple[Run, float]:
    """One invocation and its wall time; killed (and the test failed) 10 s after `limit`."""
    began = time.monotonic()
    proc = start(conf, command, **kw)
    try:
        return finish(proc, timeout=limit + 10), time.monotonic() - began
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
    pytest.fail(f"{command} still running {limit + 10:.0f}s after it started (allowed: {limit:.0f}s): killed",
                pytrace=False)


def assert_ok_or_try_again(out: Run, took: float, limit: float, what: str, codes: tuple[int, ...] = (11,)) -> None:
    """Success, or one of `codes` (11: try again; STATUS says 50, "cannot serve an ADD now", as the
    CNI spec wants of it), within `limit` seconds and without a traceback."""
    assert "Traceback" not in out.stderr, f"{what}: traceback\n{out.stderr}"
    assert took <= limit, f"{what} took {took:.1f}s, more than its {limit:.1f}s (rc={out.rc} {out.stdout.strip()})"
    if out.rc != 0:
        err = out.json or {}
        assert err.get("code") in codes, (f"{what}: expected success or code {' or '.join(map(str, codes))}, got "
                                          f"rc={out.rc} {out.stdout.strip()} {out.stderr.strip()[-400:]}")


def requests_seen(proxy) -> list[str]:
    return [f"{e.method} {e.path.rsplit('/namespaces/', 1)[-1].split('/', 1)[-1]} -> {e.status} ({e.action})"
            for e in proxy.log]


# --- the store, planted and audited with the admin client ----------------------------------


def allocation(container: str) -> dict[str, str]:
    return {"id": container, "podref": f"default/{container}", "ifname": "net1"}


def reserve(pools, address: str, container: str) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "OverlappingRangeIPReservation",
            "metadata": {"name": address}, "spec": {"containerid": container, "podref": f"default/{container}",
                                                    "ifname": "net1"}}
    pools.custom.create_namespaced_custom_object(GROUP, VERSION, pools.namespace, RESERVATIONS, body)


def plant(pools, fresh: bool) -> None:
    """b1 holds 10.72.0.1 in B's /16; unless `fresh`, keep1 and victim hold .2 and .3 in A's /24 and
    the namespace's Lease exists (released). `fresh`: no pool for A and no Lease yet."""
    pools.create_pool(POOL_B, RANGE_B, {"1": allocation("b1")})
    reserve(pools, "10.72.0.1", "b1")
    if fresh:
        return
    pools.create_pool(POOL_A, RANGE_A, {"2": allocation("keep1"), "3": allocation("victim")})
    reserve(pools, "10.72.0.2", "keep1")
    reserve(pools, "10.72.0.3", "victim")
    pools.coord.create_namespaced_lease(pools.namespace, {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "whereabouts"},
        "spec": {"holderIdentity": "", "leaseDurationSeconds": 1}})


@dataclass
class State:
    holders: dict[str, list[tuple[str, str, str]]] = field(default_factory=lambda: defaultdict(list))
    reservations: dict[str, dict[str, Any]] = field(default_factory=dict)

    def by_container(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        for address, held in self.holders.items():
            for _, container, _ in held:
                out[container].append(address)
        return {c: sorted(a) for c, a in out.items()}

    def duplicates(self) -> dict[str, list]:
        return {a: h for a, h in self.holders.items() if len({c for _, c, _ in h}) > 1}

    def unreserved(self) -> list[str]:
        """Allocations whose reservation is missing or names another pod."""
        bad = []
        for address, held in self.holders.items():
            spec = self.reservations.get(address)
            for pool, container, podref in held:
                if spec is None or spec.get("podref") != podref:
                    bad.append(f"{address} of {container} in {pool}: reservation "
                               f"{'missing' if spec is None else 'held by ' + str(spec.get('podref'))}")
        return bad

    def leftovers(self) -> list[str]:
        return sorted(set(self.reservations) - set(self.holders))


def read_state(pools) -> State:
    state = State()
    for pool in pools.pools():
        net = ipaddress.ip_network(pool["spec"]["range"])
        for key, entry in (pool["spec"].get("allocations") or {}).items():
            address = str(net.network_address + int(key))
            state.holders[address].append((pool["metadata"]["name"], entry.get("id"), entry.get("podref")))
    state.reservations = {r["metadata"]["name"]: r.get("spec") or {} for r in pools.reservations()}
    return state


def assert_consistent(state: State, expected: dict[str, list[str]], what: str) -> None:
    assert not state.duplicates(), f"{what}: one address in two containers: {state.duplicates()}"
    assert not state.unreserved(), f"{what}: allocations without their own reservation: {state.unreserved()}"
    assert state.by_container() == expected, f"{what}: stored {state.by_container()}, expected {expected}"


# --- 0. the proxy itself ------------------------------------------------------------------


def test_fault_proxy_forwards_streams_and_stops(fault_proxy, pools, cluster):
    """Plain calls, a streamed watch and a `delay` go through; stop() ends a hung call and an
    open watch at once, and no thread of the proxy outlives it."""
    import http.client
    import json
    import ssl
    import threading

    ctx = ssl.create_default_context(cafile=str(fault_proxy.certs.ca))
    auth = {"Authorization": f"Bearer {cluster.token}"}
    base = f"/apis/coordination.k8s.io/v1/namespaces/{pools.namespace}/leases"

    def call(path: str, timeout: float = 10) -> tuple[int, Any]:
        conn = http.client.HTTPSConnection("127.0.0.1", fault_proxy.port, context=ctx, timeout=timeout)
        try:
            conn.request("GET", path, headers=auth)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    assert call(base)[0] == 200
    fault_proxy.set_rules(Rule("delay", "GET", "leases", seconds=0.5))
    began = time.monotonic()
    assert call(base)[0] == 200 and time.monotonic() - began >= 0.5

    watch = http.client.HTTPSConnection("127.0.0.1", fault_proxy.port, context=ctx, timeout=10)
    watch.request("GET", base + "?watch=1&timeoutSeconds=30", headers=auth)
    stream = watch.getresponse()
    assert stream.status == 200
    pools.coord.create_namespaced_lease(pools.namespace, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                                          "metadata": {"name": "seen-through-the-proxy"}})
    event = json.loads(stream.readline())
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "seen-through-the-proxy")

    fault_proxy.set_rules(Rule("blackhole", "GET", "leases", nth=None))
    hung: list[BaseException] = []
    caller = threading.Thread(target=lambda: hung.append(_raises(call, base, 60)))
    caller.start()
    time.sleep(0.5)
    began = time.monotonic()
    fault_proxy.stop()
    caller.join(timeout=5)
    assert not caller.is_alive() and isinstance(hung[0], OSError), f"the blackholed call did not fail: {hung}"
    assert not fault_proxy.alive() and time.monotonic() - began < 3
    watch.close()
    assert [(e.method, e.action) for e in fault_proxy.log] == [("GET", "forward"), ("GET", "delay"),
                                                               ("GET", "blackhole"), ("GET", "forward")]


def test_fault_proxy_holds_a_request_until_released_or_its_client_leaves(fault_proxy, pools, cluster):
    """`hold` parks a request before the API server sees it: released, it is forwarded and answered;
    if its client goes away first, it is never forwarded."""
    import http.client
    import ssl

    ctx = ssl.create_default_context(cafile=str(fault_proxy.certs.ca))
    auth = {"Authorization": f"Bearer {cluster.token}", "Content-Type": "application/json"}
    base = f"/apis/coordination.k8s.io/v1/namespaces/{pools.namespace}/leases"

    def post(name: str) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection("127.0.0.1", fault_proxy.port, context=ctx, timeout=30)
        conn.request("POST", base, body=f'{{"metadata": {{"name": "{name}"}}}}', headers=auth)
        return conn

    def stored() -> list[str]:
        return sorted(lease.metadata.name for lease in pools.coord.list_namespaced_lease(pools.namespace).items)

    hold = Rule("hold", "POST", "leases", nth=None)
    fault_proxy.set_rules(hold)
    left = post("left")
    hold.wait_held(1)
    left.close()
    wait_for(lambda: bool(fault_proxy.fired("hold")), 30, "the proxy to notice its client leave")
    kept = post("kept")
    hold.wait_held(2)
    assert stored() == []
    hold.release()
    assert kept.getresponse().status == 201
    kept.close()
    assert stored() == ["kept"]
    assert [(e.method, e.status, e.action) for e in fault_proxy.log] == [("POST", None, "hold"), ("POST", 201, "hold")]


def _raises(fn, *args) -> BaseException | None:
    try:
        fn(*args)
    except BaseException as e:  # noqa: BLE001 - the test wants the exception itself
        return e
    return None


# --- 1. the reported duplicate ------------------------------------------------------------


def test_lost_pool_write_answer_keeps_the_reservation(netconf, pools, fault_proxy, figures):
    """pod-a's pool write is applied but its answer lost; pod-b then allocates in an overlapping /16.

    The reservation of pod-a's address must survive pod-a's ADD, or pod-b gets the same address."""
    limit = LOCK_MS / 1000 + 5
    conf_a = conf_for(netconf, fault_proxy, "10.71.0.0/24")
    conf_b = conf_for(netconf, fault_proxy, "10.71.0.0/16")
    fault_proxy.set_rules(Rule("drop_answer", "PUT", "ippools"))
    a, took = timed(conf_a, "ADD", limit, container_id="ctr-a", pod="pod-a")
    fault_proxy.clear()
    dropped = fault_proxy.fired("drop_answer")
    assert dropped and dropped[0].status == 200, f"the pool write was not applied and dropped: {requests_seen(fault_proxy)}"
    assert_ok_or_try_again(a, took, limit, "pod-a's ADD")
    b = timed(conf_b, "ADD", limit, container_id="ctr-b", pod="pod-b")[0].ok()
    if a.rc != 0:  # the runtime retries pod-a (after pod-b's ADD: the worst order)
        a = timed(conf_a, "ADD", limit, container_id="ctr-a", pod="pod-a")[0].ok()
    ip_a, ip_b = a.ips[0].split("/")[0], b.ips[0].split("/")[0]
    reservation = pools.reservation(ip_a)
    figures["lost pool write answer, then an overlapping ADD"] = (
        f"pod-a {ip_a}, pod-b {ip_b}, reservation of {ip_a}: "
        f"{reservation['spec'].get('podref') if reservation else 'missing'}")
    assert reservation is not None and reservation["spec"].get("podref") == "default/pod-a", (
        f"pod-a got {ip_a} (ADD rc={a.rc}) but the reservation {ip_a} is "
        f"{'gone' if reservation is None else 'held by ' + str(reservation['spec'])}; pod-b got {ip_b}")
    assert ip_a != ip_b, f"pod-a and pod-b both got {ip_a}"
    assert not read_state(pools).duplicates()


# --- 2. the matrix: every verb x every fault x the requests the verb makes ------------------


@dataclass(frozen=True)
class Verb:
    command: str
    container: str  # CNI_CONTAINERID
    pod: str
    fresh: bool = False  # no pool for A, no Lease: the verb creates both

    def conf(self, base: dict[str, Any]) -> dict[str, Any]:
        if self.command == "GC":
            return {**base, "cni.dev/valid-attachments": [{"containerID": "keep1", "ifname": "net1"}]}
        if self.command == "CHECK":
            return {**base, "prevResult": {"cniVersion": "1.1.0", "ips": [{"address": "10.72.0.3/24"}]}}
        return base

    def expected(self, added: str | None) -> dict[str, list[str]]:
        """Who holds what after the verb and its retry (`added`: the address the retried ADD returned)."""
        out = {"b1": ["10.72.0.1"]}
        if not self.fresh:
            out.update({"keep1": ["10.72.0.2"], "victim": ["10.72.0.3"]})
        if self.command in ("DEL", "GC"):
            del out["victim"]
        if self.command == "ADD":
            out.pop(self.pod, None)
            out[self.container] = [added]
        return out


VERBS = {
    "ADD": Verb("ADD", "new", "new"),
    "ADD-fresh": Verb("ADD", "new", "new", fresh=True),
    "ADD-restarted": Verb("ADD", "victim2", "victim"),  # same pod, new sandbox: the entry is re-pointed
    "DEL": Verb("DEL", "victim", "victim"),
    "GC": Verb("GC", "gc", "gc"),  # frees victim (not a valid attachment)
    "CHECK": Verb("CHECK", "victim", "victim"),
    "STATUS": Verb("STATUS", "status", "status"),
}

# (verb, method, plural, nth, quick faults): the requests each verb makes, nth counting those of one
# method and plural within the invocation. Quick runs every fault on writes of pools and
# reservations and two on the rest; --full runs every fault everywhere.
P, R, L = "ippools", RESERVATIONS, "leases"
WRITES = FAULTS
OTHERS = ("drop_answer", "reset_before")
REQUESTS = [
    ("ADD", "GET", P, 1, OTHERS),
    ("ADD", "POST", R, 1, WRITES),  # 10.72.0.1: B's b1 holds it, 409
    ("ADD", "GET", R, 1, ()),  # ... whose holder is read
    ("ADD", "POST", R, 2, WRITES),  # 10.72.0.4: created
    ("ADD", "PUT", P, 1, WRITES),
    ("ADD", "PUT", L, 1, OTHERS),  # takes the Lease
    ("ADD", "PUT", L, 2, ()),  # releases it
    ("ADD", "GET", L, 1, ()),
    ("ADD-fresh", "POST", L, 1, OTHERS),
    ("ADD-fresh", "POST", P, 1, WRITES),
    ("ADD-fresh", "PUT", P, 1, ()),
    ("ADD-restarted", "PUT", P, 1, WRITES),
    ("ADD-restarted", "PUT", R, 1, WRITES),
    ("DEL", "GET", P, 1, ()),  # unlocked look
    ("DEL", "GET", P, 2, OTHERS),  # the read under the lock
    ("DEL", "PUT", P, 1, WRITES),
    ("DEL", "DELETE", R, 1, WRITES),
    ("DEL", "PUT", L, 1, OTHERS),
    ("GC", "GET", P, 1, OTHERS),
    ("GC", "PUT", P, 1, WRITES),
    ("GC", "DELETE", R, 1, WRITES),
    ("CHECK", "GET", P, 1, OTHERS),
    ("STATUS", "GET", P, 1, OTHERS),
]


def pytest_generate_tests(metafunc):
    if "fault_case" not in metafunc.fixturenames:
        return
    full = metafunc.config.getoption("--full", default=False)
    cases = [(verb, method, plural, nth, fault) for verb, method, plural, nth, quick in REQUESTS
             for fault in (FAULTS if full else quick)]
    metafunc.parametrize("fault_case", cases, ids=[f"{v}-{m}-{p[:12]}#{n}-{f}" for v, m, p, n, f in cases])


def test_fault_matrix(fault_case, netconf, pools, fault_proxy, figures):
    verb_name, method, plural, nth, fault = fault_case
    verb = VERBS[verb_name]
    plant(pools, verb.fresh)
    conf = verb.conf(conf_for(netconf, fault_proxy, RANGE_A))
    if verb.command == "GC":  # the planted entries were allocated on this node: its note says so
        from whereabouts.plugin import ledger

        for container in ("keep1", "victim"):
            ledger.note(conf["ipam"]["node_lock_dir"], conf["name"], container, "net1")
    kw = {"container_id": verb.container, "pod": verb.pod}
    limit = LOCK_MS / 1000 + 5
    what = f"{verb_name} with {fault} on {method} {plural} #{nth}"

    fault_proxy.set_rules(Rule(fault, method, plural, nth, seconds=DELAY_S if fault == "delay_answer" else 0.0))
    first, took = timed(conf, verb.command, limit, **kw)
    fault_proxy.clear()
    assert fault_proxy.fired(fault), f"{what}: the fault never fired; requests: {requests_seen(fault_proxy)}"
    again, took_again = timed(conf, verb.command, limit, **kw)  # the runtime retries, without faults
    state = read_state(pools)

    _totals["runs"] += 1
    _totals["failed"] += first.rc != 0
    _totals["duplicates"] += len(state.duplicates())
    _totals["leftovers"] += len(state.leftovers())
    if state.leftovers():
        _leftovers.append(f"{verb_name} {fault} {method} {plural} #{nth}: {', '.join(state.leftovers())}")
        figures["lost answers matrix: leftover reservations"] = "; ".join(_leftovers)
    _totals["max"] = max(_totals["max"], took, took_again)
    figures["lost answers matrix"] = (f"{_totals['runs']} faulted runs, {_totals['failed']} failed (then retried), "
                                      f"{_totals['duplicates']} duplicates, {_totals['leftovers']} leftover "
                                      f"reservations, max {_totals['max']:.1f}s")

    codes = (50,) if verb.command == "STATUS" else (11,)
    assert_ok_or_try_again(first, took, limit, what, codes)
    assert_ok_or_try_again(again, took_again, limit, f"{what}, retried without faults", codes)
    assert again.rc == 0, f"{what}: the retry without faults failed: {again.stdout.strip()}"
    added = None
    if verb.command == "ADD":
        added = again.ips[0].split("/")[0]
        if first.rc == 0:
            assert first.ips == again.ips, f"{what}: returned {first.ips}, then {again.ips} when retried"
    assert_consistent(state, verb.expected(added), what)


# --- 3. a hung server ----------------------------------------------------------------------


HUNG = [("GET", "ippools"), ("PUT", "ippools"), ("POST", RESERVATIONS), ("GET", "leases"), ("PUT", "leases")]


@pytest.mark.parametrize("method, plural", HUNG, ids=[f"{m}-{p[:12]}" for m, p in HUNG])
def test_hung_server_add_ends_at_its_deadline(method, plural, netconf, pools, fault_proxy, full, figures):
    """Every `method plural` request hangs: the ADD ends by its deadline (code 11 when it could not read its
    pool; a hung Lease release is best effort, so that ADD may succeed), and the retry leaves a consistent store."""
    if not full and (method, plural) != ("GET", "ippools"):
        pytest.skip("--full only")
    lock_ms, margin = 5000, 3.0
    conf = conf_for(netconf, fault_proxy, "10.73.0.0/24", lock_ms)
    fault_proxy.set_rules(Rule("blackhole", method, plural, nth=None))
    figures[f"hung server: ADD ({method} {plural})"] = "still running when killed"
    out, took = timed(conf, "ADD", lock_ms / 1000 + margin, container_id="h1", pod="h1")
    figures[f"hung server: ADD ({method} {plural})"] = f"ended after {took:.1f}s (lock_timeout_ms {lock_ms}), rc={out.rc}"
    assert fault_proxy.fired("blackhole"), requests_seen(fault_proxy)
    if (method, plural) == ("GET", "ippools"):
        out.error(11)
    assert_ok_or_try_again(out, took, lock_ms / 1000 + margin, f"ADD against a hung {method} {plural}")
    fault_proxy.clear()
    again = timed(conf, "ADD", LOCK_MS / 1000 + 5, container_id="h1", pod="h1")[0].ok()
    assert_consistent(read_state(pools), {"h1": [again.ips[0].split("/")[0]]}, f"ADD after a hung {method} {plural}")


def test_hung_server_del_over_three_ranges_ends_at_one_deadline(netconf, pools, fault_proxy, figures):
    lock_ms, margin = 5000, 3.0
    ranges = [{"range": f"10.74.{i}.0/24"} for i in range(3)]
    conf = conf_for(netconf, fault_proxy, None, lock_ms, ipRanges=ranges)
    added = timed(conf, "ADD", lock_ms / 1000 + margin, container_id="h3", pod="h3")[0].ok()
    assert len(added.ips) == 3
    fault_proxy.set_rules(Rule("blackhole", "GET", "ippools", nth=None))
    figures["hung server: DEL over 3 ranges"] = "still running when killed"
    out, took = timed(conf, "DEL", lock_ms / 1000 + margin, container_id="h3", pod="h3")
    figures["hung server: DEL over 3 ranges"] = f"ended after {took:.1f}s (lock_timeout_ms {lock_ms}) with rc={out.rc}"
    out.error(11)
    assert took <= lock_ms / 1000 + margin, f"DEL over 3 ranges took {took:.1f}s (lock_timeout_ms {lock_ms})"
    fault_proxy.clear()
    timed(conf, "DEL", lock_ms / 1000 + margin, container_id="h3", pod="h3")[0].ok()
    state = read_state(pools)
    assert not state.holders, f"left in the pools after the retried DEL: {dict(state.holders)}"


# --- 4. a trickling server ---------------------------------------------------------------


def test_trickling_server_add_ends_at_its_deadline(netconf, pools, fault_proxy, figures):
    """One byte per 200 ms of a ~1.5 KB pool: the answer would take minutes; the ADD has 5 s."""
    lock_ms, margin = 5000, 3.0
    pools.create_pool("10.75.0.0-24", "10.75.0.0/24", {str(i): allocation(f"t{i}") for i in range(2, 14)})
    for i in range(2, 14):
        reserve(pools, f"10.75.0.{i}", f"t{i}")
    conf = conf_for(netconf, fault_proxy, "10.75.0.0/24", lock_ms)
    fault_proxy.set_rules(Rule("trickle", "GET", "ippools", nth=None, seconds=0.2))
    figures["trickling server: ADD"] = "still running when killed"
    out, took = timed(conf, "ADD", lock_ms / 1000 + margin, container_id="t1", pod="t1")
    figures["trickling server: ADD"] = f"ended after {took:.1f}s (lock_timeout_ms {lock_ms}) with rc={out.rc}"
    assert fault_proxy.fired("trickle"), requests_seen(fault_proxy)
    out.error(11)
    assert took <= lock_ms / 1000 + margin, f"ADD took {took:.1f}s against a trickling server"


def test_a_hung_lease_release_does_not_hold_a_finished_add(netconf, pools, fault_proxy, figures):
    """The release only spares the next holder the Lease's expiry; it used to wait out the whole
    remaining deadline (5 s here) after the ADD had its address."""
    lock_ms = 8000
    conf = conf_for(netconf, fault_proxy, "10.74.0.0/24", lock_ms)
    fault_proxy.set_rules(Rule("blackhole", "PUT", "leases", nth=None,
                               predicate=lambda req: b'"holderIdentity":""' in req.raw))
    out, took = timed(conf, "ADD", lock_ms / 1000, container_id="r1", pod="r1")
    figures["hung Lease release: ADD"] = f"ended after {took:.1f}s (lock_timeout_ms {lock_ms})"
    assert fault_proxy.fired("blackhole"), requests_seen(fault_proxy)
    assert out.ok().ips == ["10.74.0.1/24"]
    assert took < 4, took

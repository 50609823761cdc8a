"""The stored objects are the Go plugin's, field by field.

The same sequence of ADDs, repeated ADDs and DELs is run by each plugin in a
fresh namespace of its own; then every IPPool and OverlappingRangeIPReservation
of one namespace is compared with its namesake in the other, ignoring only what
the API server fills in (uid, resourceVersion, timestamps, managedFields).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.compat.conftest import Env, Plugin, comparable

pytestmark = pytest.mark.timeout(900)

NETWORKS: dict[str, dict[str, Any]] = {
    # An exclusion at the start, so the first address is .2.
    "wide": {"range": "10.60.0.0/24", "exclude": ["10.60.0.1"]},
    # Overlaps "wide": its first candidates are held through the other range.
    "narrow": {"range": "10.60.0.0/25"},
    "named": {"range": "10.61.0.0/24", "network_name": "red"},
    "v6": {"range": "fd00:62::/64"},
    # Offsets just below 2**63, the top of what the Go plugin can address in a /64.
    "v6high": {"range": "fd00:63::/64", "range_start": "fd00:63::7fff:ffff:ffff:fff0"},
    # An address whose text ends in "::" (fd00:69:0:0:1::): the name gets a trailing 0.
    "v6colon": {"range": "fd00:69::/64", "range_start": "fd00:69::1:0:0:0"},
    "dual": {"range": "10.64.0.0/24", "ipRanges": [{"range": "fd00:64::/120"}]},
    "span": {"range": "10.65.0.10-10.65.0.20/24"},
    "hostbits": {"range": "10.66.0.77/24", "range_start": "10.66.0.100"},
}

# (verb, network, pod, container id)
SEQUENCE = [
    ("ADD", "wide", "p1", "c1"),
    ("ADD", "wide", "p2", "c2"),
    ("ADD", "narrow", "p3", "c3"),
    ("ADD", "narrow", "p4", "c4"),
    ("ADD", "wide", "p5", "c5"),
    ("ADD", "named", "p6", "c6"),
    ("ADD", "named", "p7", "c7"),
    ("ADD", "v6", "p8", "c8"),
    ("ADD", "v6high", "p9", "c9"),
    ("ADD", "v6high", "p10", "c10"),
    ("ADD", "v6colon", "p11", "c11"),
    ("ADD", "dual", "p12", "c12"),
    ("ADD", "span", "p13", "c13"),
    ("ADD", "hostbits", "p14", "c14"),
    # A restarted sandbox: same pod and interface, new container id.
    ("ADD", "wide", "p2", "c2b"),
    ("ADD", "named", "p6", "c6b"),
    # Frees, then the lowest free address is reused.
    ("DEL", "wide", "p1", "c1"),
    ("ADD", "wide", "p15", "c15"),
    ("DEL", "v6", "p8", "c8"),
    ("DEL", "named", "p7", "c7"),
]

EXPECTED_POOLS = {"10.60.0.0-24", "10.60.0.0-25", "red-10.61.0.0-24", "fd00-62---64", "fd00-63---64",
                  "fd00-69---64", "10.64.0.0-24", "fd00-64---120", "10.65.0.0-24", "10.66.0.0-24"}


def play(plugin: Plugin, env: Env) -> list[Any]:
    results = []
    for verb, net, pod, cid in SEQUENCE:
        out = plugin.run(env.conf(NETWORKS[net]), verb, container_id=cid, pod=pod)
        assert out.rc == 0, f"{plugin} {verb} {pod} on {net}: {out.stdout} {out.stderr[-1000:]}\n{plugin.log_tail()}"
        results.append(out.json["ips"] if verb == "ADD" else out.stdout.strip())
    return results


def test_objects_match_field_by_field(new_env, ours, go):
    env_go, env_ours = new_env(), new_env()
    go_results = play(go, env_go)
    our_results = play(ours, env_ours)
    assert our_results == go_results

    # IPPools: identical.
    go_pools = {p["metadata"]["name"]: comparable(p) for p in env_go.store.pools()}
    our_pools = {p["metadata"]["name"]: comparable(p) for p in env_ours.store.pools()}
    assert set(go_pools) == EXPECTED_POOLS
    assert set(our_pools) == set(go_pools)
    for name in sorted(go_pools):
        assert our_pools[name] == go_pools[name], f"IPPool {name} differs"

    # The encoding, spelled out for two of them.
    assert go_pools["10.60.0.0-24"]["spec"] == {"range": "10.60.0.0/24", "allocations": {
        "2": {"id": "c15", "podref": "default/p15", "ifname": "net1"},
        "3": {"id": "c2b", "podref": "default/p2", "ifname": "net1"},
        "5": {"id": "c5", "podref": "default/p5", "ifname": "net1"}}}
    assert go_pools["fd00-63---64"]["spec"]["allocations"] == {
        str(2**63 - 16): {"id": "c9", "podref": "default/p9", "ifname": "net1"},
        str(2**63 - 15): {"id": "c10", "podref": "default/p10", "ifname": "net1"}}
    assert go_pools["fd00-62---64"]["spec"] == {"range": "fd00:62::/64", "allocations": {}}

    # Reservations: the same names and podref/ifname. Ours also records the container id
    # (`containerid`, a field of the CRD that the Go plugin leaves empty and never reads).
    go_res = {r["metadata"]["name"]: comparable(r) for r in env_go.store.reservations()}
    our_res = {r["metadata"]["name"]: comparable(r) for r in env_ours.store.reservations()}
    assert set(our_res) == set(go_res)
    assert {"10.60.0.2", "red-10.61.0.1", "fd00-63--7fff-ffff-ffff-fff0", "fd00-69-0-0-1--0"} <= set(go_res)
    containers = {f"default/{pod}": cid for verb, _, pod, cid in SEQUENCE if verb == "ADD"}
    for name in sorted(go_res):
        mine, theirs = our_res[name], go_res[name]
        assert "containerid" not in theirs["spec"]
        assert mine["spec"].pop("containerid") == containers[mine["spec"]["podref"]], name
        assert mine == theirs, f"OverlappingRangeIPReservation {name} differs"

    # By default both hold the one Lease of the namespace, so the two plugins take turns.
    assert env_go.store.leases() == env_ours.store.leases() == ["whereabouts"]

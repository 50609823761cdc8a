"""Deliberate differences from the Go plugin (v0.9.x) that a migrating cluster may notice.

None of them changes what is stored for a config that both plugins accept;
doc/compat.md lists them with these tests.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(300)


def test_flat_file_is_optional(env, ours, go):
    """Go refuses to run without a flat file (whereabouts.d/whereabouts.conf); ours needs none when
    the inline config is complete."""
    conf = env.conf({"range": "10.100.0.0/24", "configuration_path": str(env.dir / "missing.conf")})
    err = go.run(conf, "ADD", container_id="g", pod="g")
    assert err.rc != 0 and "config file not found" in err.json["msg"]
    assert ours.run(conf, "ADD", container_id="o", pod="o").ok().ips == ["10.100.0.1/24"]


def test_missing_pod_name(env, ours, go):
    """Go refuses an ADD without K8S_POD_NAME; ours keys the allocation by container id instead."""
    conf = env.conf({"range": "10.101.0.0/24"})
    err = go.run(conf, "ADD", container_id="g", pod=None)
    assert err.rc != 0 and "no pod name" in err.json["msg"]
    assert ours.run(conf, "ADD", container_id="o", pod=None).ok().ips == ["10.101.0.1/24"]
    assert env.store.allocations("10.101.0.0-24") == {"1": {"id": "o", "podref": "", "ifname": "net1"}}


def test_range_start_outside_the_range_is_a_config_error(env, ours, go):
    """Go ignores a range_start/range_end outside the range and allocates from the whole range;
    ours refuses the config (code 7) and names the key."""
    conf = env.conf({"range": "10.102.0.0/24", "range_start": "10.199.0.5"})
    assert go.run(conf, "ADD").ok().ips == ["10.102.0.1/24"]
    err = ours.run(conf, "ADD").error(7)
    assert "range_start" in err["msg"] and "10.199.0.5" in err["msg"]


def test_error_codes(env, ours, go):
    """Go reports every failure with code 999; ours uses the CNI codes (7 config, 11 try again)
    and its own from 100 (100: range exhausted)."""
    conf = env.conf({"range": "10.103.0.0/30"})
    for i in range(2):
        go.run(conf, "ADD", container_id=f"g{i}", pod=f"g{i}").ok()
    go_err = go.run(conf, "ADD", container_id="g9", pod="g9")
    assert go_err.rc != 0 and go_err.json["code"] == 999 and "Could not allocate IP" in go_err.json["msg"]
    our_err = ours.run(conf, "ADD", container_id="o9", pod="o9").error(100)
    assert "10.103.0.0/30" in our_err["msg"]


def test_check_gc_and_status(env, ours, go):
    """Go answers CHECK with "not implemented" and GC/STATUS with success without doing anything; ours
    implements all three (tests/cni/test_verbs.py: test_check, test_gc_frees_what_is_not_valid,
    test_status)."""
    conf = env.conf({"range": "10.104.0.0/24"}, version="1.1.0")
    for plugin in (go, ours):
        plugin.run(conf, "ADD", container_id=f"{plugin}", pod=f"{plugin}").ok()
    prev = {"cniVersion": "1.1.0", "ips": [{"address": "10.104.0.1/24"}]}
    err = go.run({**conf, "prevResult": prev}, "CHECK", container_id="go", pod="go")
    assert err.rc != 0 and "not implemented" in err.json["msg"]
    # Ours checks what either plugin stored.
    ours.run({**conf, "prevResult": prev}, "CHECK", container_id="go", pod="go").ok()
    ours.run({**conf, "prevResult": prev}, "CHECK", container_id="ours", pod="ours").error(103)
    ours.run({**conf, "prevResult": {**prev, "ips": [{"address": "10.104.0.2/24"}]}}, "CHECK",
             container_id="ours", pod="ours").ok()
    # GC with no valid attachment: Go frees nothing; ours frees what it allocated on this node, and
    # leaves the Go plugin's entry (it cannot tell on which node that was made) to the reconciler.
    gc = {**conf, "cni.dev/valid-attachments": []}
    go.run(gc, "GC").ok()
    assert len(env.store.allocations("10.104.0.0-24")) == 2
    ours.run(gc, "GC").ok()
    assert [a["id"] for a in env.store.allocations("10.104.0.0-24").values()] == ["go"]
    assert [r["spec"]["podref"].split("/")[1] for r in env.store.reservations()] == ["go"]


def test_result_carries_an_empty_dns_object(env, ours, go):
    """For config versions 1.0.0+, with no `dns` configured Go omits the key and ours prints `"dns": {}`;
    both mean the same to a runtime. Everything else in the result is the same."""
    go_out = go.run(env.conf({"range": "10.105.0.0/24"}), "ADD").ok().json
    our_out = ours.run(env.conf({"range": "10.106.0.0/24"}), "ADD").ok().json
    assert "dns" not in go_out and our_out.pop("dns") == {}
    assert go_out == {"cniVersion": "1.0.0", "ips": [{"address": "10.105.0.1/24"}]}
    assert our_out == {"cniVersion": "1.0.0", "ips": [{"address": "10.106.0.1/24"}]}


def test_del_on_an_unused_range_creates_no_pool(env, ours, go):
    """A DEL for a range nobody allocated from: Go creates the empty IPPool on the way, ours stores nothing."""
    go.run(env.conf({"range": "10.108.0.0/24"}), "DEL").ok()
    ours.run(env.conf({"range": "10.109.0.0/24"}), "DEL").ok()
    assert env.store.pool("10.108.0.0-24")["spec"] == {"range": "10.108.0.0/24", "allocations": {}}
    assert env.store.pool("10.109.0.0-24") is None

"""Hostile input at the CNI boundary: always exactly one CNI error JSON, never a traceback.

The store is a dead address (127.0.0.1:1), so whatever passes validation ends in
code 11 and nothing can be written; `test_invalid_configs_never_write` checks the
same against the live API server with configs that are invalid by construction.
"""

from __future__ import annotations

import io
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from whereabouts.plugin.cni import run

ALLOWED_CODES = {1, 4, 5, 6, 7, 11, 50, 100, 101, 102, 103}
COMMANDS = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"]
json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)
text_like_ip = st.sampled_from(["10.0.0.0/24", "10.0.0.5", "fd00::/64", "::/0", "0.0.0.0/0", "10.0.0.0/31",
                                "256.0.0.1/24", "10.0.0.1-10.0.0.0/24", "fd00::1-fd00::/120", "", "/", "-",
                                "1.2.3.4/-1", "::ffff:10.0.0.1/120", "١٠.0.0.0/24"]) | st.text(max_size=30)
IPAM_KEYS = ["range", "range_start", "range_end", "exclude", "ipRanges", "gateway", "routes", "dns", "addresses",
             "network_name", "enable_overlapping_ranges", "log_level", "leader_lease_duration",
             "leader_renew_deadline", "leader_retry_period", "sleep_for_race", "node_slice_size", "block_size",
             "lock_timeout_ms", "kubernetes", "type", "configuration_path"]


def base_conf(tmp: str) -> dict:
    return {"cniVersion": "1.1.0", "name": "fuzz", "type": "bridge",
            "ipam": {"type": "whereabouts", "range": "10.0.0.0/24", "kubernetes": {"kubeconfig": f"{tmp}/dead.kubeconfig"},
                     "configuration_path": f"{tmp}/none.conf", "node_lock_dir": f"{tmp}/locks", "lock_timeout_ms": 2000}}


@st.composite
def hostile_stdin(draw, tmp: str) -> bytes:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return json.dumps(draw(json_values)).encode()
    conf = base_conf(tmp)
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(IPAM_KEYS + ["cniVersion", "runtimeConfig", "args", "prevResult",
                                                "cni.dev/valid-attachments"]))
        value = draw(text_like_ip | json_values if key in IPAM_KEYS[:6] else json_values)
        if key in IPAM_KEYS:
            conf["ipam"][key] = value
        else:
            conf[key] = value
    text = json.dumps(conf)
    if kind == 4 and len(text) > 2:  # truncated or with garbage spliced in
        cut = draw(st.integers(1, len(text) - 1))
        text = text[:cut] + draw(st.text(max_size=5))
    return text.encode("utf-8", "surrogatepass")


@st.composite
def hostile_env(draw) -> dict[str, str]:
    env = {"CNI_COMMAND": draw(st.sampled_from(COMMANDS) | st.text(max_size=8)),
           "CNI_CONTAINERID": draw(st.sampled_from(["c1", "abc-123_x.y"]) | st.text(max_size=70)),
           "CNI_IFNAME": draw(st.sampled_from(["eth0", "net1"]) | st.text(max_size=20)),
           "CNI_NETNS": draw(st.sampled_from(["/var/run/netns/x", ""]) | st.text(max_size=20)),
           "CNI_ARGS": draw(st.sampled_from(["", "K8S_POD_NAMESPACE=a;K8S_POD_NAME=b", "IP=10.0.0.9",
                                              "IP=garbage", "IP=10.0.0.1,10.0.0.2"]) | st.text(max_size=40))}
    drop = draw(st.lists(st.sampled_from(sorted(env)), max_size=2))
    return {k: v for k, v in env.items() if k not in drop}


@pytest.fixture(scope="module")
def dead_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "dead.kubeconfig").write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "secret-token-value"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return str(tmp)


def check_one(env: dict[str, str], stdin: bytes) -> dict:
    out = io.StringIO()
    rc = run(env, stdin, out)  # must not raise
    text = out.getvalue()
    lines = text.splitlines()
    assert len(lines) <= 1, text
    doc = json.loads(lines[0]) if lines else {}
    if rc != 0:
        assert doc.get("code") in ALLOWED_CODES, doc
        assert isinstance(doc.get("msg"), str) and doc["msg"]
        assert "secret-token-value" not in text
    return doc


def test_fuzz_the_boundary(dead_store, full, figures):
    cases = {"n": 0, "errors": 0}
    env_seen = set()

    @settings(max_examples=10_000 if full else 300, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(env=hostile_env(), stdin=hostile_stdin(dead_store))
    def one(env, stdin):
        cases["n"] += 1
        env_seen.add(env.get("CNI_COMMAND"))
        if "code" in check_one(env, stdin):
            cases["errors"] += 1

    one()
    figures["fuzz cases"] = cases["n"]
    figures["fuzz cases ending in a CNI error"] = cases["errors"]
    assert cases["n"] >= (10_000 if full else 300) * 0.9


INVALID_BY_CONSTRUCTION = [
    ("range", "10.0.0.0/33"), ("range", 12), ("range_start", "x"), ("exclude", "10.0.0.1"), ("exclude", [5]),
    ("gateway", "nope"), ("routes", [{"gw": "1.2.3.4"}]), ("dns", []), ("addresses", ["10.0.0.1/24"]),
    ("network_name", "UPPER"), ("enable_overlapping_ranges", "true"), ("log_level", "loud"),
    ("leader_lease_duration", "1500"), ("sleep_for_race", -1), ("node_slice_size", "x26"), ("block_size", 3),
    ("ipRanges", [{"range": "fd00::/200"}]), ("ipRanges", "10.0.0.0/24"), ("type", "static"),
]


@pytest.mark.parametrize("key,value", INVALID_BY_CONSTRUCTION)
def test_invalid_configs_never_write(key, value, netconf, pools):
    conf = netconf({key: value})
    from tests.helpers.cni import run as run_process

    for verb in ("ADD", "DEL"):
        out = run_process(conf, verb)
        assert out.rc != 0 and out.json["code"] in (7, 2), out.stdout
        assert key.split("[")[0] in out.json["msg"]
    assert pools.custom.list_namespaced_custom_object(
        "whereabouts.cni.cncf.io", "v1alpha1", pools.namespace, "ippools")["items"] == []

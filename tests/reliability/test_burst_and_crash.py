"""Bursts of concurrent ADDs from several simulated nodes, and invocations killed mid-flight."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter

from tests.helpers.cni import finish, run, start


def node_conf(netconf, tmp_path, node: str, ipam: dict) -> dict:
    return netconf({**ipam, "node_lock_dir": str(tmp_path / node / "locks"), "log_file": None})


def burst(netconf, tmp_path, n: int, nodes: int, ipam: dict, in_flight: int = 60):
    """`n` ADDs from `nodes` simulated nodes, at most `in_flight` processes at once."""
    pending = list(range(n))
    running, results = [], {}
    while pending or running:
        while pending and len(running) < in_flight:
            i = pending.pop(0)
            node = f"node{i % nodes}"
            conf = node_conf(netconf, tmp_path, node, ipam)
            running.append((i, start(conf, "ADD", container_id=f"c{i}", pod=f"p{i}", env={"NODENAME": node})))
        still = []
        for i, proc in running:
            if proc.poll() is None:
                still.append((i, proc))
            else:
                results[i] = finish(proc)
        running = still
        time.sleep(0.01)
    return results


def test_burst_fits(netconf, pools, tmp_path, full, figures):
    n, nodes = (500, 10) if full else (120, 5)
    ipam = {"range": "10.50.0.0/22", "range_end": f"10.50.{n // 256}.{n % 256}"}
    started = time.monotonic()
    results = burst(netconf, tmp_path, n, nodes, ipam)
    wall = time.monotonic() - started
    failures = [r for r in results.values() if r.rc != 0]
    assert not failures, failures[:3]
    ips = [r.ips[0] for r in results.values()]
    dupes = [ip for ip, c in Counter(ips).items() if c > 1]
    assert not dupes
    stored = pools.allocations("10.50.0.0-22")
    assert {f"{ip}/22" for ip in _addresses("10.50.0.0", stored)} == set(ips)
    figures[f"burst: {n} ADDs from {nodes} nodes"] = f"{wall:.1f}s wall, 0 failures, 0 duplicates"


def test_burst_one_too_many(netconf, pools, tmp_path, full):
    n, nodes = (500, 10) if full else (60, 5)
    # Exactly n - 1 usable addresses.
    ipam = {"range": "10.51.0.0/22", "range_end": f"10.51.{(n - 1) // 256}.{(n - 1) % 256}"}
    results = burst(netconf, tmp_path, n, nodes, ipam)
    failures = [r for r in results.values() if r.rc != 0]
    assert len(failures) == 1
    err = failures[0].error(100)
    assert "10.51.0.0/22" in err["msg"]
    ips = [r.ips[0] for r in results.values() if r.rc == 0]
    assert len(set(ips)) == n - 1 == len(pools.allocations("10.51.0.0-22"))


def _addresses(base: str, allocations: dict) -> list[str]:
    import ipaddress

    return [str(ipaddress.ip_address(base) + int(k)) for k in allocations]


def test_killed_invocations_never_duplicate_and_never_wedge(netconf, pools, pods, namespace, namespace_kubeconfig,
                                                            tmp_path, full, figures):
    """SIGKILL at random points (a race window widened by sleep_for_race sits between the
    reservation and the pool write); retried ADDs are idempotent; GC and the reconciler
    clear what the kills left behind, and `whereabouts check` is clean at the end."""
    ops = 200 if full else 40
    pods.create(*[f"k{i}" for i in range(ops // 2)])
    conf_for = lambda node: node_conf(netconf, tmp_path, node,  # noqa: E731
                                      {"range": "10.52.0.0/24", "sleep_for_race": 0.15, "lock_timeout_ms": 20000,
                                       "leader_lease_duration": 1000})
    rnd = random.Random(7)
    kills = 0
    live: dict[str, str] = {}  # container -> address of finished, successful ADDs
    for i in range(ops):
        node = f"node{i % 3}"
        cid = f"k{rnd.randrange(ops // 2)}"
        verb = "ADD" if cid not in live or rnd.random() < 0.7 else "DEL"
        proc = start(conf_for(node), verb, container_id=cid, pod=cid, pod_namespace=namespace,
                     env={"NODENAME": node})
        if rnd.random() < 0.5:
            time.sleep(rnd.uniform(0.0, 0.4))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            finish(proc)
            live.pop(cid, None)  # its outcome is unknown: the retry below decides
            retry = run(conf_for(node), "ADD" if verb == "ADD" else "DEL", container_id=cid, pod=cid,
                        pod_namespace=namespace, env={"NODENAME": node})
            assert retry.rc == 0, retry.stdout
            if verb == "ADD":
                live[cid] = retry.ips[0]
            continue
        out = finish(proc)
        assert out.rc == 0, out.stdout
        if verb == "ADD":
            assert live.get(cid, out.ips[0]) == out.ips[0]  # idempotent
            live[cid] = out.ips[0]
        else:
            live.pop(cid, None)
        held = list(live.values())
        assert len(held) == len(set(held)), "duplicate address"
    # The pool holds exactly the live owners; GC with them as valid attachments leaves no leak behind.
    stored = pools.allocations("10.52.0.0-24")
    assert {v["id"] for v in stored.values()} == set(live)
    gc = {**conf_for("node0"), "cniVersion": "1.1.0",
          "cni.dev/valid-attachments": [{"containerID": c, "ifname": "net1"} for c in live]}
    run(gc, "GC").ok()
    reserved = {r["metadata"]["name"] for r in pools.reservations()}
    # Reservations left by kills between reservation and pool write are not in any pool: the reconciler frees them.
    orphans = reserved - {ip.split("/")[0] for ip in live.values()}
    cli = [sys.executable, "-m", "whereabouts"]
    scope = ["--kubeconfig", str(namespace_kubeconfig), "-n", namespace]
    subprocess.run([*cli, "reconcile", "--grace", "0", "--unsafe-short-grace", *scope], check=True,
                   capture_output=True, timeout=120)
    left = {r["metadata"]["name"] for r in pools.reservations()} - {ip.split("/")[0] for ip in live.values()}
    assert not left
    check = subprocess.run([*cli, "check", *scope], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout
    assert {v["id"] for v in pools.allocations("10.52.0.0-24").values()} == set(live)
    figures[f"crash: {ops} operations"] = (f"{kills} kills, 0 duplicates, {len(orphans)} orphaned reservations "
                                          f"freed by reconcile, 0 leaks after it, check clean")

"""Side-by-side benchmark of this plugin and the Go whereabouts plugin on one local control plane.

    .venv/bin/python bench/run.py --quick     # a few minutes (CI)
    .venv/bin/python bench/run.py --full      # the figures in the README

Both plugins are run as a runtime runs them (a cold process per call, CNI_* env,
config on stdin), alternating, on fresh pools in namespaces of their own. Prints
a table and writes report.json and chart.png under bench/results/<timestamp>/.
Shared machines are noisy: compare the ratios of one run, not absolute times.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GROUP, VERSION = "whereabouts.cni.cncf.io", "v1alpha1"


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --- setup -----------------------------------------------------------------------------


def sh(*argv: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, env=env, text=True)
    if proc.returncode != 0:
        sys.exit(f"[bench] failed: {' '.join(argv)}")
    return proc.stdout


def cluster_env() -> tuple[dict[str, str], bool]:
    """Exports of the running local control plane (started by hack/cluster.sh if needed), and
    whether it was started here (and so is to be stopped at the end)."""
    running = subprocess.run(["bash", "hack/cluster.sh", "status"], cwd=ROOT, capture_output=True).returncode == 0
    exports = {}
    for line in sh("bash", "hack/cluster.sh", "up").splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            exports[key] = value.strip("'\"")
    return exports, not running


def our_plugin(rev: str | None = None) -> list[str]:
    """Our plugin from a regular (non-editable) install, as a node would have it: this checkout,
    or with `rev` that git revision (for before/after figures in one run)."""
    venv = ROOT / "build" / ("bench-venv" if rev is None else "bench-baseline-venv")
    if not (venv / "bin" / "python").exists():
        say(f"creating {venv.relative_to(ROOT)}")
        sh(sys.executable, "-m", "venv", str(venv))
    src = ROOT
    if rev is not None:
        src = ROOT / "build" / "bench-baseline-src"
        subprocess.run(["rm", "-rf", str(src)], check=True)
        src.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", rev], cwd=ROOT, stdout=subprocess.PIPE, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    say(f"installing {'this checkout' if rev is None else rev} into {venv.relative_to(ROOT)}")
    sh(str(venv / "bin" / "pip"), "install", "-q", "--no-warn-script-location", "--force-reinstall", "--no-deps",
       f"{src}")
    sh(str(venv / "bin" / "pip"), "install", "-q", "--no-warn-script-location", f"{src}")
    # A node needs no setuptools, whose .pth hook would run at every start.
    subprocess.run([str(venv / "bin" / "pip"), "uninstall", "-q", "-y", "setuptools"], cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [str(venv / "bin" / "whereabouts")]


def go_plugin() -> tuple[list[str], str]:
    path = sh("bash", "hack/build-go-whereabouts.sh").strip().splitlines()[-1]
    version = Path(path).parent.name.removeprefix("go-whereabouts-")
    return [path], version


class Cluster:
    def __init__(self, env: dict[str, str]) -> None:
        from kubernetes import client, config

        self.env = env
        self.api = config.new_client_from_config(config_file=env["WHEREABOUTS_KUBECONFIG"])
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"wb-bench-{secrets.token_hex(3)}"
        self.workdir.mkdir(parents=True)

    def namespace(self, prefix: str) -> tuple[str, Path]:
        """A fresh namespace, a kubeconfig whose context points at it, and a flat file (the Go plugin needs one)."""
        from kubernetes import client

        name = f"{prefix}-{secrets.token_hex(3)}"
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        d = self.workdir / name
        d.mkdir()
        kubeconfig = d / "kubeconfig"
        # JSON, as the DaemonSet's installer writes it (a YAML kubeconfig costs the plugin a YAML import).
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "b",
            "clusters": [{"name": "c", "cluster": {"server": self.env["WHEREABOUTS_APISERVER"],
                                                  "certificate-authority": self.env["WHEREABOUTS_CA_FILE"]}}],
            "users": [{"name": "u", "user": {"token": self.env["WHEREABOUTS_ADMIN_TOKEN"]}}],
            "contexts": [{"name": "b", "context": {"cluster": "c", "user": "u", "namespace": name}}]}))
        flat = d / "whereabouts.conf"
        flat.write_text(json.dumps({"datastore": "kubernetes", "kubernetes": {"kubeconfig": str(kubeconfig)}}))
        return name, flat

    def pools(self, namespace: str) -> list[dict[str, Any]]:
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "ippools")["items"]

    def put_pool(self, namespace: str, name: str, cidr: str, allocations: dict[str, Any],
                 metadata: dict[str, Any] | None = None) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "IPPool",
                "metadata": {**(metadata or {}), "name": name},
                "spec": {"range": cidr, "allocations": allocations}}
        self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "ippools", body)


# --- one invocation --------------------------------------------------------------------


@dataclass
class Call:
    seconds: float
    rc: int
    out: dict[str, Any]
    max_rss_kb: int


def invoke(argv: list[str], conf: dict[str, Any], command: str, cid: str, node: str = "node0",
           memory: bool = False) -> Call:
    """One cold call. With `memory`, under GNU time for the peak resident memory of the plugin
    process alone (the rusage of a child forked from this large Python process would report our own size)."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "CNI_PATH": "/usr/lib/cni", "CNI_COMMAND": command,
           "CNI_CONTAINERID": cid, "CNI_NETNS": "/var/run/netns/bench", "CNI_IFNAME": "net1", "NODENAME": node,
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid};K8S_POD_INFRA_CONTAINER_ID={cid}"}
    cmd = ["/usr/bin/time", "-f", "maxrss=%M", *argv] if memory else argv
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, input=json.dumps(conf).encode(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE if memory else subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    out = proc.stdout
    try:
        doc = json.loads(out) if out.strip() else {}
    except ValueError:
        doc = {"msg": out.decode(errors="replace")[:200]}
    rss = [int(line.split("=", 1)[1]) for line in (proc.stderr or b"").decode().splitlines()
           if line.startswith("maxrss=")]
    return Call(seconds, proc.returncode, doc, rss[-1] if rss else 0)


def conf_for(flat: Path, cidr: str, lock_dir: Path, **ipam: Any) -> dict[str, Any]:
    return {"cniVersion": "0.3.1", "name": "bench", "type": "macvlan",
            "ipam": {"type": "whereabouts", "range": cidr, "configuration_path": str(flat),
                     "node_lock_dir": str(lock_dir), **ipam}}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


# --- scenarios -------------------------------------------------------------------------


@dataclass
class Report:
    meta: dict[str, Any]
    single: dict[str, Any] = field(default_factory=dict)
    burst: dict[str, Any] = field(default_factory=dict)
    scale: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)


SINGLE = ("ADD", "DEL", "ADD with log_file")


def single(cluster: Cluster, plugins: dict[str, list[str]], n: int) -> dict[str, Any]:
    """Cold ADD then DEL, alternating plugins, each on its own fresh pool; then the same ADD
    with a `log_file` (level verbose), as most installs run it."""
    setups = {name: cluster.namespace(f"single-{name}") for name in plugins}
    times: dict[str, dict[str, list[float]]] = {name: {what: [] for what in SINGLE} for name in plugins}
    failures: Counter[str] = Counter()
    for i in range(n):
        order = list(plugins) if i % 2 == 0 else list(reversed(plugins))
        for name in order:
            _, flat = setups[name]
            conf = conf_for(flat, "10.60.0.0/24", cluster.workdir / f"locks-{name}")
            logged = conf_for(flat, "10.60.0.0/24", cluster.workdir / f"locks-{name}",
                              log_file=str(cluster.workdir / f"single-{name}.log"), log_level="verbose")
            for what, verb, c in (("ADD", "ADD", conf), ("DEL", "DEL", conf),
                                  ("ADD with log_file", "ADD", logged), (None, "DEL", logged)):
                call = invoke(plugins[name], c, verb, f"s{i}")
                if call.rc != 0:
                    failures[f"{name} {what or verb}"] += 1
                if what:
                    times[name][what].append(call.seconds)
    out: dict[str, Any] = {"n": n, "failures": dict(failures), "samples": times}
    for name in plugins:
        for verb in SINGLE:
            v = times[name][verb]
            out[f"{name} {verb}"] = {"median": statistics.median(v), "p90": pct(v, 90)}
    return out


def burst(cluster: Cluster, argv: list[str], name: str, total: int, nodes: int, per_node: int,
          block_size: int = 0) -> dict[str, Any]:
    """`total` ADDs from `nodes` simulated nodes, `per_node` at a time per node, into one /22."""
    ns, flat = cluster.namespace(f"burst-{name}")
    results: list[tuple[float, float, Call]] = []
    lock = threading.Lock()
    t0 = time.perf_counter()

    def node_worker(node: int) -> None:
        ids = [i for i in range(total) if i % nodes == node]
        sem = threading.Semaphore(per_node)
        threads = []

        def one(i: int) -> None:
            with sem:
                conf = conf_for(flat, "10.61.0.0/22", cluster.workdir / f"burst-{name}-node{node}",
                                **({"block_size": block_size} if block_size else {}))
                start = time.perf_counter() - t0
                call = invoke(argv, conf, "ADD", f"b{i}", node=f"node{node}")
                with lock:
                    results.append((start, start + call.seconds, call))

        for i in ids:
            t = threading.Thread(target=one, args=(i,))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()

    workers = [threading.Thread(target=node_worker, args=(k,)) for k in range(nodes)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    ok = [c for _, _, c in results if c.rc == 0]
    ips = [c.out["ips"][0]["address"] for c in ok if c.out.get("ips")]
    dupes = sum(c - 1 for c in Counter(ips).values() if c > 1)
    stored = sum(len(p["spec"].get("allocations") or {}) for p in cluster.pools(ns))
    lat = [c.seconds for _, _, c in results]
    errors = Counter(str(c.out.get("msg", ""))[:80] for _, _, c in results if c.rc != 0)
    return {"total": total, "nodes": nodes, "per_node": per_node, "wall": wall, "ok": len(ok),
            "failures": total - len(ok), "duplicates": dupes, "stored": stored,
            "p50": statistics.median(lat), "p99": pct(lat, 99), "errors": dict(errors.most_common(3)),
            "timeline": sorted((round(s, 3), round(e, 3), c.rc) for s, e, c in results)}


def scale(cluster: Cluster, argv: list[str], name: str, live_counts: list[int], samples: int,
          block_size: int | None) -> dict[str, Any]:
    """ADD latency in a /16 pre-filled to each count of live allocations (written directly)."""
    from whereabouts.core.blocks import Layout
    from whereabouts.plugin.config import parse_range

    out: dict[str, Any] = {"block_size": block_size}
    rng = parse_range("range", "10.62.0.0/16")
    for live in live_counts:
        ns, flat = cluster.namespace(f"scale-{name}")
        layout = Layout(rng, "", block_size or 0)
        by_block: dict[str, dict[str, Any]] = {}
        # Spread evenly, as owners' hashed home blocks fill a block layout (and as any fill looks to one pool).
        offsets = [rng.first + i * rng.size // live for i in range(live)]
        for off in offsets:
            blk = layout.block_of(rng.address(off))
            entry = {"id": f"{secrets.token_hex(32)}", "podref": f"bench/pre-{off}", "ifname": "net1"}
            by_block.setdefault(blk.name, {})[str(off - (int(blk.local.network.network_address)
                                                       - int(rng.network.network_address)))] = entry
        try:
            for blk in layout.blocks():
                if blk.name in by_block or layout.sharded:
                    cluster.put_pool(ns, blk.name, blk.local.cidr, by_block.get(blk.name, {}), layout.metadata())
        except Exception as e:  # noqa: BLE001 - an object too large for etcd is a result
            body = getattr(e, "body", None)
            try:
                message = json.loads(body)["message"] if body else str(e)
            except (ValueError, KeyError, TypeError):
                message = str(body or e)
            out[str(live)] = {"error": message[:160]}
            continue
        largest = max(len(json.dumps(p)) for p in cluster.pools(ns))
        conf = conf_for(flat, "10.62.0.0/16", cluster.workdir / f"scale-{name}-{live}",
                        enable_overlapping_ranges=False, **({"block_size": block_size} if block_size else {}))
        lat, fails = [], 0
        for i in range(samples):
            call = invoke(argv, conf, "ADD", f"x{live}-{i}")
            fails += call.rc != 0
            lat.append(call.seconds)
        out[str(live)] = {"median": statistics.median(lat), "failures": fails, "largest_object_bytes": largest}
    return out


# --- output ----------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def print_table(rep: Report) -> list[str]:
    lines = [f"whereabouts benchmark {rep.meta['date']} on {rep.meta['machine']}",
             f"ours {rep.meta['ours']} vs Go whereabouts {rep.meta['go']} (mode {rep.meta['mode']})", ""]
    s = rep.single
    lines.append(f"{'what':44} {'ours':>12} {'Go':>12} {'ours/Go':>8}")
    for verb in SINGLE:
        o, g = s[f"ours {verb}"], s[f"go {verb}"]
        lines.append(f"{'single ' + verb + ' median (ms, n=' + str(s['n']) + ')':44} {o['median'] * 1000:12.1f} "
                     f"{g['median'] * 1000:12.1f} {ratio(o['median'], g['median']):>8}")
        lines.append(f"{'single ' + verb + ' p90 (ms)':44} {o['p90'] * 1000:12.1f} {g['p90'] * 1000:12.1f} "
                     f"{ratio(o['p90'], g['p90']):>8}")
    if "baseline" in rep.meta:
        for verb in SINGLE:
            o, b = s[f"ours {verb}"], s[f"baseline {verb}"]
            lines.append(f"{'single ' + verb + ' median, ' + rep.meta['baseline'][:10] + ' (ms)':44} "
                         f"{b['median'] * 1000:12.1f} {'':12} {ratio(o['median'], b['median']):>8} (ours/it)")
    bo, bg = rep.burst["ours"], rep.burst["go"]
    label = f"burst {bo['total']} ADDs, {bo['nodes']} nodes x {bo['per_node']}"
    lines.append(f"{label + ' wall (s)':44} {bo['wall']:12.1f} {bg['wall']:12.1f} {ratio(bo['wall'], bg['wall']):>8}")
    lines.append(f"{'burst p50 / p99 per ADD (s)':44} {bo['p50']:5.2f}/{bo['p99']:6.2f} {bg['p50']:5.2f}/{bg['p99']:6.2f}")
    lines.append(f"{'burst failures / duplicates':44} {bo['failures']:>6}/{bo['duplicates']:<5} "
                 f"{bg['failures']:>6}/{bg['duplicates']:<5}")
    bb = rep.burst["ours-blocks"]
    lines.append(f"{'burst wall, ours with block_size 256 (s)':44} {bb['wall']:12.1f} {bg['wall']:12.1f} "
                 f"{ratio(bb['wall'], bg['wall']):>8}   ({bb['failures']} failed, {bb['duplicates']} duplicates)")
    for name in ("ours", "go"):
        sc = rep.scale[name]
        for live, v in sc.items():
            if live == "block_size":
                continue
            what = f"scale /16, {live} live: ADD median ({name})"
            if "error" in v:
                lines.append(f"{what:44} refused: {v['error'][:60]}")
            else:
                lines.append(f"{what:44} {v['median'] * 1000:9.1f} ms, largest object {v['largest_object_bytes'] / 1024:.0f} KiB"
                             f", {v['failures']} failed")
    m = rep.memory
    lines.append(f"{'peak memory of one ADD (MiB)':44} {m['ours'] / 1024:12.1f} {m['go'] / 1024:12.1f} "
                 f"{ratio(m['ours'], m['go']):>8}")
    return lines


def chart(rep: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    s = rep.single["samples"]
    data = [[x * 1000 for x in s[n][v]] for v in SINGLE for n in ("ours", "go")]
    axes[0].boxplot(data, tick_labels=["ours ADD", "Go ADD", "ours DEL", "Go DEL", "ours ADD\n+log", "Go ADD\n+log"])
    axes[0].set_ylabel("ms (cold process)")
    axes[0].set_title("single calls")
    for ax, name in ((axes[1], "ours"), (axes[2], "go")):
        tl = rep.burst[name]["timeline"]
        for i, (start, end, rc) in enumerate(tl):
            ax.plot([start, end], [i, i], color="tab:green" if rc == 0 else "tab:red", linewidth=0.6)
        ax.set_title(f"burst timeline: {name} ({rep.burst[name]['wall']:.1f}s)")
        ax.set_xlabel("s since start")
        ax.set_ylabel("ADD #")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes, a few minutes (default)")
    mode.add_argument("--full", action="store_true", help="the sizes of the targets (tens of minutes)")
    parser.add_argument("--out", type=Path, help="results folder (default bench/results/<timestamp>)")
    parser.add_argument("--baseline", metavar="REV", help="also time single ADD/DEL of this git revision of ours")
    args = parser.parse_args()
    env, started = cluster_env()
    try:
        return run_all(args, env)
    finally:
        if started:
            subprocess.run(["bash", "hack/cluster.sh", "down"], cwd=ROOT, stdout=subprocess.DEVNULL)


def run_all(args: argparse.Namespace, env: dict[str, str]) -> int:
    full = args.full
    sizes = dict(n=40 if full else 30, burst=(1000, 10, 10) if full else (200, 10, 10),
                 live=[100, 10_000, 60_000] if full else [100, 10_000], samples=15 if full else 7)
    sys.path.insert(0, str(ROOT))
    cluster = Cluster(env)
    ours = our_plugin()
    go, go_version = go_plugin()
    from whereabouts import __version__

    rep = Report(meta={"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                       "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                       "ours": __version__, "go": go_version, "mode": "full" if full else "quick",
                       "kube-apiserver": Path(env.get("WHEREABOUTS_BIN_DIR", "")).name})
    plugins = {"ours": ours, "go": go}
    singles = {**plugins, "baseline": our_plugin(args.baseline)} if args.baseline else plugins
    say(f"single ADD/DEL x{sizes['n']}")
    rep.single = single(cluster, singles, sizes["n"])
    if args.baseline:
        rep.meta["baseline"] = args.baseline
    total, nodes, per_node = sizes["burst"]
    for name in ("go", "ours"):
        say(f"burst of {total} ADDs: {name}")
        rep.burst[name] = burst(cluster, plugins[name], name, total, nodes, per_node)
    say(f"burst of {total} ADDs: ours with block_size 256")
    rep.burst["ours-blocks"] = burst(cluster, ours, "ours-blocks", total, nodes, per_node, block_size=256)
    for name, block in (("ours", 256), ("go", None)):
        say(f"scale {sizes['live']}: {name}")
        rep.scale[name] = scale(cluster, plugins[name], name, sizes["live"], sizes["samples"], block)
    ns_o, flat_o = cluster.namespace("mem-ours")
    ns_g, flat_g = cluster.namespace("mem-go")
    rep.memory = {
        "ours": max(invoke(ours, conf_for(flat_o, "10.63.0.0/24", cluster.workdir / "m1"), "ADD", f"m{i}",
                              memory=True).max_rss_kb for i in range(3)),
        "go": max(invoke(go, conf_for(flat_g, "10.63.0.0/24", cluster.workdir / "m2"), "ADD", f"m{i}",
                            memory=True).max_rss_kb for i in range(3)),
    }
    out = args.out or ROOT / "bench" / "results" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(rep.__dict__, indent=1, default=str))
    lines = print_table(rep)
    (out / "table.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        chart(rep, out / "chart.png")
    except ImportError:
        say("matplotlib is not installed: no chart (pip install -e '.[bench]')")
    say(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What each import costs a cold process: the figures behind doc/design.md's start-up table.

    .venv/bin/python bench/imports.py [--runs 15]

Every CNI invocation is a new process, so each import on the ADD path is paid on every pod
attach. Each module is imported alone in a fresh `python -X importtime` (median of --runs),
after the interpreter's own start; the last rows are what the plugin itself loads for VERSION
and for an ADD. Modules that are not installed are reported as such (`pip install -e .[bench]`
brings the candidates that were measured off the path: netaddr, filelock, structlog).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

CANDIDATES = ["kubernetes.client", "kubernetes.config", "structlog", "filelock", "netaddr", "yaml", "http.client",
              "email.parser", "dataclasses", "typing", "ssl", "socket", "_ssl, _socket", "json", "_json",
              "re", "urllib.parse", "encodings.idna", "base64", "ipaddress"]
OURS = {
    "whereabouts (VERSION path)": "whereabouts.plugin.cni",
    "whereabouts (ADD path)": "whereabouts.plugin.cni, whereabouts.plugin.config, whereabouts.plugin.verbs, "
                              "whereabouts.k8s.api, whereabouts.k8s.kubeconfig, whereabouts.k8s.lease, "
                              "whereabouts.k8s.store, whereabouts.plugin.log",
}


def _top_level(stderr: str) -> dict[str, int]:
    """Top-level imports of a `-X importtime` report: name -> cumulative microseconds."""
    found = {}
    for line in stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and parts[2].startswith(" ") \
                and not parts[2].startswith("  "):
            found[parts[2].strip()] = int(parts[1])
    return found


def cost_ms(modules: str, runs: int) -> float | None:
    """Median cost of importing `modules` (comma-separated) on top of the interpreter's own start-up."""
    start = _top_level(subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"],
                                      capture_output=True, text=True).stderr)
    samples = []
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {modules}"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            return None
        samples.append(sum(us for name, us in _top_level(proc.stderr).items() if name not in start) / 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, median of {args.runs} cold imports each (ms)")
    print("| import | ms |\n|---|---|")
    for name in CANDIDATES:
        ms = cost_ms(name, args.runs)
        print(f"| `{name}` | {'not installed' if ms is None else f'{ms:.1f}'} |")
    for label, modules in OURS.items():
        ms = cost_ms(modules, args.runs)
        print(f"| {label} | {'?' if ms is None else f'{ms:.1f}'} |")


if __name__ == "__main__":
    main()

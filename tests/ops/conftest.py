"""Fixtures for the operator commands: Pod objects, planted reservations, the CLI in and out of process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest

GROUP, VERSION = "whereabouts.cni.cncf.io", "v1alpha1"


@pytest.fixture
def reserve(pools):
    """Plant an OverlappingRangeIPReservation by hand."""

    def make(name: str, podref: str, container: str = "planted", ifname: str = "net1") -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "OverlappingRangeIPReservation",
                "metadata": {"name": name}, "spec": {"podref": podref, "containerid": container, "ifname": ifname}}
        pools.custom.create_namespaced_custom_object(GROUP, VERSION, pools.namespace,
                                                     "overlappingrangeipreservations", body)

    return make


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def wb(namespace_kubeconfig, capsys):
    """Run `whereabouts ARGS...` in this process, against the test namespace."""
    from whereabouts.operator.cli import main

    def run(*argv: str) -> Result:
        capsys.readouterr()
        try:
            rc = main(["--kubeconfig", str(namespace_kubeconfig), *argv])
        except SystemExit as e:  # argparse: --help and usage errors
            rc = int(e.code or 0)
        out, err = capsys.readouterr()
        return Result(rc, out, err)

    return run


def cli_env(kubeconfig: Any) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": os.pathsep.join(sys.path)}


def run_cli(*argv: str, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    """Run `python -m whereabouts ARGS...` as a new process, as an operator would."""
    proc = subprocess.run([sys.executable, "-m", "whereabouts", *argv], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def wb_proc(namespace_kubeconfig):
    """Run `python -m whereabouts ARGS...` as a process with $KUBECONFIG set to the test namespace."""
    return lambda *argv: run_cli(*argv, env=cli_env(namespace_kubeconfig))

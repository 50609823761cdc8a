"""The source distribution and its metadata, built from a copy of the tree as a release would be."""

from __future__ import annotations

import email
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> tarfile.TarFile:
    src = tmp_path_factory.mktemp("src") / "whereabouts"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".cluster", ".node", "dist", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis",
        "results"))
    out = src.parent / "out"
    subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(out)!r})"],
                   cwd=src, check=True, capture_output=True, timeout=300)
    [path] = out.glob("whereabouts-*.tar.gz")
    with tarfile.open(path) as tar:
        yield tar


def test_the_sdist_carries_what_a_release_is_built_and_checked_from(sdist):
    names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    for path in ("doc/crds/whereabouts.cni.cncf.io_ippools.yaml", "doc/install/daemonset.yaml", "doc/operations.md",
                 "hack/setup.sh", "hack/build.sh", "cmd/whereabouts", "Dockerfile", "LICENSE",
                 "tests/conftest.py", "tests/ops/test_cli.py", "bench/run.py", "whereabouts/operator/cli.py"):
        assert path in names, path
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.startswith("bench/results")]


def test_the_metadata_has_classifiers_a_bounded_client_and_no_relative_links(sdist):
    [info] = [m for m in sdist.getmembers() if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO")]
    meta = email.message_from_bytes(sdist.extractfile(info).read())
    assert "Programming Language :: Python :: 3.11" in meta.get_all("Classifier")
    [requires] = [m for m in sdist.getmembers() if m.name.endswith(".egg-info/requires.txt")]
    [client] = [r for r in sdist.extractfile(requires).read().decode().splitlines() if r.startswith("kubernetes")]
    assert "<" in client, client  # each major release of the client has changed its dependencies
    description = meta.get_payload()
    assert "whereabouts reconcile" in description
    links = re.findall(r"\]\(([^)]*)\)", description)
    assert links and all(link.startswith("https://") for link in links), links

"""doc/config.md documents exactly the keys of `whereabouts.plugin.keys.KEYS`, each with its type and default."""

from __future__ import annotations

import re
from pathlib import Path

from whereabouts.plugin.keys import KEYS, Key

PAGE = (Path(__file__).resolve().parents[2] / "doc" / "config.md").read_text()


def sections() -> dict[str, str]:
    """Each documented key and the first line of what the page says of it (its type and default).

    The keys are the backquoted names of the `###` headings of the `ipam` object (up to *Per-pod input*, which is
    input from elsewhere) and of the rows of *Keys from the Go plugin* that the plugin reads (not "ignored")."""
    ipam, _, _ = PAGE.partition("\n## Per-pod input")
    head, _, go = ipam.partition("\n## Keys from the Go plugin")
    found: dict[str, str] = {}
    for block in head.split("\n### ")[1:]:
        heading, _, body = block.partition("\n")
        first = body.strip().split("\n- ")[0].removeprefix("- ")
        found.update({name: " ".join(first.split()) for name in re.findall(r"`([^`]+)`", heading)})
    for row in re.findall(r"^\| `([^`|]+)` \| (.*) \|$", go, re.M):
        if not row[1].startswith(("ignored", "the same as")):
            found[row[0]] = row[1]
    return found


def shown(key: Key) -> str:
    if key.shown:
        return key.shown
    if key.default in (None, ""):
        return "default none"
    value = key.default
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return f"default `{text}`"


def test_the_page_documents_every_key_of_the_table_and_no_other():
    assert sorted(sections()) == sorted(KEYS)


def test_each_key_is_documented_with_its_type_and_default():
    documented = sections()
    wrong = {name: documented[name] for name, key in KEYS.items()
             if not documented[name].startswith(key.type) and key.type not in documented[name]
             or shown(key) not in documented[name]}
    assert wrong == {}


def test_an_unset_key_reads_as_its_default():
    from whereabouts.plugin.config import parse_ipam

    config = parse_ipam({"type": "whereabouts", "range": "10.0.0.0/24", "kubernetes": {"kubeconfig": "k"}})
    fields = {"enable_overlapping_ranges": "overlapping_ranges", "leader_lease_duration": "lease_duration_ms",
              "leader_renew_deadline": "renew_deadline_ms", "leader_retry_period": "retry_period_ms"}
    read = {name: getattr(config, fields.get(name, name)) for name, key in KEYS.items()
            if key.read is not None and name != "kubernetes.kubeconfig"}
    assert read == {name: KEYS[name].default for name in read}

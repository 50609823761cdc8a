"""What the operator commands print and return: tables, counts, JSON or YAML, and what was freed.

Every command ends in `emit`; `release` and `reconcile` report through `emit_freed`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from whereabouts.core.pool import Allocation
from whereabouts.core.ranges import Address
from whereabouts.operator.kubeclient import Kube
from whereabouts.operator.reconcile import Reservation

EXIT_OK, EXIT_FAILED = 0, 1
EXACT_BELOW = 10**12  # counts print exactly below this (any IPv4 range), in e-notation from it
OUTPUTS = ("table", "wide", "json", "yaml")


class Refused(Exception):
    """The command cannot do what was asked; the message says why and what to do."""


def table(headers: list[str], rows: Iterable[Iterable[Any]]) -> str:
    """Columns padded to their widest cell, as kubectl prints them."""
    cells = [headers] + [[str(c) if c not in ("", None) else "-" for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def count(n: int) -> str:
    """A count for a table: exact below 10^12, else two significant digits (an IPv6 /64 has `1.8e19` free).

    JSON and YAML keep the exact number.
    """
    return str(n) if n < EXACT_BELOW else f"{n:.2g}".replace("e+", "e")


def emit(args: argparse.Namespace, data: Any, text: Callable[[bool], str]) -> None:
    """`data` as JSON or YAML (one line, or one `---` document, per sweep of a loop), else `text(wide)`."""
    stream = getattr(args, "loop", False)
    if args.output == "json":
        out = json.dumps(data, indent=None if stream else 2)
    elif args.output == "yaml":
        import yaml

        out = yaml.safe_dump(data, sort_keys=False, explicit_start=stream).rstrip("\n")
    else:
        out = text(args.output == "wide")
    print(out, flush=True)


@dataclass
class Freed:
    """One object a release or a sweep removed (or, dry, would remove)."""

    kind: str  # "allocation", "reservation" or "block" (an empty block of a deleted node)
    name: str  # the pool (or block), or the reservation
    address: str
    pod: str
    container: str
    ifname: str
    reason: str


def entry_freed(pool: str, address: Address | None, alloc: Allocation, reason: str) -> Freed:
    return Freed("allocation", pool, str(address or ""), alloc.podref, alloc.container_id, alloc.ifname, reason)


def reservation_freed(res: Reservation, address: str, reason: str) -> Freed:
    spec = res.spec
    return Freed("reservation", res.name, address, res.podref, str(spec.get("containerid") or ""),
                 str(spec.get("ifname") or ""), reason)


def emit_freed(args: argparse.Namespace, kube: Kube, freed: list[Freed], key: str, verb: str,
               extra: dict[str, Any] | None = None, note: str = "") -> None:
    """`freed` as a table and a summary (`verb`, e.g. "Would free"), or as JSON or YAML under `key`."""
    data = {"namespace": kube.namespace, key: [asdict(f) for f in freed], **(extra or {})}
    allocs = sum(f.kind == "allocation" for f in freed)

    def text(wide: bool) -> str:
        if not freed:
            return f"Nothing to free in namespace {kube.namespace}.{note}"
        summary = (f"{verb} {allocs} allocation(s) and {len(freed) - allocs} reservation(s) "
                   f"in namespace {kube.namespace}.{note}")
        rows = [[f.kind, f.name, f.address, f.pod, f.container if wide else f.container[:12], f.ifname, f.reason]
                for f in freed]
        return table(["KIND", "NAME", "ADDRESS", "POD", "CONTAINER", "INTERFACE", "REASON"], rows) + "\n" + summary

    emit(args, data, text)

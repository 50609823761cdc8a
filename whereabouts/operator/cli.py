"""Operator commands on the same `whereabouts` executable.

Run with arguments, `whereabouts` is this CLI (without, it is the CNI plugin):
`pools`, `show`, `check`, `release`, `reconcile` and `node-slices` (the node-slice controller,
`whereabouts.operator.nodeslices`). Each command reads and writes
through `whereabouts.operator.kubeclient`; the decisions are the pure functions of
`whereabouts.operator.reconcile` and `whereabouts.operator.audit`. Failures are one line on stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from whereabouts import __version__
from whereabouts.core.blocks import BLOCK_OF_LABEL, block_node, parent_pool_name
from whereabouts.core.pool import Allocation, is_dns_subdomain, pool_name, reservation_name
from whereabouts.core.ranges import Address
from whereabouts.errors import CorruptPool
from whereabouts.k8s.store import POOLS, RESERVATIONS
from whereabouts.operator.audit import audit
from whereabouts.operator.kubeclient import DEFAULT_TIMEOUT, Kube, KubeError, connect
from whereabouts.operator.release import release_reservations, remove_allocations
from whereabouts.operator.reconcile import (Entry, Plan, PoolView, Reservation, Snapshot, abandoned_blocks,
                                           orphan_reservations, pairing, plan, snapshot, unchanged, view_pool)

EXIT_OK, EXIT_FAILED = 0, 1
DEFAULT_GRACE = 60.0
DEFAULT_INTERVAL = 300.0
MIN_INTERVAL = 1.0  # below this a --loop hammers the API server
EXACT_BELOW = 10**12  # counts print exactly below this (any IPv4 range), in e-notation from it
OUTPUTS = ("table", "wide", "json", "yaml")

EPILOG = ("Exit status: 0 success; 1 the command failed, was refused, `check` found a problem, or the last sweep "
          "of `reconcile --loop` failed; 2 usage error. `whereabouts COMMAND --help` describes each command.")


class Refused(Exception):
    """The command cannot do what was asked; the message says why and what to do."""


# --- output ---------------------------------------------------------------------------


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


def _entry_freed(pool: str, address: Address | None, alloc: Allocation, reason: str) -> Freed:
    return Freed("allocation", pool, str(address or ""), alloc.podref, alloc.container_id, alloc.ifname, reason)


def _reservation_freed(res: Reservation, address: str, reason: str) -> Freed:
    spec = res.spec
    return Freed("reservation", res.name, address, res.podref, str(spec.get("containerid") or ""),
                 str(spec.get("ifname") or ""), reason)


# --- pools and show -------------------------------------------------------------------


def range_name(view: PoolView) -> str:
    """What `pools`, `show` and `release --pool` call the range of a pool: a block's is its parent pool's name."""
    return parent_pool_name(view.name) if view.parent else view.name


def _usage(name: str, cidr: str, capacity: int, views: Iterable[PoolView]) -> dict[str, Any]:
    used = sum(1 for v in views for o in v.pool.taken if v.rng.in_span(o))
    percent = round(100 * used / capacity, 1) if capacity else 100.0
    return {"name": name, "range": cidr, "used": used, "free": capacity - used, "percent": percent}


def cmd_pools(args: argparse.Namespace, kube: Kube) -> int:
    """One row per configured range: a range split into blocks is summed over its blocks (listed with -o wide)."""
    snap = snapshot(kube.list(POOLS))
    ranges: dict[tuple[str, str, bool], list[PoolView]] = {}
    for view in snap.pools:
        key = (range_name(view), str(view.parent or view.rng.network), view.parent is not None)
        ranges.setdefault(key, []).append(view)
    data = []
    for (name, cidr, split), views in sorted(ranges.items()):
        views.sort(key=lambda v: int(v.rng.network.network_address))
        capacity = max(0, ipaddress.ip_network(cidr).num_addresses - 2)
        blocks = [_usage(v.name, v.rng.cidr, max(0, v.rng.size), [v]) for v in views] if split else []
        data.append({**_usage(name, cidr, capacity, views), "blocks": blocks})
    data += [{"name": b.name, "error": b.reason} for b in snap.broken]

    def row(d: dict[str, Any], wide: bool, name: str, blocks: str) -> list[Any]:
        return [name, d["range"], *([blocks] if wide else []), count(d["used"]), count(d["free"]), f"{d['percent']}%"]

    def text(wide: bool) -> str:
        if not data:
            return f"No IPPools in namespace {kube.namespace}."
        rows = []
        for d in data:
            if "error" in d:
                rows.append([d["name"], "?", *(["?"] if wide else []), "?", "?", f"undecodable: {d['error']}"])
                continue
            rows.append(row(d, wide, d["name"], str(len(d["blocks"]) or "")))
            rows += [row(b, wide, f"  {b['name']}", "") for b in d["blocks"] if wide]
        return table(["NAME", "RANGE", *(["BLOCKS"] if wide else []), "USED", "FREE", "USE%"], rows)

    emit(args, data, text)
    return EXIT_OK


def block_label(name: str) -> str:
    """The `block-of` label of the blocks of the range whose single pool would be `name` (as `Layout.label`)."""
    return hashlib.sha256(name.encode()).hexdigest()[:40]


def cmd_show(args: argparse.Namespace, kube: Kube) -> int:
    """The allocations of one IPPool or, when no IPPool has that name, of every block of the range named so."""
    name = args.pool
    obj = kube.get(POOLS, name)
    objs = [obj] if obj is not None else kube.list(POOLS, f"{BLOCK_OF_LABEL}={block_label(name)}")
    if not objs:
        raise Refused(f"no IPPool {name} in namespace {kube.namespace}, nor blocks of a range of that name "
                      "(`whereabouts pools` lists them)")
    views = []
    for o in objs:
        try:
            views.append(view_pool(o))
        except CorruptPool as e:
            raise Refused(f"IPPool {o['metadata']['name']} cannot be decoded: {e.msg}") from None
    views.sort(key=lambda v: int(v.rng.network.network_address))
    split = obj is None
    cidr = str(views[0].parent) if split and views[0].parent else views[0].rng.cidr
    allocs: list[dict[str, Any]] = [
        {"address": str(v.address(o) or ""), "pool": v.name, "offset": o, "pod": a.podref, "container": a.container_id,
         "interface": a.ifname} for v in views for o, a in sorted(v.pool.allocations.items())]
    undecodable = [{"pool": v.name, "key": k} for v in views for k in v.pool.undecodable]
    data = {"name": name, "range": cidr, "blocks": [v.name for v in views] if split else [], "allocations": allocs,
            "undecodable": undecodable}
    where = f"the {len(views)} block(s) of range {name}" if split else f"IPPool {name}"

    def text(wide: bool) -> str:
        if not allocs:
            out = f"No allocations in {where} ({cidr})."
        elif wide:
            out = table(["ADDRESS", "POOL", "OFFSET", "POD", "CONTAINER", "INTERFACE"],
                        [[a["address"], a["pool"], a["offset"], a["pod"], a["container"], a["interface"]]
                         for a in allocs])
        else:
            out = table(["ADDRESS", "POD", "CONTAINER", "INTERFACE"],
                        [[a["address"] or f"(offset {a['offset']})", a["pod"], a["container"][:12], a["interface"]]
                         for a in allocs])
        if undecodable:
            keys = ", ".join(f"{u['key']!r}" + (f" in {u['pool']}" if split else "") for u in undecodable)
            out += f"\nUndecodable entries (see `whereabouts check`): {keys}"
        return out

    emit(args, data, text)
    return EXIT_OK


# --- check ----------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace, kube: Kube) -> int:
    snap = snapshot(kube.list(POOLS), kube.list(RESERVATIONS))
    expect = {"auto": None, "yes": True, "no": False}[args.expect_reservations]
    findings = audit(snap, expect)
    counts = f"{len(snap.pools) + len(snap.broken)} pool(s) and {len(snap.reservations)} reservation(s)"
    data = {"namespace": kube.namespace, "ok": not findings, "pools": len(snap.pools) + len(snap.broken),
            "reservations": len(snap.reservations), "findings": [f.as_dict() for f in findings]}

    def text(wide: bool) -> str:  # nothing to widen: a finding is one line
        if not findings:
            return f"No problems found in {counts} of namespace {kube.namespace}."
        rows = [[f.kind, f.pool, f.address, f.detail] for f in findings]
        return (table(["KIND", "POOL", "ADDRESS", "DETAIL"], rows)
                + f"\n{len(findings)} problem(s) in {counts} of namespace {kube.namespace}.")

    emit(args, data, text)
    return EXIT_FAILED if findings else EXIT_OK


# --- release --------------------------------------------------------------------------


def _identity_matches(args: argparse.Namespace, podref: str, container: str) -> bool:
    return (not args.pod or podref == args.pod) and (not args.container or container.startswith(args.container))


def _asked(args: argparse.Namespace) -> str:
    return " and ".join(x for x in (args.pod and f"pod {args.pod}", args.container and f"container {args.container}")
                        if x)


def cmd_release(args: argparse.Namespace, kube: Kube) -> int:
    ip = args.address
    snap = snapshot(kube.list(POOLS), kube.list(RESERVATIONS))
    views = {v.name: v for v in snap.pools
             if args.pool in (None, v.name, range_name(v)) and ip.version == v.rng.version and ip in v.rng.network}
    holders = [Entry(v.name, o, ip, v.pool.allocations[o], v.reservation_names(o))
               for v in views.values() if (o := v.rng.offset(ip)) in v.pool.allocations]
    if not holders:
        return _release_reservation(args, kube, ip, snap)
    mine = [e for e in holders if _identity_matches(args, e.alloc.podref, e.alloc.container_id)]
    if not mine:
        who = "; ".join(f"pod {e.alloc.podref or '-'} container {e.alloc.container_id[:12]} in pool {e.pool}"
                        for e in holders)
        raise Refused(f"{ip} is held by {who}, not by {_asked(args)}: nothing released")
    if len(mine) > 1:
        raise Refused(f"{ip} is held in pools {', '.join(e.pool for e in mine)}: choose one with --pool")
    entry = mine[0]
    if entry.alloc.podref and not args.force and kube.pod_exists(entry.alloc.podref):
        raise Refused(f"pod {entry.alloc.podref} still exists: another pod could get {ip} while it is in use "
                      "(delete the pod, or add --force)")
    removed = remove_allocations(kube, entry.pool, lambda view: unchanged(view, [entry]),
                                      first=views[entry.pool].pool.raw)
    if not removed:
        raise Refused(f"the entry of {ip} in pool {entry.pool} changed while releasing it: nothing released")
    freed = [_entry_freed(entry.pool, ip, entry.alloc, "released")]
    freed += [_reservation_freed(r, str(ip), "released") for r in release_reservations(kube, removed)]
    _emit_freed(args, kube, freed, "released", "Released")
    return EXIT_OK


def _release_reservation(args: argparse.Namespace, kube: Kube, ip: Address, snap: Snapshot) -> int:
    """No pool holds the address: release a reservation of it that no allocation holds."""
    names = {reservation_name(ip)} | {reservation_name(ip, n) for v in snap.pools for n in v.networks}
    held = pairing(snap.pools, snap.reservations).held
    found = [r for r in snap.reservations if r.name in names and r.name not in held]
    where = f"pool {args.pool}" if args.pool else f"any pool of namespace {kube.namespace}"
    if not found:
        raise Refused(f"{ip} is not allocated in {where}, and no unheld reservation names it")
    mine = [r for r in found if _identity_matches(args, r.podref, str(r.spec.get("containerid") or ""))]
    if not mine:
        who = ", ".join(f"{r.name} (pod {r.podref or '-'})" for r in found)
        raise Refused(f"{ip} is reserved by {who}, not by {_asked(args)}: nothing released")
    freed = [_reservation_freed(r, str(ip), "released") for r in mine if kube.delete(RESERVATIONS, r.name,
                                                                                                 r.resource_version)]
    if not freed:
        raise Refused(f"the reservation of {ip} changed while releasing it: nothing released")
    _emit_freed(args, kube, freed, "released", "Released")
    return EXIT_OK


def _emit_freed(args: argparse.Namespace, kube: Kube, freed: list[Freed], key: str, verb: str,
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


# --- reconcile ------------------------------------------------------------------------


@dataclass
class Sweep:
    """What one pass freed (or, dry, would free), the unheld reservations it kept for the grace period, and errors."""

    freed: list[Freed] = field(default_factory=list)
    young: list[Reservation] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def sweep(kube: Kube, grace: timedelta, dry_run: bool) -> Sweep:
    """One pass. Reads reservations, then pools, then pods: the order `whereabouts.operator.reconcile` relies on."""
    reservation_objs = kube.list(RESERVATIONS)
    snap = snapshot(kube.list(POOLS), reservation_objs)
    now = datetime.now(timezone.utc)
    todo = plan(snap, kube.pod_refs(), now, grace)
    done = Sweep(young=todo.young)
    for view in snap.pools:
        entries = [e for e in todo.allocations if e.pool == view.name]
        if entries:
            _free_entries(kube, view, entries, todo, dry_run, done)
    _free_orphans(kube, todo.reservations, now, grace, dry_run, done)
    _release_blocks(kube, snap.pools, dry_run, done)
    return done


def _release_blocks(kube: Kube, views: list[PoolView], dry_run: bool, done: Sweep) -> None:
    """Delete the empty blocks of nodes that no longer exist (nodes are listed only when a block has an owner)."""
    if not any(v.parent is not None and block_node(v.pool.raw) for v in views):
        return
    try:
        nodes = kube.node_names()
        for view in abandoned_blocks(views, nodes):
            reason = f"empty block of node {block_node(view.pool.raw)}, which no longer exists"
            if dry_run or kube.delete(POOLS, view.name, view.pool.resource_version):
                done.freed.append(Freed("block", view.name, view.rng.cidr, "", "", "", reason))
    except KubeError as e:
        done.errors.append(str(e))


def _free_entries(kube: Kube, view: PoolView, entries: list[Entry], todo: Plan, dry_run: bool, done: Sweep) -> None:
    reason = "pod no longer exists"
    if dry_run:
        for e in entries:
            done.freed.append(_entry_freed(e.pool, e.address, e.alloc, reason))
            done.freed += [_reservation_freed(r, str(e.address), "its allocation is freed")
                           for r in todo.companions[(e.pool, e.offset)]]
        return
    try:
        removed = remove_allocations(kube, view.name, lambda v: unchanged(v, entries), first=view.pool.raw)
        done.freed += [_entry_freed(r.pool.name, r.pool.address(r.offset), r.alloc, reason) for r in removed]
        addresses = {n: str(r.pool.address(r.offset)) for r in removed for n in r.pool.reservation_names(r.offset)}
        done.freed += [_reservation_freed(res, addresses[res.name], "its allocation is freed")
                       for res in release_reservations(kube, removed)]
    except KubeError as e:
        done.errors.append(str(e))


def _free_orphans(kube: Kube, orphans: list[Reservation], now: datetime, grace: timedelta, dry_run: bool,
                  done: Sweep) -> None:
    reason = "held by no allocation"
    if dry_run or not orphans:
        done.freed += [_reservation_freed(r, "", reason) for r in orphans]
        return
    # Decide again on pools read now: an ADD may have written its entry since the snapshot.
    recheck, _ = orphan_reservations(snapshot(kube.list(POOLS), [r.raw for r in orphans]), now, grace)
    for r in recheck:
        try:
            if kube.delete(RESERVATIONS, r.name, r.resource_version):
                done.freed.append(_reservation_freed(r, "", reason))
        except KubeError as e:
            done.errors.append(str(e))


def _sweep_once(args: argparse.Namespace, kube: Kube) -> int:
    done = sweep(kube, timedelta(seconds=args.grace), args.dry_run)
    note = (f" Kept {len(done.young)} unheld reservation(s) younger than {args.grace:g}s: "
            f"{', '.join(r.name for r in done.young)}." if done.young else "")
    extra = {"dry_run": args.dry_run, "deferred": [r.name for r in done.young], "errors": done.errors}
    _emit_freed(args, kube, done.freed, "freed", "Would free" if args.dry_run else "Freed", extra, note)
    for message in done.errors:
        print(f"whereabouts: error: {message}", file=sys.stderr, flush=True)
    return EXIT_FAILED if done.errors else EXIT_OK


def cmd_reconcile(args: argparse.Namespace, kube: Kube) -> int:
    """One sweep, or with --loop one every interval until SIGTERM or SIGINT, which end it after the current sweep.

    A loop exits with the status of its last sweep, so a sweeper that never reached the API server does not
    look like one that worked.
    """
    if not args.loop:
        return _sweep_once(args, kube)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while True:
        try:
            status = _sweep_once(args, kube)
        except KubeError as e:
            print(f"whereabouts: error: {e}", file=sys.stderr, flush=True)
            status = EXIT_FAILED
        if stop.wait(args.interval):
            return status


# --- node-slices ----------------------------------------------------------------------


def cmd_node_slices(args: argparse.Namespace, kube: Kube) -> int:
    """The node-slice controller; imported here so that the other commands do not load structlog."""
    from whereabouts.operator.nodeslices import run

    return run(args, kube)


# --- parser and entry point -----------------------------------------------------------


def _seconds(text: str, minimum: float = 0.0, strict: bool = False) -> float:
    """A finite number of seconds, at least `minimum` (above it when `strict`)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        raise argparse.ArgumentTypeError(f"{text!r}: must be {'above' if strict else 'at least'} {minimum:g}s")
    return value


def _interval(text: str) -> float:
    return _seconds(text, MIN_INTERVAL)


def _timeout(text: str) -> float:
    return _seconds(text, 0.0, strict=True)


def _address(text: str) -> Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def _pool(text: str) -> str:
    """A pool name, or a CIDR turned into the name of its (unnamed) pool: names never contain a `/`."""
    if "/" not in text:
        if not is_dns_subdomain(text):
            raise argparse.ArgumentTypeError(f"{text!r} is neither an IPPool name nor a CIDR")
        return text
    try:
        return pool_name(str(ipaddress.ip_network(text, strict=False)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a CIDR") from None


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _namespace(text: str) -> str:
    if not _DNS_LABEL.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a namespace name (a DNS label)")
    return text


def _nonempty(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _podref(text: str) -> str:
    ns, _, name = text.partition("/")
    if not ns or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAMESPACE/NAME")
    return text


def _common_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """Global options, accepted before or after the command.

    Only the top-level parser has defaults: in a subcommand they are SUPPRESSed, so
    that a value given before the command is not reset after it.
    """

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    parser.add_argument("--kubeconfig", metavar="PATH",
                        default=default(os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")),
                        help="kubeconfig to use (default: $KUBECONFIG, else ~/.kube/config)")
    parser.add_argument("--context", type=_nonempty, metavar="NAME", default=default(None),
                        help="kubeconfig context to use (default: its current context)")
    parser.add_argument("-n", "--namespace", type=_namespace, default=default(None),
                        help="namespace of the whereabouts objects (default: the kubeconfig context's, "
                             "else kube-system)")
    parser.add_argument("-o", "--output", choices=OUTPUTS, default=default("table"),
                        help="output format: table (default), wide (more columns), json or yaml")
    parser.add_argument("--request-timeout", type=_timeout, metavar="SECONDS", default=default(DEFAULT_TIMEOUT),
                        help=f"give up on an API request after this long (default: {DEFAULT_TIMEOUT:g})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whereabouts", epilog=EPILOG,
        description="Whereabouts IPAM. Run without arguments (with CNI_COMMAND set) it is the CNI plugin; "
                    "with a command it inspects and repairs the IP pools stored in Kubernetes.",
    )
    _common_options(parser, top=True)
    parser.add_argument("--version", action="version", version=f"whereabouts {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, func: Callable[..., int], help: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=description, epilog=EPILOG)
        _common_options(p, top=False)
        p.set_defaults(func=func, usage_error=p.error)
        return p

    command("pools", cmd_pools, "list pools with their usage",
            "List each IPPool, or each range split into blocks: its range, addresses used and free, and the "
            "percentage used (-o wide: each block too). Free counts the whole network less network and broadcast "
            "addresses: exclusions and range_start/range_end live in the network configs, not in the pool. "
            "Counts of 10^12 and more print as 1.8e19; JSON and YAML give them exactly.")
    show = command("show", cmd_show, "list the allocations of one pool",
                   "List each allocation of one IPPool, or of every block of a range split into blocks: "
                   "address, pod, container and interface.")
    show.add_argument("pool", metavar="POOL", type=_pool,
                      help="pool or range name (as `whereabouts pools` prints it), or the range's CIDR")
    check = command("check", cmd_check, "find inconsistencies between pools and reservations",
                    "Find duplicate addresses across overlapping pools, reservations without allocations and "
                    "the reverse, allocations outside their range, and entries that cannot be decoded. "
                    "Exits 1 when anything is found. An operation in flight can show briefly: run it again.")
    check.add_argument("--expect-reservations", choices=("auto", "yes", "no"), default="auto",
                       help="whether every allocation should have an OverlappingRangeIPReservation; "
                            "auto: where any other allocation of its pool has one (default)")
    release = command("release", cmd_release, "free one address by hand",
                      "Free ADDRESS: its pool entry and its reservation, or a reservation of it that no "
                      "allocation holds. --pod (or --container) must name the holder, so that a mistyped "
                      "address is refused rather than taken from another pod.")
    release.add_argument("address", metavar="ADDRESS", type=_address, help="the IP address to free")
    release.add_argument("--pod", type=_podref, metavar="NAMESPACE/NAME", help="the pod that holds ADDRESS")
    release.add_argument("--container", metavar="ID", type=_nonempty,
                         help="the container id (or a prefix of it) that holds ADDRESS")
    release.add_argument("--pool", metavar="NAME", type=_pool,
                         help="the pool or range, when ADDRESS is in several (named networks)")
    release.add_argument("--force", action="store_true", help="release even though the pod still exists")
    reconcile = command("reconcile", cmd_reconcile, "free addresses of pods that no longer exist",
                        "Free every allocation whose pod no longer exists, with its reservation, and every "
                        "reservation that no allocation holds. Entries without a pod reference are kept.")
    reconcile.add_argument("--dry-run", action="store_true", help="report what would be freed, free nothing")
    reconcile.add_argument("--grace", type=_seconds, default=DEFAULT_GRACE, metavar="SECONDS",
                           help="keep unheld reservations younger than this: an ADD in flight holds one "
                                f"(default: {DEFAULT_GRACE:g}; keep it above the plugin's lock_timeout_ms)")
    reconcile.add_argument("--loop", action="store_true",
                           help="sweep every --interval seconds until SIGTERM or SIGINT; exit with the status "
                                "of the last sweep")
    reconcile.add_argument("--interval", type=_interval, default=DEFAULT_INTERVAL, metavar="SECONDS",
                           help=f"pause between sweeps with --loop (default: {DEFAULT_INTERVAL:g}, "
                                f"at least {MIN_INTERVAL:g})")
    slices = command("node-slices", cmd_node_slices, "run the node-slice controller (node_slice_size)",
                     "Keep a NodeSlicePool for every NetworkAttachmentDefinition whose whereabouts ipam has "
                     "node_slice_size: the range cut into slices, one per node, as the Go nodeslicecontroller "
                     "does; a deleted node's slice is freed once no live pod holds an address in it, and a "
                     "re-slicing withholds the slices of old pools holding live addresses. Replicas "
                     "elect a leader on a Lease in the namespace; only the leader writes. JSON logs on stderr; "
                     "runs until SIGTERM or SIGINT. The namespace is -n, else $WHEREABOUTS_NAMESPACE, else "
                     "the kubeconfig context's, else kube-system.")
    slices.add_argument("--lease-name", default="whereabouts-node-slices", type=_nonempty, metavar="NAME",
                        help="the coordination.k8s.io Lease the replicas elect a leader on "
                             "(default: whereabouts-node-slices)")
    slices.add_argument("--lease-duration", type=_timeout, default=15.0, metavar="SECONDS",
                        help="how long a leader that stopped renewing keeps the Lease (default: 15)")
    slices.add_argument("--renew-deadline", type=_timeout, default=10.0, metavar="SECONDS",
                        help="a leader that could not renew for this long stops writing (default: 10)")
    slices.add_argument("--retry-period", type=_timeout, default=2.0, metavar="SECONDS",
                        help="how often the Lease is renewed, or tried by a standby (default: 2)")
    slices.add_argument("--resync-interval", type=_interval, default=60.0, metavar="SECONDS",
                        help="a full pass at least this often, without any change seen (default: 60)")
    slices.add_argument("--recheck-interval", type=_interval, default=5.0, metavar="SECONDS",
                        help="how often a slice kept or withheld for live pods is checked again (default: 5)")
    slices.add_argument("--debug", action="store_true", help="log debug events too")
    return parser


def main(argv: list[str]) -> int:
    """Run one command; the exit status as in EPILOG. argparse exits 2 itself on usage errors."""
    args = build_parser().parse_args(argv)
    if args.command == "release" and not (args.pod or args.container):
        args.usage_error("release needs --pod NAMESPACE/NAME (or --container ID) to confirm whose address it is")
    if args.command == "node-slices":
        if not args.retry_period < args.renew_deadline < args.lease_duration:
            args.usage_error("need --retry-period < --renew-deadline < --lease-duration")
        env = os.environ.get("WHEREABOUTS_NAMESPACE")  # what the Go controller reads
        if not args.namespace and env:
            try:
                args.namespace = _namespace(env)
            except argparse.ArgumentTypeError as e:
                args.usage_error(f"WHEREABOUTS_NAMESPACE: {e}")
    try:
        kube = connect(args.kubeconfig, args.namespace, args.context, args.request_timeout)
        try:
            return int(args.func(args, kube))
        finally:
            kube.close()
    except (KubeError, Refused) as e:
        print(f"whereabouts: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `whereabouts show POOL | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130

"""The commands that read pools and free one address by hand: `pools`, `show`, `check` and `release`.

`reconcile` is `whereabouts.operator.sweep`; the argument parser is `whereabouts.operator.cli`.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Iterable
from typing import Any

from whereabouts.core.blocks import BLOCK_OF_LABEL, block_label, parent_pool_name
from whereabouts.core.pool import reservation_name
from whereabouts.core.ranges import Address
from whereabouts.errors import CorruptPool
from whereabouts.k8s.store import POOLS, RESERVATIONS
from whereabouts.operator.audit import audit
from whereabouts.operator.kubeclient import Kube
from whereabouts.operator.output import (EXIT_FAILED, EXIT_OK, Refused, count, emit, emit_freed, entry_freed,
                                         reservation_freed, table)
from whereabouts.operator.reconcile import Entry, PoolView, Snapshot, pairing, snapshot, unchanged, view_pool
from whereabouts.operator.release import release_reservations, remove_allocations


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
    freed = [entry_freed(entry.pool, ip, entry.alloc, "released")]
    freed += [reservation_freed(r, str(ip), "released") for r in release_reservations(kube, removed)]
    emit_freed(args, kube, freed, "released", "Released")
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
    freed = [reservation_freed(r, str(ip), "released") for r in mine if kube.delete(RESERVATIONS, r.name,
                                                                                                 r.resource_version)]
    if not freed:
        raise Refused(f"the reservation of {ip} changed while releasing it: nothing released")
    emit_freed(args, kube, freed, "released", "Released")
    return EXIT_OK

"""`whereabouts reconcile`: one sweep, or a loop of them, over pools, reservations and pods.

The decisions are the pure functions of `whereabouts.operator.reconcile`; this module reads in the
order they rely on, writes what they decide, and reports it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from whereabouts.core.blocks import block_node
from whereabouts.k8s.store import POOLS, RESERVATIONS
from whereabouts.operator.kubeclient import Kube, KubeError
from whereabouts.operator.output import EXIT_FAILED, EXIT_OK, Freed, emit_freed, entry_freed, reservation_freed
from whereabouts.operator.reconcile import (Entry, Plan, PoolView, Reservation, abandoned_blocks,
                                           orphan_reservations, plan, snapshot, unchanged)
from whereabouts.operator.release import release_reservations, remove_allocations


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
            done.freed.append(entry_freed(e.pool, e.address, e.alloc, reason))
            done.freed += [reservation_freed(r, str(e.address), "its allocation is freed")
                           for r in todo.companions[(e.pool, e.offset)]]
        return
    try:
        removed = remove_allocations(kube, view.name, lambda v: unchanged(v, entries), first=view.pool.raw)
        done.freed += [entry_freed(r.pool.name, r.pool.address(r.offset), r.alloc, reason) for r in removed]
        addresses = {n: str(r.pool.address(r.offset)) for r in removed for n in r.pool.reservation_names(r.offset)}
        done.freed += [reservation_freed(res, addresses[res.name], "its allocation is freed")
                       for res in release_reservations(kube, removed)]
    except KubeError as e:
        done.errors.append(str(e))


def _free_orphans(kube: Kube, orphans: list[Reservation], now: datetime, grace: timedelta, dry_run: bool,
                  done: Sweep) -> None:
    reason = "held by no allocation"
    if dry_run or not orphans:
        done.freed += [reservation_freed(r, "", reason) for r in orphans]
        return
    # Decide again on pools read now: an ADD may have written its entry since the snapshot.
    recheck, _ = orphan_reservations(snapshot(kube.list(POOLS), [r.raw for r in orphans]), now, grace)
    for r in recheck:
        try:
            if kube.delete(RESERVATIONS, r.name, r.resource_version):
                done.freed.append(reservation_freed(r, "", reason))
        except KubeError as e:
            done.errors.append(str(e))


def _sweep_once(args: argparse.Namespace, kube: Kube) -> int:
    done = sweep(kube, timedelta(seconds=args.grace), args.dry_run)
    note = (f" Kept {len(done.young)} unheld reservation(s) younger than {args.grace:g}s: "
            f"{', '.join(r.name for r in done.young)}." if done.young else "")
    extra = {"dry_run": args.dry_run, "deferred": [r.name for r in done.young], "errors": done.errors}
    emit_freed(args, kube, done.freed, "freed", "Would free" if args.dry_run else "Freed", extra, note)
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

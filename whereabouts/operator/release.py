"""Applying the reconciler's decisions to a Store: entries out of pools, then their reservations.

Each pool write carries the resourceVersion its decision was made on, and after a conflict the
decision is made again on a fresh read, so nothing decided on an old read is ever written. A
reservation is deleted only as it was read, and only when no entry still in a pool holds it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from whereabouts.core.pool import Allocation, remove_allocation
from whereabouts.core.retry import backoff_pause
from whereabouts.errors import CorruptPool
from whereabouts.k8s.store import POOLS, RESERVATIONS, Store
from whereabouts.operator.kubeclient import KubeError
from whereabouts.operator.reconcile import PoolView, Reservation, snapshot, unheld, view_pool

MAX_CONFLICTS = 20


@dataclass
class Removed:
    """An entry a pool write took out."""

    pool: PoolView
    offset: int
    alloc: Allocation


def remove_allocations(store: Store, name: str, choose: Callable[[PoolView], Iterable[int]],
                       first: dict[str, Any] | None = None) -> list[Removed]:
    """Remove the entries `choose` picks, deciding again from a fresh read after each conflict.

    `first` is the pool as already read: its resourceVersion makes the write fail
    if anything changed since, so nothing decided on an old read is ever written.
    """
    obj = first
    for attempt in range(MAX_CONFLICTS):
        obj = copy.deepcopy(obj) if obj is not None else store.get(POOLS, name)
        if obj is None:
            return []
        try:
            view = view_pool(obj)
        except CorruptPool as e:
            raise KubeError(f"IPPool {name} cannot be decoded ({e.msg}); not touching it") from None
        removed = [Removed(view, o, view.pool.allocations[o]) for o in choose(view)]
        if not removed:
            return []
        for r in removed:
            remove_allocation(view.pool, r.offset)
        if store.replace(POOLS, view.pool.raw) is not None:
            return removed
        obj = None
        time.sleep(backoff_pause(attempt + 1))
    raise KubeError(f"IPPool {name}: {MAX_CONFLICTS} write conflicts in a row; try again")


def release_reservations(store: Store, removed: list[Removed]) -> list[Reservation]:
    """Delete the reservations the removed entries held, unless an entry still in a pool holds one too.

    With named networks one address can be held by one pod in two pools, and a
    pool's name admits several network names: the pools are read again to tell.
    Each deletion is conditional on the reservation being as read.
    """
    held: dict[str, Reservation] = {}
    for r in removed:
        for name in r.pool.reservation_names(r.offset):
            obj = store.get(RESERVATIONS, name)
            if obj is not None and Reservation(obj).freed_with(r.alloc):
                held[name] = Reservation(obj)
    if not held:
        return []
    free = unheld(snapshot(store.list(POOLS), [res.raw for res in held.values()]))
    return [res for res in free if store.delete(RESERVATIONS, res.name, res.resource_version)]

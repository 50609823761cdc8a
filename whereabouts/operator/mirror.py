"""Watched collections for the node-slice controller: a LIST, then a WATCH from its resourceVersion.

The informer of client-go, reduced to what one controller needs: the objects in memory, reduced by
`keep` to what the controller reads, and a callback on every change of that.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import structlog

WATCH_SECONDS = 300  # the server ends each watch after this; it is resumed from the last resourceVersion
MAX_BACKOFF = 30.0

log = structlog.get_logger("node-slices")


class Mirror:
    """A collection kept in memory from a LIST and then a WATCH from the list's resourceVersion.

    A watch that ends is resumed from the last version seen (bookmarks included); one answered
    410 Gone lists again. `keep` reduces an object to what the controller reads, so that changes
    it does not care about (node heartbeats) wake nothing.
    """

    def __init__(self, kind: str, call: Callable[..., Any], keep: Callable[[dict[str, Any]], Any],
                 changed: Callable[[], None], stop: threading.Event, timeout: float) -> None:
        self.kind, self.call, self.keep, self.changed = kind, call, keep, changed
        self.stop, self.timeout = stop, timeout
        self.items: dict[str, Any] = {}
        self.synced = threading.Event()
        self.rv = ""
        self.lock = threading.Lock()

    def snapshot(self) -> tuple[dict[str, Any], str]:
        """The objects, and the resourceVersion of the last event or list they include."""
        with self.lock:
            return dict(self.items), self.rv

    def run(self) -> None:
        from kubernetes.client.exceptions import ApiException

        backoff = 0.5
        while not self.stop.is_set():
            try:
                if not self.rv:
                    self._list()
                self._watch()
                backoff = 0.5
            except ApiException as e:
                if e.status == 410:
                    log.info("watch expired, listing again", kind=self.kind)
                    self.rv = ""
                    continue
                log.warning("watch failed", kind=self.kind, error=f"{e.status} {e.reason}")
                self.stop.wait(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
            except Exception as e:  # noqa: BLE001 - a broken connection or answer: list again after a pause
                log.warning("watch failed", kind=self.kind, error=str(e) or type(e).__name__)
                self.rv = ""
                self.stop.wait(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)

    def _list(self) -> None:
        items: dict[str, Any] = {}
        token = None
        while True:
            resp = self.call(limit=500, _continue=token, _preload_content=False,
                             _request_timeout=(self.timeout, self.timeout))
            body = json.loads(resp.data)
            for obj in body.get("items") or []:
                items[key_of(obj)] = self.keep(obj)
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                break
        with self.lock:
            differs, self.items = items != self.items, items
            self.rv = str((body.get("metadata") or {}).get("resourceVersion") or "")
        log.debug("listed", kind=self.kind, count=len(items), resource_version=self.rv)
        self.synced.set()
        if differs:
            self.changed()

    def _watch(self) -> None:
        from kubernetes.client.exceptions import ApiException
        from kubernetes.watch.watch import iter_resp_lines

        resp = self.call(watch=True, resource_version=self.rv, allow_watch_bookmarks=True,
                         timeout_seconds=WATCH_SECONDS, _preload_content=False,
                         _request_timeout=(self.timeout, WATCH_SECONDS + self.timeout))
        try:
            for line in iter_resp_lines(resp):
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise ApiException(status=obj.get("code") or 500, reason=obj.get("message") or "watch error")
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._apply(kind, obj, rv)
                elif rv:
                    with self.lock:
                        self.rv = rv
                if self.stop.is_set():
                    return
        finally:
            resp.release_conn()

    def _apply(self, kind: str, obj: dict[str, Any], rv: str) -> None:
        key = key_of(obj)
        with self.lock:
            self.rv = rv or self.rv
            before = self.items.get(key)
            if kind == "DELETED":
                self.items.pop(key, None)
                differs = before is not None
            else:
                self.items[key] = value = self.keep(obj)
                differs = before != value
        if differs:
            self.changed()


def key_of(obj: dict[str, Any]) -> str:
    """`namespace/name`, or `name` for a cluster-scoped object."""
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name')}".lstrip("/")


def presence(obj: dict[str, Any]) -> bool:
    """A `keep` that keeps only that the object exists: nothing but its coming and going wakes anyone."""
    return True


"""An in-memory Store that behaves like the API server's optimistic concurrency, and lies on demand.

Objects get a resourceVersion on every write; `replace` and `delete` need the current one, as
the API server does. `inject` makes the nth matching call fail in a chosen way, so a test can
reach each failure branch of a verb deterministically:
- `conflict`: answer as if someone wrote first (replace/delete: not applied; create: exists);
- `lost_applied`: apply the write, then lose the answer (OutcomeUnknown);
- `lost`: lose the request before it is applied (OutcomeUnknown);
- `timeout`: the server does not answer, nothing applied: a read raises TryAgainLater, a write
  OutcomeUnknown (as `KubeAPI` does); and, as `KubeAPI` takes the server for unreachable then,
  every later call of this invocation raises TryAgainLater until `new_invocation()`;
- `error`: the server answers 5xx (TryAgainLater), nothing applied; later calls go out as usual;
- `stale`: a read returns the version before the last write of that object.

Created objects get a `creationTimestamp` (one-second resolution, as the API server writes it)
from `clock`, so the reconciler's grace period can be tested on a fake clock.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from whereabouts.errors import OutcomeUnknown, TryAgainLater
from whereabouts.k8s.store import Store

ACTIONS = ("conflict", "lost_applied", "lost", "timeout", "error", "stale")
WRITES = ("create", "replace", "delete")


@dataclass
class Fault:
    op: str  # get, create, replace, delete, list
    plural: str
    action: str
    nth: int | None = 1  # the nth matching call, or every one (None)
    seen: int = field(default=0, compare=False)

    def fires(self, op: str, plural: str) -> bool:
        if (op, plural) != (self.op, self.plural):
            return False
        self.seen += 1
        return self.nth is None or self.seen == self.nth


class FakeStore(Store):
    def __init__(self, namespace: str = "ns", clock: Callable[[], datetime] | None = None) -> None:
        self.namespace = namespace
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.unreachable = ""  # why this invocation's requests are refused (a request timed out)
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.previous: dict[tuple[str, str], dict[str, Any]] = {}
        self.faults: list[Fault] = []
        self.calls: Counter[tuple[str, str]] = Counter()
        self._version = 0

    # --- test controls ----------------------------------------------------------------------

    def inject(self, op: str, plural: str, action: str, nth: int | None = 1) -> None:
        assert action in ACTIONS, action
        self.faults.append(Fault(op, plural, action, nth))

    def new_invocation(self) -> None:
        """A new invocation has its own connection: forget that an earlier one timed out."""
        self.unreachable = ""

    def put(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store `obj` as another writer would (a new resourceVersion)."""
        return self._write(plural, copy.deepcopy(obj))

    def names(self, plural: str) -> list[str]:
        return sorted(name for (p, name) in self.objects if p == plural)

    def obj(self, plural: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((plural, name))

    # --- the Store interface -------------------------------------------------------------------

    def _fault(self, op: str, plural: str) -> str | None:
        self.calls[(op, plural)] += 1
        if self.unreachable:
            raise TryAgainLater(self.unreachable)
        for fault in self.faults:
            if fault.fires(op, plural):
                if fault.action == "timeout":
                    self.unreachable = f"fake: {op} {plural} timed out earlier in this invocation"
                    if op in WRITES:
                        raise OutcomeUnknown(f"fake: {op} {plural} timed out; it may or may not have been applied")
                    raise TryAgainLater(f"fake: {op} {plural} timed out")
                if fault.action == "error":
                    raise TryAgainLater(f"fake: {op} {plural} answered 503")
                if fault.action == "lost":
                    raise OutcomeUnknown(f"fake: {op} {plural} lost before it was applied")
                return fault.action
        return None

    def _write(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        key = (plural, obj["metadata"]["name"])
        if key in self.objects:
            self.previous[key] = self.objects[key]
        self._version += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self._version)
        obj["metadata"].setdefault("namespace", self.namespace)
        self.objects[key] = obj
        return copy.deepcopy(obj)

    def _answer(self, action: str | None, result: Any) -> Any:
        if action == "lost_applied":
            raise OutcomeUnknown("fake: the answer was lost after the write was applied")
        return result

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        action = self._fault("get", plural)
        key = (plural, name)
        found = self.previous.get(key) if action == "stale" and key in self.previous else self.objects.get(key)
        return copy.deepcopy(found)

    def create(self, plural: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        action = self._fault("create", plural)
        if action == "conflict" or (plural, obj["metadata"]["name"]) in self.objects:
            return None
        new = copy.deepcopy(obj)
        new["metadata"].pop("resourceVersion", None)
        new["metadata"]["creationTimestamp"] = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        return self._answer(action, self._write(plural, new))

    def replace(self, plural: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        action = self._fault("replace", plural)
        current = self.objects.get((plural, obj["metadata"]["name"]))
        if action == "conflict" or current is None:
            return None
        if obj["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            return None
        return self._answer(action, self._write(plural, copy.deepcopy(obj)))

    def delete(self, plural: str, name: str, resource_version: str) -> bool:
        action = self._fault("delete", plural)
        current = self.objects.get((plural, name))
        if action == "conflict" or current is None or current["metadata"]["resourceVersion"] != resource_version:
            return False
        del self.objects[(plural, name)]
        self.previous.pop((plural, name), None)
        return self._answer(action, True)

    def list(self, plural: str, label_selector: str = "") -> list[dict[str, Any]]:
        self._fault("list", plural)
        key, _, value = label_selector.partition("=")
        return [copy.deepcopy(o) for (p, _), o in sorted(self.objects.items())
                if p == plural and (not label_selector or (o["metadata"].get("labels") or {}).get(key) == value)]

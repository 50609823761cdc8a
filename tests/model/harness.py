"""Run CNI invocations, reconciler sweeps and controller passes as threads that a test steps call by call.

Each operation runs in a thread of its own and blocks before every Store call until the scheduler
lets it go, with a fate for that call: applied, applied with its answer lost, not applied with its
answer lost, timed out (as `KubeAPI`: every later request of the operation is refused, the Lease
too), or the process crashes there (before the call, or after it was applied). Only one thread
runs at a time, so a run is decided entirely by the sequence of steps, and shrinks with it.

Node locks and Leases are the scheduler's: a lock wait makes the operation not runnable until
the holder lets go (a crashed process lets go of its flock at once; its Lease is taken as
expired, time being abstract here), so a lock wait never blocks the scheduler.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from whereabouts.errors import OutcomeUnknown, TryAgainLater
from whereabouts.k8s.store import Store
from whereabouts.plugin.nodelock import NodeLock

FATES = ("ok", "lost_applied", "lost", "timeout", "crash", "applied_crash")
PARK_SECONDS = 30.0  # a thread that neither parks nor ends in this long is a bug of the harness


class Crashed(BaseException):
    """The simulated process stopped here: no handler of the code under test may catch it."""


class Op:
    """One invocation in flight: `state` is running, gate (at a Store call), lock (waiting) or done."""

    def __init__(self, kind: str, fn: Callable[[Op], Any], **about: Any) -> None:
        self.kind, self.fn, self.about = kind, fn, about
        self.state = "running"
        self.call = ""  # the Store call it waits at
        self.fate = "ok"
        self.lock_key: Any = None
        self.dead = ""  # "crash" or "timeout": how its later calls fail
        self.killed = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.crashed = False
        self.seen = False  # its end was accounted for by the model

    @property
    def ok(self) -> bool:
        return self.state == "done" and not self.crashed and self.error is None

    def __repr__(self) -> str:
        about = ",".join(f"{k}={v}" for k, v in self.about.items())
        return f"<{self.kind} {about} {self.state} {self.call}>"


_current = threading.local()


def current_op() -> Op:
    return _current.op


class Scheduler:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.ops: list[Op] = []
        self.locks: dict[Any, Op] = {}

    # --- the test's side -------------------------------------------------------------------

    def start(self, op: Op) -> Op:
        self.ops.append(op)
        threading.Thread(target=self._run, args=(op,), daemon=True, name=op.kind).start()
        self._wait_parked(op)
        return op

    def runnable(self) -> list[Op]:
        return [op for op in self.ops if op.state == "gate" or (op.state == "lock" and op.lock_key not in self.locks)]

    def in_flight(self) -> list[Op]:
        return [op for op in self.ops if op.state != "done"]

    def advance(self, op: Op, fate: str = "ok") -> None:
        with self.cond:
            op.fate, op.state = fate, "running"
            self.cond.notify_all()
        self._wait_parked(op)

    def finish(self, op: Op, limit: int = 1000) -> None:
        """Run `op` on with every call applied until it ends (others move only if it waits for their lock)."""
        for _ in range(limit):
            if op.state == "done":
                return
            if op in self.runnable():
                self.advance(op)
            else:
                self.advance(self.runnable()[0])
        raise AssertionError(f"{op} did not end in {limit} steps")

    def kill_all(self) -> None:
        """End every thread still in flight (between examples)."""
        for op in self.in_flight():
            with self.cond:
                op.killed, op.dead, op.state = True, "crash", "running"
                self.cond.notify_all()
            self._wait_parked(op)

    def _wait_parked(self, op: Op) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: op.state != "running", PARK_SECONDS):
                raise AssertionError(f"{op} neither reached a Store call nor ended")

    # --- the operation's side -----------------------------------------------------------------

    def _run(self, op: Op) -> None:
        _current.op = op
        try:
            op.result = op.fn(op)
        except Crashed:
            op.crashed = True
        except BaseException as e:  # what the invocation reported as its failure
            op.error = e
        finally:
            with self.cond:
                for key in [k for k, holder in self.locks.items() if holder is op]:
                    del self.locks[key]  # a stopped process holds nothing
                op.state = "done"
                self.cond.notify_all()

    def gate(self, op: Op, call: str) -> str:
        """Park before a Store call; the fate the scheduler chose for it."""
        self._check(op)
        with self.cond:
            op.call, op.state = call, "gate"
            self.cond.notify_all()
            self.cond.wait_for(lambda: op.state == "running")
        self._check(op)
        return op.fate

    def lock(self, op: Op, key: Any) -> None:
        with self.cond:
            if key in self.locks:
                op.lock_key, op.state, op.call = key, "lock", f"lock {key}"
                self.cond.notify_all()
                self.cond.wait_for(lambda: op.state == "running")
            op.lock_key = None
        self._check(op)
        with self.cond:
            assert key not in self.locks, (key, self.locks[key])
            self.locks[key] = op

    def unlock(self, op: Op, key: Any) -> None:
        with self.cond:
            if self.locks.get(key) is op:
                del self.locks[key]

    @staticmethod
    def _check(op: Op) -> None:
        if op.dead == "crash" or op.killed:
            raise Crashed()


SCHEDULER: Scheduler | None = None  # the one in use; set by the test around each run


class ModelNodeLock(NodeLock):
    """The node lock with the scheduler's exclusion in place of flock; the note stays in the file."""

    def acquire(self) -> bool:
        assert SCHEDULER is not None
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            SCHEDULER.lock(current_op(), ("node", self.path))
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            assert SCHEDULER is not None
            SCHEDULER.unlock(current_op(), ("node", self.path))


class ModelLease:
    """A Lease of the cluster; after a timeout it is refused as every request of that invocation is."""

    def __init__(self, name: str) -> None:
        self.name, self.waited, self.attempts, self.renewals = name, 0.0, 1, 0

    def acquire(self) -> None:
        op = current_op()
        if op.dead == "timeout":
            raise TryAgainLater(f"Lease {self.name}: the API server was taken as unreachable")
        assert SCHEDULER is not None
        SCHEDULER.lock(op, ("lease", self.name))

    def release(self) -> None:
        assert SCHEDULER is not None
        SCHEDULER.unlock(current_op(), ("lease", self.name))


class GatedStore(Store):
    """One operation's view of the shared store: every call waits for its turn and meets its fate.

    `failure(text, unknown)` makes the error the caller's client raises: CNI errors for the plugin,
    `KubeError` for the operator. `cluster` answers the operator's reads of Pods and Nodes.
    """

    def __init__(self, store: Store, op: Op, failure: Callable[[str, bool], Exception], cluster: Any = None) -> None:
        self.store, self.op, self.failure, self.cluster = store, op, failure, cluster
        self.namespace = store.namespace

    def _call(self, what: str, write: bool, apply: Callable[[], Any]) -> Any:
        assert SCHEDULER is not None
        if self.op.dead == "timeout":
            raise self.failure(f"model: {what} refused: an earlier request timed out", False)
        fate = SCHEDULER.gate(self.op, what)
        if fate == "timeout":
            self.op.dead = "timeout"
            raise self.failure(f"model: {what} timed out", write)
        if fate == "crash" or (fate == "applied_crash" and not write):
            self.op.dead = "crash"
            raise Crashed()
        if not write or fate == "ok":
            return apply()
        if fate == "lost":
            raise self.failure(f"model: {what} lost before it was applied", True)
        apply()
        if fate == "applied_crash":
            self.op.dead = "crash"
            raise Crashed()
        raise self.failure(f"model: {what} applied, its answer lost", True)

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        return self._call(f"get {plural}/{name}", False, lambda: self.store.get(plural, name))

    def list(self, plural: str, label_selector: str = "") -> list[dict[str, Any]]:
        return self._call(f"list {plural}", False, lambda: self.store.list(plural, label_selector))

    def create(self, plural: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        return self._call(f"create {plural}/{obj['metadata']['name']}", True, lambda: self.store.create(plural, obj))

    def replace(self, plural: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        return self._call(f"replace {plural}/{obj['metadata']['name']}", True, lambda: self.store.replace(plural, obj))

    def delete(self, plural: str, name: str, resource_version: str) -> bool:
        return self._call(f"delete {plural}/{name}", True, lambda: self.store.delete(plural, name, resource_version))

    # --- what the operator's Kube reads besides the store ------------------------------------

    def pod_refs(self) -> set[str]:
        return self._call("list pods", False, lambda: set(self.cluster.live_pods()))

    def pod_exists(self, podref: str) -> bool:
        return self._call(f"get pod {podref}", False, lambda: podref in self.cluster.live_pods())

    def node_names(self) -> set[str]:
        return self._call("list nodes", False, lambda: set(self.cluster.nodes))


def plugin_failure(text: str, unknown: bool) -> Exception:
    return OutcomeUnknown(text) if unknown else TryAgainLater(text)

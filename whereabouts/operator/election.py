"""The node-slice controller's leadership: one replica writes, the others stand by.

Who may take the Lease and what is written is `whereabouts.core.leases` (client-go's rules, counted
on our own clock only: a replica lives long enough to count a dead leader's duration); this module
does the requests, on the official client. The leader renews every retry period and stops leading
once it could not for the renew deadline.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from whereabouts.core.leases import Sighting, claim, expiry, holder_of, is_free, lease_object, release, renewal
from whereabouts.operator.kubeclient import Kube

log = structlog.get_logger("node-slices")


class Elector:
    """Leadership on the `coordination.k8s.io/v1` Lease `name`; `leading` is set while we hold it."""

    def __init__(self, kube: Kube, name: str, identity: str, duration: float, renew_deadline: float,
                 retry_period: float, on_change: Callable[[], None], stop: threading.Event) -> None:
        from kubernetes import client

        self.coord = client.CoordinationV1Api(kube.api)
        self.kube, self.name, self.identity = kube, name, identity
        self.duration_s = max(1, math.ceil(duration))
        self.renew_deadline, self.retry_period = renew_deadline, retry_period
        self.on_change, self.stop = on_change, stop
        self.leading = threading.Event()
        self.seen = Sighting()
        self.renewed = 0.0
        self.other = ""  # the other replica last seen leading

    def _read(self) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            resp = self.coord.read_namespaced_lease(self.name, self.kube.namespace, _preload_content=False,
                                                    _request_timeout=self._timeout())
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return json.loads(resp.data)

    def _write(self, lease: dict[str, Any]) -> None:
        self.coord.replace_namespaced_lease(self.name, self.kube.namespace, lease, _preload_content=False,
                                            _request_timeout=self._timeout())

    def _timeout(self) -> tuple[float, float]:
        t = min(self.kube.timeout, self.renew_deadline)
        return (t, t)

    def try_once(self) -> bool:
        """One attempt to take or renew the Lease; True when we hold it now."""
        from kubernetes.client.exceptions import ApiException

        try:
            lease = self._read()
            if lease is None:
                body = lease_object(self.name, self.kube.namespace,
                                    claim(None, self.identity, self.duration_s, time.time()))
                self.coord.create_namespaced_lease(self.kube.namespace, body, _preload_content=False,
                                                   _request_timeout=self._timeout())
                return True
            spec = lease.get("spec") or {}
            now = time.monotonic()
            since = self.seen.see(lease["metadata"]["resourceVersion"], now)
            if not is_free(spec, self.identity) and now < expiry(spec, since, self.duration_s, now):
                holder = holder_of(spec)
                if holder != self.other and not self.leading.is_set():
                    log.info("standing by: another replica leads", lease=f"{self.kube.namespace}/{self.name}",
                             holder=holder)
                self.other = holder
                return False
            ours = holder_of(spec) == self.identity
            lease["spec"] = renewal(spec, time.time()) if ours else claim(spec, self.identity, self.duration_s,
                                                                            time.time())
            self._write(lease)
            return True
        except ApiException as e:
            if e.status != 409:
                log.warning("lease request failed", lease=self.name, error=f"{e.status} {e.reason}")
            return False
        except Exception as e:  # noqa: BLE001 - unreachable or slow: the next period tries again
            log.warning("lease request failed", lease=self.name, error=str(e) or type(e).__name__)
            return False

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.monotonic()
            if self.try_once():
                self.renewed = now
                if not self.leading.is_set():
                    log.info("leading", lease=f"{self.kube.namespace}/{self.name}", identity=self.identity)
                    self.leading.set()
                    self.on_change()
            elif self.leading.is_set() and now - self.renewed >= self.renew_deadline:
                log.warning("lost the lease", lease=f"{self.kube.namespace}/{self.name}", identity=self.identity)
                self.leading.clear()
            self.stop.wait(self.retry_period)

    def release(self) -> None:
        """Clear the holder so that a standby takes over at once rather than after the Lease's duration."""
        if not self.leading.is_set():
            return
        self.leading.clear()
        try:
            lease = self._read()
            if lease is None or holder_of(lease.get("spec") or {}) != self.identity:
                return
            lease["spec"] = release(lease["spec"], time.time())
            self._write(lease)
            log.info("released the lease", lease=f"{self.kube.namespace}/{self.name}")
        except Exception as e:  # noqa: BLE001 - best effort: it expires anyway
            log.warning("could not release the lease", lease=self.name, error=str(e) or type(e).__name__)

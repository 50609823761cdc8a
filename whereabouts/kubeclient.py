"""The operator commands' access to Kubernetes, through the official `kubernetes` client.

The CNI verbs use the lean `whereabouts.kubeapi` because every pod attach pays for
start-up; the operator commands are long-running or interactive, so they use the
official client and its full kubeconfig support. Every API failure becomes a
`KubeError` with a one-line message here, so the CLI never shows a traceback.
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from whereabouts.errors import CorruptPool
from whereabouts.kubeconfig import DEFAULT_NAMESPACE
from whereabouts.pool import GROUP, VERSION, Allocation, remove_allocation
from whereabouts.reconcile import PoolView, Reservation, snapshot, unheld, view_pool
from whereabouts.store import POOLS, RESERVATIONS

TIMEOUT = 30
PAGE = 500
MAX_CONFLICTS = 20
T = TypeVar("T")


class KubeError(Exception):
    """An API call failed; the message is one line meant for an operator."""


def _message(e: Exception) -> str:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import MaxRetryError

    if isinstance(e, MaxRetryError) and e.reason is not None:
        return _message(e.reason)
    if isinstance(e, ApiException):
        try:
            reason = json.loads(e.body or "{}").get("message") or e.reason
        except ValueError:
            reason = e.reason
        return f"{e.status} {reason}"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _call(what: str, call: Callable[[], T], absent: tuple[int, ...] = ()) -> T | None:
    """One API call: None when it answers a status in `absent`, a `KubeError` naming `what` on any failure."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return call()
    except ApiException as e:
        if e.status in absent:
            return None
        raise KubeError(f"{what}: {_message(e)}") from None
    except (HTTPError, OSError) as e:
        raise KubeError(f"{what}: {_message(e)}") from None


@dataclass
class Removed:
    """An entry a pool write took out."""

    pool: PoolView
    offset: int
    alloc: Allocation


class Kube:
    """The calls the operator commands make, in one namespace for whereabouts objects."""

    def __init__(self, api: Any, namespace: str) -> None:
        from kubernetes import client

        self.api = api
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def close(self) -> None:
        self.api.close()

    # --- pools and reservations ------------------------------------------------------

    def _custom(self, verb: str, plural: str, *args: Any, absent: tuple[int, ...] = (), **kw: Any) -> Any:
        """`<verb>_namespaced_custom_object` on our group in our namespace."""
        method = getattr(self.custom, f"{verb}_namespaced_custom_object")
        what = f"cannot {verb} {plural} {args[0] if args else ''}".rstrip() + f" in namespace {self.namespace}"
        return _call(what, lambda: method(GROUP, VERSION, self.namespace, plural, *args, _request_timeout=TIMEOUT,
                                          **kw), absent)

    def list_pools(self) -> list[dict[str, Any]]:
        return list(self._custom("list", POOLS).get("items") or [])

    def get_pool(self, name: str) -> dict[str, Any] | None:
        return self._custom("get", POOLS, name, absent=(404,))

    def list_reservations(self) -> list[dict[str, Any]]:
        return list(self._custom("list", RESERVATIONS).get("items") or [])

    def get_reservation(self, name: str) -> dict[str, Any] | None:
        return self._custom("get", RESERVATIONS, name, absent=(404,))

    def replace_pool(self, obj: dict[str, Any]) -> bool:
        """Write the pool if it is unchanged since it was read (its resourceVersion); False on a conflict."""
        return self._custom("replace", POOLS, obj["metadata"]["name"], obj, absent=(404, 409)) is not None

    def delete_reservation(self, name: str, resource_version: str) -> bool:
        """Delete a reservation only as it was read; False when it changed or is gone."""
        from kubernetes import client

        body = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version=resource_version))
        return self._custom("delete", RESERVATIONS, name, body=body, absent=(404, 409)) is not None

    def remove_allocations(self, name: str, choose: Callable[[PoolView], Iterable[int]],
                           first: dict[str, Any] | None = None) -> list[Removed]:
        """Remove the entries `choose` picks, deciding again from a fresh read after each conflict.

        `first` is the pool as already read: its resourceVersion makes the write fail
        if anything changed since, so nothing decided on an old read is ever written.
        """
        obj = first
        for attempt in range(MAX_CONFLICTS):
            obj = copy.deepcopy(obj) if obj is not None else self.get_pool(name)
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
            if self.replace_pool(view.pool.raw):
                return removed
            obj = None
            time.sleep(min(0.5, 0.01 * 2**attempt) * random.uniform(0.5, 1.5))
        raise KubeError(f"IPPool {name}: {MAX_CONFLICTS} write conflicts in a row; try again")

    def release_reservations(self, removed: list[Removed]) -> list[Reservation]:
        """Delete the reservations the removed entries held, unless an entry still in a pool holds one too.

        With named networks one address can be held by one pod in two pools, and a
        pool's name admits several network names: the pools are read again to tell.
        Each deletion is conditional on the reservation being as read.
        """
        held: dict[str, Reservation] = {}
        for r in removed:
            for name in r.pool.reservation_names(r.offset):
                obj = self.get_reservation(name)
                if obj is not None and Reservation(obj).held_by(r.alloc):
                    held[name] = Reservation(obj)
        if not held:
            return []
        free = unheld(snapshot(self.list_pools(), [res.raw for res in held.values()]))
        return [res for res in free if self.delete_reservation(res.name, res.resource_version)]

    # --- pods --------------------------------------------------------------------------

    def pod_refs(self) -> set[str]:
        """`namespace/name` of every pod in the cluster, read page by page as raw JSON (only names are needed)."""
        refs: set[str] = set()
        token = None
        while True:
            resp: Any = _call("cannot list pods in all namespaces", lambda: self.core.list_pod_for_all_namespaces(
                limit=PAGE, _continue=token, _preload_content=False, _request_timeout=TIMEOUT))
            body = json.loads(resp.data)
            refs.update(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in body.get("items") or [])
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                return refs

    def pod_exists(self, podref: str) -> bool:
        namespace, _, name = podref.partition("/")
        return _call(f"cannot read pod {podref}", lambda: self.core.read_namespaced_pod(
            name, namespace, _preload_content=False, _request_timeout=TIMEOUT), absent=(404,)) is not None


def connect(kubeconfig: str, namespace: str | None) -> Kube:
    """A client from the kubeconfig; the namespace defaults to its context's, else kube-system.

    In a pod (a CronJob or Deployment) without that kubeconfig, the pod's service account is used.
    """
    import yaml
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    if os.pathsep not in kubeconfig and not os.path.exists(kubeconfig):
        if not os.environ.get("KUBERNETES_SERVICE_HOST"):
            raise KubeError(f"kubeconfig {kubeconfig} does not exist (use --kubeconfig or set $KUBECONFIG)")
        cfg = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=cfg)
        except ConfigException as e:
            raise KubeError(f"no kubeconfig at {kubeconfig} and no usable service account: {e}") from None
        return Kube(client.ApiClient(cfg), namespace or DEFAULT_NAMESPACE)
    try:
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        api = config.new_client_from_config(config_file=kubeconfig)
    except (ConfigException, OSError, ValueError, TypeError, KeyError, yaml.YAMLError) as e:
        raise KubeError(f"cannot load kubeconfig {kubeconfig}: {_message(e)}") from None
    context = (active or {}).get("context") or {}
    return Kube(api, namespace or context.get("namespace") or DEFAULT_NAMESPACE)

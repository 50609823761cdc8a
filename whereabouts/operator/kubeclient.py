"""The operator commands' access to Kubernetes, through the official `kubernetes` client.

The CNI verbs use the lean `whereabouts.k8s.api` because every pod attach pays for
start-up; the operator commands are long-running or interactive, so they use the
official client and its full kubeconfig support. Every API failure becomes a
`KubeError` with a one-line message here, so the CLI never shows a traceback.
Every call has a timeout and is not retried by urllib3: a hung API server costs
one `--request-timeout`, not four 30-second attempts.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from whereabouts.k8s.kubeconfig import DEFAULT_NAMESPACE
from whereabouts.core.pool import GROUP, VERSION
from whereabouts.k8s.store import Store

DEFAULT_TIMEOUT = 10.0
PAGE = 500
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


def _causes(e: BaseException) -> Iterator[BaseException]:
    """`e` and what it wraps: urllib3 nests the socket error in `reason`, `args` or the exception chain."""
    seen: set[int] = set()
    todo = [e]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [x for x in (getattr(e, "reason", None), e.__cause__, e.__context__, *e.args)
                 if isinstance(x, BaseException)]


def _unreachable(e: Exception, server: str, timeout: float) -> str:
    """A network failure, naming the server: a timeout says which option to raise, a refusal says why."""
    from urllib3.exceptions import NewConnectionError
    from urllib3.exceptions import TimeoutError as Urllib3Timeout

    causes = list(_causes(e))
    refused = [c for c in causes if isinstance(c, NewConnectionError)]
    if not refused and any(isinstance(c, (Urllib3Timeout, TimeoutError)) for c in causes):
        return f"{server} did not answer within {timeout:g}s (--request-timeout)"
    errno = [c for c in causes if isinstance(c, OSError) and c.strerror]
    if refused or errno:
        return f"cannot connect to {server}: {errno[0].strerror if errno else _message(e)}"
    return f"{server}: {_message(e)}"


class Kube(Store):
    """The Store over the official client, and the other calls the operator commands make."""

    def __init__(self, api: Any, namespace: str, timeout: float) -> None:
        from kubernetes import client

        self.api = api
        self.namespace = namespace
        self.server = str(api.configuration.host)
        self.timeout = timeout
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def close(self) -> None:
        self.api.close()

    def _call(self, what: str, call: Callable[..., T], absent: tuple[int, ...] = ()) -> T | None:
        """One API call with the request timeout: None when it answers a status in `absent`, else a `KubeError`."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            # (connect, read): a bare float is ignored by older clients, which only accept an int.
            return call(_request_timeout=(self.timeout, self.timeout))
        except ApiException as e:
            if e.status in absent:
                return None
            raise KubeError(f"{what}: {_message(e)}") from None
        except (HTTPError, OSError) as e:
            raise KubeError(f"{what}: {_unreachable(e, self.server, self.timeout)}") from None

    # --- the Store interface (whereabouts.k8s.store) -------------------------------------

    def _custom(self, verb: str, plural: str, *args: Any, absent: tuple[int, ...] = (), **kw: Any) -> Any:
        """`<verb>_namespaced_custom_object` on our group in our namespace."""
        method = getattr(self.custom, f"{verb}_namespaced_custom_object")
        what = f"cannot {verb} {plural} {args[0] if args else ''}".rstrip() + f" in namespace {self.namespace}"
        return self._call(what, lambda **t: method(GROUP, VERSION, self.namespace, plural, *args, **kw, **t), absent)

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        return self._custom("get", plural, name, absent=(404,))

    def create(self, plural: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        return self._custom("create", plural, obj, absent=(409,))

    def replace(self, plural: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        return self._custom("replace", plural, obj["metadata"]["name"], obj, absent=(404, 409))

    def delete(self, plural: str, name: str, resource_version: str) -> bool:
        from kubernetes import client

        body = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version=resource_version))
        return self._custom("delete", plural, name, body=body, absent=(404, 409)) is not None

    def list(self, plural: str, label_selector: str = "") -> list[dict[str, Any]]:
        """Every object of the namespace; `label_selector` narrows them, e.g. to the blocks of a range."""
        return list(self._custom("list", plural, label_selector=label_selector or None).get("items") or [])

    # --- pods --------------------------------------------------------------------------

    def pod_refs(self) -> set[str]:
        """`namespace/name` of every pod in the cluster, read page by page as raw JSON (only names are needed)."""
        refs: set[str] = set()
        token = None
        while True:
            resp: Any = self._call("cannot list pods in all namespaces", lambda **t: (
                self.core.list_pod_for_all_namespaces(limit=PAGE, _continue=token, _preload_content=False, **t)))
            body = json.loads(resp.data)
            refs.update(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in body.get("items") or [])
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                return refs

    def node_names(self) -> set[str]:
        """The name of every Node (the owners of node-affine blocks)."""
        resp: Any = self._call("cannot list nodes", lambda **t: self.core.list_node(_preload_content=False, **t))
        return {n["metadata"]["name"] for n in json.loads(resp.data).get("items") or []}

    def pod_exists(self, podref: str) -> bool:
        namespace, _, name = podref.partition("/")
        return self._call(f"cannot read pod {podref}", lambda **t: self.core.read_namespaced_pod(
            name, namespace, _preload_content=False, **t), absent=(404,)) is not None


def _official_client() -> Any:
    """The `kubernetes` package, or a `KubeError` saying how to get it (the CNI plugin runs without it)."""
    try:
        import kubernetes.client
        import kubernetes.config
    except ImportError as e:
        raise KubeError(f"the operator commands need the Python package kubernetes, which {sys.executable} cannot "
                        f"import ({e}): install whereabouts with its dependencies") from None
    return kubernetes


def connect(kubeconfig: str, namespace: str | None, context: str | None = None,
            timeout: float = DEFAULT_TIMEOUT) -> Kube:
    """A client from the kubeconfig and its `context` (default: the current one); the namespace defaults to
    that context's, else kube-system.

    In a pod (a CronJob or Deployment) without that kubeconfig, the pod's service account is used.
    """
    kubernetes = _official_client()
    import yaml
    from kubernetes.config.config_exception import ConfigException

    cfg = kubernetes.client.Configuration()
    chosen: dict[str, Any] | None = {}  # the kubeconfig context; none in a pod
    if os.pathsep not in kubeconfig and not os.path.exists(kubeconfig):
        if context is not None or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            raise KubeError(f"kubeconfig {kubeconfig} does not exist (use --kubeconfig or set $KUBECONFIG)")
        try:
            kubernetes.config.load_incluster_config(client_configuration=cfg)
        except ConfigException as e:
            raise KubeError(f"no kubeconfig at {kubeconfig} and no usable service account: {e}") from None
    else:
        try:
            contexts, active = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)
            chosen = active if context is None else next((c for c in contexts if c.get("name") == context), None)
            if chosen is None:
                names = ", ".join(str(c.get("name")) for c in contexts)
                raise KubeError(f"no context {context!r} in kubeconfig {kubeconfig} (it has: {names})")
            kubernetes.config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
        except (ConfigException, OSError, ValueError, TypeError, KeyError, yaml.YAMLError) as e:
            raise KubeError(f"cannot load kubeconfig {kubeconfig}: {_message(e)}") from None
    cfg.retries = False  # a failure is reported at once; a `--loop` sweep tries again at the next interval
    api = kubernetes.client.ApiClient(cfg)
    return Kube(api, namespace or ((chosen or {}).get("context") or {}).get("namespace") or DEFAULT_NAMESPACE, timeout)

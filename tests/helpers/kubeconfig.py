"""Write small kubeconfig files for tests."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

# Keyword arguments of write_kubeconfig() that belong to the cluster entry;
# every other extra keyword goes into the user entry.
_CLUSTER_KEYS = {"certificate_authority_data", "insecure_skip_tls_verify", "tls_server_name", "proxy_url"}


def write_kubeconfig(
    path: str | os.PathLike,
    server: str,
    ca_file: str | os.PathLike | None = None,
    token: str | None = None,
    namespace: str | None = None,
    **extra,
) -> Path:
    """Write a kubeconfig with one cluster, one user and one current context.

    ``namespace`` sets the context's namespace (the plugin keeps its objects
    in the namespace of the current context). Extra keywords, with ``_`` for
    ``-``, go into the user entry (``client_certificate="..."``,
    ``token_file="..."``) except ``certificate_authority_data``,
    ``insecure_skip_tls_verify``, ``tls_server_name`` and ``proxy_url``,
    which go into the cluster entry, and ``cluster_name``, ``user_name`` and
    ``context_name``, which name the entries. The file is written with mode
    0600; returns its path.
    """
    path = Path(path)
    cluster_name = extra.pop("cluster_name", "test-cluster")
    user_name = extra.pop("user_name", "test-user")
    context_name = extra.pop("context_name", "test")

    cluster: dict = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority"] = str(Path(ca_file).resolve())
    user: dict = {}
    if token is not None:
        user["token"] = token
    for key, value in extra.items():
        target = cluster if key in _CLUSTER_KEYS else user
        target[key.replace("_", "-")] = value

    context: dict = {"cluster": cluster_name, "user": user_name}
    if namespace is not None:
        context["namespace"] = namespace

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": context_name, "context": context}],
        "current-context": context_name,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    os.replace(tmp, path)
    return path

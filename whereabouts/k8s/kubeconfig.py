"""Read a kubeconfig into what one HTTPS connection needs.

The common forms (token, tokenFile, client certificate and key, CA, as files or
inline `-data`, `insecure-skip-tls-verify`, `tls-server-name`) are read here
directly. Exec plugins and auth providers are left to the official `kubernetes`
client's loader, imported only for them (its import cost is in doc/design.md).
"""

from __future__ import annotations

import os

from whereabouts import jsontext
from whereabouts.errors import InvalidConfig, TryAgainLater
from whereabouts.files import FileRefused, read_regular_file
from whereabouts.core.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_NAMESPACE = "kube-system"


class ClusterAccess(Record):
    """What one HTTPS connection to the API server needs."""

    __slots__ = ("server", "namespace", "token", "token_file", "ca_file", "ca_data", "cert_file", "key_file",
                 "cert_data", "key_data", "insecure", "tls_server_name")
    _defaults = {"namespace": DEFAULT_NAMESPACE, "token": "", "token_file": "", "ca_file": "", "ca_data": "",
                 "cert_file": "", "key_file": "", "cert_data": b"", "key_data": b"", "insecure": False,
                 "tls_server_name": ""}
    server: str
    namespace: str
    token: str
    token_file: str
    ca_file: str
    ca_data: str
    cert_file: str
    key_file: str
    cert_data: bytes
    key_data: bytes
    insecure: bool
    tls_server_name: str

    def bearer_token(self) -> str:
        """The token, re-read from `tokenFile` so that a rotated token is picked up."""
        if self.token_file:
            try:
                return read_regular_file(self.token_file).decode("utf-8").strip()
            except FileRefused as e:
                raise InvalidConfig(f"the kubeconfig tokenFile cannot be used: {e}") from None
            except OSError as e:
                raise TryAgainLater(f"cannot read the kubeconfig tokenFile {self.token_file}: "
                                    f"{e.strerror}") from None
            except UnicodeDecodeError:
                raise InvalidConfig(f"the kubeconfig tokenFile {self.token_file} is not UTF-8 text") from None
        return self.token


def _parse(text: str, path: str) -> dict[str, Any]:
    try:
        if text.lstrip().startswith("{"):
            data = jsontext.loads(text)
        else:
            import yaml

            data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except Exception as e:  # noqa: BLE001 - any parse failure is a config error naming the file
        raise InvalidConfig(f"kubeconfig {path} cannot be parsed: {e}") from None
    if not isinstance(data, dict):
        raise InvalidConfig(f"kubeconfig {path} is not a mapping")
    return data


def _entry(data: dict[str, Any], section: str, name: str, path: str) -> dict[str, Any]:
    for entry in data.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(section[:-1]) or {}
            if isinstance(body, dict):
                return body
    raise InvalidConfig(f"kubeconfig {path}: no {section[:-1]} named {name!r}")


def _decode_data(value: Any, what: str, path: str) -> bytes:
    """A `-data` field; one that decodes to nothing is an error, never a fallback to a default."""
    import base64  # only kubeconfigs with inline `-data` pay for it

    try:
        data = base64.b64decode(value, validate=False)
    except (ValueError, TypeError):
        raise InvalidConfig(f"kubeconfig {path}: {what} is not valid base64") from None
    if not data.strip():
        raise InvalidConfig(f"kubeconfig {path}: {what} is empty once decoded")
    return data


def _bool(value: Any, what: str, path: str) -> bool:
    """A kubeconfig boolean: true/false only, as kubectl reads it (the string "false" is no false)."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidConfig(f"kubeconfig {path}: {what} must be true or false, not {jsontext.dumps(value)[:40]}")
    return value


def load(path: str) -> ClusterAccess:
    try:
        text = read_regular_file(path).decode("utf-8")
    except FileNotFoundError:
        raise TryAgainLater(
            f"kubeconfig {path} does not exist (is the whereabouts DaemonSet running on this node?)"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidConfig(f"cannot read kubeconfig {path}: {e}") from None
    data = _parse(text, path)
    ctx_name = data.get("current-context")
    if not ctx_name:
        contexts = data.get("contexts") or []
        if len(contexts) != 1 or not isinstance(contexts[0], dict):
            raise InvalidConfig(f"kubeconfig {path} has no current-context")
        ctx_name = contexts[0].get("name")
    context = _entry(data, "contexts", ctx_name, path)
    cluster = _entry(data, "clusters", context.get("cluster"), path)
    user = _entry(data, "users", context.get("user"), path) if context.get("user") else {}
    namespace = context.get("namespace") or DEFAULT_NAMESPACE
    if user.get("exec") or user.get("auth-provider"):
        return _load_with_official_client(path, namespace)
    base = os.path.dirname(os.path.abspath(path))

    def resolve(p: str) -> str:
        return p if not p or os.path.isabs(p) else os.path.join(base, p)

    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise InvalidConfig(f"kubeconfig {path}: cluster server {server!r} is not an http(s) URL")
    ca_data = cluster.get("certificate-authority-data")
    insecure = _bool(cluster.get("insecure-skip-tls-verify"), "insecure-skip-tls-verify", path)
    if insecure and (ca_data or cluster.get("certificate-authority")):
        raise InvalidConfig(f"kubeconfig {path}: a certificate authority and insecure-skip-tls-verify together "
                            "are contradictory; remove one")
    return ClusterAccess(
        server=server.rstrip("/"),
        namespace=str(namespace),
        token=str(user.get("token") or ""),
        token_file=resolve(str(user.get("tokenFile") or "")),
        ca_file=resolve(str(cluster.get("certificate-authority") or "")),
        ca_data=_decode_data(ca_data, "certificate-authority-data", path).decode("ascii", "replace") if ca_data else "",
        cert_file=resolve(str(user.get("client-certificate") or "")),
        key_file=resolve(str(user.get("client-key") or "")),
        cert_data=_decode_data(user["client-certificate-data"], "client-certificate-data", path)
        if user.get("client-certificate-data")
        else b"",
        key_data=_decode_data(user["client-key-data"], "client-key-data", path) if user.get("client-key-data") else b"",
        insecure=insecure,
        tls_server_name=str(cluster.get("tls-server-name") or ""),
    )


def _load_with_official_client(path: str, namespace: str) -> ClusterAccess:
    """Exec plugins and auth providers: let the official loader produce a token or cert files."""
    try:
        from kubernetes import client, config
    except ImportError:  # pragma: no cover - it is a dependency
        raise InvalidConfig(f"kubeconfig {path} needs the 'kubernetes' package for its auth form") from None
    cfg = client.Configuration()
    try:
        config.load_kube_config(config_file=path, client_configuration=cfg)
    except Exception as e:  # noqa: BLE001 - the loader raises many types
        raise TryAgainLater(f"kubeconfig {path}: the auth plugin failed: {e}") from None
    # The official client keeps the header under "BearerToken" (36+), older ones under "authorization".
    keys = cfg.api_key or {}
    auth = keys.get("BearerToken") or keys.get("authorization") or ""
    return ClusterAccess(
        server=cfg.host.rstrip("/"),
        namespace=namespace,
        token=auth.split(" ", 1)[1] if auth.startswith("Bearer ") else "",
        ca_file=cfg.ssl_ca_cert or "",
        cert_file=cfg.cert_file or "",
        key_file=cfg.key_file or "",
        insecure=not cfg.verify_ssl,
        tls_server_name=getattr(cfg, "tls_server_name", None) or "",
    )

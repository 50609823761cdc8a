"""A lean HTTPS client for the few Kubernetes API calls one invocation makes.

Our own HTTP/1.1 (`http1.py`) + `ssl` over one kept-alive connection: a whole
Lease and IPPool round costs ~70 ms this way against ~290 ms through the
official client. Every
failure becomes a CNI error here: unreachable or overloaded servers are transient
(code 11), refusals are I/O failures (code 5) that name what was refused.
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.parse

from whereabouts.errors import IOFailure, TryAgainLater
from whereabouts.http1 import Connection as HTTPConnection, Disconnected
from whereabouts.record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on the hot path (~3 ms)
if TYPE_CHECKING:
    from typing import Any

    from whereabouts.kubeconfig import Connection

REQUEST_TIMEOUT = 10.0


class Response(Record):
    __slots__ = ("status", "body")
    status: int
    body: dict[str, Any]

    @property
    def reason(self) -> str:
        return str(self.body.get("message") or self.body.get("reason") or "")


def _pem_path(data: bytes, name: str) -> str:
    """A path for in-memory PEM data, so `-data` keys never touch the disk."""
    fd = os.memfd_create(name)
    os.write(fd, data)
    return f"/proc/self/fd/{fd}"


def ssl_context(conn: Connection) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if conn.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif conn.ca_data:
            ctx.load_verify_locations(cadata=conn.ca_data)
        elif conn.ca_file:
            ctx.load_verify_locations(cafile=conn.ca_file)
        else:
            ctx.load_default_certs()
        cert = conn.cert_file or (_pem_path(conn.cert_data, "client-cert") if conn.cert_data else "")
        key = conn.key_file or (_pem_path(conn.key_data, "client-key") if conn.key_data else "")
        if cert:
            ctx.load_cert_chain(cert, key or None)
    except (OSError, ssl.SSLError) as e:
        raise IOFailure(f"cannot load the TLS material named in the kubeconfig: {e}") from None
    return ctx


class KubeAPI:
    """Requests against one API server, all bounded by one deadline."""

    def __init__(self, conn: Connection, deadline: float | None = None) -> None:
        self.conn = conn
        self.namespace = conn.namespace
        self.deadline = deadline
        url = urllib.parse.urlsplit(conn.server)
        self._https = url.scheme == "https"
        self._host = url.hostname or "localhost"
        self._port = url.port
        self._prefix = url.path.rstrip("/")
        self._ssl = ssl_context(conn) if self._https else None
        token = conn.bearer_token()
        self._headers = {"Accept": "application/json", "User-Agent": "whereabouts-cni"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._http: HTTPConnection | None = None
        self.requests = 0

    def _timeout(self) -> float:
        if self.deadline is None:
            return REQUEST_TIMEOUT
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TryAgainLater(f"deadline passed before the request to {self.conn.server} could be made")
        return min(REQUEST_TIMEOUT, left)

    def _connect(self, timeout: float) -> HTTPConnection:
        """A new connection; the server is checked against `tls-server-name` when the kubeconfig sets one."""
        return HTTPConnection(self._host, self._port, context=self._ssl if self._https else None,
                              sni=self.conn.tls_server_name, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None) -> Response:
        """One call. Returns any 2xx/404/409 response; raises on everything else."""
        payload = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        headers = dict(self._headers)
        if payload is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            timeout = self._timeout()
            reused = self._http is not None and self._http.sock is not None
            try:
                if reused:
                    self._http.settimeout(timeout)
                else:
                    self._http = self._connect(timeout)
                self.requests += 1
                self._http.request(method, self._prefix + path, payload, headers)
                resp = self._http.response()
                data = self._http.read()
            except ssl.SSLCertVerificationError as e:
                self.close()
                raise IOFailure(f"TLS verification of {self.conn.server} failed: {e.verify_message}") from None
            except (Disconnected, BrokenPipeError, ConnectionResetError) as e:
                # A kept-alive connection the server closed: retry once on a new one.
                self.close()
                if reused and attempt == 1:
                    continue
                raise TryAgainLater(f"API server {self.conn.server} closed the connection: {e}") from None
            except OSError as e:
                self.close()
                raise TryAgainLater(f"cannot reach the API server {self.conn.server}: {e}") from None
            return self._check(method, path, resp.status, data)
        raise AssertionError("unreachable")

    def _check(self, method: str, path: str, status: int, data: bytes) -> Response:
        try:
            body = json.loads(data) if data else {}
        except ValueError:
            body = {"message": data[:200].decode("utf-8", "replace")}
        if not isinstance(body, dict):
            body = {}
        resp = Response(status, body)
        if 200 <= status < 300 or status in (404, 409):
            return resp
        what = f"{method} {path}"
        if status == 429 or status >= 500:
            raise TryAgainLater(f"API server busy or failing ({status}) on {what}: {resp.reason}")
        if status == 401:
            raise IOFailure(f"API server refused our credentials (401) on {what}: check the kubeconfig token")
        if status == 403:
            raise IOFailure(f"forbidden (403) on {what}: {resp.reason}")
        raise IOFailure(f"API server answered {status} on {what}: {resp.reason}")

    def watch(self, path: str, timeout: float) -> Watch:
        """A watch on a connection of its own, for at most `timeout` seconds."""
        return Watch(self, path, min(timeout, self._timeout()))

    def sibling(self) -> KubeAPI:
        """The same server and credentials on a connection of its own, for another thread."""
        other = object.__new__(KubeAPI)
        other.__dict__.update(self.__dict__)
        other._http, other.requests = None, 0
        return other

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # --- paths ---------------------------------------------------------------------

    def custom_path(self, plural: str, name: str = "") -> str:
        from whereabouts.pool import GROUP, VERSION

        base = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{plural}"
        return f"{base}/{name}" if name else base

    def lease_path(self, name: str = "") -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"
        return f"{base}/{name}" if name else base


class Watch:
    """The event stream of one watch request; each read waits only as long as the caller says."""

    def __init__(self, api: KubeAPI, path: str, timeout: float) -> None:
        self._conn: HTTPConnection | None = None
        try:
            conn = api._connect(timeout)
            self._conn = conn
            sep = "&" if "?" in path else "?"
            conn.request("GET", f"{api._prefix}{path}{sep}watch=1&timeoutSeconds={max(1, int(timeout) + 1)}",
                         None, api._headers)
            resp = conn.response()
            if resp.status != 200 or not resp.chunked:
                self.close()
        except OSError:
            self.close()

    def next(self, until: float) -> dict[str, Any] | None:
        """The next event, or None when the stream ended, failed, or nothing came before `until` (monotonic).

        A read cut short by the time limit may leave half a line behind, so the stream is closed then.
        """
        left = until - time.monotonic()
        if self._conn is None or self._conn.sock is None or left <= 0:
            return None
        try:
            self._conn.settimeout(left)
            line = self._conn.readline()
            event = json.loads(line) if line else None
        except (OSError, ValueError):
            event = None
        if not isinstance(event, dict):
            self.close()
            return None
        return event

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

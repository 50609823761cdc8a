"""A lean HTTPS client for the few Kubernetes API calls one invocation makes.

Our own HTTP/1.1 (`http1.py`) + TLS (`transport.py`) over one kept-alive connection, rather than
the official client, whose import alone costs more than a whole ADD (doc/design.md,
*Start-up cost*). Every failure becomes a CNI error here: unreachable or overloaded servers are transient
(code 11), refusals are I/O failures (code 5) that name what was refused.
"""

from __future__ import annotations

import os
import time

from whereabouts import jsontext
from whereabouts.errors import InvalidConfig, IOFailure, OutcomeUnknown, TryAgainLater
from whereabouts.files import FileRefused, read_regular_file
from whereabouts.k8s.http1 import Connection as HTTPConnection
from whereabouts.k8s.transport import Context, SSLCertVerificationError, SSLError, client_context
from whereabouts.k8s.urls import Server, quote
from whereabouts.core.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from whereabouts.k8s.kubeconfig import ClusterAccess

# The longest one request may take, within the invocation's deadline. After one request timed out
# the server is taken as unreachable for the rest of the invocation (see `KubeAPI.request`).
REQUEST_TIMEOUT = 10.0
# A 429 (refused unprocessed) is sent again at most this many times per request.
MAX_BUSY_RETRIES = 5


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


def ssl_context(conn: ClusterAccess) -> Context:
    """TLS as the kubeconfig says. Its files are read as regular files of bounded size (see files.py)
    and handed to TLS as data, so that a FIFO or a device named there cannot block or exhaust us."""
    try:
        ca_pem = None
        if conn.ca_data:
            ca_pem = conn.ca_data
        elif conn.ca_file:
            ca_pem = read_regular_file(conn.ca_file).decode("ascii", "replace")
        cert_data = read_regular_file(conn.cert_file) if conn.cert_file else conn.cert_data
        key_data = read_regular_file(conn.key_file) if conn.key_file else conn.key_data
        return client_context(insecure=conn.insecure, ca_pem=ca_pem,
                              cert_path=_pem_path(cert_data, "client-cert") if cert_data else None,
                              key_path=_pem_path(key_data, "client-key") if cert_data and key_data else None)
    except FileRefused as e:
        raise InvalidConfig(f"the TLS material named in the kubeconfig cannot be used: {e}") from None
    except (OSError, SSLError) as e:
        raise IOFailure(f"cannot load the TLS material named in the kubeconfig: {e}") from None


class KubeAPI:
    """Requests against one API server, all bounded by one deadline."""

    def __init__(self, conn: ClusterAccess, deadline: float | None = None) -> None:
        self.conn = conn
        self.namespace = conn.namespace
        self.deadline = deadline
        url = Server(conn.server)
        self._https, self._host, self._port, self._prefix = url.https, url.host, url.port, url.prefix
        self._ssl = ssl_context(conn) if self._https else None
        token = conn.bearer_token()
        self._headers = {"Accept": "application/json", "User-Agent": "whereabouts-cni"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._http: HTTPConnection | None = None
        self._unreachable = ""  # why the server is taken as unreachable, once a request timed out
        self.requests = 0

    def _until(self, timeout: float = REQUEST_TIMEOUT) -> float:
        """When the next request must be answered by (monotonic): within `timeout` and the deadline."""
        if self._unreachable:
            raise TryAgainLater(self._unreachable)
        now = time.monotonic()
        if self.deadline is None:
            return now + timeout
        if self.deadline <= now:
            raise TryAgainLater(f"deadline passed before the request to {self.conn.server} could be made")
        return min(now + timeout, self.deadline)

    def _connect(self, until: float) -> HTTPConnection:
        """A new connection; the server is checked against `tls-server-name` when the kubeconfig sets one."""
        return HTTPConnection(self._host, self._port, context=self._ssl if self._https else None,
                              sni=self.conn.tls_server_name, deadline=until)

    def request(self, method: str, path: str, body: Any = None, timeout: float = REQUEST_TIMEOUT) -> Response:
        """One call. Returns any 2xx/404/409 response; raises a CNI error on everything else.

        Only a GET is ever sent twice (once more on a new connection when a kept-alive one turns
        out closed). A write goes out on a connection checked to be alive, and when its answer is
        lost it raises OutcomeUnknown: the caller reads the object again instead of resending.
        A request that times out marks the server unreachable, so that the requests that would
        follow in this invocation fail at once instead of each waiting out its own timeout.
        """
        payload = jsontext.dumps(body, compact=True).encode() if body is not None else None
        headers = dict(self._headers)
        if payload is not None:
            headers["Content-Type"] = "application/json"
        what = f"{method} {path}"
        attempt = busy = 0
        while True:
            attempt += 1
            until = self._until(timeout)
            began, sent = time.monotonic(), False
            try:
                reused = self._http is not None and self._http.sock is not None
                if reused and method != "GET" and self._http.stale():
                    self.close()
                    reused = False
                if reused:
                    self._http.deadline = until
                else:
                    self._http = self._connect(until)
                self.requests += 1
                sent = True
                self._http.request(method, self._prefix + path, payload, headers)
                resp = self._http.response()
                data = self._http.read()
            except SSLCertVerificationError as e:
                self.close()
                raise IOFailure(f"TLS verification of {self.conn.server} failed: {e.verify_message}") from None
            except TimeoutError:
                self.close()
                why = f"API server {self.conn.server} did not answer {what} within {time.monotonic() - began:.1f}s"
                if timeout >= REQUEST_TIMEOUT:  # not a short best-effort call: the server is taken as hung
                    self._unreachable = why
                if sent and method != "GET":
                    raise OutcomeUnknown(f"{why}; the write may or may not have been applied") from None
                raise TryAgainLater(why) from None
            except OSError as e:
                self.close()
                if not sent:
                    raise TryAgainLater(f"cannot reach the API server {self.conn.server}: {e}") from None
                if method == "GET":
                    if reused and attempt == 1 + busy:
                        continue  # a kept-alive connection the server had closed
                    raise TryAgainLater(f"API server {self.conn.server} failed to answer {what}: {e}") from None
                raise OutcomeUnknown(f"the answer to {what} from {self.conn.server} was lost ({e}); "
                                     "the write may or may not have been applied") from None
            if resp.status == 429 and busy < MAX_BUSY_RETRIES:
                # Refused before any processing (rate limits, a CRD's storage being set up): safe to send
                # again, writes included, after the pause the server asks for, within the deadline.
                pause = _retry_after(resp.headers.get("retry-after", ""))
                if time.monotonic() + pause < until:
                    busy += 1
                    time.sleep(pause)
                    continue
            return self._check(method, path, resp.status, data)

    def _check(self, method: str, path: str, status: int, data: bytes) -> Response:
        what = f"{method} {path}"
        try:
            body = jsontext.loads(data) if data else {}
        except (ValueError, RecursionError):
            body = None
        if 200 <= status < 300 and not isinstance(body, dict):
            why = f"API server answered {what} with {status} and a body that is not a JSON object"
            if method == "GET":
                raise IOFailure(why)
            raise OutcomeUnknown(f"{why}; the write may or may not have been applied")
        if not isinstance(body, dict):
            body = {"message": data[:200].decode("utf-8", "replace")}
        resp = Response(status, body)
        if 200 <= status < 300 or status in (404, 409):
            return resp
        if status == 429 or status >= 500:
            raise TryAgainLater(f"API server busy or failing ({status}) on {what}: {resp.reason}")
        if status == 401:
            raise IOFailure(f"API server refused our credentials (401) on {what}: check the kubeconfig token")
        if status == 403:
            raise IOFailure(f"forbidden (403) on {what}: {resp.reason}")
        raise IOFailure(f"API server answered {status} on {what}: {resp.reason}")

    def watch(self, path: str, timeout: float) -> Watch:
        """A watch on a connection of its own, for at most `timeout` seconds (a broken one yields no events)."""
        until = min(time.monotonic() + timeout, self._until())
        conn: HTTPConnection | None = None
        try:
            conn = self._connect(until)
            sep = "&" if "?" in path else "?"
            seconds = max(1, int(until - time.monotonic()) + 1)
            conn.request("GET", f"{self._prefix}{path}{sep}watch=1&timeoutSeconds={seconds}", None, self._headers)
            resp = conn.response()
            if resp.status != 200 or not resp.chunked:
                conn.close()
                conn = None
        except OSError:
            if conn is not None:
                conn.close()
            conn = None
        return Watch(conn)

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
        from whereabouts.core.pool import GROUP, VERSION

        return self._path(f"/apis/{GROUP}/{VERSION}", plural, name)

    def lease_path(self, name: str = "") -> str:
        return self._path("/apis/coordination.k8s.io/v1", "leases", name)

    def _path(self, api: str, plural: str, name: str) -> str:
        """A resource path with namespace and name percent-encoded: neither can break the request line."""
        base = f"{api}/namespaces/{quote(self.namespace)}/{plural}"
        return f"{base}/{quote(name)}" if name else base


class Watch:
    """The event stream of one watch request; each read waits only as long as the caller says."""

    def __init__(self, conn: HTTPConnection | None) -> None:
        self._conn = conn

    def next(self, until: float) -> dict[str, Any] | None:
        """The next event, or None when the stream ended, failed, or nothing came before `until` (monotonic).

        A read cut short by the time limit may leave half a line behind, so the stream is closed then.
        """
        left = until - time.monotonic()
        if self._conn is None or self._conn.sock is None or left <= 0:
            return None
        try:
            self._conn.deadline = until
            line = self._conn.readline()
            event = jsontext.loads(line) if line else None
        except (OSError, ValueError, RecursionError):
            event = None
        if not isinstance(event, dict):
            self.close()
            return None
        return event

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None


def _retry_after(value: str) -> float:
    """A 429's Retry-After in seconds (1 when absent or a date), capped so that a waiter keeps polling."""
    try:
        return min(max(float(value), 0.05), 1.0)
    except ValueError:
        return 1.0

"""A TLS-terminating HTTP/1.1 proxy in front of the real API server that injects faults on the wire.

Why a real proxy and not a mock of `kubeapi.py`: what decides whether two pods can get one
address is how the plugin's own HTTP client, TLS, keep-alive retry and deadlines react to an
answer that never comes, and the API server really applies (or does not apply) each write. So
the plugin runs unchanged as a process, with a kubeconfig pointing here, and every request goes
through to the real server unless a `Rule` says otherwise.

`reset_*` closes with SO_LINGER 0, so the client gets an RST; over TLS, Python's `ssl` (OpenSSL 3)
reports that to the client much like a FIN without close_notify, so to the plugin a reset and a
dropped answer mostly look alike. Both exist because which one a client sees is not ours to pick.

Stdlib only: one accept thread plus one thread per client connection; `stop()` closes every
socket and joins every thread. Certificates come from the `openssl` CLI (`make_certs`).
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import subprocess
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

ACTIONS = ("drop_answer", "reset_before", "reset_after", "delay", "delay_answer", "blackhole", "trickle", "hold",
           "hold_answer")


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def make_certs(directory: Path) -> Certs:
    """A throw-away CA and a serving certificate for IP 127.0.0.1 signed by it (EC P-256, 2 days)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "ca.cnf").write_text("[req]\ndistinguished_name=dn\nprompt=no\nx509_extensions=ext\n[dn]\n"
                              "CN=whereabouts-faultproxy-ca\n[ext]\nbasicConstraints=critical,CA:TRUE\n"
                              "keyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n")
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
                                  "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                                  "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for cmd in (
        ["openssl", "req", "-x509", *ec, "-config", "ca.cnf", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2"],
        ["openssl", "req", "-new", *ec, "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr"],
        ["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
         "-days", "2", "-extfile", "server.ext", "-out", "server.crt"],
    ):
        subprocess.run(cmd, cwd=d, check=True, stdin=subprocess.DEVNULL, capture_output=True)
    return Certs(d / "ca.crt", d / "server.crt", d / "server.key")


class Request(NamedTuple):
    method: str
    path: str  # without the query
    query: dict[str, str]
    raw: bytes  # head and body as received, forwarded as they are

    @property
    def plural(self) -> str:
        """The resource of `/.../namespaces/<ns>/<plural>[/<name>]` (else the last path segment)."""
        parts = [p for p in self.path.split("/") if p]
        if "namespaces" in parts and len(parts) > parts.index("namespaces") + 2:
            return parts[parts.index("namespaces") + 2]
        return parts[-1] if parts else ""

    @property
    def watch(self) -> bool:
        return self.query.get("watch") in ("1", "true")


class Entry(NamedTuple):
    method: str
    path: str
    status: int | None  # what the API server answered; None when the request was not forwarded
    action: str  # "forward", or the action of the rule that fired


@dataclass
class Rule:
    """Fires on the `nth` (1-based) request matching method, plural and predicate, or on every one.

    `seconds` is the pause of `delay`/`delay_answer` and the pause per byte of `trickle`.
    `hold` keeps each request it fires on from the API server until the test calls `release()`
    (then it is forwarded) or the client goes away first (then it never is); `hold_answer` forwards
    it and keeps the answer until `release()`. The test waits for `wait_held(n)`, so it knows the
    callers are parked at exactly that point, whatever the load.
    Watch requests are streams, not calls: a rule sees them only with `watches=True`, and
    then only `reset_before`, `delay` and `blackhole` apply to them.
    """

    action: str
    method: str | None = None
    plural: str | None = None
    nth: int | None = 1
    predicate: Callable[[Request], bool] | None = None
    seconds: float = 0.0
    watches: bool = False
    seen: int = field(default=0, compare=False)
    fired: int = field(default=0, compare=False)
    held: int = field(default=0, compare=False)
    _held: threading.Condition = field(default_factory=threading.Condition, compare=False, repr=False)
    _released: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)

    def __post_init__(self) -> None:
        assert self.action in ACTIONS, self.action

    def wait_held(self, count: int = 1, timeout: float = 60) -> None:
        """Return once `count` requests have been held by this rule; fail after `timeout`."""
        with self._held:
            if not self._held.wait_for(lambda: self.held >= count, timeout):
                raise AssertionError(f"{self.held} of {count} requests reached the {self.action} rule within "
                                     f"{timeout}s")

    def release(self) -> None:
        """Let every held request (and every later one this rule fires on) through to the API server."""
        self._released.set()

    def _arrived(self) -> None:
        with self._held:
            self.held += 1
            self._held.notify_all()

    def matches(self, req: Request) -> bool:
        if req.watch and not self.watches:
            return False
        if (self.method and req.method != self.method) or (self.plural and req.plural != self.plural):
            return False
        if self.predicate is not None and not self.predicate(req):
            return False
        self.seen += 1
        return self.nth is None or self.seen == self.nth


class _Reader:
    """Buffered reads of lines and exact byte counts from a (TLS) socket; EOFError at the end."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                raise EOFError("line too long")
            self._fill()
        end = self.buf.index(b"\n") + 1
        out, self.buf = self.buf[:end], self.buf[end:]
        return out

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def head(self) -> tuple[bytes, list[bytes], dict[str, str]]:
        """The raw head, the start line's words, and the headers (names lower-cased)."""
        first = self.line()
        raw, headers = first, {}
        while True:
            line = self.line()
            raw += line
            if not line.strip():
                return raw, first.split(), headers
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()


def _read_response(up: _Reader, method: str) -> tuple[int, bytes, bool]:
    """A whole response from upstream as raw bytes (framing kept), its status, and whether the
    connection ends after it."""
    raw = b""
    while True:
        head, words, headers = up.head()
        raw += head
        status = int(words[1])
        if not 100 <= status < 200:
            break
    close = headers.get("connection", "").lower() == "close"
    if method == "HEAD" or status in (204, 304):
        return status, raw, close
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = up.line()
            raw += size_line
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:  # trailer fields, then the empty line
                    line = up.line()
                    raw += line
                    if not line.strip():
                        return status, raw, close
            raw += up.exact(size + 2)
    if "content-length" in headers:
        return status, raw + up.exact(int(headers["content-length"])), close
    try:  # delimited by the end of the connection
        while True:
            up._fill()
    except (EOFError, OSError):
        pass
    raw, up.buf = raw + up.buf, b""
    return status, raw, True


class _Upstream:
    """One kept-alive connection to the API server for one client connection, (re)opened on demand."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy, self.sock, self.reader, self.used = proxy, None, None, False

    def connected(self) -> ssl.SSLSocket:
        if self.sock is None:
            self.sock, self.used = self.proxy._connect_upstream(), False
            self.reader = _Reader(self.sock)
        return self.sock

    def exchange(self, req: Request) -> tuple[int, bytes]:
        """Status and raw answer; a kept-alive connection the server closed meanwhile is reopened once."""
        for attempt in (1, 2):
            try:
                self.connected().sendall(req.raw)
                status, answer, closes = _read_response(self.reader, req.method)
            except (EOFError, OSError):
                reused = self.used
                self.close()
                if reused and attempt == 1:
                    continue
                raise
            self.used = True
            if closes:
                self.close()
            return status, answer
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.proxy._close(self.sock)
        self.sock = self.reader = None


class FaultProxy:
    """The proxy. `rules` are matched in order; the first one that fires decides the request."""

    def __init__(self, upstream: str, upstream_ca: str | Path, certs: Certs) -> None:
        url = urllib.parse.urlsplit(upstream)
        self.up_host, self.up_port = url.hostname or "127.0.0.1", url.port or 443
        self.up_ctx = ssl.create_default_context(cafile=str(upstream_ca))
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(certs.cert), str(certs.key))
        self.certs = certs
        self.kubeconfig: Path | None = None  # set by the `fault_proxy` fixture: the plugin's way in
        self.rules: list[Rule] = []
        self.log: list[Entry] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._socks: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._acceptor: threading.Thread | None = None
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"

    # --- control ---------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True, name=f"faultproxy-{self.port}")
        self._acceptor.start()
        return self

    def set_rules(self, *rules: Rule) -> None:
        with self._lock:
            self.rules = list(rules)

    def clear(self) -> None:
        self.set_rules()

    def fired(self, action: str | None = None) -> list[Entry]:
        with self._lock:
            return [e for e in self.log if e.action != "forward" and (action is None or e.action == action)]

    def alive(self) -> list[threading.Thread]:
        """Threads still running (empty after a clean `stop()`)."""
        return [t for t in [self._acceptor, *self._threads] if t is not None and t.is_alive()]

    def stop(self) -> None:
        """Close every socket (unblocking every thread) and join every thread."""
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)  # no new connection threads after this
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                socket.socket.shutdown(s, socket.SHUT_RDWR)  # the plain shutdown, also on a TLS socket
            except OSError:
                pass
        for t in list(self._threads):
            t.join(timeout=5)

    # --- plumbing --------------------------------------------------------------------

    def _spawn(self, target: Callable, *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True, name=f"faultproxy-{self.port}")
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._socks.add(sock)
        if self._stopping.is_set():
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass
        return sock

    def _close(self, sock: socket.socket | None, reset: bool = False) -> None:
        if sock is None:
            return
        with self._lock:
            self._socks.discard(sock)
        try:
            if reset:  # linger 0: close() sends an RST instead of a FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        except OSError:
            pass

    def _record(self, req: Request, status: int | None, action: str) -> None:
        with self._lock:
            self.log.append(Entry(req.method, req.path, status, action))

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                raw, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._spawn(self._serve, raw)

    def _connect_upstream(self) -> ssl.SSLSocket:
        raw = socket.create_connection((self.up_host, self.up_port), timeout=30)
        try:
            return self._track(self.up_ctx.wrap_socket(raw, server_hostname=self.up_host))
        except BaseException:
            raw.close()
            raise

    def _serve(self, raw: socket.socket) -> None:
        """One client connection: requests in turn, each forwarded on one kept-alive upstream connection."""
        raw.settimeout(120)  # a safety net only: stop() unblocks every read
        conn: socket.socket | None = None
        up = _Upstream(self)
        try:
            self._track(raw)
            conn = self.ctx.wrap_socket(raw, server_side=True)
            with self._lock:
                self._socks.discard(raw)
            self._track(conn)
            client = _Reader(conn)
            while not self._stopping.is_set():
                head, words, headers = client.head()
                body = client.exact(int(headers.get("content-length") or 0))
                url = urllib.parse.urlsplit(words[1].decode("latin-1"))
                req = Request(words[0].decode("latin-1"), url.path, dict(urllib.parse.parse_qsl(url.query)),
                              head + body)
                with self._lock:
                    rule = next((r for r in self.rules if r.matches(req)), None)
                    if rule is not None:
                        rule.fired += 1
                action = rule.action if rule else "forward"
                if action == "reset_before":
                    self._record(req, None, action)
                    return self._close(conn, reset=True)
                if action == "blackhole":
                    self._record(req, None, action)
                    return self._hold(conn)
                if action == "hold":
                    rule._arrived()
                    if not self._hold(conn, rule._released):
                        return self._record(req, None, action)
                if action == "delay" and self._stopping.wait(rule.seconds):
                    return
                if req.watch:
                    return self._stream(req, conn, up.connected())
                try:
                    status, answer = up.exchange(req)
                except (EOFError, OSError, ValueError, IndexError):  # the API server failed: say so, 502
                    self._record(req, 502, "upstream failed")
                    return conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                self._record(req, status, action)
                if action in ("drop_answer", "reset_after"):
                    return self._close(conn, reset=action == "reset_after")
                if action == "delay_answer" and self._stopping.wait(rule.seconds):
                    return
                if action == "hold_answer":
                    rule._arrived()
                    if not self._hold(conn, rule._released):
                        return
                if action == "trickle":
                    for i in range(len(answer)):
                        conn.sendall(answer[i:i + 1])
                        if self._stopping.wait(rule.seconds):
                            return
                else:
                    conn.sendall(answer)
                if headers.get("connection", "").lower() == "close":
                    return
        except (EOFError, OSError, ValueError, IndexError):
            return  # the client went away, or sent garbage: end this connection
        finally:
            self._close(conn)
            self._close(raw)
            up.close()

    def _hold(self, conn: socket.socket, released: threading.Event | None = None) -> bool:
        """Answer nothing until `released` (True), or the client gives up (closes) or the proxy
        stops (False). A client sends nothing more while it waits for an answer: readable means closed."""
        while not self._stopping.is_set():
            if released is not None and released.is_set():
                return True
            if select.select([conn], [], [], 0.05)[0]:
                try:
                    if not conn.recv(65536):
                        return False
                except (OSError, ValueError):
                    return False
        return False

    def _stream(self, req: Request, conn: socket.socket, up: ssl.SSLSocket) -> None:
        """A watch: send the request, then relay bytes both ways until either side closes.

        One thread and `select` (with TLS's own buffered bytes checked by `pending()`), so no
        TLS socket is ever read and written by two threads at once."""
        up.sendall(req.raw)
        status = None
        other = {conn: up, up: conn}
        try:
            while not self._stopping.is_set():
                ready = [s for s in other if s.pending()] or select.select(list(other), [], [], 0.2)[0]
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    if s is up and status is None:
                        status = int(data.split(b" ", 2)[1])
                    other[s].sendall(data)
        except (OSError, ValueError, IndexError):
            return
        finally:
            self._record(req, status, "forward")

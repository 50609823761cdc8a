"""TCP and TLS for the plugin's one API-server connection, on CPython's `_socket` and `_ssl`.

`socket.py` and `ssl.py` are thin layers over these two C modules, but their import turns hundreds
of constants into enums: about 6 ms of CPU on every pod attach (doc/design.md, *Start-up cost*), for
nothing the plugin uses. The objects are the same ones those layers create (`ssl.SSLContext` is a
subclass of `_ssl._SSLContext`), so TLS behaves exactly as with `ssl`: the same defaults for a client
context (TLS 1.2 or newer, the certificate and the host name verified), the same errors
(`ssl.SSLError` is `_ssl.SSLError`). The operator side uses `ssl` and the official client as usual.
"""

from __future__ import annotations

import _socket
import _ssl
import time

SSLError = _ssl.SSLError
SSLCertVerificationError = _ssl.SSLCertVerificationError
Context = _ssl._SSLContext


def client_context(*, insecure: bool, ca_pem: str | None, cert_path: str | None, key_path: str | None) -> Context:
    """A client context as `ssl.SSLContext(PROTOCOL_TLS_CLIENT)` makes it; `ca_pem` None means the
    system's CAs. Raises `SSLError` or `OSError` when the material cannot be loaded."""
    ctx = _ssl._SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = _ssl.CERT_NONE
    elif ca_pem is not None:
        ctx.load_verify_locations(cadata=ca_pem)
    else:
        ctx.set_default_verify_paths()  # what ssl's load_default_certs() does on Linux
    if cert_path:
        ctx.load_cert_chain(cert_path, key_path)
    return ctx


class Socket(_socket.socket):
    """A `_socket.socket` that can be referred to weakly, as a TLS object refers to its socket."""

    __slots__ = ("__weakref__",)


def tcp_connect(host: str, port: int, deadline: float) -> Socket:
    """A connected TCP socket (Nagle off), trying each address of `host` in turn as
    `socket.create_connection` does, but all of them before `deadline` (monotonic), where that
    function gives each address the whole timeout; the first failure is raised when none answers."""
    first: OSError | None = None
    name = host.encode("ascii") if host.isascii() else host  # a str is always run through the idna codec
    for family, kind, proto, _, address in _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM):
        left = deadline - time.monotonic()
        if left <= 0:
            raise first or TimeoutError(f"no time left to connect to {host}")
        sock = Socket(family, kind, proto)
        try:
            sock.settimeout(left)
            sock.connect(address)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            return sock
        except OSError as e:
            sock.close()
            first = first or e
    raise first or OSError(f"no address found for {host}")


class TLSStream:
    """A TLS client connection over a connected socket, with the socket's reading interface.

    The handshake runs here, within the socket's timeout. A peer that closes without a TLS
    close_notify reads as the end of the stream, as `ssl.SSLSocket` reads it by default.
    """

    __slots__ = ("raw", "_tls")

    def __init__(self, context: Context, raw: Socket, server_name: str) -> None:
        if not server_name.isascii():
            server_name = server_name.encode("idna").decode("ascii")  # loads the idna codec only then
        self.raw = raw  # the TLS object holds the socket weakly: this reference keeps it open
        self._tls = context._wrap_socket(raw, False, server_name)
        self._tls.do_handshake()

    def settimeout(self, seconds: float) -> None:
        self.raw.settimeout(seconds)

    def fileno(self) -> int:
        return self.raw.fileno()

    def pending(self) -> int:
        """Decrypted bytes waiting to be read (select() on the socket does not see them)."""
        return self._tls.pending()

    def recv(self, size: int) -> bytes:
        try:
            return self._tls.read(size)
        except _ssl.SSLEOFError:
            return b""

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._tls.write(view):]

    def close(self) -> None:
        self.raw.close()

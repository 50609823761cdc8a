"""The HTTP/1.1 this plugin speaks to the API server, on a plain or TLS socket.

Not `http.client`, whose import loads the `email` package on every pod attach (the
start-up table in doc/design.md has the figures); the bytes go through `transport.py`.
The API server needs little: a request with an optional JSON body, and a response
framed by Content-Length, chunked transfer coding, or the end of the connection.
Anything else is a `ProtocolError`.
"""

from __future__ import annotations

import time

from whereabouts.k8s.transport import Context, TLSStream, tcp_connect

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_LINE = 65536  # status and header lines
MAX_HEADERS = 200
MAX_INFORMATIONAL = 8  # 1xx answers skipped before the real one
# The largest body we accept: a list of IPPools of a wide block-layout range stays far below it,
# and a hostile or broken server cannot make one invocation hold more than this in memory.
MAX_BODY = 64 << 20


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.1 as we read it."""


class Disconnected(ConnectionResetError):
    """The server closed the connection before it answered (e.g. an idle kept-alive one)."""


class DeadlineExceeded(TimeoutError):
    """The answer did not arrive in full before the connection's deadline."""


class ResponseHead:
    __slots__ = ("status", "headers", "chunked", "length", "will_close")

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        if length is not None and not self.chunked:
            if not length.strip().isdigit():
                raise ProtocolError(f"bad Content-Length {length!r}")
            self.length: int | None = int(length)
        else:
            self.length = None
        self.will_close = headers.get("connection", "").lower() == "close" or (
            self.length is None and not self.chunked)


class Connection:
    """One connection: request, then read that request's response, then the next request."""

    def __init__(self, host: str, port: int | None, *, context: Context | None, sni: str,
                 deadline: float) -> None:
        default = 443 if context is not None else 80
        self.host, self.port = host, port or default
        name = f"[{host}]" if ":" in host else host
        self._host_header = name if self.port == default else f"{name}:{self.port}"
        self.sock: Any = None  # a connected `_socket.socket` or a TLSStream over one
        self.deadline = deadline  # monotonic: no connect, send or read of this connection goes past it
        self._left()  # raises when the deadline has passed already
        raw = tcp_connect(host, self.port, deadline)
        try:
            raw.settimeout(self._left())  # the TLS handshake too
            self.sock = TLSStream(context, raw, sni or host) if context is not None else raw
        except BaseException:
            raw.close()
            raise
        self._buf = bytearray()  # deleting from the front of a bytearray is cheap; `bytes +=` is quadratic
        self._chunk_left = 0  # bytes left in the current chunk of a chunked body
        self._body_left = MAX_BODY  # body bytes the current response may still bring
        self._resp: ResponseHead | None = None
        self._body_done = True

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the deadline passed while talking to the server")
        return left

    def stale(self) -> bool:
        """Whether an idle kept-alive connection was closed (or sent something unasked) by the server.

        Checked before a request that must not be sent twice, so that it goes out on a connection
        that is known to be alive rather than being lost to a close the server made long before.
        """
        import select

        if self.sock is None:
            return True
        if isinstance(self.sock, TLSStream) and self.sock.pending():
            return True
        readable, _, _ = select.select([self.sock], [], [], 0)
        return bool(readable)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    # --- sending -------------------------------------------------------------------

    def request(self, method: str, target: str, body: bytes | None, headers: dict[str, str]) -> None:
        if self.sock is None or not self._body_done:
            raise ProtocolError("connection not ready for a request")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host_header}", "Accept-Encoding: identity"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        try:
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        except UnicodeEncodeError:
            raise ProtocolError("a request header or path is not Latin-1 text") from None
        self.sock.settimeout(self._left())
        self.sock.sendall(head + (body or b""))

    # --- receiving -----------------------------------------------------------------

    def _fill(self) -> bool:
        """Read more from the socket into the buffer, waiting no longer than the deadline;
        False at the end of the stream."""
        assert self.sock is not None
        self.sock.settimeout(self._left())
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise DeadlineExceeded("the server did not answer in full before the deadline") from None
        if not data:
            return False
        self._buf += data
        return True

    def _budget(self, n: int) -> None:
        """Count `n` more body bytes against MAX_BODY."""
        self._body_left -= n
        if self._body_left < 0:
            raise ProtocolError(f"the response body is larger than {MAX_BODY} bytes")

    def _line(self, limit: int = MAX_LINE) -> bytes:
        """One CRLF- (or LF-) terminated line of the head or of the chunk framing, without its end."""
        while True:
            end = self._buf.find(b"\n")
            if 0 <= end <= limit:
                line = bytes(self._buf[:end])
                del self._buf[:end + 1]
                return line.rstrip(b"\r")
            if end > limit or len(self._buf) > limit:
                raise ProtocolError("line too long")
            if not self._fill():
                raise Disconnected("connection closed")

    def response(self) -> ResponseHead:
        """Read a status line and headers (skipping a few 1xx answers); the body is read afterwards."""
        for _ in range(MAX_INFORMATIONAL + 1):
            try:
                status_line = self._line()
            except Disconnected:
                raise Disconnected("the server closed the connection without answering") from None
            parts = status_line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                raise ProtocolError(f"bad status line {status_line[:80]!r}")
            status = int(parts[1])
            headers: dict[str, str] = {}
            for _ in range(MAX_HEADERS + 1):
                line = self._line()
                if not line:
                    break
                name, sep, value = line.partition(b":")
                if not sep:
                    raise ProtocolError(f"bad header line {line[:80]!r}")
                headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
            else:
                raise ProtocolError("too many headers")
            if 100 <= status < 200:
                continue
            resp = ResponseHead(status, headers)
            if status in (204, 304):
                resp.length, resp.chunked = 0, False
            self._resp, self._body_done, self._chunk_left, self._body_left = resp, False, 0, MAX_BODY
            return resp
        raise ProtocolError(f"more than {MAX_INFORMATIONAL} informational (1xx) answers")

    def _next_chunk(self) -> bool:
        """Step to the next chunk of a chunked body; False after the last one (and its trailer)."""
        size_line = self._line()
        size_text = size_line.split(b";", 1)[0].strip()
        try:
            if len(size_text) > 16:
                raise ValueError
            size = int(size_text, 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {size_line[:40]!r}") from None
        self._budget(size)
        if size == 0:
            while self._line():  # trailer fields, then the empty line
                pass
            return False
        self._chunk_left = size
        return True

    def _take(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._fill():
                raise Disconnected("connection closed in the middle of a response body")
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _end_of_chunk(self) -> None:
        if self._take(2) != b"\r\n":
            raise ProtocolError("chunk not followed by CRLF")

    def read(self) -> bytes:
        """The whole body of the current response."""
        resp = self._resp
        assert resp is not None and not self._body_done
        if resp.chunked:
            parts = []
            while True:
                if self._chunk_left == 0:
                    if not self._next_chunk():
                        break
                parts.append(self._take(self._chunk_left))
                self._chunk_left = 0
                self._end_of_chunk()
            data = b"".join(parts)
        elif resp.length is not None:
            self._budget(resp.length)
            data = self._take(resp.length)
        else:
            had = len(self._buf)
            while self._fill():
                self._budget(len(self._buf) - had)
                had = len(self._buf)
            data = bytes(self._buf)
            self._buf.clear()
        self._finish(resp)
        return data

    def readline(self) -> bytes:
        """The next LF-terminated line of a streamed (chunked) body, or b"" at its end.
        Lines may span chunks; the chunk framing is taken out."""
        resp = self._resp
        assert resp is not None and resp.chunked
        out = bytearray()
        while not self._body_done:
            if self._chunk_left == 0:
                if not self._next_chunk():
                    self._finish(resp)
                    break
            while len(self._buf) < 1:
                if not self._fill():
                    raise Disconnected("connection closed in the middle of a response body")
            end = self._buf.find(b"\n", 0, self._chunk_left)
            take = end + 1 if end >= 0 else min(len(self._buf), self._chunk_left)
            out += self._buf[:take]
            del self._buf[:take]
            self._chunk_left -= take
            if self._chunk_left == 0:
                self._end_of_chunk()
            if end >= 0:
                return bytes(out)
        return bytes(out)

    def _finish(self, resp: ResponseHead) -> None:
        self._body_done, self._resp = True, None
        if resp.will_close:
            self.close()

"""The HTTP/1.1 this plugin speaks to the API server, on a plain or TLS socket.

Not `http.client`: importing it loads the `email` package, which costs about a
quarter of a whole ADD (~25 ms of ~100 on the project's machines), paid on every
pod attach. The API server needs little: a request with an optional JSON body,
and a response framed by Content-Length, chunked transfer coding, or the end of
the connection. Anything else is a `ProtocolError`.
"""

from __future__ import annotations

import socket
import ssl

MAX_LINE = 65536  # status and header lines; a watch event line may be longer (see Connection.readline)
MAX_HEADERS = 200


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.1 as we read it."""


class Disconnected(ConnectionResetError):
    """The server closed the connection before it answered (e.g. an idle kept-alive one)."""


class Response:
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

    def __init__(self, host: str, port: int | None, *, context: ssl.SSLContext | None, sni: str,
                 timeout: float) -> None:
        default = 443 if context is not None else 80
        self.host, self.port = host, port or default
        name = f"[{host}]" if ":" in host else host
        self._host_header = name if self.port == default else f"{name}:{self.port}"
        self.sock: socket.socket | ssl.SSLSocket | None = None
        raw = socket.create_connection((host, self.port), timeout)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = context.wrap_socket(raw, server_hostname=sni or host) if context is not None else raw
        except BaseException:
            raw.close()
            raise
        self._buf = b""
        self._chunk_left = 0  # bytes left in the current chunk of a chunked body
        self._resp: Response | None = None
        self._body_done = True

    def settimeout(self, timeout: float) -> None:
        if self.sock is not None:
            self.sock.settimeout(timeout)

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
        self.sock.sendall(head + (body or b""))

    # --- receiving -----------------------------------------------------------------

    def _fill(self) -> bool:
        """Read more from the socket into the buffer; False at the end of the stream."""
        assert self.sock is not None
        data = self.sock.recv(65536)
        if not data:
            return False
        self._buf += data
        return True

    def _line(self, limit: int = MAX_LINE) -> bytes:
        """One CRLF- (or LF-) terminated line of the head or of the chunk framing, without its end."""
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line, self._buf = self._buf[:end], self._buf[end + 1:]
                return line.rstrip(b"\r")
            if len(self._buf) > limit:
                raise ProtocolError("line too long")
            if not self._fill():
                raise Disconnected("connection closed")

    def response(self) -> Response:
        """Read a status line and headers (skipping 1xx answers); the body is read afterwards."""
        while True:
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
            resp = Response(status, headers)
            if status in (204, 304):
                resp.length, resp.chunked = 0, False
            self._resp, self._body_done, self._chunk_left = resp, False, 0
            return resp

    def _next_chunk(self) -> bool:
        """Step to the next chunk of a chunked body; False after the last one (and its trailer)."""
        size_line = self._line()
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {size_line[:40]!r}") from None
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
        data, self._buf = self._buf[:n], self._buf[n:]
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
            data = self._take(resp.length)
        else:
            while self._fill():
                pass
            data, self._buf = self._buf, b""
        self._finish(resp)
        return data

    def readline(self) -> bytes:
        """The next LF-terminated line of a streamed (chunked) body, or b"" at its end.
        Lines may span chunks; the chunk framing is taken out."""
        resp = self._resp
        assert resp is not None and resp.chunked
        out = b""
        while not self._body_done:
            if self._chunk_left == 0:
                if not self._next_chunk():
                    self._finish(resp)
                    break
            while len(self._buf) < 1:
                if not self._fill():
                    raise Disconnected("connection closed in the middle of a response body")
            piece = self._buf[: self._chunk_left]
            end = piece.find(b"\n")
            take = end + 1 if end >= 0 else len(piece)
            out += self._buf[:take]
            self._buf = self._buf[take:]
            self._chunk_left -= take
            if self._chunk_left == 0:
                self._end_of_chunk()
            if end >= 0:
                return out
        return out

    def _finish(self, resp: Response) -> None:
        self._body_done, self._resp = True, None
        if resp.will_close:
            self.close()

"""The HTTP/1.1 client against a scripted server on loopback: framing, keep-alive, streaming, errors.

The API server exercises the common paths in every other test; these pin the framings it
rarely or never sends (odd chunk boundaries, trailers, 1xx, close-delimited bodies).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from whereabouts.k8s import http1
from whereabouts.k8s.http1 import Connection, DeadlineExceeded, Disconnected, ProtocolError


class Server:
    """Accepts one connection; for each scripted answer reads one request, then sends the answer."""

    def __init__(self, answers: list[bytes], close_after: bool = True) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self._answers = answers
        self._close_after = close_after
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _read_request(self, conn: socket.socket, buf: bytes) -> tuple[bytes, bytes]:
        while b"\r\n\r\n" not in buf:
            data = conn.recv(4096)
            if not data:
                return b"", b""
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += conn.recv(4096)
        return head + b"\r\n\r\n" + rest[:length], rest[length:]

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        buf = b""
        with conn:
            for answer in self._answers:
                request, buf = self._read_request(conn, buf)
                self.requests.append(request)
                if answer:
                    conn.sendall(answer)
            if not self._close_after:
                conn.recv(1)

    def connect(self, seconds: float = 5) -> Connection:
        return Connection("127.0.0.1", self.port, context=None, sni="", deadline=time.monotonic() + seconds)


class Streamer(Server):
    """Reads one request, then sends what `produce` yields, pausing `pace` seconds between pieces,
    until the client hangs up or `produce` ends."""

    def __init__(self, produce, pace: float = 0.0) -> None:
        self._produce, self._pace = produce, pace
        super().__init__([])

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            self._read_request(conn, b"")
            try:
                for piece in self._produce():
                    conn.sendall(piece)
                    if self._pace:
                        time.sleep(self._pace)
                conn.recv(1)
            except OSError:
                pass


def test_content_length_bodies_on_one_kept_alive_connection():
    srv = Server([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
                  b'HTTP/1.1 409 Conflict\r\ncontent-length: 12\r\n\r\n{"code":409}'])
    conn = srv.connect()
    conn.request("GET", "/a", None, {"Accept": "application/json"})
    assert conn.response().status == 200 and conn.read() == b"{}"
    conn.request("PUT", "/b", b'{"x":1}', {"Content-Type": "application/json"})
    resp = conn.response()
    assert resp.status == 409 and conn.read() == b'{"code":409}'
    first, second = srv.requests
    assert first.startswith(b"GET /a HTTP/1.1\r\n") and f"Host: 127.0.0.1:{srv.port}".encode() in first
    assert b"Accept: application/json" in first and b"Content-Length" not in first
    assert second.startswith(b"PUT /b HTTP/1.1\r\n") and b"Content-Length: 7" in second
    assert second.endswith(b'\r\n\r\n{"x":1}')
    assert conn.sock is not None, "kept alive"


def test_chunked_body_with_extensions_and_trailer():
    body = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\n{\"a\r\n"
            b"A\r\n\":[1,2,3]}\r\n"
            b"0\r\nX-Trailer: yes\r\n\r\n")
    srv = Server([body, b"HTTP/1.1 204 No Content\r\n\r\n"])
    conn = srv.connect()
    conn.request("GET", "/", None, {})
    assert conn.response().chunked
    assert conn.read() == b'{"a":[1,2,3]}'
    conn.request("DELETE", "/x", None, {})
    assert conn.response().status == 204 and conn.read() == b""


def test_informational_answers_are_skipped():
    srv = Server([b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nk"])
    conn = srv.connect()
    conn.request("POST", "/", b"", {})
    assert conn.response().status == 201 and conn.read() == b"k"


def test_a_body_without_length_ends_with_the_connection():
    srv = Server([b"HTTP/1.0 200 OK\r\n\r\nuntil the end"])
    conn = srv.connect()
    conn.request("GET", "/", None, {})
    resp = conn.response()
    assert resp.will_close and conn.read() == b"until the end"
    assert conn.sock is None


def test_connection_close_header_closes_after_the_body():
    srv = Server([b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"], close_after=False)
    conn = srv.connect()
    conn.request("GET", "/", None, {})
    conn.response()
    assert conn.read() == b"ok" and conn.sock is None


def test_streamed_lines_across_chunks():
    events = [b'{"type":"ADDED","object":{"n":1}}\n', b'{"type":"MODIFIED","object":{"n":2}}\n']
    stream = b"".join(events)
    # Cut the two lines at awkward places: mid-line, right after a newline, one byte.
    cuts = [5, len(events[0]), len(events[0]) + 1, len(stream)]
    chunks, start = b"", 0
    for end in cuts:
        piece = stream[start:end]
        chunks += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        start = end
    srv = Server([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"])
    conn = srv.connect()
    conn.request("GET", "/watch", None, {})
    assert conn.response().chunked
    assert [conn.readline(), conn.readline(), conn.readline()] == [*events, b""]


def test_a_silent_stream_times_out():
    srv = Server([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"], close_after=False)
    conn = srv.connect()
    conn.request("GET", "/watch", None, {})
    conn.response()
    conn.deadline = time.monotonic() + 0.2
    with pytest.raises(TimeoutError):
        conn.readline()


@pytest.mark.parametrize("answer,error", [
    (b"", Disconnected),
    (b"SSH-2.0-OpenSSH\r\n\r\n", ProtocolError),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", ProtocolError),
    (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", ProtocolError),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", ProtocolError),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", Disconnected),
])
def test_malformed_or_cut_answers_are_os_errors(answer, error):
    srv = Server([answer])
    conn = srv.connect()
    conn.request("GET", "/", None, {})
    with pytest.raises(error):
        conn.response()
        conn.read()
    assert issubclass(error, OSError)


def test_non_latin1_request_is_refused_before_sending():
    srv = Server([b""])
    conn = srv.connect()
    with pytest.raises(ProtocolError, match="Latin-1"):
        conn.request("GET", "/", None, {"Authorization": "Bearer \u2603"})


def test_host_header_brackets_ipv6():
    srv = socket.create_server(("::1", 0), family=socket.AF_INET6)
    port = srv.getsockname()[1]
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            got.append(conn.recv(4096))
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    conn = Connection("::1", port, context=None, sni="", deadline=time.monotonic() + 5)
    conn.request("GET", "/", None, {})
    assert conn.response().status == 200 and conn.read() == b""
    assert f"Host: [::1]:{port}\r\n".encode() in got[0]


# --- bounds: a hostile or broken server cannot hold an invocation past its deadline, nor fill its memory


def _each_byte(data: bytes):
    return lambda: (data[i:i + 1] for i in range(len(data)))


@pytest.mark.parametrize("produce", [
    _each_byte(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"),  # a trickled status line and head
    lambda: iter([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"] + [b"x"] * 100),  # a trickled body
    lambda: iter([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"] + [b"1\r\nx\r\n"] * 100),
])
def test_a_trickling_server_is_cut_off_at_the_deadline(produce):
    srv = Streamer(produce, pace=0.05)
    conn = srv.connect(seconds=0.5)
    began = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        conn.request("GET", "/", None, {})
        conn.response()
        conn.read()
    assert time.monotonic() - began < 1.5


def test_endless_informational_answers_are_refused():
    srv = Streamer(lambda: iter([b"HTTP/1.1 100 Continue\r\n\r\n"] * 1000))
    conn = srv.connect()
    conn.request("GET", "/", None, {})
    with pytest.raises(ProtocolError, match="informational"):
        conn.response()


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 10737418240\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffff\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 100 + b"\r\n",
])
def test_a_declared_size_beyond_the_cap_is_refused_before_reading(head):
    srv = Streamer(lambda: iter([head]))
    conn = srv.connect()
    conn.request("GET", "/", None, {})
    conn.response()
    with pytest.raises(ProtocolError):
        conn.read()


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_a_body_growing_past_the_cap_is_refused(framing, monkeypatch):
    monkeypatch.setattr(http1, "MAX_BODY", 4096)
    head = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" if framing == "chunked"
            else b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    piece = b"400\r\n" + b"x" * 1024 + b"\r\n" if framing == "chunked" else b"x" * 1024
    srv = Streamer(lambda: iter([head] + [piece] * 100))
    conn = srv.connect()
    conn.request("GET", "/", None, {})
    conn.response()
    with pytest.raises(ProtocolError, match="larger than 4096"):
        conn.read()


def test_a_closed_idle_connection_is_seen_as_stale():
    srv = Server([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])  # closes after its one answer
    conn = srv.connect()
    assert not conn.stale()
    conn.request("GET", "/", None, {})
    conn.response()
    conn.read()
    srv._thread.join(5)
    assert conn.stale()

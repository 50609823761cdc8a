"""The plugin against a broken or hostile API server on loopback: every invocation ends within its
deadline with a CNI error that names the problem (5 or 11), never code 110, never a traceback, and
its memory stays bounded whatever the server sends.

The server here is scripted: it answers Leases as a real API server would, so that an ADD gets
as far as reading its pool, and each test decides what the pool read (or every request) gets.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from tests.helpers.cni import Run, start
from tests.helpers.kubeconfig import write_kubeconfig

Answer = Iterable[bytes]


def http(status: int, body: bytes | str | dict, reason: str = "X") -> list[bytes]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body.encode() if isinstance(body, str) else body
    return [f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
            .encode() + data]


def lease_answer(method: str, body: bytes) -> list[bytes]:
    """Leases as the API server keeps them: none at first, then whatever was written."""
    if method == "GET":
        return http(404, {"kind": "Status", "reason": "NotFound"})
    obj = json.loads(body)
    obj.setdefault("metadata", {})["resourceVersion"] = "7"
    return http(201 if method == "POST" else 200, obj)


class HostileServer:
    """Plain HTTP on loopback; `answer(method, path, body)` gives the pieces of each answer, sent `pace` apart."""

    def __init__(self, answer: Callable[[str, str, bytes], Answer], pace: float = 0.0) -> None:
        self.answer, self.pace = answer, pace
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[tuple[str, str]] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            try:
                while not self._stop:
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buf += data
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    method, path, _ = lines[0].split(" ", 2)
                    length = next((int(v) for k, _, v in (ln.partition(":") for ln in lines[1:])
                                   if k.lower() == "content-length"), 0)
                    while len(buf) < length:
                        buf += conn.recv(65536)
                    body, buf = buf[:length], buf[length:]
                    self.requests.append((method, path))
                    for piece in self.answer(method, path, body):
                        conn.sendall(piece)
                        if self.pace:
                            time.sleep(self.pace)
            except OSError:
                return

    def close(self) -> None:
        self._stop = True
        self.sock.close()


@pytest.fixture
def hostile(tmp_path):
    servers: list[HostileServer] = []

    def make(answer: Callable[[str, str, bytes], Answer], pace: float = 0.0) -> HostileServer:
        srv = HostileServer(answer, pace)
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.close()


def pools_answer(pool_answer: Callable[[str], Answer]) -> Callable[[str, str, bytes], Answer]:
    """Leases answered properly; every IPPool request answered by `pool_answer(method)`."""
    def answer(method: str, path: str, body: bytes) -> Answer:
        if "/leases" in path:
            return lease_answer(method, body)
        return pool_answer(method)
    return answer


def invoke(srv: HostileServer, tmp_path: Path, command: str = "ADD", lock_timeout_ms: int = 3000,
           **ipam) -> tuple[Run, float, int]:
    """Run one invocation against `srv`: its result, its wall time and its peak RSS in KiB."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{srv.port}", token="t")
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "bridge",
            "ipam": {"type": "whereabouts", "range": "10.0.0.0/24", "kubernetes": {"kubeconfig": str(kubeconfig)},
                     "configuration_path": str(tmp_path / "none.conf"), "node_lock_dir": str(tmp_path / "locks"),
                     "lock_timeout_ms": lock_timeout_ms, **ipam}}
    began = time.monotonic()
    proc = start(conf, command)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    return Run(proc.returncode, out, err), time.monotonic() - began, usage.ru_maxrss


def test_a_trickling_server_ends_the_invocation_at_its_deadline(hostile, tmp_path):
    srv = hostile(lambda m, p, b: [bytes([c]) for c in http(200, {"kind": "Lease"})[0]], pace=0.1)
    out, took, _ = invoke(srv, tmp_path, lock_timeout_ms=2000)
    assert out.error(11)
    assert took < 2 + 3, took


def test_endless_informational_answers_are_refused(hostile, tmp_path):
    srv = hostile(lambda m, p, b: [b"HTTP/1.1 100 Continue\r\n\r\n"] * 10_000)
    out, took, _ = invoke(srv, tmp_path)
    assert "informational" in out.error(11)["msg"]


@pytest.mark.parametrize("body", [
    [b"HTTP/1.1 200 OK\r\nContent-Length: 10737418240\r\n\r\n"] + [b"\0" * 65536] * 4096,
    [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"] + [b"10000\r\n" + b"\0" * 65536 + b"\r\n"] * 4096,
], ids=["content-length", "chunked"])
def test_a_huge_answer_is_refused_with_bounded_memory(hostile, tmp_path, body):
    srv = hostile(pools_answer(lambda method: body))
    out, took, rss_kib = invoke(srv, tmp_path, lock_timeout_ms=20000)
    assert "larger than" in out.error(11)["msg"]
    assert rss_kib < 160 * 1024, f"peak RSS {rss_kib} KiB"


@pytest.mark.parametrize("answer,code,words", [
    (http(200, "[" * 100_000 + "]" * 100_000), 5, "not a JSON object"),
    (http(200, '{"a":' + "[" * 100_000 + "]" * 100_000 + "}"), 5, "not a JSON object"),
    (http(200, "<html>oops</html>"), 5, "not a JSON object"),
    (http(200, {"metadata": "x", "spec": 5}), 102, "IPPool"),
    (http(200, {"metadata": {"name": "10.0.0.0-24"}, "spec": {"range": "10.0.0.0/24", "allocations": []}}), 102,
     "allocations"),
    (http(500, "[" * 100_000), 11, "500"),
], ids=["deep-array", "deep-in-object", "html", "mistyped-metadata", "allocations-list", "deep-error"])
def test_malformed_pool_answers_are_named_errors(hostile, tmp_path, answer, code, words):
    srv = hostile(pools_answer(lambda method: answer))
    out, _, _ = invoke(srv, tmp_path)
    assert words in out.error(code)["msg"]


@pytest.mark.parametrize("lease", [
    {"metadata": {"name": "whereabouts"}, "spec": "held"},
    {"metadata": "x", "spec": {"holderIdentity": "other", "leaseDurationSeconds": "ten", "renewTime": 7,
                               "leaseTransitions": "many"}},
], ids=["spec-string", "mistyped-fields"])
def test_malformed_lease_answers_are_named_errors(hostile, tmp_path, lease):
    srv = hostile(lambda method, path, body: http(200, lease) if method == "GET" else http(409, {}))
    out, took, _ = invoke(srv, tmp_path, lock_timeout_ms=2000)
    err = out.error(5) if isinstance(lease["spec"], str) else out.error(11)
    assert "Lease" in err["msg"]
    assert took < 2 + 3


def test_a_hung_server_costs_one_request_timeout_for_a_del_over_three_ranges(hostile, tmp_path):
    """Without fail-fast, each of the three ranges waited out its own 10 s request timeout."""
    srv = hostile(lambda m, p, b: iter(lambda: time.sleep(60), None))  # never answers
    ranges = [{"range": f"10.{i}.0.0/24"} for i in range(3)]
    out, took, _ = invoke(srv, tmp_path, "DEL", lock_timeout_ms=60000, range=None, ipRanges=ranges)
    assert "did not answer" in out.error(11)["msg"]
    assert took < 10 + 4, took


def busy(retry_after: str) -> list[bytes]:
    data = b'{"kind":"Status","code":429,"message":"storage is (re)initializing"}'
    return [f"HTTP/1.1 429 Too Many Requests\r\nRetry-After: {retry_after}\r\nContent-Length: {len(data)}\r\n\r\n"
            .encode() + data]


def test_a_429_is_waited_out_and_sent_again_writes_included(hostile, tmp_path):
    """A 429 is refused before any processing (e.g. a CRD's storage being set up): sent again, not failed."""
    refusals = {"GET": 2, "PUT": 2}

    def answer(method: str, path: str, body: bytes) -> Answer:
        if "/leases" in path:
            return lease_answer(method, body)
        if refusals.get(method, 0):
            refusals[method] -= 1
            return busy("0")
        if method == "GET":
            return http(404, {"kind": "Status", "reason": "NotFound"})
        obj = json.loads(body)
        obj["metadata"]["resourceVersion"] = "3"
        return http(201 if method == "POST" else 200, obj)

    srv = hostile(answer)
    out, _, _ = invoke(srv, tmp_path, enable_overlapping_ranges=False)
    assert out.ok().ips == ["10.0.0.1/24"]
    assert [r for r in srv.requests if "/ippools" in r[1]].count(("GET", "/apis/whereabouts.cni.cncf.io/v1alpha1/"
                                                                   "namespaces/kube-system/ippools/10.0.0.0-24")) >= 3


def test_endless_429s_end_in_a_bounded_time_with_code_11(hostile, tmp_path):
    srv = hostile(pools_answer(lambda method: busy("30")))
    out, took, _ = invoke(srv, tmp_path, lock_timeout_ms=20000)
    assert "busy or failing (429)" in out.error(11)["msg"]
    assert took < 5 + 3, took  # at most 5 pauses of at most 1 s

"""TCP connects on `_socket`: every address of a host is tried, all within one deadline."""

from __future__ import annotations

import time

import pytest

from whereabouts.k8s import transport


class Blackhole(transport.Socket):
    """A socket whose connect never gets an answer: it waits out its timeout."""

    __slots__ = ()

    def connect(self, address):  # noqa: ARG002
        time.sleep(self.gettimeout())
        raise TimeoutError("timed out")


def test_a_host_with_several_silent_addresses_fails_within_one_deadline(monkeypatch):
    addresses = [(2, 1, 6, "", ("192.0.2.1", 443)), (2, 1, 6, "", ("192.0.2.2", 443)),
                 (2, 1, 6, "", ("192.0.2.3", 443))]
    monkeypatch.setattr(transport._socket, "getaddrinfo", lambda *a: addresses)
    monkeypatch.setattr(transport, "Socket", Blackhole)
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        transport.tcp_connect("api.example", 443, began + 0.3)
    assert time.monotonic() - began < 0.45

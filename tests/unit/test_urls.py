"""The kubeconfig server URL and percent-encoding, without urllib.parse on the plugin's path."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given, strategies as st

from whereabouts.errors import InvalidConfig
from whereabouts.k8s.urls import Server, quote


@pytest.mark.parametrize("url, https, host, port, prefix", [
    ("https://127.0.0.1:6443", True, "127.0.0.1", 6443, ""),
    ("https://API.Example.com", True, "api.example.com", None, ""),
    ("http://h:80/", False, "h", 80, ""),
    ("https://[fd00::1]:443/k8s/clusters/c1/", True, "fd00::1", 443, "/k8s/clusters/c1"),
    ("https://[::1]", True, "::1", None, ""),
    ("https://user@h:8443/p?x=1#f", True, "h", 8443, "/p"),
    ("HTTPS://h?x", True, "h", None, ""),
])
def test_server_urls_split_as_urllib_splits_them(url, https, host, port, prefix):
    s = Server(url)
    assert (s.https, s.host, s.port, s.prefix) == (https, host, port, prefix)
    u = urllib.parse.urlsplit(url)
    assert (s.host, s.port, s.prefix) == (u.hostname, u.port, u.path.rstrip("/"))


@pytest.mark.parametrize("url", ["ftp://h", "h:6443", "https://h:0", "https://h:65536", "https://h:6443x",
                                 "https://h:٣", "https://[::1]x", "https://::1:6443", "https://", "https://@:1"])
def test_unusable_server_urls_are_config_errors(url):
    with pytest.raises(InvalidConfig, match="kubeconfig server"):
        Server(url)


@given(st.text())
def test_quote_encodes_as_urllib_does_with_nothing_safe(text):
    assert quote(text) == urllib.parse.quote(text, safe="")

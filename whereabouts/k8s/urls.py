"""The two URL operations the plugin needs: split the kubeconfig's `server` and percent-encode.

Not `urllib.parse`, whose import builds a dozen named tuples on every pod attach (doc/design.md,
*Start-up cost*). A `server` that is not a usable URL is a config error that says why.
"""

from __future__ import annotations

from whereabouts.errors import InvalidConfig

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def quote(text: str) -> str:
    """`text` with every byte of its UTF-8 form but the unreserved ones (RFC 3986) percent-encoded:
    safe in a path segment and in a query value."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode())


class Server:
    """Where the API server listens, from the kubeconfig's `server` URL."""

    __slots__ = ("https", "host", "port", "prefix")

    def __init__(self, url: str) -> None:
        def refuse(why: str) -> InvalidConfig:
            return InvalidConfig(f"kubeconfig server {url!r}: {why}")

        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            raise refuse("is not an http(s) URL")
        end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        authority, path = rest[:end].rpartition("@")[2], rest[end:]
        self.https = scheme.lower() == "https"
        self.prefix = path.split("?", 1)[0].split("#", 1)[0].rstrip("/")
        if authority.startswith("["):
            host, bracket, after = authority[1:].partition("]")
            if not bracket or (after and not after.startswith(":")):
                raise refuse("has a malformed [IPv6] host")
            port = after[1:]
        else:
            host, _, port = authority.partition(":")
            if ":" in port:
                raise refuse("has an IPv6 host without [brackets]")
        if not host:
            raise refuse("has no host")
        self.host = host.lower()
        self.port: int | None = None
        if port:
            if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
                raise refuse(f"port {port!r} is not a number from 1 to 65535")
            self.port = int(port)

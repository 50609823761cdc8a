"""Opening the paths that a network config names, without trusting them.

With Multus, whoever may create a NetworkAttachmentDefinition writes `log_file`,
`configuration_path` and `kubernetes.kubeconfig`, and the kubeconfig names more
files (token, CA, client certificate). A FIFO there would block an open or a read
forever, and `/dev/zero` would be read until memory runs out. So every such path
is opened non-blocking, must be a regular file, and is read up to a size cap.
"""

from __future__ import annotations

import os
import stat

# Far above any kubeconfig, flat file, token or certificate bundle met in practice.
MAX_FILE = 4 << 20
# Where the flat file `whereabouts.d/whereabouts.conf` is looked for after the inline
# `configuration_path`, in the Go plugin's order (the plugin and the node-slice controller).
FLAT_FILE_PATHS = (
    "/etc/kubernetes/cni/net.d/whereabouts.d/whereabouts.conf",
    "/etc/cni/net.d/whereabouts.d/whereabouts.conf",
    "/host/etc/cni/net.d/whereabouts.d/whereabouts.conf",
)


class FileRefused(OSError):
    """The path exists but is not a regular file of a sane size."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.strerror = msg  # what callers print for any OSError


def _check_regular(fd: int, path: str, limit: int | None) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(f"{path} is not a regular file")
    if limit is not None and st.st_size > limit:
        raise FileRefused(f"{path} is larger than {limit} bytes")


def find_flat_file(inline_path: str | None) -> str | None:
    """The first existing flat file, starting with the inline `configuration_path`."""
    for path in ([inline_path] if inline_path else []) + list(FLAT_FILE_PATHS):
        if os.path.exists(path):
            return path
    return None


def read_regular_file(path: str, limit: int = MAX_FILE) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. Raises OSError (FileRefused included)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        _check_regular(fd, path, limit)
        chunks, size = [], 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:  # it grew since fstat
                raise FileRefused(f"{path} is larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def open_append(path: str) -> int:
    """A descriptor appending to the regular file at `path` (created 0600, never through a symlink)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                 | os.O_CLOEXEC, 0o600)
    try:
        _check_regular(fd, path, None)
    except BaseException:
        os.close(fd)
        raise
    return fd

"""What this node allocated: the only pool entries that GC may free.

CNI GC names the attachments that are still valid *on this node*, while a pool shared by
the cluster (the default layout, or a block another node wrote into) also holds every
other node's entries, which that list does not name. An entry holds no node name (the
format is the Go plugin's), so each ADD notes here, in the node-local lock directory,
the container id and interface of what it allocated (container ids are unique in the
cluster), and GC frees only entries noted here. Losing a line is always safe: the entry is then left to the reconciler,
which judges by Pod objects. So writes are plain appends, never locked, and a rewrite
that races an append may drop it.
"""

from __future__ import annotations

import os

from whereabouts import jsontext
from whereabouts.files import read_regular_file

# Past this size the oldest half is dropped at the next ADD (a runtime that never sends GC).
MAX_BYTES = 1 << 20

Noted = tuple[str, str]  # (container id, ifname)


def _path(directory: str, network: str) -> str:
    """One ledger per network (GC is sent per network): `attachments-<readable name>-<crc32>.jsonl`."""
    import zlib

    readable = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in network[:64])
    return os.path.join(directory, f"attachments-{readable}-{zlib.crc32(network.encode()):08x}.jsonl")


def note(directory: str, network: str, container_id: str, ifname: str) -> None:
    """Append one allocation (best effort: a node without its lock directory just GCs nothing)."""
    line = (jsontext.dumps([container_id, ifname]) + "\n").encode()
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(_path(directory, network), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        os.write(fd, line)
        too_big = os.fstat(fd).st_size > MAX_BYTES
    except OSError:
        return
    finally:
        os.close(fd)
    if too_big:
        entries = _read(directory, network)
        _rewrite(directory, network, entries[len(entries) // 2:])


def _read(directory: str, network: str) -> list[Noted]:
    try:
        data = read_regular_file(_path(directory, network), limit=4 * MAX_BYTES)
    except OSError:
        return []
    out: list[Noted] = []
    for line in data.splitlines():
        try:
            entry = jsontext.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        if isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry):
            out.append((entry[0], entry[1]))
    return out


def noted(directory: str, network: str) -> set[Noted]:
    return set(_read(directory, network))


def keep(directory: str, network: str, valid: set[Noted]) -> None:
    """After a GC of the network: forget every allocation that is not a valid attachment any more."""
    _rewrite(directory, network, [e for e in _read(directory, network) if e in valid])


def _rewrite(directory: str, network: str, entries: list[Noted]) -> None:
    path = _path(directory, network)
    tmp = f"{path}.{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"".join((jsontext.dumps(list(e)) + "\n").encode() for e in dict.fromkeys(entries)))
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass

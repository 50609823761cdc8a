"""Which node this invocation runs on: the key of node slices, block affinity and Lease identities.

The order is the Go plugin's, so both plugins on one node agree: `NODENAME` from the
environment, else a `nodename` file in the configuration directory (its installer writes
one next to the flat file), else `/etc/hostname`.
"""

from __future__ import annotations

import os

from whereabouts.errors import InvalidEnvironment
from whereabouts.files import read_regular_file

HOSTNAME_FILE = "/etc/hostname"


def node_name(env: dict[str, str], nodename_dirs: tuple[str, ...] = ()) -> str:
    """The node's name; InvalidEnvironment when none of the sources names one."""
    name = env.get("NODENAME", "").strip()
    if name:
        return name
    for path in [os.path.join(d, "nodename") for d in nodename_dirs] + [HOSTNAME_FILE]:
        try:
            name = read_regular_file(path, limit=1024).decode("utf-8", "replace").strip()
        except OSError:
            continue
        if name:
            return name
    raise InvalidEnvironment("cannot tell which node this is: set NODENAME, or write the node's name to "
                             f"a 'nodename' file in {', '.join(nodename_dirs) or 'the configuration_path'}")

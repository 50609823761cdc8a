"""The `whereabouts` executable: a CNI plugin when run without arguments, else the operator CLI."""

from __future__ import annotations

import sys


def main() -> int:
    if len(sys.argv) > 1:
        from whereabouts.operator.cli import main as cli_main

        return cli_main(sys.argv[1:])
    from whereabouts.plugin.cni import main as cni_main

    return cni_main()


if __name__ == "__main__":
    sys.exit(main())

"""Operator commands on the same `whereabouts` executable."""

from __future__ import annotations

import argparse

from whereabouts import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whereabouts",
        description="Whereabouts IPAM. Run without arguments (with CNI_COMMAND set) it is the CNI plugin.",
    )
    parser.add_argument("--version", action="version", version=f"whereabouts {__version__}")
    return parser


def main(argv: list[str]) -> int:
    build_parser().parse_args(argv)
    return 0

"""Operator commands on the same `whereabouts` executable.

Run with arguments, `whereabouts` is this CLI (without, it is the CNI plugin):
`pools`, `show`, `check`, `release`, `reconcile` and `node-slices` (the node-slice controller,
`whereabouts.operator.nodeslices`). This module parses the arguments and dispatches: the
commands are `whereabouts.operator.commands` and `whereabouts.operator.sweep`, what they print
`whereabouts.operator.output`. Each command reads and writes through
`whereabouts.operator.kubeclient`; the decisions are the pure functions of
`whereabouts.operator.reconcile` and `whereabouts.operator.audit`. Failures are one line on stderr.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from whereabouts import __version__
from whereabouts.core.pool import is_dns_subdomain, pool_name
from whereabouts.core.ranges import Address
from whereabouts.operator.commands import cmd_check, cmd_pools, cmd_release, cmd_show
from whereabouts.operator.kubeclient import DEFAULT_TIMEOUT, Kube, KubeError, connect
from whereabouts.operator.output import EXIT_FAILED, OUTPUTS, Refused
from whereabouts.operator.sweep import cmd_reconcile

# The grace rule: an ADD holds its reservation without a pool entry for at most its whole budget, the plugin's
# lock_timeout_ms (default 60000), so an unheld reservation younger than that may be an ADD in flight. Its age is
# the sweeper's clock against a creationTimestamp of one-second resolution written by the API server's clock, hence
# a margin. A shorter --grace is refused unless --unsafe-short-grace says that no ADD can be running.
LONGEST_ADD = 60.0
GRACE_MARGIN = 10.0  # one second of timestamp resolution and up to nine of clock skew
MIN_GRACE = LONGEST_ADD + GRACE_MARGIN
DEFAULT_GRACE = 120.0
DEFAULT_INTERVAL = 300.0
MIN_INTERVAL = 1.0  # below this a --loop hammers the API server

EPILOG = ("Exit status: 0 success; 1 the command failed, was refused, `check` found a problem, or the last sweep "
          "of `reconcile --loop` failed; 2 usage error. `whereabouts COMMAND --help` describes each command.")


# --- node-slices ----------------------------------------------------------------------


def cmd_node_slices(args: argparse.Namespace, kube: Kube) -> int:
    """The node-slice controller; imported here so that the other commands do not load structlog."""
    from whereabouts.operator.nodeslices import run

    return run(args, kube)


# --- parser and entry point -----------------------------------------------------------


def _seconds(text: str, minimum: float = 0.0, strict: bool = False) -> float:
    """A finite number of seconds, at least `minimum` (above it when `strict`)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        raise argparse.ArgumentTypeError(f"{text!r}: must be {'above' if strict else 'at least'} {minimum:g}s")
    return value


def _interval(text: str) -> float:
    return _seconds(text, MIN_INTERVAL)


def _timeout(text: str) -> float:
    return _seconds(text, 0.0, strict=True)


def _address(text: str) -> Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def _pool(text: str) -> str:
    """A pool name, or a CIDR turned into the name of its (unnamed) pool: names never contain a `/`."""
    if "/" not in text:
        if not is_dns_subdomain(text):
            raise argparse.ArgumentTypeError(f"{text!r} is neither an IPPool name nor a CIDR")
        return text
    try:
        return pool_name(str(ipaddress.ip_network(text, strict=False)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a CIDR") from None


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _namespace(text: str) -> str:
    if not _DNS_LABEL.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a namespace name (a DNS label)")
    return text


def _nonempty(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _podref(text: str) -> str:
    ns, _, name = text.partition("/")
    if not ns or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAMESPACE/NAME")
    return text


def _common_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """Global options, accepted before or after the command.

    Only the top-level parser has defaults: in a subcommand they are SUPPRESSed, so
    that a value given before the command is not reset after it.
    """

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    parser.add_argument("--kubeconfig", metavar="PATH",
                        default=default(os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")),
                        help="kubeconfig to use (default: $KUBECONFIG, else ~/.kube/config)")
    parser.add_argument("--context", type=_nonempty, metavar="NAME", default=default(None),
                        help="kubeconfig context to use (default: its current context)")
    parser.add_argument("-n", "--namespace", type=_namespace, default=default(None),
                        help="namespace of the whereabouts objects (default: the kubeconfig context's, "
                             "else kube-system)")
    parser.add_argument("-o", "--output", choices=OUTPUTS, default=default("table"),
                        help="output format: table (default), wide (more columns), json or yaml")
    parser.add_argument("--request-timeout", type=_timeout, metavar="SECONDS", default=default(DEFAULT_TIMEOUT),
                        help=f"give up on an API request after this long (default: {DEFAULT_TIMEOUT:g})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whereabouts", epilog=EPILOG,
        description="Whereabouts IPAM. Run without arguments (with CNI_COMMAND set) it is the CNI plugin; "
                    "with a command it inspects and repairs the IP pools stored in Kubernetes.",
    )
    _common_options(parser, top=True)
    parser.add_argument("--version", action="version", version=f"whereabouts {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, func: Callable[..., int], help: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=description, epilog=EPILOG)
        _common_options(p, top=False)
        p.set_defaults(func=func, usage_error=p.error)
        return p

    command("pools", cmd_pools, "list pools with their usage",
            "List each IPPool, or each range split into blocks: its range, addresses used and free, and the "
            "percentage used (-o wide: each block too). Free counts the whole network less network and broadcast "
            "addresses: exclusions and range_start/range_end live in the network configs, not in the pool. "
            "Counts of 10^12 and more print as 1.8e19; JSON and YAML give them exactly.")
    show = command("show", cmd_show, "list the allocations of one pool",
                   "List each allocation of one IPPool, or of every block of a range split into blocks: "
                   "address, pod, container and interface.")
    show.add_argument("pool", metavar="POOL", type=_pool,
                      help="pool or range name (as `whereabouts pools` prints it), or the range's CIDR")
    check = command("check", cmd_check, "find inconsistencies between pools and reservations",
                    "Find duplicate addresses across overlapping pools, reservations without allocations and "
                    "the reverse, allocations outside their range, and entries that cannot be decoded. "
                    "Exits 1 when anything is found. An operation in flight can show briefly: run it again.")
    check.add_argument("--expect-reservations", choices=("auto", "yes", "no"), default="auto",
                       help="whether every allocation should have an OverlappingRangeIPReservation; "
                            "auto: where any other allocation of its pool has one (default)")
    release = command("release", cmd_release, "free one address by hand",
                      "Free ADDRESS: its pool entry and its reservation, or a reservation of it that no "
                      "allocation holds. --pod (or --container) must name the holder, so that a mistyped "
                      "address is refused rather than taken from another pod.")
    release.add_argument("address", metavar="ADDRESS", type=_address, help="the IP address to free")
    release.add_argument("--pod", type=_podref, metavar="NAMESPACE/NAME", help="the pod that holds ADDRESS")
    release.add_argument("--container", metavar="ID", type=_nonempty,
                         help="the container id (or a prefix of it) that holds ADDRESS")
    release.add_argument("--pool", metavar="NAME", type=_pool,
                         help="the pool or range, when ADDRESS is in several (named networks)")
    release.add_argument("--force", action="store_true", help="release even though the pod still exists")
    reconcile = command("reconcile", cmd_reconcile, "free addresses of pods that no longer exist",
                        "Free every allocation whose pod no longer exists, with its reservation, and every "
                        "reservation that no allocation holds. Entries without a pod reference are kept.")
    reconcile.add_argument("--dry-run", action="store_true", help="report what would be freed, free nothing")
    reconcile.add_argument("--grace", type=_seconds, default=DEFAULT_GRACE, metavar="SECONDS",
                           help="keep unheld reservations younger than this: an ADD in flight holds one for up to "
                                f"the plugin's lock_timeout_ms ({LONGEST_ADD:g}s by default), so the grace must be "
                                f"at least that plus {GRACE_MARGIN:g}s for timestamp resolution and clock skew, "
                                f"{MIN_GRACE:g}s; raise it with lock_timeout_ms (default: {DEFAULT_GRACE:g})")
    reconcile.add_argument("--unsafe-short-grace", action="store_true",
                           help=f"accept a --grace below {MIN_GRACE:g}s, which can free the reservation of an ADD "
                                "in flight: only when no ADD can be running")
    reconcile.add_argument("--loop", action="store_true",
                           help="sweep every --interval seconds until SIGTERM or SIGINT; exit with the status "
                                "of the last sweep")
    reconcile.add_argument("--interval", type=_interval, default=DEFAULT_INTERVAL, metavar="SECONDS",
                           help=f"pause between sweeps with --loop (default: {DEFAULT_INTERVAL:g}, "
                                f"at least {MIN_INTERVAL:g})")
    slices = command("node-slices", cmd_node_slices, "run the node-slice controller (node_slice_size)",
                     "Keep a NodeSlicePool for every NetworkAttachmentDefinition whose whereabouts ipam has "
                     "node_slice_size: the range cut into slices, one per node, as the Go nodeslicecontroller "
                     "does; a deleted node's slice is freed once no live pod holds an address in it, and a "
                     "re-slicing withholds the slices of old pools holding live addresses. Replicas "
                     "elect a leader on a Lease in the namespace; only the leader writes. JSON logs on stderr; "
                     "runs until SIGTERM or SIGINT. The namespace is -n, else $WHEREABOUTS_NAMESPACE, else "
                     "the kubeconfig context's, else kube-system.")
    slices.add_argument("--lease-name", default="whereabouts-node-slices", type=_nonempty, metavar="NAME",
                        help="the coordination.k8s.io Lease the replicas elect a leader on "
                             "(default: whereabouts-node-slices)")
    slices.add_argument("--lease-duration", type=_timeout, default=15.0, metavar="SECONDS",
                        help="how long a leader that stopped renewing keeps the Lease (default: 15)")
    slices.add_argument("--renew-deadline", type=_timeout, default=10.0, metavar="SECONDS",
                        help="a leader that could not renew for this long stops writing (default: 10)")
    slices.add_argument("--retry-period", type=_timeout, default=2.0, metavar="SECONDS",
                        help="how often the Lease is renewed, or tried by a standby (default: 2)")
    slices.add_argument("--resync-interval", type=_interval, default=60.0, metavar="SECONDS",
                        help="a full pass at least this often, without any change seen (default: 60)")
    slices.add_argument("--recheck-interval", type=_interval, default=5.0, metavar="SECONDS",
                        help="how often a slice kept or withheld for live pods is checked again (default: 5)")
    slices.add_argument("--debug", action="store_true", help="log debug events too")
    return parser


def main(argv: list[str]) -> int:
    """Run one command; the exit status as in EPILOG. argparse exits 2 itself on usage errors."""
    args = build_parser().parse_args(argv)
    if args.command == "release" and not (args.pod or args.container):
        args.usage_error("release needs --pod NAMESPACE/NAME (or --container ID) to confirm whose address it is")
    if args.command == "reconcile" and args.grace < MIN_GRACE and not args.unsafe_short_grace:
        args.usage_error(f"--grace {args.grace:g} is below {MIN_GRACE:g}s: an ADD in flight holds an unheld "
                         f"reservation for up to {LONGEST_ADD:g}s (the plugin's default lock_timeout_ms), and "
                         f"timestamps need {GRACE_MARGIN:g}s more for resolution and clock skew; add "
                         "--unsafe-short-grace if no ADD can be running")
    if args.command == "node-slices":
        if not args.retry_period < args.renew_deadline < args.lease_duration:
            args.usage_error("need --retry-period < --renew-deadline < --lease-duration")
        env = os.environ.get("WHEREABOUTS_NAMESPACE")  # what the Go controller reads
        if not args.namespace and env:
            try:
                args.namespace = _namespace(env)
            except argparse.ArgumentTypeError as e:
                args.usage_error(f"WHEREABOUTS_NAMESPACE: {e}")
    try:
        kube = connect(args.kubeconfig, args.namespace, args.context, args.request_timeout)
        try:
            return int(args.func(args, kube))
        finally:
            kube.close()
    except (KubeError, Refused) as e:
        print(f"whereabouts: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `whereabouts show POOL | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130

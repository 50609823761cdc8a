"""The CNI boundary: env + stdin in, one result or error JSON out, an exit code.

The only place that prints and the only place that maps exceptions to CNI error
codes. Imports are deferred so that VERSION never loads HTTP or Kubernetes code.
"""

from __future__ import annotations

import os
import sys
import time

from whereabouts import jsontext
from whereabouts.errors import CNIError, DecodeFailure, IncompatibleVersion, InvalidConfig, InvalidEnvironment

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TextIO

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = SUPPORTED_VERSIONS[-1]
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")
INTERNAL_ERROR = 110
MAX_STDIN = 4 << 20
MAX_CONTAINER_ID = 256  # runtimes use 64 hex digits; the id is stored in every allocation it holds
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_CONTAINER_ID_CHARS = _ALNUM | frozenset("_.-")


def _is_container_id(text: str) -> bool:
    """Letters, digits, '_', '.' and '-', beginning with a letter or digit (ASCII only)."""
    return bool(text) and text[0] in _ALNUM and _CONTAINER_ID_CHARS.issuperset(text)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


class Invocation:
    """What the runtime handed us, validated."""

    def __init__(self, env: dict[str, str], stdin: bytes) -> None:
        self.env = env
        self.command = env.get("CNI_COMMAND", "")
        self.cni_version = LATEST
        if not self.command:
            raise InvalidEnvironment(
                "required env variable CNI_COMMAND is missing (operator commands: whereabouts --help)"
            )
        if self.command not in COMMANDS:
            raise InvalidEnvironment(f"CNI_COMMAND={self.command!r} is not one of {', '.join(COMMANDS)}")
        self.netconf = self._decode(stdin)
        self.container_id = env.get("CNI_CONTAINERID", "")
        self.ifname = env.get("CNI_IFNAME", "")
        self.netns = env.get("CNI_NETNS", "")

    def _decode(self, stdin: bytes) -> dict[str, Any]:
        if self.command == "VERSION" and not stdin.strip():
            return {"cniVersion": LATEST}
        if len(stdin) > MAX_STDIN:
            raise DecodeFailure(f"network config on stdin is larger than {MAX_STDIN} bytes")
        try:
            conf = jsontext.loads(stdin)
        except (ValueError, UnicodeDecodeError) as e:
            raise DecodeFailure(f"cannot decode the network config on stdin: {e}") from None
        except RecursionError:
            raise DecodeFailure("cannot decode the network config on stdin: nested too deeply") from None
        if not isinstance(conf, dict):
            raise DecodeFailure("the network config on stdin must be a JSON object")
        version = conf.get("cniVersion")
        if isinstance(version, str) and version in SUPPORTED_VERSIONS:
            self.cni_version = version
        elif self.command != "VERSION":
            what = "the network config has no cniVersion" if version is None else f"cniVersion {version!r} is not supported"
            raise IncompatibleVersion(f"{what}; supported: {', '.join(SUPPORTED_VERSIONS)}")
        return conf

    def require_env(self) -> None:
        needs = {"ADD": ("CONTAINERID", "NETNS", "IFNAME"), "CHECK": ("CONTAINERID", "NETNS", "IFNAME"),
                 "DEL": ("CONTAINERID", "IFNAME")}.get(self.command, ())
        for name in needs:
            if not self.env.get(f"CNI_{name}"):
                raise InvalidEnvironment(f"required env variable CNI_{name} is missing")
        if "CONTAINERID" in needs and (len(self.container_id) > MAX_CONTAINER_ID
                                       or not _is_container_id(self.container_id)):
            raise InvalidEnvironment(f"CNI_CONTAINERID={self.container_id[:80]!r} is not a valid container id "
                                     f"(letters, digits, '_', '.', '-', at most {MAX_CONTAINER_ID})")
        if "IFNAME" in needs:
            name = self.ifname
            if (len(name.encode("utf-8", "surrogateescape")) > 15 or name in (".", "..")
                    or any(c in "/:" or c.isspace() or not c.isprintable() for c in name)):
                raise InvalidEnvironment(f"CNI_IFNAME={name!r} is not a valid interface name "
                                         "(at most 15 bytes, no '/', ':' or whitespace)")
        minimum = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}.get(self.command)
        if minimum and _version_tuple(self.cni_version) < _version_tuple(minimum):
            raise IncompatibleVersion(f"{self.command} needs cniVersion {minimum} or later, the config has {self.cni_version}")


# --- results --------------------------------------------------------------------------


def version_result(version: str) -> dict[str, Any]:
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def error_result(version: str, code: int, msg: str, details: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": version, "code": code, "msg": msg}
    if details:
        out["details"] = details
    return out


def add_result(version: str, config: Any, assigned: list[Any]) -> dict[str, Any]:
    """The ADD result: one ip per range in configured order, then the static `addresses`."""
    legacy = _version_tuple(version) < (1, 0, 0)
    ips: list[dict[str, str]] = []

    def entry(address: str, ip_version: int, gateway: Any) -> None:
        ip: dict[str, str] = {"address": address}
        if legacy:
            ip["version"] = str(ip_version)
        if gateway is not None and gateway.version == ip_version:
            ip["gateway"] = str(gateway)
        ips.append(ip)

    for a in assigned:
        entry(f"{a.address}/{a.rng.network.prefixlen}", a.rng.version, config.gateway)
    for static in config.addresses:
        entry(str(static.interface), static.interface.version, static.gateway)
    result: dict[str, Any] = {"cniVersion": version, "ips": ips}
    if config.routes:
        result["routes"] = [dict(r) for r in config.routes]
    result["dns"] = dict(config.dns)
    return result


# --- the verbs ------------------------------------------------------------------------


def pod_ref(cni_args: dict[str, str], strict: bool) -> str:
    """`<namespace>/<name>` from the Kubernetes CNI_ARGS, or "" outside Kubernetes.

    With `strict` (ADD), both parts are checked against Kubernetes naming rules: the podref is
    stored in pools and reservations and compared as one string, so `x/y` as a namespace must not
    pass for another pod. The other verbs take it as given, so that nothing stored before can
    become impossible to free.
    """
    namespace, name = cni_args.get("K8S_POD_NAMESPACE", ""), cni_args.get("K8S_POD_NAME", "")
    if not (namespace and name):
        return ""
    if not strict:
        return f"{namespace}/{name}"
    from whereabouts.core.pool import is_dns_label

    # Kubernetes names: a namespace is a DNS-1123 label, a pod name a DNS-1123 subdomain.
    if not is_dns_label(namespace):
        raise InvalidEnvironment(f"CNI_ARGS K8S_POD_NAMESPACE={namespace[:80]!r} is not a Kubernetes namespace name")
    if len(name) > 253 or not all(is_dns_label(part) for part in name.split(".")):
        raise InvalidEnvironment(f"CNI_ARGS K8S_POD_NAME={name[:80]!r} is not a Kubernetes pod name")
    return f"{namespace}/{name}"


def _prev_ips(netconf: dict[str, Any]) -> list[Any]:
    import ipaddress

    prev = netconf.get("prevResult")
    if not isinstance(prev, dict) or not isinstance(prev.get("ips"), list):
        raise InvalidConfig("CHECK needs a prevResult with an 'ips' list")
    out = []
    for i, ip in enumerate(prev["ips"]):
        try:
            out.append(ipaddress.ip_interface(ip["address"]).ip)
        except (KeyError, TypeError, ValueError):
            raise InvalidConfig(f"prevResult.ips[{i}] has no valid 'address'") from None
    return out


def _valid_attachments(netconf: dict[str, Any]) -> set[tuple[str, str]]:
    raw = netconf.get("cni.dev/valid-attachments", netconf.get("cni.dev/attachments"))
    if raw is None:
        raise InvalidConfig("GC needs cni.dev/valid-attachments in the config")
    if not isinstance(raw, list):
        raise InvalidConfig("cni.dev/valid-attachments must be a list")
    valid = set()
    for i, att in enumerate(raw):
        # Both are required (CNI spec): an attachment without its interface would match nothing,
        # and GC would free that container's addresses.
        for key in ("containerID", "ifname"):
            if not isinstance(att, dict) or not isinstance(att.get(key), str) or not att[key]:
                raise InvalidConfig(f"cni.dev/valid-attachments[{i}] needs a non-empty {key!r} string")
        valid.add((att["containerID"], att["ifname"]))
    return valid


def execute(inv: Invocation, log_holder: list[Any], started: float) -> dict[str, Any] | None:
    """Run one verb. Returns the JSON to print on success (None for nothing)."""
    if inv.command == "VERSION":
        return version_result(inv.cni_version)
    inv.require_env()

    from whereabouts.plugin.config import load_ipam, parse_cni_args, requested_ips
    from whereabouts.plugin.log import open_log

    cni_args = parse_cni_args(inv.env.get("CNI_ARGS", ""))
    config = load_ipam(inv.netconf)
    log = open_log(config.log_file, config.log_level)
    log_holder.append(log)
    podref = pod_ref(cni_args, strict=inv.command == "ADD")
    log.bind(verb=inv.command, container_id=inv.container_id, ifname=inv.ifname, pod=podref,
             ranges=[r.cidr for r in config.ranges])
    request_source, requested = requested_ips(inv.netconf, cni_args) if inv.command == "ADD" else ("", ())

    from whereabouts.k8s import kubeconfig
    from whereabouts.core.allocator import match_requests
    from whereabouts.plugin.modes import node_affine
    from whereabouts.plugin.verbs import IPAM
    from whereabouts.k8s.api import KubeAPI
    from whereabouts.core.pool import Allocation
    from whereabouts.k8s.store import HTTPStore

    matched = match_requests(config.ranges, requested, request_source) if requested else {}
    deadline = time.monotonic() + config.lock_timeout_ms / 1000
    api = KubeAPI(kubeconfig.load(config.kubeconfig), deadline)
    from whereabouts.plugin.nodename import node_name

    if node_affine(config):
        node = node_name(inv.env, config.nodename_dirs)  # the key of its slice and blocks: must be known
    else:
        node = inv.env.get("NODENAME") or os.uname().nodename  # only names the Lease holder
    identity = f"{node}/{os.getpid()}/{inv.container_id[:12] or inv.command.lower()}"

    def lease(name: str) -> LeaseLock:
        from whereabouts.k8s.lease import LeaseLock  # node-affine blocks take no Lease: no import either

        return LeaseLock(api, name, identity, config.lease_duration_ms, deadline, config.retry_period_ms,
                         config.renew_deadline_ms)

    ipam = IPAM(config, HTTPStore(api), lease, deadline, log, node)
    try:
        owner = Allocation(inv.container_id, podref, inv.ifname)
        if inv.command == "ADD":
            assigned = ipam.add(owner, matched)
            log.info("done", outcome="ok", addresses=[str(a.address) for a in assigned],
                     reused=[not a.new for a in assigned], **_stats(ipam, api, started))
            return add_result(inv.cni_version, config, assigned)
        if inv.command == "DEL":
            freed = ipam.delete(owner)
            log.info("done", outcome="ok", addresses=freed, **_stats(ipam, api, started))
            return None
        if inv.command == "CHECK":
            ipam.check(inv.container_id, inv.ifname, _prev_ips(inv.netconf))
            log.info("done", outcome="ok", **_stats(ipam, api, started))
            return None
        if inv.command == "GC":
            freed = ipam.gc(_valid_attachments(inv.netconf))
            log.info("done", outcome="ok", addresses=freed, **_stats(ipam, api, started))
            return None
        # STATUS
        from whereabouts.errors import NotAvailable

        try:
            ipam.status()
        except CNIError as e:
            raise NotAvailable(f"whereabouts cannot serve an ADD now: {e.msg}") from None
        log.info("done", outcome="ok", **_stats(ipam, api, started))
        return None
    finally:
        api.close()


def _stats(ipam: Any, api: Any, started: float) -> dict[str, Any]:
    return {"retries": ipam.stats.retries, "lock_wait": round(ipam.stats.lock_wait, 4), "requests": api.requests,
            "duration": round(time.monotonic() - started, 4)}


def run(env: dict[str, str], stdin: bytes, out: TextIO) -> int:
    """The whole invocation. Never raises; returns the process exit code."""
    started = time.monotonic()
    version = LATEST
    logs: list[Any] = []
    try:
        inv = Invocation(env, stdin)
        version = inv.cni_version
        result = execute(inv, logs, started)
        if result is not None:
            out.write(jsontext.dumps(result) + "\n")
        return 0
    except CNIError as e:
        for log in logs:
            log.error("done", outcome="error", code=e.code, error=e.msg,
                      duration=round(time.monotonic() - started, 4))
        out.write(jsontext.dumps(error_result(version, e.code, e.msg, e.details)) + "\n")
        return 1
    except Exception as e:  # noqa: BLE001 - the runtime must get a CNI error, never a traceback
        import traceback

        for log in logs:
            log.error("done", outcome="internal error", error=repr(e), traceback=traceback.format_exc())
        out.write(jsontext.dumps(error_result(version, INTERNAL_ERROR, f"internal error: {type(e).__name__}: {e}")) + "\n")
        return 1


def main() -> int:
    try:
        stdin = sys.stdin.buffer.read(MAX_STDIN + 1) if os.environ.get("CNI_COMMAND") != "VERSION" or not sys.stdin.isatty() else b""
    except OSError:
        stdin = b""
    return run(dict(os.environ), stdin, sys.stdout)

"""The `ipam` config: merge with the flat file, validate every key, normalize ranges.

Pure apart from reading the flat file: the result is a frozen `IPAMConfig` that the
rest of the plugin trusts. Every invalid value is an `InvalidConfig` naming the key
and the value, never silently ignored; unknown keys are ignored as the Go plugin
ignores them, so configs written for it keep working.
"""

from __future__ import annotations

import ipaddress
import os

from whereabouts import jsontext
from whereabouts.errors import InvalidConfig, InvalidEnvironment
from whereabouts.files import find_flat_file, read_regular_file
from whereabouts.core.pool import is_dns_subdomain
from whereabouts.core.ranges import IPRange, merge_intervals, usable_span
from whereabouts.core.record import Record
from whereabouts.plugin.keys import bad, read_key, string

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from whereabouts.core.ranges import Address, Network

# Keys the flat file may not fill in: the Go plugin reads these from inline only.
INLINE_ONLY_KEYS = ("enable_overlapping_ranges",)


class StaticAddress(Record):
    """An entry of `addresses`: returned as configured, never recorded in a pool."""

    __slots__ = ("interface", "gateway")
    interface: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    gateway: Address | None


class IPAMConfig(Record):
    """The validated `ipam` section; `parse_ipam` is the only maker."""

    __slots__ = ("ranges", "kubeconfig", "gateway", "routes", "dns", "addresses", "network_name",
                 "overlapping_ranges", "lease_duration_ms", "renew_deadline_ms", "retry_period_ms",
                 "lock_timeout_ms", "node_lock_dir", "log_file", "log_level", "sleep_for_race", "block_size",
                 "single_lease", "node_slice_size", "name", "nodename_dirs")
    ranges: tuple[IPRange, ...]
    kubeconfig: str
    gateway: Address | None
    routes: tuple[dict[str, str], ...]
    dns: dict[str, Any]
    addresses: tuple[StaticAddress, ...]
    network_name: str
    overlapping_ranges: bool
    lease_duration_ms: int
    renew_deadline_ms: int
    retry_period_ms: int
    lock_timeout_ms: int
    node_lock_dir: str
    log_file: str
    log_level: str
    sleep_for_race: float
    block_size: int
    single_lease: bool
    # `node_slice_size` as a prefix length (0: off); `name` is the network's, naming its NodeSlicePool.
    node_slice_size: int
    name: str
    # Where a `nodename` file may name this node (the Go plugin's `configuration_path` lookup).
    nodename_dirs: tuple[str, ...]


def parse_cni_args(raw: str) -> dict[str, str]:
    """`K1=V1;K2=V2` as the runtimes and Multus write it. The first occurrence of a key wins."""
    args: dict[str, str] = {}
    for pair in raw.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidEnvironment(f"CNI_ARGS: invalid pair {pair!r}, expected KEY=VALUE")
        args.setdefault(key, value)
    return args


def read_flat_file(path: str) -> dict[str, Any]:
    try:
        data = jsontext.loads(read_regular_file(path))
    except OSError as e:
        raise InvalidConfig(f"cannot read flat config file {path}: {e.strerror}") from None
    except (ValueError, RecursionError) as e:
        raise InvalidConfig(f"flat config file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise InvalidConfig(f"flat config file {path} must hold a JSON object")
    return data


def _is_zero(value: Any) -> bool:
    return value is None or value == "" or value == 0 or value is False or value == [] or value == {}


def merge_flat(inline: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """Fill the keys that `inline` leaves unset (or zero) from `flat`; objects merge key by key."""
    merged = dict(inline)
    for key, value in flat.items():
        if key in INLINE_ONLY_KEYS:
            continue
        mine = merged.get(key)
        if isinstance(mine, dict) and isinstance(value, dict):
            merged[key] = merge_flat(mine, value)
        elif _is_zero(mine):
            merged[key] = value
    return merged


def _list(conf: dict[str, Any], key: str) -> list[Any]:
    value = conf.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad(key, value, "must be a list")
    return value


def _refuse_zone(key: str, value: str) -> None:
    """IPv6 zone ids (`fe80::1%eth0`) are node-local: they name no cluster-wide address, and would
    reach object names and URLs. `ipaddress` accepts them, so they are refused here."""
    if "%" in value:
        raise bad(key, value, "carries an IPv6 zone id ('%...'), which has no meaning across a cluster")


def _parsed(key: str, value: Any, parse: Callable[[str], Any], want: str, refused: str) -> Any:
    """`parse` of a string value; what is not one, carries a zone id or does not parse is refused."""
    if not isinstance(value, str):
        raise bad(key, value, f"must be {want}")
    _refuse_zone(key, value)
    try:
        return parse(value.strip())
    except ValueError:
        raise bad(key, value, refused) from None


def _ip(key: str, value: Any) -> Address:
    return _parsed(key, value, ipaddress.ip_address, "an IP address string", "is not an IP address")


def _cidr_or_ip(key: str, value: Any) -> Network:
    """A CIDR (host bits allowed) or a bare IP, as the network it covers."""
    return _parsed(key, value, lambda v: ipaddress.ip_network(v, strict=False), "a CIDR or IP string",
                   "is not a CIDR or IP address")


def _interface(key: str, value: Any) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if isinstance(value, str) and "/" not in value:
        raise bad(key, value, "must be a CIDR such as 10.1.2.3/24")
    return _parsed(key, value, ipaddress.ip_interface, "a CIDR such as 10.1.2.3/24", "is not a CIDR")


# --- ranges --------------------------------------------------------------------------


def parse_range(
    key: str,
    spec: Any,
    start: Any = None,
    end: Any = None,
    exclude: Any = None,
    gateway: Address | None = None,
) -> IPRange:
    """One range from its config forms: `CIDR` (host bits dropped) or `start-end/prefix`."""
    if not isinstance(spec, str) or not spec.strip():
        raise bad(key, spec, "must be a CIDR such as 10.0.0.0/24 or a span such as 10.0.0.10-10.0.0.20/24")
    text = spec.strip()
    _refuse_zone(key, text)
    first_ip: Address | None = None
    last_ip: Address | None = None
    if "-" in text:
        lo_text, _, cidr_text = text.partition("-")
        first_ip = _ip(key, lo_text)
        try:
            iface = ipaddress.ip_interface(cidr_text.strip())
        except ValueError:
            raise bad(key, spec, "the part after '-' must be <last IP>/<prefix>") from None
        if "/" not in cidr_text:
            raise bad(key, spec, "the part after '-' must be <last IP>/<prefix>")
        network = iface.network
        last_ip = iface.ip
    else:
        if "/" not in text:
            raise bad(key, spec, "must carry a prefix length, such as /24")
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise bad(key, spec, "is not a valid CIDR") from None
    sub = key.rsplit(".", 1)[0] + "." if "." in key else ""
    # As in the Go plugin, the `start-end/prefix` form wins over range_start/range_end.
    if first_ip is None and start not in (None, ""):
        first_ip = _ip(sub + "range_start", start)
    if last_ip is None and end not in (None, ""):
        last_ip = _ip(sub + "range_end", end)

    base = int(network.network_address)
    span_first, span_last = usable_span(network)
    if span_last < span_first:
        raise bad(key, spec, f"a /{network.prefixlen} has no usable address (network and broadcast are reserved)")
    first, last = span_first, span_last
    for name, ip in (("range_start", first_ip), ("range_end", last_ip)):
        if ip is None:
            continue
        if ip.version != network.version or ip not in network:
            raise bad(sub + name, str(ip), f"lies outside {network}")
    if first_ip is not None:
        first = max(first, int(first_ip) - base)
    if last_ip is not None:
        last = min(last, int(last_ip) - base)
    if first > last:
        raise bad(key, spec, f"the span {network.network_address + first}-{network.network_address + last} is empty")

    excluded: list[tuple[int, int]] = []
    exclude_key = sub + "exclude"
    if exclude is not None and not isinstance(exclude, list):
        raise bad(exclude_key, exclude, "must be a list of CIDRs or IPs")
    for i, entry in enumerate(exclude or []):
        net = _cidr_or_ip(f"{exclude_key}[{i}]", entry)
        if net.version != network.version:
            raise bad(f"{exclude_key}[{i}]", entry, f"is IPv{net.version} but the range {network} is IPv{network.version}")
        lo, hi = int(net.network_address) - base, int(net.broadcast_address) - base
        if hi >= 0 and lo < network.num_addresses:
            excluded.append((max(lo, 0), min(hi, network.num_addresses - 1)))
    gateway_offset = None
    if gateway is not None and gateway.version == network.version and gateway in network:
        gateway_offset = int(gateway) - base
        excluded.append((gateway_offset, gateway_offset))
    return IPRange(network, first, last, merge_intervals(excluded), gateway_offset)


def parse_ranges(ipam: dict[str, Any], gateway: Address | None) -> tuple[IPRange, ...]:
    """The top-level `range` first, then `ipRanges` in order."""
    ranges: list[IPRange] = []
    if ipam.get("range") not in (None, ""):
        ranges.append(
            parse_range(
                "range", ipam["range"], ipam.get("range_start"), ipam.get("range_end"), ipam.get("exclude"), gateway
            )
        )
    elif ipam.get("range_start") is not None or ipam.get("range_end") is not None:
        raise InvalidConfig("invalid ipam config: range_start/range_end given without range")
    for i, entry in enumerate(_list(ipam, "ipRanges")):
        key = f"ipRanges[{i}]"
        if not isinstance(entry, dict):
            raise bad(key, entry, "must be an object with a 'range' key")
        ranges.append(
            parse_range(
                f"{key}.range",
                entry.get("range"),
                entry.get("range_start"),
                entry.get("range_end"),
                entry.get("exclude"),
                gateway,
            )
        )
    if not ranges:
        raise InvalidConfig("invalid ipam config: no range given (set 'range' or 'ipRanges')")
    for i, a in enumerate(ranges):
        for b in ranges[i + 1 :]:
            if a.network == b.network:
                raise InvalidConfig(f"invalid ipam config: range {a.cidr} is configured twice")
    return tuple(ranges)


# --- the rest of the keys ------------------------------------------------------------


def _routes(ipam: dict[str, Any]) -> tuple[dict[str, str], ...]:
    routes = []
    for i, route in enumerate(_list(ipam, "routes")):
        key = f"routes[{i}]"
        if not isinstance(route, dict) or "dst" not in route:
            raise bad(key, route, "must be an object with 'dst' (and optionally 'gw')")
        dst = _cidr_or_ip(key + ".dst", route["dst"])
        out = {"dst": str(dst)}
        if route.get("gw") not in (None, ""):
            out["gw"] = str(_ip(key + ".gw", route["gw"]))
        routes.append(out)
    return tuple(routes)


def _dns(ipam: dict[str, Any]) -> dict[str, Any]:
    dns = ipam.get("dns")
    if dns is None:
        return {}
    if not isinstance(dns, dict):
        raise bad("dns", dns, "must be an object")
    out: dict[str, Any] = {}
    for key in ("nameservers", "search", "options"):
        if dns.get(key) is not None:
            values = dns[key]
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise bad(f"dns.{key}", values, "must be a list of strings")
            if key == "nameservers":
                values = [str(_ip(f"dns.{key}", v)) for v in values]
            out[key] = values
    if dns.get("domain") is not None:
        out["domain"] = string(dns, "domain")
    return out


def _addresses(ipam: dict[str, Any]) -> tuple[StaticAddress, ...]:
    out = []
    for i, entry in enumerate(_list(ipam, "addresses")):
        key = f"addresses[{i}]"
        if not isinstance(entry, dict):
            raise bad(key, entry, "must be an object with 'address'")
        iface = _interface(key + ".address", entry.get("address"))
        gw = _ip(key + ".gateway", entry["gateway"]) if entry.get("gateway") not in (None, "") else None
        out.append(StaticAddress(iface, gw))
    return tuple(out)


def _node_slice_size(ipam: dict[str, Any], ranges: tuple[IPRange, ...], block_size: int) -> int:
    value = ipam.get("node_slice_size")
    if value in (None, ""):
        return 0
    from whereabouts.core.slices import check_slicing, parse_slice_size

    if not isinstance(value, str):
        raise bad("node_slice_size", value, 'must be a prefix length string such as "/26"')
    if len(ranges) != 1:
        raise bad("node_slice_size", value, f"node slices need exactly one range, not {len(ranges)}")
    if block_size:
        raise bad("node_slice_size", value, "node slices and block_size exclude each other; pick one")
    try:
        prefix = parse_slice_size(value)
        check_slicing(ranges[0].network, prefix)
    except ValueError as e:
        raise bad("node_slice_size", value, str(e)) from None
    return prefix


def parse_ipam(ipam: dict[str, Any], name: str = "", nodename_dirs: tuple[str, ...] = ()) -> IPAMConfig:
    """Validate an already merged `ipam` section; `name` is the network's (its config's `name`)."""
    if ipam.get("type") != "whereabouts":
        raise bad("type", ipam.get("type"), "this plugin only serves ipam type 'whereabouts'")
    gateway = _ip("gateway", ipam["gateway"]) if ipam.get("gateway") not in (None, "") else None
    ranges = parse_ranges(ipam, gateway)
    block_size = read_key(ipam, "block_size")
    slice_size = _node_slice_size(ipam, ranges, block_size)
    kube = ipam.get("kubernetes") or {}
    if not isinstance(kube, dict):
        raise bad("kubernetes", kube, "must be an object with 'kubeconfig'")
    kubeconfig = read_key(kube, "kubernetes.kubeconfig")
    if not kubeconfig:
        raise InvalidConfig(
            "invalid ipam config: kubernetes.kubeconfig is not set inline or in the flat file whereabouts.d/whereabouts.conf"
        )
    log_level = read_key(ipam, "log_level")
    sleep = read_key(ipam, "sleep_for_race")
    lease = read_key(ipam, "leader_lease_duration")
    lock_timeout = read_key(ipam, "lock_timeout_ms")
    if lease >= lock_timeout:
        # A holder that dies leaves the Lease blocked for its duration: no waiter would outlive it.
        raise bad("leader_lease_duration", lease, f"must be shorter than lock_timeout_ms ({lock_timeout})")
    network_name = read_key(ipam, "network_name")
    if slice_size and not is_dns_subdomain(network_name or name):
        raise bad("node_slice_size", ipam.get("node_slice_size"),
                   f"its NodeSlicePool is named after network_name, else the network's name ({name!r}), "
                   "which must then be a valid object name")
    return IPAMConfig(
        ranges=ranges,
        kubeconfig=kubeconfig,
        gateway=gateway,
        routes=_routes(ipam),
        dns=_dns(ipam),
        addresses=_addresses(ipam),
        network_name=network_name,
        overlapping_ranges=read_key(ipam, "enable_overlapping_ranges"),
        lease_duration_ms=lease,
        renew_deadline_ms=read_key(ipam, "leader_renew_deadline"),
        retry_period_ms=read_key(ipam, "leader_retry_period"),
        lock_timeout_ms=lock_timeout,
        node_lock_dir=read_key(ipam, "node_lock_dir"),
        log_file=read_key(ipam, "log_file"),
        log_level=log_level,
        sleep_for_race=sleep,
        block_size=block_size,
        single_lease=read_key(ipam, "single_lease"),
        node_slice_size=slice_size,
        name=name,
        nodename_dirs=nodename_dirs,
    )


def load_ipam(netconf: dict[str, Any]) -> IPAMConfig:
    """The `ipam` section of the network config, merged with the flat file and validated."""
    inline = netconf.get("ipam")
    if not isinstance(inline, dict):
        raise InvalidConfig("invalid network config: the 'ipam' object is missing")
    config_path = inline.get("configuration_path")
    if config_path is not None and not isinstance(config_path, str):
        raise bad("configuration_path", config_path, "must be a path string")
    flat_path = find_flat_file(config_path)
    merged = merge_flat(inline, read_flat_file(flat_path)) if flat_path else inline
    dirs = [merged.get("configuration_path")] + ([os.path.dirname(flat_path)] if flat_path else [])
    name = netconf.get("name")
    return parse_ipam(merged, name if isinstance(name, str) else "",
                      tuple(dict.fromkeys(d for d in dirs if isinstance(d, str) and d)))


def requested_ips(netconf: dict[str, Any], cni_args: dict[str, str]) -> tuple[str, tuple[Address, ...]]:
    """Static addresses asked for, from the first channel that has any, and that channel's name.

    Precedence: `runtimeConfig.ips`, then `args.cni.ips`, then `CNI_ARGS` `IP=`.
    """
    runtime = netconf.get("runtimeConfig")
    args = netconf.get("args")
    sources: list[tuple[str, Any]] = [
        ("runtimeConfig.ips", runtime.get("ips") if isinstance(runtime, dict) else None),
        (
            "args.cni.ips",
            args.get("cni", {}).get("ips") if isinstance(args, dict) and isinstance(args.get("cni"), dict) else None,
        ),
        ("CNI_ARGS IP", [p for p in cni_args.get("IP", "").split(",") if p.strip()] or None),
    ]
    for name, values in sources:
        if values in (None, []):
            continue
        if not isinstance(values, list):
            raise bad(name, values, "must be a list of IP addresses or CIDRs")
        ips = []
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise bad(f"{name}[{i}]", value, "must be an IP address or CIDR string")
            _refuse_zone(f"{name}[{i}]", value)
            text = value.strip().split("/", 1)[0]
            try:
                ips.append(ipaddress.ip_address(text))
            except ValueError:
                raise bad(f"{name}[{i}]", value, "is not an IP address or CIDR") from None
        return name, tuple(ips)
    return "", ()

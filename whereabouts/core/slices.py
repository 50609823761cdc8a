"""Node slices (`node_slice_size`): a range cut into equal subnets, one per node, as the Go plugin does it.

A `NodeSlicePool` object (named after the network) lists in `status.allocations` which
node holds which slice; the node-slice controller writes it, the plugin only reads it.
Each node then allocates in an IPPool of its own, named `[<network_name>-]<node>-<slice>`,
under a Lease of the same name, so nodes never contend with each other. Names, the order
of slices and the encoding are the Go plugin's, so both plugins and both controllers mix.

A re-slicing (another range or slice size, or a NAD deleted and made again) leaves the pools of the
old slices behind, and live pods keep their addresses there. Those pools are found by their names
(`slice_pool_of`), not by labels, since the Go plugin writes none: a new slice that overlaps one
holding live addresses is given to no node (`assign`) until the pool is drained, so that no address
is handed out twice; the plugin's DEL and GC look in them too.
"""

from __future__ import annotations

import ipaddress

from whereabouts import jsontext
from whereabouts.core.pool import is_dns_subdomain, normalize_range, with_network
from whereabouts.core.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection, Iterable
    from typing import Any

    from whereabouts.core.ranges import Network

KIND = "NodeSlicePool"
PLURAL = "nodeslicepools"
# More slices than this in one range is a configuration mistake (a /8 cut into /32s), not a plan.
MAX_SLICES = 65536


def parse_slice_size(text: str) -> int:
    """`/26` or `26` -> 26 (a prefix length); ValueError names what is wrong."""
    digits = text[1:] if text.startswith("/") else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > 3:
        raise ValueError(f"{text!r} is not a prefix length such as \"/26\"")
    return int(digits)


def check_slicing(network: Network, prefix: int) -> None:
    """Raise ValueError unless `network` can be cut into slices of `/prefix` with addresses to hand out."""
    if prefix < network.prefixlen:
        raise ValueError(f"slices of /{prefix} are wider than the range {network}")
    if prefix > network.max_prefixlen - 2:
        raise ValueError(f"slices of /{prefix} hold no address to hand out (network and broadcast only)")
    if prefix - network.prefixlen > 16:
        raise ValueError(f"{network} cut into /{prefix} makes more than {MAX_SLICES} slices")


def divide(network: Network, prefix: int) -> list[str]:
    """Every slice of the range, lowest first (the order the Go controller assigns them in)."""
    check_slicing(network, prefix)
    return [str(s) for s in network.subnets(new_prefix=prefix)]


def slice_set_name(network_name: str, name: str) -> str:
    """The NodeSlicePool of a network: named after `network_name`, else after the network's `name`."""
    return network_name or name


def slice_pool_name(network_name: str, node: str, slice_cidr: str) -> str:
    """`node-1`, `10.0.0.64/26` -> `node-1-10.0.0.64-26`; with a network name `<net>-node-1-...`.
    The Lease guarding the pool has the same name."""
    return with_network(network_name, f"{node}-{normalize_range(slice_cidr)}")


class SlicePool(Record):
    """An IPPool that is one node's slice of a network, as its name says."""

    __slots__ = ("name", "node", "network")
    name: str
    node: str
    network: Network


def slice_pool_of(obj: Any, network_name: str, rng: Network) -> SlicePool | None:
    """`obj` as a slice pool of the network `network_name` inside `rng` (any slice size), else None.

    Its name must be `slice_pool_name(network_name, <a node>, <its spec.range>)`. The Go names are
    ambiguous (network `a` on node `b-c` is network `a-b` on node `c`): callers only ever free
    entries by their owner there, or keep addresses out of use, so a stranger's pool costs nothing.
    """
    meta, spec = (obj.get("metadata"), obj.get("spec")) if isinstance(obj, dict) else (None, None)
    name = meta.get("name") if isinstance(meta, dict) else None
    cidr = spec.get("range") if isinstance(spec, dict) else None
    if not isinstance(name, str) or not isinstance(cidr, str):
        return None
    try:
        net = ipaddress.ip_network(cidr)
    except ValueError:
        return None
    if str(net) != cidr or net.version != rng.version or not net.subnet_of(rng):  # type: ignore[arg-type]
        return None
    head = f"{network_name}-" if network_name else ""
    tail = f"-{normalize_range(cidr)}"
    node = name[len(head):-len(tail)] if name.startswith(head) and name.endswith(tail) else ""
    if not node or not is_dns_subdomain(node) or slice_pool_name(network_name, node, cidr) != name:
        return None
    return SlicePool(name, node, net)


def node_slice(obj: dict[str, Any], node: str) -> str | None:
    """The slice CIDR a NodeSlicePool gives `node`, if any."""
    status = obj.get("status")
    allocations = status.get("allocations") if isinstance(status, dict) else None
    for entry in allocations if isinstance(allocations, list) else ():
        if isinstance(entry, dict) and entry.get("nodeName") == node:
            value = entry.get("sliceRange")
            return value if isinstance(value, str) else None
    return None


def assigned_slices(obj: Any) -> list[Network]:
    """The slices a NodeSlicePool gives to some node (entries that do not read are left out)."""
    status = obj.get("status") if isinstance(obj, dict) else None
    allocations = status.get("allocations") if isinstance(status, dict) else None
    out = []
    for entry in allocations if isinstance(allocations, list) else ():
        if isinstance(entry, dict) and entry.get("nodeName") and isinstance(entry.get("sliceRange"), str):
            try:
                out.append(ipaddress.ip_network(entry["sliceRange"]))
            except ValueError:
                continue
    return out


def parse_slice(text: str, rng: Network) -> Network:
    """A slice CIDR read from the store, checked to lie inside the configured range."""
    try:
        net = ipaddress.ip_network(text)
    except ValueError:
        raise ValueError(f"sliceRange {text!r} is not a CIDR") from None
    if net.version != rng.version or not net.subnet_of(rng):  # type: ignore[arg-type]
        raise ValueError(f"sliceRange {text} lies outside the range {rng}")
    return net


# --- the controller's side: what NADs ask for, and who gets which slice -------------------

NAD_API_VERSION = "k8s.cni.cncf.io/v1"
NAD_KIND = "NetworkAttachmentDefinition"
# Every NAD that asks for a NodeSlicePool, as JSON {uid: "namespace/name"}. Owner references can only
# name NADs of the pool's own namespace: the garbage collector deletes a pool whose owners it cannot find
# there, which is what becomes of the Go controller's pools for NADs in other namespaces.
OWNERS_ANNOTATION = "whereabouts.cni.cncf.io/network-attachment-definitions"
# The keys a NodeSlicePool depends on; the flat file fills the ones the NAD leaves empty, as in the plugin.
SLICE_KEYS = ("range", "ipRanges", "node_slice_size", "network_name")


class SliceSpec(Record):
    """What one network config asks of its NodeSlicePool: `spec` as the Go controller writes it."""

    __slots__ = ("set_name", "network_name", "range", "slice_size")
    set_name: str  # the NodeSlicePool's name
    network_name: str  # prefixes the slice pools' names
    range: str  # the network, normalized (`spec.range`)
    slice_size: str  # node_slice_size verbatim (`spec.sliceSize`), e.g. "/26"

    @property
    def spec(self) -> dict[str, str]:
        return {"range": self.range, "sliceSize": self.slice_size}


def nad_ipam(config: Any) -> tuple[str, dict[str, Any]] | None:
    """(network name, inline ipam) of a NAD's parsed `spec.config`, or None when whereabouts is not its IPAM.

    A plugin list counts by its first plugin, as in the Go controller; the name is the list's, which the
    runtime hands to each plugin (the Go controller takes the first plugin's own, usually empty, name).
    """
    if not isinstance(config, dict):
        return None
    plugin = config
    if not config.get("type") and isinstance(config.get("plugins"), list) and config["plugins"]:
        plugin = config["plugins"][0]
    ipam = plugin.get("ipam") if isinstance(plugin, dict) else None
    if not isinstance(ipam, dict) or ipam.get("type") != "whereabouts":
        return None
    name = config.get("name")
    return (name if isinstance(name, str) else ""), ipam


def _range_network(text: Any) -> str:
    """`10.0.0.7/24` -> `10.0.0.0/24`; `<start>-<end>/<prefix>` -> the network of `<end>/<prefix>` (Go's rule)."""
    if not isinstance(text, str) or "/" not in text:
        raise ValueError(f"range {text!r} is not a CIDR")
    cidr = text.split("-", 1)[1] if "-" in text else text
    try:
        return str(ipaddress.ip_network(cidr.strip(), strict=False))
    except ValueError:
        raise ValueError(f"range {text!r} is not a CIDR") from None


def slice_spec(name: str, inline: dict[str, Any], flat: dict[str, Any] | None = None) -> SliceSpec | None:
    """The NodeSlicePool a whereabouts `ipam` section asks for, None without `node_slice_size`.

    `flat` (the flat file) fills keys that `inline` leaves empty. Raises ValueError naming what is wrong.
    """
    conf = {k: inline.get(k) or (flat or {}).get(k) for k in SLICE_KEYS}
    size = conf["node_slice_size"]
    if not size:
        return None
    if not isinstance(size, str):
        raise ValueError(f"node_slice_size {size!r} is not a string such as \"/26\"")
    ranges = conf["ipRanges"] if isinstance(conf["ipRanges"], list) else []
    first = conf["range"] or (ranges[0].get("range") if ranges and isinstance(ranges[0], dict) else None)
    if not first:
        raise ValueError("node_slice_size without a range (set 'range' or 'ipRanges')")
    network = _range_network(first)
    check_slicing(ipaddress.ip_network(network), parse_slice_size(size))
    network_name = conf["network_name"] or ""
    if not isinstance(network_name, str):
        raise ValueError(f"network_name {network_name!r} is not a string")
    set_name = slice_set_name(network_name, name)
    if not is_dns_subdomain(set_name) or len(set_name) > 253:
        raise ValueError(f"the NodeSlicePool name {set_name!r} (network_name, else the network's name) "
                         "is not a valid object name")
    return SliceSpec(set_name, network_name, network, size)


def fresh_allocations(spec: dict[str, Any], nodes: Iterable[str], busy: Collection[SlicePool] = ()
                      ) -> list[dict[str, str]]:
    """`status.allocations` of a new slicing: every slice in order, the nodes on the lowest ones
    that `busy` pools leave free (see `assign`)."""
    network = ipaddress.ip_network(spec["range"])
    empty = [{"nodeName": "", "sliceRange": s} for s in divide(network, parse_slice_size(spec["sliceSize"]))]
    return assign(empty, nodes, busy)


def assign(allocations: list[dict[str, Any]], nodes: Iterable[str], busy: Collection[SlicePool] = ()
           ) -> list[dict[str, Any]]:
    """Give each node (in name order) that holds no slice the lowest free one, while any is free.

    `busy` are slice pools of the network holding live addresses. A free slice overlapping one is
    withheld: its addresses could be handed out a second time. Only a pool's own node may take
    the very slice the pool is of (a NAD made again with the same slicing): it gets it back first.
    """
    out = [dict(a) for a in allocations]
    holding = {a.get("nodeName") for a in out}
    waiting = sorted(set(nodes) - holding)
    if busy:
        slots = {a.get("sliceRange"): a for a in out if not a.get("nodeName")}
        for node in waiting:
            slot = next((slots[r] for p in busy if p.node == node and (r := str(p.network)) in slots
                         and not slots[r]["nodeName"] and not blockers(r, node, busy)), None)
            if slot is not None:
                slot["nodeName"] = node
        holding = {a.get("nodeName") for a in out}
        waiting = [n for n in waiting if n not in holding]
    free = (a for a in out if not a.get("nodeName") and not (busy and blockers(a["sliceRange"], "", busy)))
    for node in waiting:
        slot = next(free, None)
        if slot is None:
            break
        slot["nodeName"] = node
    return out


def blockers(slice_range: str, node: str, busy: Iterable[SlicePool]) -> list[SlicePool]:
    """The busy pools that keep the slice `slice_range` from `node` ("": from any node): every one
    overlapping it but that node's own pool of exactly this slice."""
    net = ipaddress.ip_network(slice_range)
    return [p for p in busy if p.network.overlaps(net)  # type: ignore[arg-type]
            and not (node and p.node == node and str(p.network) == slice_range)]


def slices_over(network: Network, prefix: int) -> list[str]:
    """The slices of `/prefix` that overlap `network` (a pool of another slicing of the same range)."""
    if network.prefixlen >= prefix:
        return [str(network.supernet(new_prefix=prefix))]
    return [str(s) for s in network.subnets(new_prefix=prefix)]


def unassign(allocations: list[dict[str, Any]], nodes: Collection[str], held: Collection[str] = ()
             ) -> list[dict[str, Any]]:
    """Free the slices of nodes that are gone, except those in `held` (a live pod still has an address there)."""
    return [{**a, "nodeName": ""} if a.get("nodeName") and a["nodeName"] not in nodes and a["nodeName"] not in held
            else dict(a) for a in allocations]


def unassigned_nodes(allocations: list[dict[str, Any]], nodes: Collection[str]) -> list[tuple[str, str]]:
    """(node, slice) of each slice whose node is gone: the candidates `unassign` frees."""
    return [(a["nodeName"], a.get("sliceRange", "")) for a in allocations
            if a.get("nodeName") and a["nodeName"] not in nodes]


def owner_references(current: list[dict[str, Any]], owners: list[tuple[str, str]],
                     stale: Collection[str] = ()) -> list[dict[str, Any]]:
    """The NodeSlicePool's owner references for the NADs `owners` ((name, uid), oldest first, all of the
    pool's namespace).

    References to other kinds are kept; NAD references in `stale` (uids of NADs that are gone or no longer
    ask for this pool) are dropped, and a missing NAD gets a plain reference, as the Go controller adds them.
    One NAD reference is the controller: the one that already is, else the first.
    """
    refs = [dict(r) for r in current if not (_is_nad_ref(r) and r.get("uid") in stale)]
    have = {r.get("uid") for r in refs if _is_nad_ref(r)}
    refs += [{"apiVersion": NAD_API_VERSION, "kind": NAD_KIND, "name": name, "uid": uid}
             for name, uid in owners if uid not in have]
    nad_refs = [r for r in refs if _is_nad_ref(r)]
    if nad_refs and not any(r.get("controller") for r in nad_refs):
        nad_refs[0].update(controller=True, blockOwnerDeletion=True)
    return refs


def nad_owner_uids(obj: dict[str, Any]) -> list[str]:
    """The uids of the NADs a NodeSlicePool names as owners: in owner references, or in our annotation."""
    meta = obj.get("metadata") or {}
    refs = meta.get("ownerReferences") or []
    uids = [r["uid"] for r in refs if isinstance(r, dict) and _is_nad_ref(r) and isinstance(r.get("uid"), str)]
    return uids + [u for u in annotated_owners(obj) if u not in uids]


def annotated_owners(obj: dict[str, Any]) -> dict[str, str]:
    """uid -> `namespace/name` of the NADs recorded in OWNERS_ANNOTATION ({} when absent or unreadable)."""
    text = ((obj.get("metadata") or {}).get("annotations") or {}).get(OWNERS_ANNOTATION)
    try:
        value = jsontext.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return {k: v for k, v in value.items() if isinstance(v, str)} if isinstance(value, dict) else {}


def _is_nad_ref(ref: dict[str, Any]) -> bool:
    return ref.get("kind") == NAD_KIND and str(ref.get("apiVersion", "")).startswith("k8s.cni.cncf.io/")

"""Namespaces attached through the real bridge and macvlan plugins, with our plugin as their IPAM."""

from __future__ import annotations

import ipaddress
import itertools
import json

import pytest

from tests.e2e.conftest import CNI_DIR

pytestmark = pytest.mark.netns

VERSIONS = ["0.3.1", "1.0.0"]


def _distinct_in(ips: list[str], cidr: str) -> None:
    addrs = [ipaddress.ip_interface(ip) for ip in ips]
    assert len({a.ip for a in addrs}) == len(addrs), f"duplicate addresses: {ips}"
    net = ipaddress.ip_network(cidr)
    assert all(a.ip in net and a.network == net for a in addrs), f"{ips} not all in {cidr}"


@pytest.mark.parametrize("version", VERSIONS)
def test_bridge_namespaces_get_distinct_addresses_reach_each_other_and_del_frees(netns_lab, store, version):
    bridge = netns_lab.bridge_name()
    conf = netns_lab.bridge_conf(bridge, version=version, range="10.123.0.0/24")
    spaces = [netns_lab.netns() for _ in range(3)]
    ips = {}
    for ns in spaces:
        out = netns_lab.add(conf, ns).ok()
        assert out["cniVersion"] == version
        if version == "0.3.1":
            assert all(ip["version"] == "4" for ip in out["ips"])
        ips[ns] = [ip["address"] for ip in out["ips"]]
        # What the main plugin reports is what the interface in the namespace carries.
        assert netns_lab.addresses(ns) == ips[ns]
    _distinct_in([ip for v in ips.values() for ip in v], "10.123.0.0/24")

    for a, b in itertools.permutations(spaces, 2):
        netns_lab.ping(a, ips[b][0])

    allocations = store.allocations("10.123.0.0-24")
    assert sorted(a["id"] for a in allocations.values()) == sorted(spaces)
    assert all(a["ifname"] == "eth0" for a in allocations.values())

    for ns in spaces:
        netns_lab.delete(conf, ns).ok()
    assert store.allocations("10.123.0.0-24") == {}
    assert store.reservations() == []


@pytest.mark.parametrize("version", VERSIONS)
def test_macvlan_namespaces_get_distinct_addresses_reach_each_other_and_del_frees(netns_lab, store, version):
    parent = netns_lab.parent_link()
    conf = netns_lab.macvlan_conf(parent, version=version, range="10.123.1.0/28", gateway="10.123.1.1")
    spaces = [netns_lab.netns() for _ in range(3)]
    ips = {}
    for ns in spaces:
        out = netns_lab.add(conf, ns).ok()
        assert out["cniVersion"] == version
        assert all(ip.get("gateway") == "10.123.1.1" for ip in out["ips"])
        ips[ns] = [ip["address"] for ip in out["ips"]]
        assert netns_lab.addresses(ns) == ips[ns]
    all_ips = [ip for v in ips.values() for ip in v]
    _distinct_in(all_ips, "10.123.1.0/28")
    # The configured gateway is never handed out.
    assert "10.123.1.1/28" not in all_ips

    for a, b in itertools.permutations(spaces, 2):
        netns_lab.ping(a, ips[b][0])

    assert len(store.allocations("10.123.1.0-28")) == 3
    for ns in spaces:
        netns_lab.delete(conf, ns).ok()
    assert store.allocations("10.123.1.0-28") == {}
    assert store.reservations() == []


def test_dual_stack_through_bridge(netns_lab, store):
    bridge = netns_lab.bridge_name()
    conf = netns_lab.bridge_conf(bridge, range="", ipRanges=[{"range": "10.123.2.0/24"},
                                                             {"range": "fd00:123:2::/64"}])
    a, b = netns_lab.netns(), netns_lab.netns()
    ips_a = netns_lab.add(conf, a).ips
    ips_b = netns_lab.add(conf, b).ips
    assert [ipaddress.ip_interface(i).version for i in ips_a] == [4, 6]
    assert set(netns_lab.addresses(a)) == set(ips_a)
    _distinct_in([ips_a[0], ips_b[0]], "10.123.2.0/24")
    _distinct_in([ips_a[1], ips_b[1]], "fd00:123:2::/64")
    netns_lab.ping(a, ips_b[0])
    netns_lab.ping(a, ips_b[1], tries=10)
    assert len(store.allocations("10.123.2.0-24")) == 2
    assert len(store.allocations("fd00-123-2---64")) == 2
    netns_lab.delete(conf, a).ok()
    netns_lab.delete(conf, b).ok()
    assert store.allocations("10.123.2.0-24") == {} and store.allocations("fd00-123-2---64") == {}


@pytest.mark.parametrize("main", ["bridge", "macvlan"])
def test_del_after_the_namespace_is_gone_succeeds_and_frees(netns_lab, store, main):
    conf = (netns_lab.bridge_conf(netns_lab.bridge_name(), range="10.123.3.0/24") if main == "bridge"
            else netns_lab.macvlan_conf(netns_lab.parent_link(), range="10.123.3.0/24"))
    ns = netns_lab.netns()
    netns_lab.add(conf, ns).ok()
    assert len(store.allocations("10.123.3.0-24")) == 1
    from tests.e2e.conftest import sh

    sh("ip", "netns", "delete", ns)
    # CNI_NETNS still names the deleted namespace, as a runtime's retry after a node reboot would.
    netns_lab.delete(conf, ns).ok()
    assert store.allocations("10.123.3.0-24") == {}
    assert store.reservations() == []
    # ... and again, with no namespace at all.
    netns_lab.cni("DEL", conf, "", ns).ok()


def test_exhausted_range_fails_the_main_plugin_with_our_error_intact(netns_lab, store):
    bridge = netns_lab.bridge_name()
    conf = netns_lab.bridge_conf(bridge, range="10.123.4.0/30")
    a, b, c = (netns_lab.netns() for _ in range(3))
    netns_lab.add(conf, a).ok()
    netns_lab.add(conf, b).ok()

    # What our plugin says on its own ...
    direct = netns_lab.cni("ADD", conf, c, "direct", plugin=str(netns_lab.plugin_bin / "whereabouts"), track=False)
    assert direct.rc != 0 and direct.out["code"] == 100, direct.stdout
    # ... is what the runtime gets from the main plugin.
    through = netns_lab.add(conf, c)
    assert through.rc != 0
    assert through.out["code"] == 100
    assert through.out["msg"] == direct.out["msg"]
    assert "10.123.4.0/30" in through.out["msg"]
    # The runtime's DEL after the failed ADD succeeds and leaves the two holders alone.
    netns_lab.delete(conf, c).ok()
    assert len(store.allocations("10.123.4.0-30")) == 2


def test_static_address_through_the_ips_capability(netns_lab, store, tmp_path):
    """`ips` reaches us as runtimeConfig.ips when the config declares the capability (libcni's rule)."""
    bridge = netns_lab.bridge_name()
    conf = netns_lab.bridge_conf(bridge, range="10.123.6.0/24")
    conf["capabilities"] = {"ips": True}
    conf["runtimeConfig"] = {"ips": ["10.123.6.77/24"]}
    a, b = netns_lab.netns(), netns_lab.netns()
    assert netns_lab.add(conf, a).ips == ["10.123.6.77/24"]
    assert netns_lab.addresses(a) == ["10.123.6.77/24"]
    # The static address is recorded in the pool, so a dynamic request never gets it.
    plain = netns_lab.bridge_conf(bridge, range="10.123.6.0/24", range_start="10.123.6.77")
    assert netns_lab.add(plain, b).ips == ["10.123.6.78/24"]
    netns_lab.ping(b, "10.123.6.77")
    assert set(store.allocations("10.123.6.0-24")) == {"77", "78"}
    # Another namespace asking for the same static address is refused by us, through the bridge.
    c = netns_lab.netns()
    taken = netns_lab.add(conf, c)
    assert taken.rc != 0 and taken.out["code"] == 101, taken.stdout
    for ns, cf in ((a, conf), (b, plain), (c, conf)):
        netns_lab.delete(cf, ns).ok()
    assert store.allocations("10.123.6.0-24") == {}


def test_check_through_the_main_plugin(netns_lab):
    """CHECK (0.4.0+) reaches our plugin with the prevResult of the main plugin, and our verdict comes back."""
    bridge = netns_lab.bridge_name()
    conf = netns_lab.bridge_conf(bridge, version="1.0.0", range="10.123.7.0/24")
    ns = netns_lab.netns()
    checked = dict(conf, prevResult=netns_lab.add(conf, ns).ok())
    netns_lab.cni("CHECK", checked, ns, ns).ok()
    # Free the address behind the bridge's back: the interface still has it, the store does not.
    ours = str(netns_lab.plugin_bin / "whereabouts")
    netns_lab.cni("DEL", conf, ns, ns, plugin=ours, track=False).ok()
    failed = netns_lab.cni("CHECK", checked, ns, ns)
    assert failed.rc != 0 and failed.out["code"] == 103, failed.stdout
    assert "10.123.7.1" in failed.out["msg"]


def test_version_through_the_reference_plugins_dir():
    """Sanity: the reference plugins we run against are the ones the suite expects."""
    if not (CNI_DIR / "bridge").exists():
        pytest.skip("containernetworking-plugins not installed")
    import subprocess

    out = subprocess.run([str(CNI_DIR / "bridge")], input='{"cniVersion":"1.0.0"}', text=True,
                         env={"CNI_COMMAND": "VERSION"}, stdout=subprocess.PIPE).stdout
    assert "1.0.0" in json.loads(out)["supportedVersions"]

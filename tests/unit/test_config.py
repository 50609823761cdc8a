"""The ipam config parser: every key, range form and invalid value."""

import ipaddress
import json

import pytest

from whereabouts.plugin.config import load_ipam, merge_flat, parse_cni_args, parse_ipam, requested_ips
from whereabouts.errors import InvalidConfig, InvalidEnvironment

KUBE = {"kubeconfig": "/etc/kube.conf"}


def ipam(**kw):
    base = {"type": "whereabouts", "kubernetes": KUBE}
    base.update(kw)
    return base


def test_cidr_with_host_bits_drops_them():
    cfg = parse_ipam(ipam(range="192.168.2.225/28"))
    (rng,) = cfg.ranges
    assert rng.cidr == "192.168.2.224/28"
    assert (rng.first, rng.last) == (1, 14)


def test_start_end_form_sets_span_and_network_from_end():
    (rng,) = parse_ipam(ipam(range="10.0.0.10-10.0.0.20/24")).ranges
    assert rng.cidr == "10.0.0.0/24"
    assert (str(rng.address(rng.first)), str(rng.address(rng.last))) == ("10.0.0.10", "10.0.0.20")


def test_range_start_and_end_narrow_the_span():
    (rng,) = parse_ipam(ipam(range="10.0.0.0/24", range_start="10.0.0.100", range_end="10.0.0.110")).ranges
    assert (rng.first, rng.last) == (100, 110)


def test_range_start_at_network_address_is_clamped_to_first_usable():
    (rng,) = parse_ipam(ipam(range="10.0.0.0/24", range_start="10.0.0.0")).ranges
    assert rng.first == 1


@pytest.mark.parametrize("key,value", [("range_start", "10.0.1.5"), ("range_end", "10.9.0.1"), ("range_start", "fd00::1")])
def test_range_bounds_outside_the_network_are_errors(key, value):
    with pytest.raises(InvalidConfig, match=key):
        parse_ipam(ipam(range="10.0.0.0/24", **{key: value}))


def test_start_after_end_is_an_error():
    with pytest.raises(InvalidConfig, match="empty"):
        parse_ipam(ipam(range="10.0.0.0/24", range_start="10.0.0.50", range_end="10.0.0.40"))


@pytest.mark.parametrize("cidr", ["10.0.0.0/31", "10.0.0.1/32", "fd00::/127", "fd00::1/128"])
def test_ranges_without_usable_addresses_are_errors(cidr):
    with pytest.raises(InvalidConfig, match="no usable address"):
        parse_ipam(ipam(range=cidr))


@pytest.mark.parametrize("cidr,size", [("10.0.0.0/30", 2), ("fd00::/112", 65534), ("fd00::/64", 2**64 - 2), ("::/64", 2**64 - 2)])
def test_spans(cidr, size):
    (rng,) = parse_ipam(ipam(range=cidr)).ranges
    assert rng.size == size


@pytest.mark.parametrize("bad", ["10.0.0.0", "10.0.0.0/33", "nonsense", "", 42, None, "10.0.0.300-10.0.0.5/24", "10.0.0.1-/24"])
def test_invalid_ranges_name_the_key(bad):
    with pytest.raises(InvalidConfig) as e:
        parse_ipam(ipam(range=bad) if bad is not None else ipam())
    assert "range" in e.value.msg


def test_start_end_form_start_must_lie_in_network():
    with pytest.raises(InvalidConfig, match="outside"):
        parse_ipam(ipam(range="10.1.0.5-10.0.0.20/24"))


def test_exclude_cidrs_and_bare_ips_are_merged():
    (rng,) = parse_ipam(ipam(range="10.0.0.0/24", exclude=["10.0.0.0/30", "10.0.0.4", "10.0.0.10/31"])).ranges
    assert rng.excluded == ((0, 4), (10, 11))


def test_exclude_of_the_other_family_is_an_error():
    with pytest.raises(InvalidConfig, match=r"exclude\[0\]"):
        parse_ipam(ipam(range="10.0.0.0/24", exclude=["fd00::/64"]))


def test_exclude_must_be_a_list():
    with pytest.raises(InvalidConfig, match="exclude"):
        parse_ipam(ipam(range="10.0.0.0/24", exclude="10.0.0.1"))


def test_gateway_inside_the_range_is_excluded():
    cfg = parse_ipam(ipam(range="10.0.0.0/24", gateway="10.0.0.1"))
    assert cfg.ranges[0].excluded == ((1, 1),)
    assert cfg.ranges[0].gateway == 1


def test_ip_ranges_follow_the_top_level_range():
    cfg = parse_ipam(ipam(range="10.0.0.0/24", ipRanges=[{"range": "fd00::/64", "exclude": ["fd00::1"]},
                                                           {"range": "10.1.0.0/24", "range_start": "10.1.0.9"}]))
    assert [r.cidr for r in cfg.ranges] == ["10.0.0.0/24", "fd00::/64", "10.1.0.0/24"]
    assert cfg.ranges[1].excluded == ((1, 1),)
    assert cfg.ranges[2].first == 9


def test_ip_range_errors_name_the_entry():
    with pytest.raises(InvalidConfig, match=r"ipRanges\[1\]\.range_start"):
        parse_ipam(ipam(ipRanges=[{"range": "10.0.0.0/24"}, {"range": "10.1.0.0/24", "range_start": "10.2.0.1"}]))


def test_duplicate_ranges_are_an_error():
    with pytest.raises(InvalidConfig, match="twice"):
        parse_ipam(ipam(range="10.0.0.0/24", ipRanges=[{"range": "10.0.0.0/24"}]))


def test_no_range_is_an_error():
    with pytest.raises(InvalidConfig, match="no range"):
        parse_ipam(ipam())


def test_defaults():
    cfg = parse_ipam(ipam(range="10.0.0.0/24"))
    assert cfg.overlapping_ranges is True
    assert (cfg.lease_duration_ms, cfg.renew_deadline_ms, cfg.retry_period_ms) == (1500, 1000, 500)
    assert cfg.network_name == "" and cfg.log_file == "" and cfg.log_level == "verbose"


def test_all_other_keys():
    cfg = parse_ipam(ipam(
        range="10.0.0.0/24", gateway="10.0.0.254",
        routes=[{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.0.0.254"}],
        dns={"nameservers": ["10.0.0.53"], "domain": "example.org", "search": ["a"], "options": ["ndots:2"]},
        addresses=[{"address": "10.9.0.5/24", "gateway": "10.9.0.1"}],
        network_name="blue", enable_overlapping_ranges=False,
        leader_lease_duration=3000, leader_renew_deadline=2000, leader_retry_period=100,
        log_file="/tmp/x.log", log_level="debug", sleep_for_race=1,
        datastore="kubernetes", etcd_host="ignored", reconciler_cron_expression="30 4 * * *",
    ))
    assert cfg.routes == ({"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.0.0.254"})
    assert cfg.dns["nameservers"] == ["10.0.0.53"] and cfg.dns["domain"] == "example.org"
    assert str(cfg.addresses[0].interface) == "10.9.0.5/24"
    assert cfg.network_name == "blue" and cfg.overlapping_ranges is False
    assert (cfg.lease_duration_ms, cfg.renew_deadline_ms, cfg.retry_period_ms) == (3000, 2000, 100)
    assert cfg.log_level == "debug" and cfg.sleep_for_race == 1.0


@pytest.mark.parametrize("key,value", [
    ("gateway", "10.0.0.999"), ("gateway", 5), ("routes", [{"gw": "1.1.1.1"}]), ("routes", "x"),
    ("dns", {"nameservers": "10.0.0.1"}), ("dns", {"nameservers": ["not-an-ip"]}), ("addresses", [{"address": "10.0.0.1"}]),
    ("network_name", "Blue_Net"), ("network_name", 7), ("enable_overlapping_ranges", "yes"),
    ("leader_lease_duration", -5), ("leader_lease_duration", "1500"), ("log_level", "chatty"), ("log_file", 3),
    ("sleep_for_race", "soon"), ("node_slice_size", "/8"), ("type", "host-local"), ("kubernetes", "x"),
])
def test_invalid_values_name_key_and_value(key, value):
    with pytest.raises(InvalidConfig) as e:
        parse_ipam(ipam(range="10.0.0.0/24", **{key: value}))
    assert key in e.value.msg


def test_missing_kubeconfig_is_an_error():
    with pytest.raises(InvalidConfig, match="kubernetes.kubeconfig"):
        parse_ipam({"type": "whereabouts", "range": "10.0.0.0/24"})


def test_flat_file_fills_unset_keys_inline_wins(tmp_path):
    flat = tmp_path / "whereabouts.conf"
    flat.write_text(json.dumps({"datastore": "kubernetes", "kubernetes": {"kubeconfig": "/flat/kubeconfig"},
                                "log_level": "debug", "range": "10.9.0.0/16", "enable_overlapping_ranges": False}))
    cfg = load_ipam({"ipam": {"type": "whereabouts", "range": "10.0.0.0/24", "configuration_path": str(flat)}})
    assert cfg.kubeconfig == "/flat/kubeconfig"
    assert cfg.log_level == "debug"
    assert cfg.ranges[0].cidr == "10.0.0.0/24"
    assert cfg.overlapping_ranges is True  # inline only


def test_flat_file_is_optional_when_inline_is_complete(tmp_path):
    cfg = load_ipam({"ipam": ipam(range="10.0.0.0/24", configuration_path=str(tmp_path / "absent.conf"))})
    assert cfg.kubeconfig == "/etc/kube.conf"


def test_flat_file_that_is_not_json_is_named(tmp_path):
    flat = tmp_path / "whereabouts.conf"
    flat.write_text("{nope")
    with pytest.raises(InvalidConfig, match=str(flat)):
        load_ipam({"ipam": ipam(range="10.0.0.0/24", configuration_path=str(flat))})


def test_merge_nested_objects():
    assert merge_flat({"kubernetes": {}}, {"kubernetes": {"kubeconfig": "k"}}) == {"kubernetes": {"kubeconfig": "k"}}


def test_missing_ipam_section():
    with pytest.raises(InvalidConfig, match="ipam"):
        load_ipam({"name": "x"})


def test_cni_args_parse_tolerantly_first_wins():
    args = parse_cni_args("IgnoreUnknown=true;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;X=a=b;K8S_POD_NAME=q;")
    assert args == {"IgnoreUnknown": "true", "K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "p", "X": "a=b"}


def test_cni_args_invalid_pair():
    with pytest.raises(InvalidEnvironment, match="CNI_ARGS"):
        parse_cni_args("K8S_POD_NAME")


def test_requested_ips_precedence():
    conf = {"runtimeConfig": {"ips": ["10.0.0.5/24"]}, "args": {"cni": {"ips": ["10.0.0.6"]}}}
    assert requested_ips(conf, {"IP": "10.0.0.7"}) == ("runtimeConfig.ips", (ipaddress.ip_address("10.0.0.5"),))
    assert requested_ips({"args": {"cni": {"ips": ["10.0.0.6"]}}}, {"IP": "10.0.0.7"})[0] == "args.cni.ips"
    assert requested_ips({}, {"IP": "10.0.0.7,fd00::7"}) == (
        "CNI_ARGS IP", (ipaddress.ip_address("10.0.0.7"), ipaddress.ip_address("fd00::7")))
    assert requested_ips({}, {}) == ("", ())


@pytest.mark.parametrize("conf", [{"runtimeConfig": {"ips": "10.0.0.5"}}, {"runtimeConfig": {"ips": ["x"]}},
                                  {"args": {"cni": {"ips": [5]}}}])
def test_requested_ips_invalid(conf):
    with pytest.raises(InvalidConfig):
        requested_ips(conf, {})


@pytest.mark.parametrize("value", [100, 8, 131072, "1024", True, -256])
def test_block_size_must_be_a_power_of_two_in_bounds(value):
    with pytest.raises(InvalidConfig, match="block_size"):
        parse_ipam(ipam(range="10.0.0.0/16", block_size=value))


def test_block_size_default_is_the_single_go_layout():
    assert parse_ipam(ipam(range="10.0.0.0/16")).block_size == 0
    assert parse_ipam(ipam(range="10.0.0.0/16", block_size=1024)).block_size == 1024


def test_single_lease():
    assert parse_ipam(ipam(range="10.0.0.0/24")).single_lease is True
    assert parse_ipam(ipam(range="10.0.0.0/24", single_lease=False)).single_lease is False
    with pytest.raises(InvalidConfig, match="single_lease"):
        parse_ipam(ipam(range="10.0.0.0/24", single_lease="yes"))

"""Input an attacker or a careless operator can write, refused at the CNI boundary with a named
error and before anything is written: paths that are not regular files, kubeconfigs that would
weaken TLS, IPv6 zone ids, identifiers that Kubernetes would never produce, hostile nesting."""

from __future__ import annotations

import base64
import os
import threading
from pathlib import Path

import pytest

from tests.cni.test_boundary import conf
from tests.helpers.cni import finish, start
from tests.helpers.kubeconfig import write_kubeconfig


def run_bounded(config, command: str = "ADD", **kw):
    """Like `run`, but an invocation that hangs fails the test in seconds rather than minutes."""
    return finish(start(config, command, **kw), timeout=20)


@pytest.fixture
def fifo(tmp_path) -> Path:
    """A FIFO that nobody writes to: opening or reading it the ordinary way blocks forever."""
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.fixture
def fifo_reader(fifo):
    """The same FIFO with a reader on the other end, so that an open for writing succeeds."""
    stop = threading.Event()

    def read() -> None:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        stop.wait(30)
        os.close(fd)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    yield fifo
    stop.set()
    thread.join()


# --- paths from the network config ----------------------------------------------------------


@pytest.mark.parametrize("key", ["configuration_path", "kubeconfig"])
def test_a_fifo_as_a_config_path_is_refused(fifo, key):
    ipam = {"configuration_path": str(fifo)} if key == "configuration_path" else {"kubernetes": {"kubeconfig": str(fifo)}}
    err = run_bounded(conf(**ipam)).error(7)
    assert "not a regular file" in err["msg"] and str(fifo) in err["msg"]


def test_a_device_as_the_kubeconfig_is_refused():
    err = run_bounded(conf(kubernetes={"kubeconfig": "/dev/zero"})).error(7)
    assert "not a regular file" in err["msg"]


def test_an_oversized_kubeconfig_is_refused(tmp_path):
    big = tmp_path / "big.kubeconfig"
    big.write_bytes(b"#" * (5 << 20))
    assert "larger than" in run_bounded(conf(kubernetes={"kubeconfig": str(big)})).error(7)["msg"]


def test_a_fifo_as_log_file_is_not_written_to(fifo_reader, tmp_path):
    """The invocation goes on without its log (as for any log_file it cannot open) instead of blocking."""
    out = run_bounded(conf(log_file=str(fifo_reader)))
    assert out.error(11)  # the kubeconfig does not exist: the next step after opening the log
    assert "not a regular file" in out.stderr


@pytest.mark.parametrize("field", ["tokenFile", "client_certificate", "ca_file"])
def test_a_fifo_named_inside_the_kubeconfig_is_refused(fifo, tmp_path, field):
    extra = {field: str(fifo)}
    if field == "client_certificate":
        extra["client_key"] = str(fifo)
    kubeconfig = write_kubeconfig(tmp_path / "kc", "https://127.0.0.1:1", **extra)
    err = run_bounded(conf(kubernetes={"kubeconfig": str(kubeconfig)})).error(7)
    assert "not a regular file" in err["msg"]


# --- kubeconfigs that would weaken TLS ------------------------------------------------------


@pytest.mark.parametrize("value", ["false", "true", 0, "no"])
def test_insecure_skip_tls_verify_must_be_a_boolean(tmp_path, value):
    kubeconfig = write_kubeconfig(tmp_path / "kc", "https://127.0.0.1:1", token="secret",
                                  insecure_skip_tls_verify=value)
    err = run_bounded(conf(kubernetes={"kubeconfig": str(kubeconfig)})).error(7)
    assert "insecure-skip-tls-verify must be true or false" in err["msg"]


def test_a_certificate_authority_together_with_insecure_is_refused(tmp_path):
    kubeconfig = write_kubeconfig(tmp_path / "kc", "https://127.0.0.1:1", ca_file=tmp_path / "kc", token="t",
                                  insecure_skip_tls_verify=True)
    assert "contradictory" in run_bounded(conf(kubernetes={"kubeconfig": str(kubeconfig)})).error(7)["msg"]


@pytest.mark.parametrize("data", ["", "   ", base64.b64encode(b"\n").decode()])
def test_certificate_authority_data_decoding_to_nothing_is_refused(tmp_path, data):
    """Not a fallback to the system trust store: the operator meant one CA and named none."""
    kubeconfig = write_kubeconfig(tmp_path / "kc", "https://127.0.0.1:1", token="t",
                                  certificate_authority_data=data or base64.b64encode(b"").decode() + "  ")
    assert "certificate-authority-data" in run_bounded(conf(kubernetes={"kubeconfig": str(kubeconfig)})).error(7)["msg"]


# --- IPv6 zone ids ----------------------------------------------------------------------------


@pytest.mark.parametrize("ipam,key", [
    ({"range": "fe80::%eth0/64"}, "range"),
    ({"range": "fd00::/64", "exclude": ["fd00::5%x y"]}, "exclude[0]"),
    ({"range": "fd00::/64", "gateway": "fd00::1%a?b#c"}, "gateway"),
    ({"range": "fd00::/64", "range_start": "fd00::10%lo\r\nX: y"}, "range_start"),
    ({"ipRanges": [{"range": "fd00::%0/64"}]}, "ipRanges[0].range"),
    ({"range": "fd00::/64", "routes": [{"dst": "fe80::%eth0/64"}]}, "routes[0].dst"),
])
def test_ipv6_zone_ids_are_refused(ipam, key):
    err = run_bounded(conf(**ipam)).error(7)
    assert key in err["msg"] and "zone" in err["msg"]


def test_a_requested_address_with_a_zone_is_refused():
    c = conf(range="fd00::/64")
    c["args"] = {"cni": {"ips": ["fd00::5%eth0"]}}
    assert "zone" in run_bounded(c).error(7)["msg"]


def test_names_are_percent_encoded_in_request_paths():
    from whereabouts.k8s.api import KubeAPI
    from whereabouts.k8s.kubeconfig import ClusterAccess

    api = KubeAPI(ClusterAccess(server="http://127.0.0.1:1", namespace="ns"))
    assert api.custom_path("ippools", "a b/c?d#e\r\n%") == (
        "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces/ns/ippools/a%20b%2Fc%3Fd%23e%0D%0A%25")
    assert api.lease_path("x/y") == "/apis/coordination.k8s.io/v1/namespaces/ns/leases/x%2Fy"


# --- identifiers ----------------------------------------------------------------------------


@pytest.mark.parametrize("kw,field", [
    ({"container_id": "x\n"}, "CNI_CONTAINERID"),
    ({"container_id": "a" * 257}, "CNI_CONTAINERID"),
    ({"ifname": "ééééééééé"}, "CNI_IFNAME"),  # 9 characters, 18 bytes: the kernel counts bytes
    ({"ifname": "eth\x7f0"}, "CNI_IFNAME"),
    ({"pod_namespace": "x/y\nz"}, "K8S_POD_NAMESPACE"),
    ({"pod_namespace": "Default"}, "K8S_POD_NAMESPACE"),
    ({"pod": "web/0"}, "K8S_POD_NAME"),
    ({"pod": "a" * 254}, "K8S_POD_NAME"),
])
def test_identifiers_kubernetes_would_never_produce_are_refused(kw, field):
    err = run_bounded(conf(), **kw).error(4)
    assert field in err["msg"]


@pytest.mark.parametrize("name", ["a.", "a..b", ".a", "a_b", "A", "a.-b"])
def test_network_names_that_would_make_invalid_object_names_are_refused(name):
    """They used to pass, take the Lease, and fail with 422 at the first write."""
    err = run_bounded(conf(network_name=name)).error(7)
    assert "network_name" in err["msg"]


@pytest.mark.parametrize("name", ["a", "net-1", "a.b", "team.net-2"])
def test_valid_network_names_pass(name):
    assert run_bounded(conf(network_name=name)).error(11)  # on to the (missing) kubeconfig


# --- hostile stdin ----------------------------------------------------------------------------


def test_deeply_nested_stdin_is_a_decode_error():
    err = run_bounded(b'{"cniVersion":"1.0.0","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}").error(6)
    assert "nested" in err["msg"]


def test_a_missing_cni_version_is_named():
    c = conf()
    del c["cniVersion"]
    assert "no cniVersion" in run_bounded(c).error(1)["msg"]


def test_a_lease_duration_as_long_as_the_deadline_is_refused():
    err = run_bounded(conf(leader_lease_duration=20000, lock_timeout_ms=8000)).error(7)
    assert "leader_lease_duration" in err["msg"] and "lock_timeout_ms" in err["msg"]

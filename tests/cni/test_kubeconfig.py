"""Every kubeconfig form the plugin reads, against the real API server's TLS and authentication."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from tests.helpers.cni import run
from tests.helpers.kubeconfig import write_kubeconfig


@pytest.fixture
def forms(cluster, namespace, tmp_path, netconf):
    state = cluster.kubeconfig.parent
    ca = cluster.ca_file.read_bytes()

    def make(name: str, ca_file=None, token=None, **extra) -> dict:
        path = write_kubeconfig(tmp_path / f"{name}.kubeconfig", cluster.server, ca_file=ca_file, token=token,
                                namespace=namespace, **extra)
        return netconf({"kubernetes": {"kubeconfig": str(path)}})

    make.state, make.ca = state, ca
    return make


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_token_file(forms, tmp_path, cluster):
    token_file = tmp_path / "token"
    token_file.write_text(cluster.token + "\n")
    run(forms("tokenfile", ca_file=cluster.ca_file, **{"tokenFile": str(token_file)}), "ADD").ok()


def test_certificate_authority_data(forms, cluster):
    run(forms("cadata", token=cluster.token, certificate_authority_data=b64(forms.ca)), "ADD").ok()


def test_insecure_skip_tls_verify(forms, cluster):
    run(forms("insecure", token=cluster.token, insecure_skip_tls_verify=True), "ADD").ok()


def test_tls_server_name(forms, cluster):
    run(forms("sni-ok", ca_file=cluster.ca_file, token=cluster.token, tls_server_name="kubernetes.default.svc"), "ADD").ok()
    err = run(forms("sni-bad", ca_file=cluster.ca_file, token=cluster.token, tls_server_name="wrong.example"),
              "ADD").error(5)
    assert "TLS verification" in err["msg"]


def test_wrong_ca_is_refused(forms, tmp_path):
    other = forms.state / "client-ca.crt"  # a valid CA, but not the server's
    err = run(forms("wrongca", ca_file=other, token="x"), "ADD").error(5)
    assert "TLS" in err["msg"]


def test_client_certificate_files(forms, cluster):
    run(forms("certfile", ca_file=cluster.ca_file, client_certificate=str(forms.state / "admin-client.crt"),
              client_key=str(forms.state / "admin-client.key")), "ADD").ok()


def test_client_certificate_data(forms, cluster):
    cert = (forms.state / "admin-client.crt").read_bytes()
    key = (forms.state / "admin-client.key").read_bytes()
    run(forms("certdata", ca_file=cluster.ca_file, client_certificate_data=b64(cert), client_key_data=b64(key)),
        "ADD").ok()


def test_bad_token_is_refused_with_a_clear_message(forms, cluster):
    err = run(forms("badtoken", ca_file=cluster.ca_file, token="not-a-token"), "ADD").error(5)
    assert "refused our credentials (401)" in err["msg"], err


def test_exec_plugin_goes_through_the_official_loader(forms, cluster, tmp_path):
    script = tmp_path / "cred.sh"
    script.write_text("#!/bin/sh\n" + "echo '" + json.dumps({
        "apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
        "status": {"token": cluster.token}}) + "'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    conf = forms("exec", ca_file=cluster.ca_file, exec={
        "apiVersion": "client.authentication.k8s.io/v1", "command": str(script), "interactiveMode": "Never"})
    run(conf, "ADD").ok()


def test_malformed_kubeconfig(forms, netconf, tmp_path):
    bad = tmp_path / "bad.kubeconfig"
    bad.write_text("clusters: [unterminated")
    err = run(netconf({"kubernetes": {"kubeconfig": str(bad)}}), "ADD").error(7)
    assert str(bad) in err["msg"]


@pytest.mark.parametrize("server, why", [
    ("https://127.0.0.1:99999", "port '99999' is not a number from 1 to 65535"),
    ("https://127.0.0.1:x", "port 'x' is not a number"),
    ("https://[::1", "malformed [IPv6] host"),
    ("https://:6443", "has no host"),
])
def test_a_server_url_that_cannot_be_used_is_a_config_error_that_names_it(cluster, netconf, tmp_path, server, why):
    path = write_kubeconfig(tmp_path / "k", server, token="t")
    err = run(netconf({"kubernetes": {"kubeconfig": str(path)}}), "ADD").error(7)
    assert server in err["msg"] and why in err["msg"]

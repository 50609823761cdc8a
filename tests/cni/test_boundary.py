"""Input handling at the CNI boundary; none of these reach the store."""

import json

import pytest

from tests.helpers.cni import cni_env, run

VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def conf(version="1.0.0", **ipam):
    base = {"type": "whereabouts", "range": "10.0.0.0/24", "kubernetes": {"kubeconfig": "/nonexistent/kubeconfig"},
            "configuration_path": "/nonexistent/whereabouts.conf"}
    base.update(ipam)
    return {"cniVersion": version, "name": "n", "type": "bridge", "ipam": base}


@pytest.mark.parametrize("version", VERSIONS)
def test_version(version):
    out = run({"cniVersion": version}, "VERSION").ok().json
    assert out == {"cniVersion": version, "supportedVersions": VERSIONS}


def test_version_with_empty_stdin():
    assert run(b"", "VERSION").ok().json["supportedVersions"] == VERSIONS


def test_version_imports_no_http_or_kubernetes_code():
    import subprocess
    import sys

    code = ("import sys, io; sys.argv=['whereabouts']; from whereabouts.plugin.cni import run; "
            "run({'CNI_COMMAND': 'VERSION'}, b'{\"cniVersion\":\"1.0.0\"}', io.StringIO()); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('http', 'ssl', 'kubernetes', 'yaml')"
            " or m in ('whereabouts.k8s.api', 'whereabouts.k8s.http1', 'whereabouts.k8s.store')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


FORBIDDEN_ON_THE_ADD_PATH = ("kubernetes", "email", "http.client", "typing", "dataclasses", "yaml", "structlog",
                             "ssl", "socket", "urllib", "base64", "encodings.idna")


def test_a_real_add_imports_nothing_beyond_its_budget(cluster, namespace, tmp_path):
    """The start-up budget, enforced once: every pod attach pays each import (doc/design.md has the
    figures). A real ADD against the API server, with a JSON kubeconfig as the installer writes it."""
    import subprocess
    import sys

    kubeconfig = tmp_path / "kubeconfig.json"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": cluster.server,
                                                "certificate-authority": str(cluster.ca_file)}}],
        "users": [{"name": "u", "user": {"token": cluster.token}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": namespace}}]}))
    config = conf(kubernetes={"kubeconfig": str(kubeconfig)}, node_lock_dir=str(tmp_path / "locks"),
                  log_file=str(tmp_path / "log"))
    # Modules loaded before ours (by site, or an editable install's finder) are not the ADD path's.
    code = ("import atexit, sys; before = set(sys.modules); "
            "atexit.register(lambda: print(' '.join(sorted(set(sys.modules) - before)), file=sys.stderr)); "
            "from whereabouts.__main__ import main; sys.exit(main())")
    env = cni_env("ADD")
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(config).encode(), env=env,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout
    assert json.loads(proc.stdout)["ips"][0]["address"] == "10.0.0.1/24"
    loaded = proc.stderr.decode().split()
    assert "whereabouts.plugin.verbs" in loaded and "_ssl" in loaded
    paid = sorted(m for m in loaded if m in FORBIDDEN_ON_THE_ADD_PATH or m.split(".")[0] in FORBIDDEN_ON_THE_ADD_PATH)
    assert paid == [], f"the ADD path imports {paid}"


def test_missing_command():
    err = run(conf(), "").error(4)
    assert "CNI_COMMAND" in err["msg"]


def test_unknown_command():
    err = run(conf(), "ATTACH").error(4)
    assert "ATTACH" in err["msg"]


@pytest.mark.parametrize("field,kw", [("CNI_CONTAINERID", {"container_id": ""}), ("CNI_IFNAME", {"ifname": ""}),
                                      ("CNI_NETNS", {"netns": ""}), ("CNI_CONTAINERID", {"container_id": "-bad id"}),
                                      ("CNI_IFNAME", {"ifname": "a" * 16}), ("CNI_IFNAME", {"ifname": "a/b"})])
def test_invalid_env_names_the_variable(field, kw):
    err = run(conf(), "ADD", **kw).error(4)
    assert field in err["msg"]


def test_del_does_not_need_netns():
    # Reaches the kubeconfig, which does not exist: a transient error, not an env error.
    assert run(conf(), "DEL", netns="").error(11)


def test_bad_cni_args():
    err = run(conf(), "ADD", extra_args="NOEQUALS").error(4)
    assert "CNI_ARGS" in err["msg"]


@pytest.mark.parametrize("stdin", [b"", b"not json", b"[1,2]", b"\xff\xfe", b'{"cniVersion": "1.0.0"'])
def test_undecodable_stdin(stdin):
    run(stdin, "ADD").error(6)


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "2.0.0", None, 1])
def test_unsupported_versions(version):
    c = conf()
    c["cniVersion"] = version
    err = run(c, "ADD").error(1)
    assert "supported" in err["msg"]


def test_error_carries_the_config_version():
    err = run(conf("0.3.1", range="bogus"), "ADD").error(7)
    assert err["cniVersion"] == "0.3.1"


@pytest.mark.parametrize("ipam,key", [({"range": "10.0.0.0/33"}, "range"), ({"gateway": "x"}, "gateway"),
                                       ({"exclude": ["nope"]}, "exclude"), ({"type": "other"}, "type"),
                                       ({"log_level": "loud"}, "log_level"), ({"range_end": "10.0.9.1"}, "range_end")])
def test_invalid_config_names_key_and_value(ipam, key):
    err = run(conf(**ipam), "ADD").error(7)
    assert key in err["msg"]


def test_missing_ipam():
    err = run({"cniVersion": "1.0.0", "name": "n", "type": "bridge"}, "ADD").error(7)
    assert "ipam" in err["msg"]


@pytest.mark.parametrize("command,version", [("CHECK", "0.3.1"), ("GC", "1.0.0"), ("STATUS", "0.4.0")])
def test_verbs_need_their_minimum_version(command, version):
    run(conf(version), command).error(1)


def test_missing_kubeconfig_is_transient():
    err = run(conf(), "ADD").error(11)
    assert "/nonexistent/kubeconfig" in err["msg"]


def test_requested_ip_outside_every_range():
    c = conf()
    c["args"] = {"cni": {"ips": ["192.168.9.9"]}}
    err = run(c, "ADD").error(7)
    assert "192.168.9.9" in err["msg"] and "args.cni.ips" in err["msg"]


def test_huge_stdin_is_refused():
    run(b"{" + b" " * (5 << 20) + b"}", "ADD").error(6)


def test_unicode_garbage_in_config():
    run(json.dumps(conf(range="１０.0.0.0/24")).encode(), "ADD").error(7)

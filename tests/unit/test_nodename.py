"""Which node this is: NODENAME, else a nodename file, else /etc/hostname (the Go plugin's order)."""

import pytest

from whereabouts.errors import InvalidEnvironment
from whereabouts.plugin import nodename
from whereabouts.plugin.config import load_ipam


def test_the_environment_wins_then_the_first_nodename_file_then_hostname(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "nodename").write_text("worker-b\n")
    hostname = tmp_path / "hostname"
    hostname.write_text("  short-name \n")
    monkeypatch.setattr(nodename, "HOSTNAME_FILE", str(hostname))
    dirs = (str(tmp_path / "a"), str(tmp_path / "b"))
    assert nodename.node_name({"NODENAME": " worker-env "}, dirs) == "worker-env"
    assert nodename.node_name({}, dirs) == "worker-b"
    assert nodename.node_name({"NODENAME": ""}, (str(tmp_path / "a"),)) == "short-name"
    hostname.unlink()
    with pytest.raises(InvalidEnvironment, match="set NODENAME") as e:
        nodename.node_name({}, (str(tmp_path / "a"),))
    assert e.value.code == 4


def test_the_flat_files_configuration_path_and_directory_are_where_the_nodename_file_is_looked_for(tmp_path):
    flat = tmp_path / "whereabouts.d" / "whereabouts.conf"
    flat.parent.mkdir()
    flat.write_text('{"kubernetes": {"kubeconfig": "k"}, "configuration_path": "/etc/cni/net.d/whereabouts.d"}')
    conf = load_ipam({"name": "net", "ipam": {"type": "whereabouts", "range": "10.0.0.0/24",
                                               "configuration_path": str(flat)}})
    assert conf.nodename_dirs == (str(flat), str(flat.parent))
    conf = load_ipam({"name": "net", "ipam": {"type": "whereabouts", "range": "10.0.0.0/24",
                                               "kubernetes": {"kubeconfig": "k"},
                                               "configuration_path": str(tmp_path / "none")}})
    assert conf.nodename_dirs == (str(tmp_path / "none"),) and conf.name == "net"

"""`--full` turns the reliability suite from its fast CI variant into the long one that prints figures."""

import pytest


def pytest_addoption(parser):
    parser.addoption("--full", action="store_true", default=False,
                     help="run the reliability suite at full size (10,000 fuzz cases, 500-ADD bursts, ...)")


@pytest.fixture(scope="session")
def full(request) -> bool:
    return bool(request.config.getoption("--full"))


@pytest.fixture(scope="session")
def figures():
    """Collects `name: value` figures and prints them at the end of the session."""
    collected: dict[str, object] = {}
    yield collected
    if collected:
        print("\n== reliability figures ==")
        for key, value in collected.items():
            print(f"{key}: {value}")


@pytest.fixture(scope="session")
def fault_proxy_certs(tmp_path_factory):
    """The fault proxy's CA and serving certificate, made once per session (openssl takes a moment)."""
    from tests.helpers.faultproxy import make_certs

    return make_certs(tmp_path_factory.mktemp("faultproxy-certs"))


@pytest.fixture
def fault_proxy(cluster, namespace, tmp_path, fault_proxy_certs):
    """A `FaultProxy` in front of the test API server, with `.kubeconfig`: the admin token, the
    proxy's CA and this test's namespace. Stopped at teardown; no thread of it may outlive the test."""
    from tests.helpers.faultproxy import FaultProxy
    from tests.helpers.kubeconfig import write_kubeconfig

    proxy = FaultProxy(cluster.server, cluster.ca_file, fault_proxy_certs).start()
    proxy.kubeconfig = write_kubeconfig(tmp_path / "faultproxy.kubeconfig", proxy.url,
                                        ca_file=fault_proxy_certs.ca, token=cluster.token, namespace=namespace)
    try:
        yield proxy
    finally:
        proxy.stop()
        assert not proxy.alive(), f"fault proxy threads still running: {proxy.alive()}"

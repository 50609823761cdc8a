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

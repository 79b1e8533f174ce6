"""Fixtures of the e2e suite: a host check, and one running mesh per test module.

Every test here needs root, `ip netns` and /dev/net/tun; where they are missing the tests
fail with the reason (never skip). The mesh runs in namespaces named `ism<6 hex>-*`, unique
per run, and is torn down after its module, also when a test fails or pytest gets SIGTERM.
Configs, keys and process logs stay in pytest's temporary directory for post-mortems.
"""

from __future__ import annotations

import signal
from collections.abc import Generator, Iterator
from types import FrameType

import pytest

from isthmus.lab.mesh import Mesh
from isthmus.lab.netns import host_problems


@pytest.fixture(scope="session")
def netns_host() -> Iterator[None]:
    problems = host_problems()
    if problems:
        pytest.fail(
            "the e2e suite needs root, 'ip netns' and /dev/net/tun; this host has:\n  "
            + "\n  ".join(problems),
            pytrace=False,
        )

    # SIGTERM (a CI timeout) becomes KeyboardInterrupt, so pytest still tears fixtures down.
    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="module")
def mesh(
    netns_host: None, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mesh]:
    """The demo mesh (controller + three edges), built once for the requesting module."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    with Mesh(workdir=tmp_path_factory.mktemp(name)) as running:
        yield running


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the tails of the controller's and the edges' logs to a failed test's report."""
    report = yield
    running = getattr(item, "funcargs", {}).get("mesh")
    if report.failed and isinstance(running, Mesh):
        report.sections.append(("isthmus process logs", running.log_tails()))
    return report

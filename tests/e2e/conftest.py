"""Fixtures of the e2e suite: a host check, and one running mesh per test module.

Every test here needs root, `ip netns` and /dev/net/tun (the etcd tests also `etcd`); where
they are missing the tests fail with the reason (never skip). The mesh runs in namespaces
named `ism<6 hex>-*`, unique per run, and is torn down after its module, also when a test
fails or pytest gets SIGTERM. `mesh` is the demo mesh; modules needing another topology or
store (test_admission, test_controller_ha) build their own `Mesh` fixture the same way.
A failed test's report gets the log tails of every `Mesh` it used. Configs, keys and
process logs stay in pytest's temporary directory for post-mortems.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Generator, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from isthmus_lab.mesh import Mesh
from isthmus_lab.netns import host_problems


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


_FIGURES = pytest.StashKey[tuple[Path, dict[str, Any]]]()


@pytest.fixture(scope="session")
def figures(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Measured figures (a test sets `figures[name] = {...}`); at the end of the run they are
    written to `<basetemp>/e2e-figures.json` and printed in the terminal summary."""
    path = tmp_path_factory.getbasetemp() / "e2e-figures.json"
    found: dict[str, Any] = {}
    request.config.stash[_FIGURES] = (path, found)
    return found


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    stashed = config.stash.get(_FIGURES, None)
    if stashed is None or not stashed[1]:
        return
    path, found = stashed
    text = json.dumps(found, indent=2, sort_keys=True)
    path.write_text(text + "\n", encoding="utf-8")
    terminalreporter.write_sep("-", f"measured figures ({path})")
    terminalreporter.write_line(text)


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
    if report.failed:
        for name, running in getattr(item, "funcargs", {}).items():
            if isinstance(running, Mesh):
                report.sections.append((f"isthmus process logs ({name})", running.log_tails()))
    return report

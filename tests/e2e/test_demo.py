"""End to end: `isthmus demo`, README's first command, as an operator runs it.

The demo builds its own three-site mesh (tests/e2e/test_mesh.py draws it), exchanges TCP
and ping between every pair of sites, shows the operator's tools on the live mesh and
tears everything down. This runs the real command in a subprocess and checks what it
printed and that it left no namespace behind.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.netns

DEMO = [sys.executable, "-m", "isthmus", "demo"]


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def test_demo_runs_the_mesh_shows_the_tools_and_cleans_up(netns_host: None) -> None:
    before = _netns_names()
    done = subprocess.run(DEMO, capture_output=True, text=True, timeout=240, check=False)
    out = done.stdout
    assert done.returncode == 0, f"demo exited {done.returncode}\n{out}\n{done.stderr}"
    prefix = re.search(r"building namespaces (ism[0-9a-f]{6})-\*", out)
    assert prefix is not None, out
    for what in (
        "office host -> vpc-a pod",
        "vpc-a pod -> vpc-b service",
        "vpc-b pod -> office host",
    ):
        assert re.search(rf"{what}: TCP echo ok \(\d+ bytes\), ping 3/3", out), (what, out)
    # The tools, on the live mesh.
    assert re.search(r"^10\.97\.0\.0/16\s+vpc-b\s+serving\s*$", out, re.M), out  # routes
    assert re.search(r"^vpc-a\s+connected\s+3\s", out, re.M), out  # edges: applied the map
    assert "3 probes sent, 3 answered, 0% lost" in out, out  # ping
    assert "verdict: remote: forwarded through the tunnel to edge 'vpc-b'" in out, out
    assert "kernel route on the TUN: installed" in out and "problems: none" in out, out
    assert out.count("--- isthmus status (") == 3, out
    assert "NOT installed" not in out, out
    assert "demo ok: every exchange went through the mesh" in out, out
    # Torn down: none of its namespaces is left, and nothing else was touched.
    after = _netns_names()
    assert not {n for n in after if n.startswith(prefix.group(1))}, after
    assert before - after == set(), (before, after)


def test_demo_usage_error_exits_1() -> None:
    done = subprocess.run([*DEMO, "--no-such-option"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "unrecognized arguments: --no-such-option" in done.stderr

"""End to end: `isthmus demo`, README's first command, as an operator runs it.

The demo builds its own four-site mesh (isthmus_lab.demo): the three sites of
tests/e2e/test_mesh.py with the office behind a NAT router (no `endpoint`), and the
Kubernetes-like site of tests/e2e/test_masquerade.py with `masquerade` set. It exchanges TCP
and ping between the first three, a TCP echo office -> ClusterIP (its pod on another node),
shows the operator's tools on the live mesh and tears everything down. This runs the real
command in a subprocess and checks what it printed and that it left no namespace behind.
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
    # The office behind NAT: every other edge learned the NAT's public address.
    assert re.search(
        r"office is behind NAT \(no endpoint in its config\): vpc-a, vpc-b, k8s learned "
        r"198\.18\.0\.13:\d+ from its packets",
        out,
    ), out
    # The office reaches the ClusterIP: DNAT on node-1 to the pod on node-2, masqueraded.
    assert re.search(
        r"office host -> k8s ClusterIP: TCP echo ok \(\d+ bytes\), DNAT to pod 10\.244\.2\.10 "
        r"on node-2, masqueraded to node-1's 10\.240\.0\.1",
        out,
    ), out
    # The tools, on the live mesh.
    assert re.search(r"^10\.97\.0\.0/16\s+vpc-b\s+serving\s*$", out, re.M), out  # routes
    assert re.search(r"^10\.100\.0\.0/16\s+k8s\s+serving\s*$", out, re.M), out
    for site in ("vpc-a", "vpc-b", "office", "k8s"):  # edges: each applied the map (4 sites)
        assert re.search(rf"^{site}\s+connected\s+4\s", out, re.M), (site, out)
    assert re.search(r"^office\s+connected\s.*\s-\s+-\s*$", out, re.M), out  # no endpoint
    assert "3 probes sent, 3 answered, 0% lost" in out, out  # ping
    assert "verdict: remote: forwarded through the tunnel to edge 'vpc-b'" in out, out
    assert "kernel route on the TUN: installed" in out and "problems: none" in out, out
    assert (
        "masquerade: 10.100.0.0/16: from the tunnel, masqueraded to this edge's address"
    ) in out, out  # explain of the ClusterIP on k8s
    assert out.count("--- isthmus status (") == 4, out
    assert "endpoint: (none: behind NAT)" in out, out  # the office's own status
    office_peer = re.findall(
        r"^peer: office\n  endpoint: 198\.18\.0\.13:\d+ \(behind NAT, learned\)", out, re.M
    )
    assert len(office_peer) == 3, out  # in vpc-a's, vpc-b's and k8s's status
    assert "masquerade: 10.100.0.0/16\n  table inet isthmus_isthmus0: installed" in out, out
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

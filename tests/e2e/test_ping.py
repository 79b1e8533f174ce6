"""End to end: `isthmus ping` between real edges in network namespaces, through the CLI.

```
                 [ul] br0 198.18.0.1/24 -- controller :7000 (gRPC)
          +----------------------+----------------------+
   ul0 198.18.0.11        ul0 198.18.0.12        ul0 198.18.0.13       underlay, UDP :51820
  +---------------+      +---------------+      +---------------+
  | [vpc-a] edge  | <--> | [vpc-b] edge  | <--> | [office] edge |
  +---------------+      +---------------+      +---------------+
  vpc-a owns 10.244.0.0/16 + 10.96.0.0/16, vpc-b 10.245.0.0/16 + 10.97.0.0/16,
  office 172.16.0.0/24
```
`isthmus ping --json --socket <the edge's admin socket>` runs in the probing edge's
namespace; the probe travels edge to edge inside the tunnel (no workload is involved).
One demo mesh serves the module (the `mesh` fixture in conftest.py); the test that stops
an edge starts it again and waits until it is ready.
"""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Any

import pytest

from isthmus_lab.commands import ISTHMUS
from isthmus_lab.mesh import Mesh
from isthmus_lab.topology import DEMO

pytestmark = pytest.mark.netns


def isthmus_ping(
    mesh: Mesh, site: str, target: str, *args: str
) -> subprocess.CompletedProcess[str]:
    socket_path = str(mesh.edge_paths(site).admin_socket)
    argv = [*ISTHMUS, "ping", target, "--socket", socket_path, *args]
    return mesh.lab.run(mesh.edge_ns(site), argv, check=False, timeout=60.0)


def ping_json(mesh: Mesh, site: str, target: str, *args: str) -> tuple[int, dict[str, Any]]:
    done = isthmus_ping(mesh, site, target, "--json", *args)
    assert done.stdout, f"no JSON on stdout (exit {done.returncode}): {done.stderr}"
    return done.returncode, json.loads(done.stdout)


@pytest.mark.parametrize(
    ("src", "target", "edge", "route"),
    [
        ("vpc-a", "vpc-b", "vpc-b", None),
        ("office", "vpc-a", "vpc-a", None),
        ("office", DEMO.site("vpc-b").workload_ip, "vpc-b", "10.245.0.0/16"),
        ("vpc-a", "10.97.0.10", "vpc-b", "10.97.0.0/16"),  # vpc-b's service route
        ("vpc-b", "172.16.0.77", "office", "172.16.0.0/24"),
    ],
)
def test_ping_reports_the_answering_edge_route_path_and_rtt(
    mesh: Mesh, figures: dict[str, Any], src: str, target: str, edge: str, route: str | None
) -> None:
    code, doc = ping_json(mesh, src, target, "-c", "3", "-i", "0.1")
    assert code == 0, doc
    assert doc["target"] == target
    assert doc["summary"]["sent"] == 3 and doc["summary"]["answered"] == 3
    for reply in doc["replies"]:
        assert "error" not in reply, reply
        assert reply["edge"] == edge and reply["route"] == route
        assert reply["endpoint"] == mesh.endpoint(edge)  # the path: the edge's UDP endpoint
        assert reply["rtt_ms"] > 0
        assert reply["session"] in ("new", "existing")
    assert doc["replies"][-1]["session"] == "existing"
    figures[f"ping_rtt_ms {src}->{target}"] = doc["summary"]["rtt_ms"]


def test_ping_text_output(mesh: Mesh) -> None:
    done = isthmus_ping(mesh, "vpc-a", DEMO.site("vpc-b").workload_ip, "-c", "2", "-i", "0.1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    endpoint = mesh.endpoint("vpc-b")
    assert lines[0].startswith(f"pong from vpc-b ({endpoint}) via route 10.245.0.0/16 in ")
    assert lines[-1].startswith("2 probes sent, 2 answered, 0% lost, rtt min/avg/max = ")
    assert "PRIVATE" not in done.stdout.upper()


@pytest.mark.parametrize(
    ("src", "target", "message"),
    [
        ("vpc-a", "192.0.2.1", "no route for 192.0.2.1: no edge's route in the map holds it"),
        ("vpc-a", "10.244.1.10", "10.244.1.10 is local: it is in 10.244.0.0/16"),
        ("vpc-a", "vpc-a", "vpc-a is this edge"),
        ("vpc-a", "nosuchedge", "no edge named 'nosuchedge' in the map"),
    ],
)
def test_ping_a_target_without_a_remote_route_fails_clearly(
    mesh: Mesh, src: str, target: str, message: str
) -> None:
    done = isthmus_ping(mesh, src, target, "--json")
    assert done.returncode == 1
    assert done.stdout == ""
    assert message in done.stderr


def test_ping_an_edge_that_is_stopped_times_out(mesh: Mesh) -> None:
    mesh.wait_ready()
    code, doc = ping_json(mesh, "vpc-a", "vpc-b", "-c", "1")
    assert code == 0, doc  # a session is in place before the edge stops
    mesh.kill_edge("vpc-b", signal.SIGTERM)
    try:
        code, doc = ping_json(mesh, "vpc-a", "vpc-b", "-c", "2", "-i", "0.1")
        assert code == 1, doc
        assert doc["summary"] == {"sent": 2, "answered": 0, "lost": 2, "rtt_ms": None}
        for reply in doc["replies"]:
            assert reply["error"] == "no answer from vpc-b within 2 s" and reply["lost"] is True
        text = isthmus_ping(mesh, "vpc-a", DEMO.site("vpc-b").workload_ip, "-c", "1")
        assert text.returncode == 1
        assert "no answer from vpc-b within 2 s" in text.stdout
        assert "1 probes sent, 0 answered, 100% lost" in text.stdout
    finally:
        mesh.start_edge("vpc-b")
        mesh.wait_ready()
    code, doc = ping_json(mesh, "vpc-a", "vpc-b", "-c", "1")
    assert code == 0, doc

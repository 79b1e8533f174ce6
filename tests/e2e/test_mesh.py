"""End to end: a controller and three real edges in network namespaces, with real traffic.

```
                 [ul] br0 198.18.0.1/24 -- controller :7000 (gRPC)
          +----------------------+----------------------+
   ul0 198.18.0.11        ul0 198.18.0.12        ul0 198.18.0.13       underlay, UDP :51820
  +---------------+      +---------------+      +---------------+
  | [vpc-a] edge  |      | [vpc-b] edge  |      | [office] edge |
  | isthmus0 TUN  |      | isthmus0 TUN  |      | isthmus0 TUN  |
  | lan0 .1       |      | lan0 .1       |      | lan0 .1       |
  +-------+-------+      +-------+-------+      +-------+-------+
          | eth0                 | eth0                 | eth0
  +-------+-------+      +-------+-------+      +-------+-------+
  | [vpc-a-pod]   |      | [vpc-b-pod]   |      | [office-host] |
  | 10.244.1.10   |      | 10.245.1.10   |      | 172.16.0.10   |
  | lo 10.96.0.10 |      | lo 10.97.0.10 |      |               |
  +---------------+      +---------------+      +---------------+
  vpc-a owns 10.244.0.0/16 + 10.96.0.0/16, vpc-b 10.245.0.0/16 + 10.97.0.0/16,
  office 172.16.0.0/24
```
One mesh serves the whole module (the `mesh` fixture in conftest.py). Tests that stop the
controller or an edge start it again and wait until every edge is ready before they end.
"""

from __future__ import annotations

import itertools
import secrets

import pytest

from isthmus_lab.commands import wait_until
from isthmus_lab.mesh import Mesh
from isthmus_lab.topology import DEMO, EDGE_UNDERLAY_IF, TUN_NAME, WORKLOAD_IF
from isthmus_lab.traffic import ECHO_PORT, parse_ping

pytestmark = pytest.mark.netns

SITES = DEMO.site_names
PAIRS = list(itertools.permutations(SITES, 2))


def _payload(label: str) -> bytes:
    # Text to recognise plus every byte value, so nothing on the way may mangle binary data.
    return f"{label} {secrets.token_hex(4)} ".encode() + bytes(range(256))


@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=[f"{s}->{d}" for s, d in PAIRS])
def test_tcp_between_every_pair_of_sites(mesh: Mesh, src: str, dst: str) -> None:
    payload = _payload(f"{src}->{dst}")
    assert mesh.tcp_check(src, DEMO.site(dst).workload_ip, payload=payload) == payload


@pytest.mark.parametrize(("src", "service"), [("vpc-a", "10.97.0.10"), ("office", "10.96.0.10")])
def test_tcp_to_a_service_address(mesh: Mesh, src: str, service: str) -> None:
    payload = _payload(f"{src}->{service}")
    assert mesh.tcp_check(src, service, payload=payload) == payload


def test_marker_never_crosses_the_underlay_in_clear(mesh: Mesh) -> None:
    marker = f"ISTHMUS-MARKER-{secrets.token_hex(8)}".encode()
    payload = marker * 8
    with (
        mesh.capture(mesh.edge_ns("vpc-a"), EDGE_UNDERLAY_IF, "marker-underlay") as underlay,
        mesh.capture(mesh.workload_ns("vpc-b"), WORKLOAD_IF, "marker-workload") as workload,
    ):
        assert mesh.tcp_check("vpc-a", DEMO.site("vpc-b").workload_ip, payload=payload) == payload
    assert underlay.count("udp and dst port 51820") > 0, "no tunnel packets were captured"
    inner = f"tcp port {ECHO_PORT}"
    assert underlay.count(inner) == 0, "the inner TCP connection appeared on the underlay"
    assert workload.count(inner) > 0
    assert not underlay.contains(marker), f"the marker is in clear in {underlay.path}"
    # Positive control: the same capture method sees the marker behind the edge.
    assert workload.contains(marker), f"the marker is missing from {workload.path}"


def test_killing_the_controller_does_not_interrupt_traffic(mesh: Mesh) -> None:
    target = DEMO.site("vpc-b").workload_ip
    pinger = mesh.start_ping("office", target, count=20, interval=0.1, name="ping-controller-kill")
    wait_until(lambda: "bytes from" in pinger.log() or not pinger.alive(), 5.0, "first reply")
    mesh.kill_controller()
    try:
        wait_until(
            lambda: not any(mesh.status(s)["controller"]["connected"] for s in SITES),
            10.0,
            "every edge sees the controller gone",
        )
        payload = _payload("new connection while the controller is down")
        assert mesh.tcp_check("vpc-a", target, payload=payload) == payload
        pinger.wait(15.0)
        result = parse_ping(pinger.log())
        assert result.transmitted == 20 and result.received == 20, result.output
        for site in SITES:
            assert set(mesh.kernel_routes(site)) == mesh.remote_routes(site), site
    finally:
        mesh.start_controller()
    mesh.wait_ready()
    payload = _payload("after the controller is back")
    assert mesh.tcp_check("office", target, payload=payload) == payload


def _routes_and_tun_gone(mesh: Mesh, site: str) -> None:
    ns = mesh.edge_ns(site)
    wait_until(lambda: mesh.kernel_routes(site) == [], 5.0, f"{site} routes gone")
    assert mesh.lab.run(ns, ["ip", "link", "show", TUN_NAME], check=False).returncode != 0


def _tcp_through(mesh: Mesh, site: str) -> None:
    here = DEMO.site(site).workload_ip
    for other in SITES:
        if other != site:
            payload = _payload(f"{other}->{site}")
            assert mesh.tcp_check(other, here, payload=payload) == payload
            there = DEMO.site(other).workload_ip
            assert mesh.tcp_check(site, there, payload=payload) == payload


def test_restarted_edge_restores_its_routes(mesh: Mesh) -> None:
    mesh.kill_edge("vpc-b")
    _routes_and_tun_gone(mesh, "vpc-b")
    mesh.start_edge("vpc-b")
    mesh.wait_ready(["vpc-b"])
    _tcp_through(mesh, "vpc-b")


def test_edge_restarts_from_its_cached_map_while_the_controller_is_down(mesh: Mesh) -> None:
    mesh.kill_controller()
    try:
        mesh.kill_edge("vpc-b")
        _routes_and_tun_gone(mesh, "vpc-b")
        mesh.start_edge("vpc-b")
        mesh.wait_ready(["vpc-b"], controller_connected=False)
        status = mesh.status("vpc-b")
        assert status["controller"]["connected"] is False
        assert status["map_version"] > 0
        _tcp_through(mesh, "vpc-b")
    finally:
        mesh.start_controller()
    mesh.wait_ready()
    _tcp_through(mesh, "vpc-b")

"""Maps that would hurt the edge's host, end to end with real edges and a real controller.

```
                 [ul] br0 198.18.0.1/24 -- controller :7000 (SIGHUP re-reads its config)
          +----------------------+----------------------+
   ul0 198.18.0.11        ul0 198.18.0.12        ul0 198.18.0.13
   [vpc-a] edge           [vpc-b] edge           [office] edge
   + lanx0 10.97.0.1/16   10.245.0.0/16          172.16.0.0/24
     (a LAN of its own:   10.97.0.0/16
     overlaps vpc-b's)    + 192.0.2.0/24 (hostile: see F12)
   controller = [198.18.0.1:7000, 192.0.2.1:7000]  (F12: a second, failover controller)
      |                      |                      |
   [vpc-a-pod]            [vpc-b-pod]            [office-host]
```
- F8: a route of the map whose prefix vpc-a's kernel already routes otherwise (a connected
  LAN where address plans overlap) is never installed over that route, and its withdrawal
  never deletes it; status and explain say why it is not installed; once the LAN goes away the edge
  installs the route by itself (the retry).
- F12: a map in which a route of another edge holds one of vpc-a's controller addresses
  would route vpc-a's own gRPC into its TUN: vpc-a refuses it whole (old map stays, no
  kernel route), says why in status and reports it. (A route holding an edge's endpoint
  is already refused by the controller, route_refused "would loop the tunnel", so it never
  reaches an edge here; the edge's own check of that case is tested in test_applier.)
Each test leaves the mesh as it found it.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

import pytest

from isthmus_lab.commands import wait_until
from isthmus_lab.mesh import Mesh
from isthmus_lab.topology import DEMO

pytestmark = pytest.mark.netns

A, B = DEMO.site("vpc-a"), DEMO.site("vpc-b")
OVERLAP = "10.97.0.0/16"  # vpc-b's service route
LAN_IF, LAN_PEER = "lanx0", "lanx1"
SECOND_CONTROLLER = "192.0.2.1:7000"
RETRIES = 6.0  # seconds: at least one retry of a colliding route (edge.applier: every 5 s)
HOSTILE = "192.0.2.0/24"  # holds vpc-a's second controller address


def _route(mesh: Mesh, site: str) -> dict[str, dict[str, object]]:
    """The routes of `site`'s status by prefix; empty while the edge is not answering yet."""
    try:
        return {r["route"]: r for r in mesh.status(site)["routes"]}
    except (OSError, ValueError):
        return {}


def _tcp(mesh: Mesh, src: str, dst: str) -> None:
    payload = f"{src}->{dst} {secrets.token_hex(8)}".encode()
    assert mesh.tcp_check(src, DEMO.site(dst).workload_ip, payload=payload) == payload


def _set_config_line(path: Path, key: str, value: str) -> None:
    text = path.read_text(encoding="utf-8")
    changed, count = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
    assert count == 1, f"no '{key} = ' line in {path}"
    path.write_text(changed, encoding="utf-8")


def _toml_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def _allow(mesh: Mesh, routes: tuple[str, ...]) -> None:
    """vpc-b advertises and may serve `routes` (its config, then the controller's)."""
    mesh.rewrite_controller_config({"vpc-b": routes})
    mesh.reload_controller()
    _set_config_line(mesh.edge_paths("vpc-b").config, "routes", _toml_list(routes))
    mesh.restart_edge("vpc-b")


# -- F8 -----------------------------------------------------------------------------------


def test_a_lan_route_with_the_prefix_of_a_remote_route_survives_install_and_withdrawal(
    mesh: Mesh,
) -> None:
    ns = mesh.edge_ns("vpc-a")
    mesh.kill_edge("vpc-a")  # its TUN, and the routes on it, go with it
    mesh.lab.ip(ns, "link", "add", LAN_IF, "type", "veth", "peer", "name", LAN_PEER)
    try:
        mesh.lab.ip(ns, "address", "add", "10.97.0.1/16", "dev", LAN_IF)
        mesh.lab.ip(ns, "link", "set", LAN_PEER, "up")
        mesh.lab.ip(ns, "link", "set", LAN_IF, "up")
        lan = mesh.lab.ip(ns, "route", "show", OVERLAP)
        assert f"dev {LAN_IF} proto kernel" in lan, lan
        reason = f"collides with an existing route {OVERLAP} dev {LAN_IF} proto kernel"
        log_path = mesh.edge_paths("vpc-a").log
        logged = log_path.stat().st_size
        mesh.start_edge("vpc-a")

        # Install: every other route goes in; the overlapping one is refused, and says why.
        wait_until(
            lambda: (
                _route(mesh, "vpc-a").get(OVERLAP, {}).get("reason") == reason
                and set(mesh.kernel_routes("vpc-a")) == mesh.remote_routes("vpc-a") - {OVERLAP}
            ),
            10.0,
            f"vpc-a refuses {OVERLAP} and installs the rest",
            lambda: f"{mesh.status('vpc-a')['routes']}\nkernel {mesh.kernel_routes('vpc-a')}",
        )
        assert _route(mesh, "vpc-a")[OVERLAP]["installed"] is False
        assert mesh.lab.ip(ns, "route", "show", OVERLAP) == lan
        text = mesh.status_text("vpc-a")
        shown = rf"{re.escape(OVERLAP)} +via vpc-b  NOT installed \({re.escape(reason)}\)"
        assert re.search(shown, text), text
        assert f"route {OVERLAP} via vpc-b is not installed on the TUN: it {reason}" in text
        explained = mesh.edge_cli("vpc-a", "explain", "10.97.0.10")
        assert f"it {reason}, which isthmus never replaces" in explained, explained
        time.sleep(RETRIES)  # retries while the LAN route stays
        log = log_path.read_bytes()[logged:].decode()
        assert log.count("event=route_collision ") == 1, log  # logged once, not per retry
        assert "event=route_added route=10.97.0.0/16" not in log, log
        _tcp(mesh, "vpc-a", "vpc-b")

        # Withdrawal: the route leaves the map; the LAN route stays as it was.
        mesh.rewrite_controller_config({"vpc-b": [r for r in B.routes if r != OVERLAP]})
        mesh.reload_controller()
        wait_until(
            lambda: OVERLAP not in _route(mesh, "vpc-a"),
            10.0,
            f"{OVERLAP} withdrawn from vpc-a's map",
            lambda: str(mesh.status("vpc-a")["routes"]),
        )
        assert mesh.lab.ip(ns, "route", "show", OVERLAP) == lan

        # Allowed again, it collides again; once the LAN is gone, the retry installs it.
        mesh.rewrite_controller_config({"vpc-b": B.routes})
        mesh.reload_controller()
        wait_until(
            lambda: _route(mesh, "vpc-a").get(OVERLAP, {}).get("reason") == reason,
            10.0,
            f"{OVERLAP} back in vpc-a's map, colliding",
        )
    finally:
        mesh.lab.ip(ns, "link", "del", LAN_IF)
    mesh.wait_ready(["vpc-a"], timeout=15.0)
    route = _route(mesh, "vpc-a")[OVERLAP]
    assert route["installed"] is True and route["reason"] is None
    assert "dev isthmus0 proto 149" in mesh.lab.ip(ns, "route", "show", OVERLAP)
    log = mesh.edge_paths("vpc-a").log.read_text(encoding="utf-8")
    assert f"event=route_collision_cleared route={OVERLAP} detail=installed" in log


# -- F12 ----------------------------------------------------------------------------------


def test_a_map_routing_a_controller_or_a_peer_endpoint_into_the_tunnel_is_refused(
    mesh: Mesh,
) -> None:
    config = mesh.edge_paths("vpc-a").config
    original = config.read_text(encoding="utf-8")
    controllers = (DEMO.controller_address, SECOND_CONTROLLER)
    _set_config_line(config, "controller", _toml_list(controllers))
    mesh.restart_edge("vpc-a")
    version = mesh.status("vpc-a")["map_version"]
    try:
        _allow(mesh, (*B.routes, HOSTILE))
        # office, whose only controller is outside the route, applies the map ...
        wait_until(
            lambda: HOSTILE in {r["route"] for r in mesh.status("office")["routes"]},
            10.0,
            "office receives the map with vpc-b's new routes",
        )
        # ... vpc-a refuses it whole, says why, and reports it.
        wait_until(
            lambda: "(a loop)" in str(mesh.status("vpc-a")["controller"]["last_error"]),
            10.0,
            "vpc-a refuses the map",
            lambda: str(mesh.status("vpc-a")["controller"]),
        )
        status = mesh.status("vpc-a")
        error = status["controller"]["last_error"]
        assert (
            f"route 192.0.2.0/24 of edge 'vpc-b' holds controller address {SECOND_CONTROLLER}"
        ) in error
        assert status["map_version"] == version
        assert HOSTILE not in {r["route"] for r in status["routes"]}
        assert HOSTILE not in mesh.kernel_routes("vpc-a")
        assert "last error: " in mesh.status_text("vpc-a")
        edges = {e["name"]: e for e in mesh.controller_edges()}
        wait_until(
            lambda: "(a loop)" in str({e["name"]: e for e in mesh.controller_edges()}["vpc-a"]),
            5.0,
            "the controller lists vpc-a's report",
            lambda: str(edges.get("vpc-a")),
        )
        _tcp(mesh, "vpc-a", "vpc-b")  # the old map still forwards
        _tcp(mesh, "vpc-b", "vpc-a")
    finally:
        _allow(mesh, B.routes)
        config.write_text(original, encoding="utf-8")
        mesh.restart_edge("vpc-a")
    wait_until(
        lambda: (
            mesh.status("vpc-a")["map_version"] > version
            and mesh.status("vpc-a")["controller"]["last_error"] is None
        ),
        10.0,
        "vpc-a applies the next map",
        lambda: str(mesh.status("vpc-a")["controller"]),
    )
    mesh.wait_ready()

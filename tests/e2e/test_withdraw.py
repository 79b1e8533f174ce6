"""End to end: a route withdrawn in the controller config leaves every other edge's kernel.

```
                 [ul] br0 198.18.0.1/24 -- controller :7000 (SIGHUP re-reads its config)
          +----------------------+----------------------+
   ul0 198.18.0.11        ul0 198.18.0.12        ul0 198.18.0.13
   [vpc-a] edge           [vpc-b] edge           [office] edge
   10.244.0.0/16          10.245.0.0/16          172.16.0.0/24
   10.96.0.0/16           10.97.0.0/16  <- withdrawn from vpc-b's allowed routes
      |                      |                      |
   [vpc-a-pod]            [vpc-b-pod]            [office-host]
```
A module of its own: after the withdrawal vpc-b's config claims a route the controller no
longer allows, so this mesh is not reused by other tests.
"""

from __future__ import annotations

import pytest

from isthmus_lab.commands import wait_until
from isthmus_lab.mesh import Mesh
from isthmus_lab.topology import DEMO

pytestmark = pytest.mark.netns

WITHDRAWN = "10.97.0.0/16"
KEPT = "10.245.0.0/16"
OTHERS = ("vpc-a", "office")


def _listed(mesh: Mesh, site: str) -> set[str]:
    return {r["route"] for r in mesh.status(site)["routes"]}


def test_withdrawn_route_is_removed_from_every_other_edge(mesh: Mesh) -> None:
    for site in OTHERS:
        assert {WITHDRAWN, KEPT} <= set(mesh.kernel_routes(site)), site

    mesh.rewrite_controller_config({"vpc-b": [KEPT]})
    mesh.reload_controller()

    wait_until(
        lambda: all(WITHDRAWN not in mesh.kernel_routes(site) for site in OTHERS),
        5.0,
        f"{WITHDRAWN} gone from the kernel routes of {', '.join(OTHERS)}",
        lambda: "\n".join(f"{s}: {mesh.kernel_routes(s)}" for s in OTHERS),
    )
    for site in OTHERS:
        assert KEPT in mesh.kernel_routes(site), site
        assert WITHDRAWN not in _listed(mesh, site), site
        assert KEPT in mesh.installed_routes(site), site
    assert mesh.controller is not None and mesh.controller.alive()

    payload = b"vpc-b's pod range is still reachable"
    assert mesh.tcp_check("vpc-a", DEMO.site("vpc-b").workload_ip, payload=payload) == payload

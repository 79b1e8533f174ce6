"""End to end: two controller replicas on a three-member etcd cluster; failover and quorum loss.

```
  [ul] underlay ns
   lo 127.0.0.1: etcd0 :2379  etcd1 :2381  etcd2 :2383     (one cluster, 3 members)
                    ^  state, watch, liveness  ^
   br0 198.18.0.1:  controller 0 :7000      controller 1 :7001   (same signing key,
          |                                                       [store] kind = "etcd")
          +----------------------+----------------------+
   ul0 198.18.0.11        ul0 198.18.0.12        ul0 198.18.0.13       UDP :51820
   [vpc-a] edge           [vpc-b] edge           [office] edge
   10.244.0.0/16          10.245.0.0/16          172.16.0.0/24
   10.96.0.0/16           10.97.0.0/16  <- withdrawn, then allowed again
      |                      |                      |
   [vpc-a-pod]            [vpc-b-pod]            [office-host]
  every edge lists controller = ["198.18.0.1:7000", "198.18.0.1:7001"]
```
The tests run in file order on one mesh, each starting where the previous one left it:
the replica vpc-a watches is killed (the edges fail over and keep receiving changes), then
one etcd member (a follower: nothing changes), then a second member (no quorum: the
surviving replica turns NOT_SERVING, a change fails with a store error naming etcd, and
forwarding between the edges goes on), then both members come back (reliability.md S15:
SERVING again and changes resume, without restarting the controller).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from isthmus_lab.commands import wait_until
from isthmus_lab.mesh import Mesh
from isthmus_lab.topology import DEMO

pytestmark = pytest.mark.netns

SITES = DEMO.site_names
TOGGLED = "10.97.0.0/16"  # vpc-b's service range, withdrawn and allowed again
KEPT = "10.245.0.0/16"
OTHERS = ("vpc-a", "office")
HEALTH_TIMEOUT = 15.0  # probe every 1 s with a 1 s read timeout, plus etcd's own timeouts
SERVING = "SERVING"


@pytest.fixture(scope="module")
def ha(netns_host: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(workdir=tmp_path_factory.mktemp("ha"), store="etcd", controllers=2) as running:
        yield running


def _survivor(mesh: Mesh) -> int:
    """The one replica still running (the first test killed the other)."""
    running = [i for i, p in enumerate(mesh.controllers) if p is not None and p.alive()]
    assert len(running) == 1, f"replicas running: {running}; the failover test runs first"
    return running[0]


def _watched(mesh: Mesh, site: str) -> int:
    """The replica `site`'s edge is connected to (from its status `controller.address`)."""
    controller = mesh.status(site)["controller"]
    assert controller["connected"], f"{site} is not connected: {controller}"
    return mesh.controller_addresses.index(controller["address"])


def _connected_to(mesh: Mesh, index: int) -> bool:
    address = mesh.controller_addresses[index]
    for site in SITES:
        controller = mesh.status(site)["controller"]
        if not (controller["connected"] and controller["address"] == address):
            return False
    return True


def _controller_views(mesh: Mesh) -> str:
    return "\n".join(f"{s}: {mesh.status(s)['controller']}" for s in SITES)


def _kernel_views(mesh: Mesh) -> str:
    return "\n".join(f"{s}: {mesh.kernel_routes(s)}" for s in SITES)


def _reported(mesh: Mesh, index: int, version: int, gone: str) -> bool:
    """`isthmus edges` at replica `index` shows every edge connected, at `version`, through
    another replica than `gone`."""
    edges = {e["name"]: e for e in mesh.controller_edges(index)}
    return set(edges) == set(SITES) and all(
        e["state"] == "connected" and e["applied_version"] == version and e["replica"] != gone
        for e in edges.values()
    )


def _served(mesh: Mesh, index: int) -> set[tuple[str, str, str]]:
    return {(r["edge"], r["route"], r["state"]) for r in mesh.routes(index)}


def _set_toggled(mesh: Mesh, index: int, allowed: bool) -> None:
    """Allow or withdraw TOGGLED for vpc-b in every replica's config, SIGHUP `index`, and
    wait until every other edge's kernel table agrees."""
    mesh.rewrite_controller_config({"vpc-b": [KEPT, TOGGLED] if allowed else [KEPT]})
    mesh.reload_controller(index)
    wait_until(
        lambda: all((TOGGLED in mesh.kernel_routes(s)) == allowed for s in OTHERS),
        10.0,
        f"{TOGGLED} {'installed in' if allowed else 'gone from'} {', '.join(OTHERS)}",
        lambda: _kernel_views(mesh),
    )


def _tcp_between_sites(mesh: Mesh, label: str) -> None:
    for src, dst in (("vpc-a", "vpc-b"), ("vpc-b", "office"), ("office", "vpc-a")):
        payload = f"{label} {src}->{dst} {secrets.token_hex(4)}".encode()
        assert mesh.tcp_check(src, DEMO.site(dst).workload_ip, payload=payload) == payload


def test_edges_fail_over_to_the_other_replica_and_keep_receiving_changes(ha: Mesh) -> None:
    assert [ha.controller_health(i) for i in (0, 1)] == [SERVING, SERVING]
    # Both replicas serve the same state from etcd.
    assert _served(ha, 0) == _served(ha, 1)
    assert ("vpc-b", TOGGLED, "serving") in _served(ha, 0)

    victim = _watched(ha, "vpc-a")
    survivor = 1 - victim
    # The replica id vpc-a reported through (liveness, shared in etcd): the victim's.
    gone = {e["name"]: e["replica"] for e in ha.controller_edges(survivor)}.get("vpc-a", "")
    ha.kill_controller(victim)
    wait_until(
        lambda: _connected_to(ha, survivor),
        20.0,
        f"every edge connected to controller {survivor} ({ha.controller_addresses[survivor]})",
        lambda: _controller_views(ha),
    )
    assert ha.controller_health(survivor) == SERVING

    _set_toggled(ha, survivor, allowed=False)
    assert ("vpc-b", TOGGLED, "refused") in _served(ha, survivor)
    versions = {ha.status(s)["map_version"] for s in SITES}
    assert len(versions) == 1, f"the edges disagree on the map version: {versions}"
    (version,) = versions
    # The edges report to the survivor now; `isthmus edges` shows it (liveness in etcd).
    wait_until(
        lambda: _reported(ha, survivor, version, gone),
        15.0,
        f"every edge reports map version {version} through controller {survivor}",
        lambda: f"isthmus edges: {ha.controller_edges(survivor)}",
    )
    _tcp_between_sites(ha, "after failover")


def test_one_etcd_member_down_changes_nothing(ha: Mesh) -> None:
    survivor = _survivor(ha)
    follower = next(i for i in range(ha.etcd_members) if i != ha.etcd_leader())
    ha.kill_etcd_member(follower)
    # A follower's loss leaves the quorum and the leader as they were: health stays SERVING.
    for _ in range(3):
        assert ha.controller_health(survivor) == SERVING
    _set_toggled(ha, survivor, allowed=True)
    assert ("vpc-b", TOGGLED, "serving") in _served(ha, survivor)
    for site in SITES:
        assert set(ha.kernel_routes(site)) == ha.remote_routes(site), site
    assert _connected_to(ha, survivor), _controller_views(ha)


def test_quorum_lost_health_not_serving_and_forwarding_goes_on(ha: Mesh) -> None:
    survivor = _survivor(ha)
    assert ha.controller_health(survivor) == SERVING
    ha.kill_etcd_member(ha.etcd_leader())  # the second of three: no quorum
    wait_until(
        lambda: ha.controller_health(survivor) == "NOT_SERVING",
        HEALTH_TIMEOUT,
        f"controller {survivor} NOT_SERVING without an etcd quorum",
        lambda: f"health: {ha.controller_health(survivor)}",
    )
    controller = ha.controllers[survivor]
    assert controller is not None and controller.alive()
    for site in SITES:
        assert set(ha.kernel_routes(site)) == ha.remote_routes(site), site
    _tcp_between_sites(ha, "without an etcd quorum")
    ping = ha.ping("office", DEMO.site("vpc-b").service_ip or "", count=3)
    assert ping.ok, ping.output
    # A change cannot be stored: the replica says why in its log and keeps its map.
    ha.rewrite_controller_config({"vpc-b": [KEPT]})
    ha.reload_controller(survivor)
    wait_until(
        lambda: "reload_failed" in controller.log(),
        60.0,
        f"controller {survivor} logs reload_failed without an etcd quorum",
        lambda: controller.log()[-2000:],
    )
    failed = next(line for line in controller.log().splitlines() if "reload_failed" in line)
    assert "cannot save to etcd key" in failed and "no etcd endpoint answered" in failed, failed
    assert ("vpc-b", TOGGLED, "serving") in _served(ha, survivor)
    for site in OTHERS:
        assert TOGGLED in ha.kernel_routes(site), site


def test_quorum_restored_health_serving_and_writes_resume(ha: Mesh) -> None:
    survivor = _survivor(ha)
    assert ha.etcd is not None
    down = ha.etcd.killed
    assert len(down) == 2, f"etcd members down: {down}; the quorum test runs first"
    for member in down:
        ha.restart_etcd_member(member)
    wait_until(
        lambda: ha.controller_health(survivor) == SERVING,
        HEALTH_TIMEOUT,
        f"controller {survivor} SERVING again with the etcd quorum back",
        lambda: f"health: {ha.controller_health(survivor)}",
    )
    # Quorum restored: writes resume, with the same controller process.
    _set_toggled(ha, survivor, allowed=False)
    assert ("vpc-b", TOGGLED, "refused") in _served(ha, survivor)
    _set_toggled(ha, survivor, allowed=True)
    assert ("vpc-b", TOGGLED, "serving") in _served(ha, survivor)
    controller = ha.controllers[survivor]
    assert controller is not None and controller.alive()
    _tcp_between_sites(ha, "with the etcd quorum back")

"""End to end: a rogue edge claims other sites' routes; admission keeps its traffic away.

```
                 [ul] br0 198.18.0.1/24 -- controller :7000
     +-------------------+-------------------+-------------------+
  ul0 .11             ul0 .12             ul0 .13             ul0 .14        UDP :51820
  [vpc-a] edge        [vpc-b] edge        [office] edge       [rogue] edge (started last)
  10.244.0.0/16       10.245.0.0/16       172.16.0.0/24       owns 10.98.0.0/16; claims
  10.96.0.0/16        10.97.0.0/16                              10.97.0.0/16   (exact)
     |                   |                   |                  10.245.1.0/24  (more specific)
  [vpc-a-pod]         [vpc-b-pod]         [office-host]         0.0.0.0/0      (reserved)
  10.244.1.10         10.245.1.10         172.16.0.10          [rogue-host] 10.98.1.10
  lo 10.96.0.10       lo 10.97.0.10
```
The rogue has a valid key and broad allowed routes in the controller config (10.0.0.0/8,
0.0.0.0/0), so only admission stands between its claims and the other sites' traffic.
The last test approves the pending claim and sees the traffic move to the rogue: the
positive control of the captures the earlier tests find empty.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from isthmus_lab.commands import wait_until
from isthmus_lab.mesh import Mesh
from isthmus_lab.topology import EDGE_UNDERLAY_IF, ROGUE, TUN_NAME

pytestmark = pytest.mark.netns

ROGUE_NAME = "rogue"
OWNED = "10.98.0.0/16"
EXACT = "10.97.0.0/16"  # vpc-b's service range
MORE_SPECIFIC = "10.245.1.0/24"  # inside vpc-b's 10.245.0.0/16, holds vpc-b's pod
DEFAULT = "0.0.0.0/0"
HONEST = ("vpc-a", "vpc-b", "office")
# (route, address in it, the site that really answers there, or None: nobody)
TARGETS = (
    (EXACT, "10.97.0.10", "vpc-b"),
    (MORE_SPECIFIC, "10.245.1.10", "vpc-b"),
    (DEFAULT, "192.0.2.1", None),  # TEST-NET-1: only the default route covers it
)
ROGUE_HOST = "10.98.1.10"
# Probes to the claimed addresses are larger than this on the underlay (frame length);
# the handshakes, keepalives and the smaller positive control are not.
BIG = 1300
BIG_PING = 1300  # ICMP payload bytes
SMALL_PING = 600


@pytest.fixture(scope="module")
def rogue_mesh(netns_host: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(ROGUE, workdir=tmp_path_factory.mktemp("admission")) as running:
        yield running


def _route_states(mesh: Mesh) -> dict[tuple[str, str], tuple[str, str]]:
    """(edge, route) -> (state, reason code) from `isthmus routes --json`."""
    return {(r["edge"], r["route"]): (r["state"], r["reason_code"]) for r in mesh.routes()}


def _ping(mesh: Mesh, site: str, address: str, size: int, count: int = 3) -> bool:
    argv = ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "1", "-s", str(size), address]
    done = mesh.lab.run(mesh.workload_ns(site), argv, check=False, timeout=20.0)
    return done.returncode == 0


def _routes_toward(mesh: Mesh, site: str, edge: str) -> set[str]:
    """Routes `site`'s edge forwards to `edge`, from its status."""
    return {r["route"] for r in mesh.status(site)["routes"] if r["edge"] == edge}


def test_claims_are_refused_or_pending_with_their_reasons(rogue_mesh: Mesh) -> None:
    states = _route_states(rogue_mesh)
    assert states[(ROGUE_NAME, EXACT)] == ("refused", "exact")
    assert states[(ROGUE_NAME, MORE_SPECIFIC)] == ("pending", "more_specific")
    assert states[(ROGUE_NAME, DEFAULT)] == ("refused", "reserved")
    assert states[(ROGUE_NAME, OWNED)][0] == "serving"
    for route in ("10.245.0.0/16", EXACT):
        assert states[("vpc-b", route)][0] == "serving", route


def test_no_edge_installs_a_claim_toward_the_rogue(rogue_mesh: Mesh) -> None:
    claims = {EXACT, MORE_SPECIFIC, DEFAULT, "default"}
    for site in HONEST:
        kernel = set(rogue_mesh.kernel_routes(site))
        assert kernel == rogue_mesh.remote_routes(site), site
        assert not kernel & (claims - {EXACT}), (site, kernel)
        assert _routes_toward(rogue_mesh, site, ROGUE_NAME) == {OWNED}, site
    for site in ("vpc-a", "office"):
        owners = {r["route"]: r["edge"] for r in rogue_mesh.status(site)["routes"]}
        assert owners[EXACT] == "vpc-b", site


def test_traffic_to_claimed_addresses_never_reaches_the_rogue(rogue_mesh: Mesh) -> None:
    mesh = rogue_mesh
    rogue_ns = mesh.edge_ns(ROGUE_NAME)
    payload = b"to the real owner " + secrets.token_bytes(BIG)
    with (
        mesh.capture(rogue_ns, TUN_NAME, "rogue-tun", snaplen=256) as tun,
        mesh.capture(rogue_ns, EDGE_UNDERLAY_IF, "rogue-underlay", snaplen=256) as underlay,
    ):
        for src in ("vpc-a", "office"):
            for _route, address, owner in TARGETS:
                answered = _ping(mesh, src, address, BIG_PING)
                assert answered == (owner is not None), (src, address)
                if owner is not None:
                    assert mesh.tcp_check(src, address, payload=payload) == payload
            # Positive control: the rogue's own route reaches it, smaller than BIG.
            assert _ping(mesh, src, ROGUE_HOST, SMALL_PING), src
    claimed = " or ".join(f"dst host {address}" for _r, address, _o in TARGETS)
    assert tun.count(claimed) == 0, f"a claimed address reached the rogue's TUN: {tun.path}"
    assert tun.count(f"icmp and dst host {ROGUE_HOST}") > 0, "the control missed the TUN"
    rogue_ip = mesh.topology.site(ROGUE_NAME).underlay_ip
    to_rogue = f"udp and dst host {rogue_ip}"
    assert underlay.count(f"{to_rogue} and greater {BIG}") == 0, underlay.path
    assert underlay.count(f"{to_rogue} and greater {SMALL_PING}") > 0, underlay.path


def test_an_approved_more_specific_claim_takes_the_traffic(rogue_mesh: Mesh) -> None:
    mesh = rogue_mesh
    mesh.approve_route(MORE_SPECIFIC, ROGUE_NAME)
    assert _route_states(mesh)[(ROGUE_NAME, MORE_SPECIFIC)][0] == "serving"
    # vpc-b's own LAN is that route, so only the other edges are watched.
    senders = ("vpc-a", "office")
    wait_until(
        lambda: all(MORE_SPECIFIC in _routes_toward(mesh, s, ROGUE_NAME) for s in senders),
        10.0,
        f"{MORE_SPECIFIC} forwarded to the rogue by every other edge",
        lambda: "\n".join(f"{s}: {mesh.status(s)['routes']}" for s in senders),
    )
    with mesh.capture(mesh.edge_ns(ROGUE_NAME), TUN_NAME, "rogue-tun-approved") as tun:
        _ping(mesh, "vpc-a", "10.245.1.10", BIG_PING)  # the rogue does not answer
    assert tun.count("icmp and dst host 10.245.1.10") > 0, tun.path

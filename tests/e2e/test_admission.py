"""End to end: a rogue edge claims other sites' routes and endpoints; admission keeps its
traffic away (reliability.md S09 "control-plane route hijack", S28 "squatting").

```
                 [ul] br0 198.18.0.1/24 -- controller :7000 (metrics 127.0.0.1:9586 in ul)
     +-------------------+-------------------+-------------------+
  ul0 .11             ul0 .12             ul0 .13             ul0 .14        UDP :51820
  [vpc-a] edge        [vpc-b] edge        [office] edge       [rogue] edge (started last)
  10.244.0.0/16       10.245.0.0/16       172.16.0.0/24       owns 10.98.0.0/16; claims
  10.96.0.0/16        10.97.0.0/16                              10.97.0.0/16   (exact)
     |                   |                   |                  10.245.1.0/24  (more specific)
  [vpc-a-pod]         [vpc-b-pod]         [office-host]         10.96.0.10/32  (vpc-a's service)
  10.244.1.10         10.245.1.10         172.16.0.10           0.0.0.0/0      (reserved)
  lo 10.96.0.10       lo 10.97.0.10                             127.0.0.0/8    (reserved)
                                                                198.18.0.0/24  (the overlay's)
                                                                169.254.0.0/16 (link-local)
                                                              [rogue-host] 10.98.1.10
```
The rogue has a valid key and broad allowed routes in the controller config (10.0.0.0/8,
0.0.0.0/0), so only admission stands between its claims and the other sites' traffic.
S28: the rogue then points its endpoint into vpc-b's route, and waits while vpc-b flaps
its route and has its key rotated (within admission.hold_time, default 600 s): the route
never moves to the rogue. The last test approves the pending claim and sees the traffic
move to the rogue: the positive control of the captures the earlier tests find empty.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
from collections.abc import Iterator
from dataclasses import replace

import pytest

from isthmus_lab.commands import ISTHMUS, wait_until
from isthmus_lab.mesh import Mesh
from isthmus_lab.netns import host_run
from isthmus_lab.topology import DEMO, EDGE_UNDERLAY_IF, ROGUE_SITE, TUN_NAME, Topology

pytestmark = pytest.mark.netns

ROGUE_NAME = "rogue"
OWNED = "10.98.0.0/16"
EXACT = "10.97.0.0/16"  # vpc-b's service range
MORE_SPECIFIC = "10.245.1.0/24"  # inside vpc-b's 10.245.0.0/16, holds vpc-b's pod
SERVICE = "10.96.0.10/32"  # vpc-a's service address, inside vpc-a's 10.96.0.0/16
DEFAULT = "0.0.0.0/0"
LOOPBACK = "127.0.0.0/8"
OVERLAY = "198.18.0.0/24"  # the underlay: every endpoint and the controller
LINK_LOCAL = "169.254.0.0/16"
# (route, state, reason code) the controller gives each claim
CLAIMS = (
    (EXACT, "refused", "exact"),
    (MORE_SPECIFIC, "pending", "more_specific"),
    (SERVICE, "pending", "more_specific"),
    (DEFAULT, "refused", "reserved"),
    (LOOPBACK, "refused", "reserved"),
    (OVERLAY, "refused", "overlay"),
    (LINK_LOCAL, "refused", "reserved"),
)
TOPOLOGY = Topology(
    sites=(*DEMO.sites, replace(ROGUE_SITE, claims=tuple(route for route, _, _ in CLAIMS)))
)
HONEST = ("vpc-a", "vpc-b", "office")
# (route, address in it, the site that really answers there, or None: nobody)
TARGETS = (
    (EXACT, "10.97.0.10", "vpc-b"),
    (MORE_SPECIFIC, "10.245.1.10", "vpc-b"),
    (SERVICE, "10.96.0.10", "vpc-a"),
    (DEFAULT, "192.0.2.1", None),  # TEST-NET-1: only the default route covers it
)
ROGUE_HOST = "10.98.1.10"
# Probes to the claimed addresses are larger than this on the underlay (frame length);
# the handshakes, keepalives and the smaller positive control are not.
BIG = 1300
BIG_PING = 1300  # ICMP payload bytes
SMALL_PING = 600
METRICS = "127.0.0.1:9586"  # in the underlay namespace
SCRAPE = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())"


@pytest.fixture(scope="module")
def rogue_mesh(netns_host: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(TOPOLOGY, workdir=tmp_path_factory.mktemp("admission")) as running:
        # The lab's controller serves no metrics: restart it with them (the state is kept).
        _metrics_on(running)
        running.kill_controller()
        running.start_controller()
        running.wait_ready()
        yield running


def _metrics_on(mesh: Mesh) -> None:
    path = mesh.controller_paths().config
    path.write_text(path.read_text().replace('metrics = "off"', f"metrics = {json.dumps(METRICS)}"))


def _metrics(mesh: Mesh) -> dict[str, float]:
    """The controller's /metrics samples: 'name{labels}' -> value."""
    argv = [sys.executable, "-c", SCRAPE, f"http://{METRICS}/metrics"]
    text = mesh.lab.run(mesh.underlay_ns, argv, timeout=10.0).stdout
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def _history(mesh: Mesh) -> list[dict[str, object]]:
    """`isthmus routes --history --json`: the audit entries, oldest first."""
    doc = json.loads(mesh.controller_cli("routes", "--history", "--limit", "1000", "--json"))
    entries = doc["entries"] if isinstance(doc, dict) else doc
    assert isinstance(entries, list)
    return entries


def _edit_edge_config(mesh: Mesh, site: str, key: str, value: object) -> None:
    """Set top-level `key` of `site`'s edge config (a line `key = ...`)."""
    path = mesh.edge_paths(site).config
    line = f"{key} = {json.dumps(value)}"
    text, n = re.subn(rf"^{key} = .*$", line, path.read_text(), count=1, flags=re.M)
    assert n == 1, (site, key)
    path.write_text(text)


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
    for route, state, reason in CLAIMS:
        assert states[(ROGUE_NAME, route)] == (state, reason), route
    assert states[(ROGUE_NAME, OWNED)][0] == "serving"
    for edge, route in (("vpc-b", "10.245.0.0/16"), ("vpc-b", EXACT), ("vpc-a", "10.96.0.0/16")):
        assert states[(edge, route)][0] == "serving", route


def test_no_edge_installs_a_claim_toward_the_rogue(rogue_mesh: Mesh) -> None:
    claims = {route for route, _, _ in CLAIMS} | {"default"}
    for site in HONEST:
        kernel = set(rogue_mesh.kernel_routes(site))
        assert kernel == rogue_mesh.remote_routes(site), site
        assert not kernel & (claims - {EXACT}), (site, kernel)
        assert _routes_toward(rogue_mesh, site, ROGUE_NAME) == {OWNED}, site
    for site in ("vpc-a", "office"):
        owners = {r["route"]: r["edge"] for r in rogue_mesh.status(site)["routes"]}
        assert owners[EXACT] == "vpc-b", site


def test_the_audit_log_and_the_metrics_count_every_claim(rogue_mesh: Mesh) -> None:
    logged = {(e["route"], e["kind"]) for e in _history(rogue_mesh) if e["edge"] == ROGUE_NAME}
    for route, state, _ in CLAIMS:
        assert (route, f"route_{state}") in logged, route
    samples = _metrics(rogue_mesh)
    conflicts = "isthmus_controller_route_conflicts"
    assert samples[f'{conflicts}{{reason="exact"}}'] == 1  # nothing conflicts but the rogue's
    assert samples[f'{conflicts}{{reason="more_specific"}}'] == 2
    assert samples['isthmus_controller_routes{state="refused"}'] == 5
    assert samples['isthmus_controller_routes{state="pending"}'] == 2


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


# --- S28: squatting -----------------------------------------------------------------------


def _exact_claim(mesh: Mesh) -> tuple[str, str, str]:
    """(state, reason code, reason) of the rogue's claim of vpc-b's EXACT route."""
    for r in mesh.routes():
        if (r["edge"], r["route"]) == (ROGUE_NAME, EXACT):
            return r["state"], r["reason_code"], r["reason"]
    raise AssertionError("the rogue no longer claims " + EXACT)


def _since(mesh: Mesh, edge: str, route: str) -> int:
    return next(
        int(r["since_version"]) for r in mesh.routes() if (r["edge"], r["route"]) == (edge, route)
    )


def _withdrawn_everywhere(mesh: Mesh) -> None:
    """Wait until vpc-a and office forward EXACT nowhere (the map without it applied)."""

    def gone() -> bool:
        return all(
            EXACT not in {r["route"] for r in mesh.status(site)["routes"]}
            for site in ("vpc-a", "office")
        )

    wait_until(
        gone,
        10.0,
        f"{EXACT} forwarded by no edge",
        lambda: "\n".join(f"{s}: {mesh.status(s)['routes']}" for s in ("vpc-a", "office")),
    )


def _never_toward_the_rogue(mesh: Mesh) -> None:
    for site in ("vpc-a", "office"):
        assert _routes_toward(mesh, site, ROGUE_NAME) == {OWNED}, site
        owners = {r["route"]: r["edge"] for r in mesh.status(site)["routes"]}
        assert owners.get(EXACT, "vpc-b") == "vpc-b", site


def test_s28_an_endpoint_inside_the_owners_route_is_refused(rogue_mesh: Mesh) -> None:
    """The rogue, whose claim of vpc-b's route came first, restarts with its endpoint
    inside that route: its registration is refused, vpc-b's route is not."""
    mesh = rogue_mesh
    before = _metrics(mesh).get(
        'isthmus_controller_calls_refused_total{code="INVALID_ARGUMENT"}', 0
    )
    rogue_endpoint = mesh.endpoint(ROGUE_NAME)
    _edit_edge_config(mesh, ROGUE_NAME, "endpoint", "10.97.0.99:51820")
    mesh.kill_edge(ROGUE_NAME)
    mesh.start_edge(ROGUE_NAME)
    wait_until(
        lambda: "register_refused" in mesh.edges[ROGUE_NAME].log(),
        10.0,
        "the rogue's registration refused",
        lambda: mesh.edges[ROGUE_NAME].log()[-2000:],
    )
    log = mesh.edges[ROGUE_NAME].log()
    assert "INVALID_ARGUMENT" in log
    assert "endpoints[0]: 10.97.0.99:51820 is inside route 10.97.0.0/16 of edge 'vpc-b'" in log
    after = _metrics(mesh)['isthmus_controller_calls_refused_total{code="INVALID_ARGUMENT"}']
    assert after > before
    # nothing moved: vpc-b's route serves, the controller keeps the rogue's old endpoint,
    # no edge forwards vpc-b's route to the rogue, and vpc-b's service answers
    assert _route_states(mesh)[("vpc-b", EXACT)] == ("serving", "")
    edges = {e["name"]: e for e in mesh.controller_edges()}
    assert edges[ROGUE_NAME]["endpoints"] == [rogue_endpoint]
    _never_toward_the_rogue(mesh)
    assert _ping(mesh, "vpc-a", "10.97.0.10", SMALL_PING)
    _edit_edge_config(mesh, ROGUE_NAME, "endpoint", rogue_endpoint)
    mesh.restart_edge(ROGUE_NAME)


def test_s28_the_owners_flap_never_moves_its_route(rogue_mesh: Mesh) -> None:
    """vpc-b registers once without its route and comes back: held meanwhile, never the
    rogue's, and vpc-b gets its old place back."""
    mesh = rogue_mesh
    since = _since(mesh, "vpc-b", EXACT)
    site = mesh.topology.site("vpc-b")
    _edit_edge_config(mesh, "vpc-b", "routes", [r for r in site.advertised if r != EXACT])
    mesh.restart_edge("vpc-b")
    wait_until(
        lambda: "held for edge 'vpc-b'" in _exact_claim(mesh)[2],
        10.0,
        "the rogue's claim refused while vpc-b's route is held",
        lambda: str(_exact_claim(mesh)),
    )
    assert _exact_claim(mesh)[:2] == ("refused", "exact")
    assert ("vpc-b", EXACT) not in _route_states(mesh)
    _withdrawn_everywhere(mesh)
    _never_toward_the_rogue(mesh)
    assert any(e["kind"] == "route_held" and e["route"] == EXACT for e in _history(mesh))
    _edit_edge_config(mesh, "vpc-b", "routes", list(site.advertised))
    mesh.restart_edge("vpc-b")
    mesh.wait_ready(HONEST)
    assert _route_states(mesh)[("vpc-b", EXACT)] == ("serving", "")
    assert _since(mesh, "vpc-b", EXACT) == since  # its old place
    assert _exact_claim(mesh)[:2] == ("refused", "exact")
    _never_toward_the_rogue(mesh)
    assert mesh.tcp_check("office", "10.97.0.10", payload=b"back at vpc-b") == b"back at vpc-b"


def test_s28_the_owners_key_rotation_never_moves_its_route(rogue_mesh: Mesh) -> None:
    """vpc-b's key is rotated in the controller config (reload) before its edge has the
    new key: the old key's edge is removed, its routes held for the name; the new key
    registers and serves them at their old place."""
    mesh = rogue_mesh
    since = _since(mesh, "vpc-b", EXACT)
    paths = mesh.edge_paths("vpc-b")
    new_key = paths.private_key.with_name("rotated.key")
    mesh.public_keys["vpc-b"] = host_run(
        [*ISTHMUS, "keygen", "--out", str(new_key)]
    ).stdout.split()[-1]
    mesh.rewrite_controller_config({})
    _metrics_on(mesh)
    mesh.reload_controller()
    wait_until(
        lambda: all(e != "vpc-b" for e, _ in _route_states(mesh)),
        10.0,
        "vpc-b (old key) removed by the reload",
        lambda: str(_route_states(mesh)),
    )
    state, reason, detail = _exact_claim(mesh)
    assert (state, reason) == ("refused", "exact") and "held for edge 'vpc-b'" in detail
    _withdrawn_everywhere(mesh)
    _never_toward_the_rogue(mesh)
    _edit_edge_config(mesh, "vpc-b", "private_key_file", str(new_key))
    mesh.restart_edge("vpc-b")
    mesh.wait_ready(HONEST)
    assert _route_states(mesh)[("vpc-b", EXACT)] == ("serving", "")
    assert _since(mesh, "vpc-b", EXACT) == since
    assert _exact_claim(mesh)[:2] == ("refused", "exact")
    _never_toward_the_rogue(mesh)
    assert _ping(mesh, "vpc-a", "10.97.0.10", SMALL_PING)


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

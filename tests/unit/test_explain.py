"""`isthmus explain IP`, the edge's side (edge.explain): the verdict by longest prefix match,
overlaps, leases re-verified, MTU, the kernel route, health and every listed problem; the
address rules; and the text rendering (edge.status.render_explain), plain and coloured."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from dataclasses import replace
from typing import Any

import pytest
from nacl.bindings import crypto_box_seed_keypair

from edge.control import ControllerView
from edge.explain import (
    ADDRESS_RULE,
    AddressError,
    EdgeExplain,
    Tables,
    explain,
    parse_address,
)
from edge.status import render_explain
from edge.testing import FakeRouteTable
from edge.tunnel import ForwardingTable, Identity, PeerView, Tunnel
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.lease import sign_lease
from isthmus.routemap import EdgeEntry, Network, RouteMap, parse_route
from isthmus.signing import ControllerKey

CONTROLLER = ControllerKey.from_seed(bytes(range(32)))
OTHER_CONTROLLER = ControllerKey.from_seed(bytes(range(1, 33)))
WALL = 1_800_000_000.0
NOW = 500.0  # the peers' monotonic clock


def keys(seed: int) -> tuple[bytes, bytes]:
    return crypto_box_seed_keypair(bytes([seed]) * 32)


def entry(
    name: str,
    seed: int,
    *routes: str,
    expires: float = WALL + 3600,
    signer: ControllerKey = CONTROLLER,
    endpoint: str | None = None,
) -> EdgeEntry:
    public = PublicKey(keys(seed)[0])
    nets = tuple(parse_route(r) for r in routes)
    return EdgeEntry(
        EdgeName(name),
        public,
        (Endpoint.parse(endpoint or f"198.18.0.{seed}:51820"),),
        nets,
        tuple(sign_lease(signer, public, n, 3, int(expires)) for n in nets),
    )


A = entry("vpc-a", 1, "10.244.0.0/16")
B = entry("vpc-b", 2, "10.245.0.0/16", "fd00:b::/48")
C = entry("vpc-c", 3, "10.0.0.0/8")
MAP = RouteMap(3, (A, B, C)).validate()


def peer(name: str, **kw: Any) -> PeerView:
    fields: dict[str, Any] = {
        "name": name,
        "endpoint": f"198.18.0.{2 if name == 'vpc-b' else 3}:51820",
        "rx_packets": 4,
        "rx_bytes": 400,
        "tx_packets": 5,
        "tx_bytes": 500,
        "last_rx": NOW - 3.0,
        "session_age": 12.0,
        "handshakes": 1,
        "last_handshake": NOW - 12.0,
    }
    fields.update(kw)
    return PeerView(**fields)


SELF = Identity.from_private_key(EdgeName("vpc-a"), keys(1)[1])
CONNECTED = ControllerView(("198.18.0.100:7000",), "198.18.0.100:7000", True, None, 3)


def tables(**kw: Any) -> Tables:
    fields: dict[str, Any] = {
        "self_name": "vpc-a",
        "route_map": MAP,
        "advertised": (parse_route("10.244.0.0/16"),),
        "peers": [peer("vpc-b"), peer("vpc-c")],
        "installed": frozenset(net for net, e in MAP.routes() if e.name != "vpc-a"),
        "tun_mtu": 1420,
        "controller": CONNECTED,
        "controller_key": CONTROLLER.public,
        "now": NOW,
        "wall": WALL,
    }
    fields.update(kw)
    if "forwarding" not in kw:  # the tunnel's table for the map asked about, as vpc-a
        fields["forwarding"] = ForwardingTable.build(SELF, fields["route_map"], lambda e: e.name)
    return Tables(**fields)


def ask(address: str, **kw: Any) -> dict[str, Any]:
    return explain(parse_address(address), tables(**kw))


def test_remote_address_healthy_has_every_documented_field() -> None:
    doc = ask("10.245.0.7")
    assert list(doc) == [
        "address",
        "edge_self",
        "verdict",
        "detail",
        "route",
        "edge",
        "lease",
        "mtu",
        "installed",
        "health",
        "problems",
        "notes",
    ]
    assert doc["address"] == "10.245.0.7" and doc["edge_self"] == "vpc-a"
    assert doc["verdict"] == "remote"
    assert doc["detail"] == "forwarded through the tunnel to edge 'vpc-b' by route 10.245.0.0/16"
    # 10.0.0.0/8 of vpc-c holds the address too: listed for overlap awareness
    assert doc["route"] == {
        "match": {"route": "10.245.0.0/16", "edge": "vpc-b"},
        "containing": [{"route": "10.0.0.0/8", "edge": "vpc-c"}],
    }
    assert doc["edge"] == {
        "name": "vpc-b",
        "public_key": PublicKey(keys(2)[0]).to_base64(),
        "endpoints": ["198.18.0.2:51820"],
        "endpoint_in_use": "198.18.0.2:51820",
    }
    assert doc["lease"] == {
        "version": 3,
        "expires_at": int(WALL + 3600),
        "expires_in_seconds": 3600.0,
        "verified": True,
    }
    assert doc["mtu"] == {"tun": 1420, "inner": 1420, "overhead": 32, "outer": 1480}
    assert doc["installed"] is True
    assert doc["health"] == {
        "session": {
            "established": True,
            "age_seconds": 12.0,
            "last_rx_seconds_ago": 3.0,
            "handshakes": 1,
            "last_handshake_seconds_ago": 12.0,
        },
        "controller": {"address": "198.18.0.100:7000", "connected": True, "last_error": None},
        "map_version": 3,
        "applied_version": 3,
    }
    assert doc["problems"] == [] and doc["notes"] == []
    assert json.loads(json.dumps(doc)) == doc


def test_longest_prefix_wins_and_a_covering_route_alone_matches_outside_it() -> None:
    doc = ask("10.1.2.3")
    assert doc["verdict"] == "remote"
    assert doc["route"] == {"match": {"route": "10.0.0.0/8", "edge": "vpc-c"}, "containing": []}
    assert doc["edge"]["name"] == "vpc-c"
    # this edge's own /16 inside vpc-c's /8: local wins by prefix length
    local = ask("10.244.9.9")
    assert local["verdict"] == "local"
    assert local["route"]["containing"] == [{"route": "10.0.0.0/8", "edge": "vpc-c"}]


def test_local_address_has_no_tunnel_route_or_session_but_its_own_lease() -> None:
    doc = ask("10.244.1.10")
    assert doc["verdict"] == "local"
    assert doc["detail"] == (
        "inside this edge's own route 10.244.0.0/16: it is delivered here, not tunnelled"
    )
    assert doc["edge"]["name"] == "vpc-a" and doc["edge"]["endpoint_in_use"] is None
    assert doc["lease"]["verified"] is True
    assert doc["installed"] is None
    assert doc["health"]["session"] is None
    assert doc["mtu"]["outer"] is None
    assert doc["problems"] == []


def test_no_route_leaves_the_address_to_the_kernel() -> None:
    doc = ask("192.0.2.1")
    assert doc["verdict"] == "no_route"
    assert doc["detail"] == "no route of the map holds it: the kernel's other routes apply"
    assert (doc["route"], doc["edge"], doc["lease"], doc["installed"]) == (None, None, None, None)
    assert doc["health"]["session"] is None
    assert doc["problems"] == []
    # IPv4 and IPv6 never match each other
    assert ask("::ffff:10.245.0.7")["verdict"] == "no_route"


def test_ipv6_address_and_an_ipv6_endpoint_raise_the_outer_size() -> None:
    doc = ask("fd00:b::7", peers=[peer("vpc-b", endpoint="[2001:db8::2]:51820")])
    assert doc["route"]["match"] == {"route": "fd00:b::/48", "edge": "vpc-b"}
    assert doc["mtu"]["outer"] == 1420 + 32 + 8 + 40
    assert doc["installed"] is True


def test_every_problem_is_listed_in_plain_words() -> None:
    soon = entry("vpc-b", 2, "10.245.0.0/16", expires=WALL + 30)
    doc = ask(
        "10.245.0.7",
        route_map=RouteMap(3, (A, soon)).validate(),
        installed=frozenset(),
        peers=[peer("vpc-b", session_age=None, handshakes=0, last_rx=None, last_handshake=None)],
        controller=ControllerView(("c:7000",), "c:7000", False, "UNAVAILABLE: down", 3),
    )
    assert doc["problems"] == [
        "the controller c:7000 is disconnected: UNAVAILABLE: down; this edge forwards on "
        "map version 3 until its leases run out",
        "the lease of route 10.245.0.0/16 runs out in 30 s; the controller renews it while "
        "reachable, else the route is withdrawn then",
        "route 10.245.0.0/16 is not installed on the TUN: packets to 10.245.0.7 take the "
        "kernel's other routes (the edge retries at the next map; its log says why, "
        "event=route_error)",
    ]
    assert doc["installed"] is False
    assert doc["health"]["session"]["established"] is False
    assert doc["notes"] == [
        "no session with edge 'vpc-b' now: the first packet starts a handshake; if traffic "
        "to 10.245.0.7 fails, check that 198.18.0.2:51820 is reachable on UDP and that edge "
        "'vpc-b' runs"
    ]


def test_no_session_is_a_note_and_no_session_without_an_endpoint_a_problem() -> None:
    doc = ask("10.245.0.7", peers=[peer("vpc-b", session_age=None, handshakes=3)])
    assert doc["health"]["session"]["established"] is False
    assert doc["problems"] == [] and len(doc["notes"]) == 1
    lost = ask("10.245.0.7", peers=[peer("vpc-b", session_age=None, endpoint=None)])
    assert lost["problems"] == [
        "edge 'vpc-b' has no endpoint and no session: no handshake can start"
    ]
    assert lost["notes"] == []
    gone = ask("10.245.0.7", peers=[])
    assert gone["problems"] == ["edge 'vpc-b' is not a peer of the tunnel"]


def test_lease_forged_or_expired_and_unreadable_routes_and_missing_endpoint() -> None:
    forged = entry("vpc-b", 2, "10.245.0.0/16", signer=OTHER_CONTROLLER)
    doc = ask(
        "10.245.0.7",
        route_map=RouteMap(3, (A, forged)),
        installed=None,
        peers=[peer("vpc-b", endpoint=None, session_age=None)],
    )
    assert doc["lease"]["verified"] is False
    assert doc["installed"] is None
    assert doc["problems"] == [
        "the lease of route 10.245.0.0/16 does not verify against controller_public_key",
        "the kernel routes could not be read: whether 10.245.0.0/16 is installed is unknown",
        "edge 'vpc-b' has no endpoint and no session: no handshake can start",
    ]
    expired = ask("10.245.0.7", wall=WALL + 3700)
    assert expired["lease"]["expires_in_seconds"] == -100.0
    assert expired["problems"] == ["the lease of route 10.245.0.0/16 expired 100 s ago"]


def test_a_route_colliding_with_a_route_isthmus_did_not_install_says_so() -> None:
    lan = "10.245.0.0/16 dev lan0 proto kernel"
    reason = f"collides with an existing route {lan}"
    installed = frozenset(net for net, e in MAP.routes() if e.name not in ("vpc-a", "vpc-b"))
    doc = ask(
        "10.245.0.7",
        installed=installed,
        collisions={parse_route("10.245.0.0/16"): reason},
    )
    assert doc["installed"] is False
    assert doc["problems"] == [
        f"route 10.245.0.0/16 is not installed on the TUN: it {reason}, which isthmus never "
        "replaces; packets to 10.245.0.7 take that route (the edge retries every 5 s and "
        "installs its own once that route is gone, event=route_collision)"
    ]


def test_no_map_and_an_advertised_route_the_map_does_not_hold() -> None:
    empty = ask("10.244.1.1", route_map=RouteMap(0), peers=[])
    assert empty["verdict"] == "no_route"
    assert empty["problems"] == [
        "this edge has no map yet (version 0): no tunnel route applies",
        "this edge advertises 10.244.0.0/16 but the map does not hold it: pending or refused "
        "at the controller ('isthmus routes' there says why)",
    ]
    pending = ask("10.97.1.1", advertised=(parse_route("10.97.1.0/24"),))
    assert pending["verdict"] == "remote"  # vpc-c's 10.0.0.0/8 serves it meanwhile
    assert pending["problems"][-1].startswith("this edge advertises 10.97.1.0/24 but the map")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no address given"),
        ("10.1.0.0/16", "'10.1.0.0/16' is a network, not an address"),
        ("fe80::1%eth0", "'fe80::1%eth0' has a scope (%)"),
        ("vpc-b", "'vpc-b' is not an IP address"),
        ("10.1.2.256", "'10.1.2.256' is not an IP address"),
        ("1" * 100, "is too long to be an address"),
    ],
)
def test_bad_addresses_name_what_was_wrong_and_what_is_allowed(text: str, why: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address(text)
    assert why in str(caught.value)
    assert str(caught.value).endswith(f"allowed: {ADDRESS_RULE}")


def test_render_explain_plain_and_coloured() -> None:
    doc = ask("10.245.0.7", installed=frozenset())
    text = render_explain(doc)
    assert "\x1b[" not in text
    lines = text.splitlines()
    assert lines[:4] == [
        "address: 10.245.0.7",
        "  edge: vpc-a (this one)",
        "  verdict: remote: forwarded through the tunnel to edge 'vpc-b' by route 10.245.0.0/16",
        "  route: 10.245.0.0/16 via vpc-b (longest prefix match)",
    ]
    assert "  also holding it: 10.0.0.0/8 via vpc-c" in lines
    assert "  lease: version 3, expires 2027-01-15T09:00:00Z (in 3600 s), verified" in lines
    assert "  mtu: 1420 (TUN = largest inner packet), outer packets up to 1480 bytes" in lines
    assert "  kernel route on the TUN: NOT installed" in lines
    assert "    session: established, age 12 s" in lines
    assert lines[-2:] == [
        "problems:",
        "  route 10.245.0.0/16 is not installed on the TUN: packets to 10.245.0.7 take the "
        "kernel's other routes (the edge retries at the next map; its log says why, "
        "event=route_error)",
    ]
    coloured = render_explain(doc, colour=True)
    assert "\x1b[1;31mNOT installed\x1b[0m" in coloured
    assert "\x1b[32mremote\x1b[0m" in coloured
    # the colours mark states only: stripped, the text is the same
    assert _strip(coloured) == text
    healthy = render_explain(ask("192.0.2.1"))
    assert healthy.splitlines()[-1] == "problems: none"


def _strip(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_edge_explain_reads_the_live_tunnel_and_refuses_bad_addresses() -> None:
    private = keys(1)[1]
    tunnel = Tunnel(
        Identity.from_private_key(EdgeName("vpc-a"), private),
        random=random.Random(1).randbytes,
        wall_clock=lambda: WALL,
    )
    tunnel.apply_map(MAP, 0.0)
    installed: set[Network] = {parse_route("10.245.0.0/16")}

    def explainer_on(routes: FakeRouteTable) -> EdgeExplain:
        return EdgeExplain(
            tunnel=tunnel,
            route_map=lambda: MAP,
            advertised=(parse_route("10.244.0.0/16"),),
            controller=lambda: CONNECTED,
            controller_key=CONTROLLER.public,
            routes=routes,
            tun_mtu=1400,
            clock=lambda: 10.0,
            wall_clock=lambda: WALL,
        )

    explainer = explainer_on(FakeRouteTable(installed))
    doc = asyncio.run(explainer.handle("10.245.0.7"))
    assert doc["verdict"] == "remote" and doc["installed"] is True
    assert doc["mtu"]["tun"] == 1400
    # a fresh tunnel: no handshake yet with vpc-b; normal, a note says what to check
    assert doc["health"]["session"]["established"] is False
    assert doc["problems"] == []
    assert doc["notes"][0].startswith("no session with edge 'vpc-b' now")
    refused = asyncio.run(explainer.handle("10.245.0.0/16"))
    assert refused == {
        "error": f"'10.245.0.0/16' is a network, not an address; allowed: {ADDRESS_RULE}"
    }
    text = json.dumps(doc)
    assert base64.b64encode(private).decode() not in text and private.hex() not in text
    unreadable = FakeRouteTable()
    unreadable.fail_list = True
    blind = asyncio.run(explainer_on(unreadable).handle("10.245.0.7"))
    assert blind["installed"] is None
    assert (
        "the kernel routes could not be read: whether 10.245.0.0/16 is installed is unknown"
        in (blind["problems"])
    )


def test_an_edge_behind_nat_not_yet_heard_from_is_named_so() -> None:
    nat = replace(B, endpoints=())  # the map lists no endpoint: the edge is behind NAT
    doc = ask(
        "10.245.0.7",
        route_map=RouteMap(3, (A, nat, C)),
        peers=[peer("vpc-b", endpoint=None, session_age=None, behind_nat=True)],
    )
    assert doc["problems"] == [
        "edge 'vpc-b' is behind NAT (the map lists no endpoint) and not yet heard from: "
        "packets to it are dropped (no_route) until it handshakes"
    ]
    heard = ask(
        "10.245.0.7",
        route_map=RouteMap(3, (A, nat, C)),
        peers=[peer("vpc-b", endpoint="198.18.0.2:1024", behind_nat=True)],
    )
    assert heard["problems"] == []

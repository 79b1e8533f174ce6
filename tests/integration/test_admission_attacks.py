"""A malicious edge with a valid key, against the controller over real gRPC (127.0.0.1:0):
bad endpoints (F2), squatting across flaps and key rotation (F4), and a controller that
listens on a wildcard address (F12). Each test drives real authenticated edge clients and
checks both the refusal and that the victim's route keeps serving in the published map.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from controller.__main__ import ControllerServer
from controller.config import AllowedEdge, ControllerConfig, parse
from isthmus.endpoint import Endpoint
from tests.integration.edgeclient import edge_keys
from tests.integration.test_controller_service import (
    PENDING,
    REFUSED,
    SERVING,
    A,
    B,
    Clock,
    config,
    refused,
    routes_of,
    run,
    running,
    statuses,
)

ROGUE = edge_keys("rogue", 3)  # endpoint 198.18.0.13; allowed 10.0.0.0/8 and 198.18.0.0/15
ROUTE = "10.244.0.0/16"  # vpc-a's
HOLD = 600  # the default admission.hold_time


def edges() -> tuple[AllowedEdge, ...]:
    return (
        A.allowed("10.244.0.0/16", "10.96.0.0/16"),
        B.allowed("10.245.0.0/16"),
        ROGUE.allowed("10.0.0.0/8", "198.18.0.0/15"),
    )


def served(server: ControllerServer) -> dict[str, list[str]]:
    """The routes of each edge in the map the controller publishes now."""
    return routes_of(server.service.registry.snapshot())


def route_state(server: ControllerServer, edge: str, route: str) -> tuple[str, str, str]:
    """(state, reason code, detail) of one advertised route."""
    for d in server.service.route_statuses():
        if d.edge == edge and str(d.route) == route:
            return d.state.value, d.reason.value, d.detail
    raise AssertionError(f"{edge} does not advertise {route}")


BAD_ENDPOINTS = [
    ("127.0.0.1:51820", "a loopback address (127.0.0.0/8)"),
    ("0.0.0.0:51820", "the unspecified address (0.0.0.0/32)"),
    ("255.255.255.255:51820", "the broadcast address (255.255.255.255/32)"),
    ("224.0.0.1:51820", "a multicast address (224.0.0.0/4)"),
    ("169.254.10.1:51820", "a link-local address (169.254.0.0/16)"),
    (
        "[::ffff:127.0.0.1]:51820",
        "an IPv4-mapped IPv6 address (::ffff:0:0/96) of 127.0.0.1, a loopback address",
    ),
    ("[::1]:51820", "a loopback address (::1/128)"),
    ("[::]:51820", "the unspecified address (::/128)"),
    ("[fe80::1%eth0]:51820", "a scoped address (%eth0)"),
    ("[fe80::1]:51820", "a link-local address (fe80::/10)"),
    ("[ff02::1]:51820", "a multicast address (ff00::/8)"),
]


def test_f2_bad_endpoint_forms_are_invalid_argument_and_the_victim_keeps_serving(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        async with running(config(tmp_path, *edges())) as (server, client):
            await client(A).register(ROUTE)
            version = server.service.version
            rogue = client(ROGUE)
            for bad, what in BAD_ENDPOINTS:
                request = rogue.request("10.50.0.0/16")
                request.endpoints.append(bad)
                e = await refused(rogue.register_pb(request))
                assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
                details = e.details() or ""
                assert details.startswith("endpoints[1]: "), details
                assert what in details, details
                assert "allowed: a unicast address other edges can reach" in details, details
            # nothing changed: the rogue never registered, vpc-a's route serves
            assert server.service.version == version
            assert served(server) == {"vpc-a": [ROUTE]}
            assert route_state(server, "vpc-a", ROUTE)[0] == "serving"

    run(body)


def test_f2_an_endpoint_inside_another_edges_route_is_refused_not_the_route(
    tmp_path: Path,
) -> None:
    """rogue points its endpoint into vpc-a's serving route and into vpc-b's pending one:
    each registration is refused, naming the route; both routes keep their state. A NEW
    route containing an existing endpoint is still refused `overlay`."""

    async def body() -> None:
        cfg = config(tmp_path, A.allowed("10.244.0.0/16"), B.allowed("10.0.0.0/8"), edges()[2])
        async with running(cfg) as (server, client):
            await client(A).register(ROUTE)
            r = await client(B).register("10.0.0.0/8")  # contains vpc-a's route: pending
            assert statuses(r) == [("10.0.0.0/8", PENDING, "less_specific", False)]
            rogue = client(ROGUE)
            await rogue.register("198.19.0.0/16")
            version = server.service.version
            for inside, owner, state in (
                ("10.244.7.7:51820", "vpc-a", "serving"),
                ("10.1.2.3:51820", "vpc-b", "pending"),
            ):
                request = rogue.request("198.19.0.0/16")
                request.endpoints[:] = [inside]
                e = await refused(rogue.register_pb(request))
                assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
                route = ROUTE if owner == "vpc-a" else "10.0.0.0/8"
                assert (e.details() or "").startswith(
                    f"endpoints[0]: {inside} is inside route {route} of edge {owner!r} "
                    f"({state}); allowed: an endpoint outside every other edge's serving, "
                    "pending or held routes"
                ), e.details()
            assert server.service.version == version
            assert route_state(server, "vpc-a", ROUTE)[:2] == ("serving", "")
            assert route_state(server, "vpc-b", "10.0.0.0/8")[:2] == ("pending", "less_specific")
            assert served(server) == {"rogue": ["198.19.0.0/16"], "vpc-a": [ROUTE], "vpc-b": []}
            # the other way round: a new route over vpc-a's endpoint 198.18.0.11 is refused
            r = await rogue.register("198.19.0.0/16", "198.18.0.0/24")
            assert statuses(r)[1] == ("198.18.0.0/24", REFUSED, "overlay", False)
            assert "198.18.0.0/24 contains 198.18.0.11, an endpoint of edge 'vpc-a'" in (
                r.routes[1].reason
            )

    run(body)


def test_f4_a_squatter_never_gets_the_owners_route_across_flaps_and_key_rotation(
    tmp_path: Path,
) -> None:
    """rogue (allowed 10.0.0.0/8) claims vpc-a's /16 (refused), then waits: vpc-a
    registers once without it, comes back; vpc-a's key is rotated, the new key registers.
    rogue keeps claiming after every step; the route never serves at rogue, and vpc-a gets
    its place back each time."""

    async def body() -> None:
        clock = Clock()
        cfg = config(tmp_path, *edges())
        # [admission] as a config file without it: the default hold_time, 600 s
        default = parse({"listen": "127.0.0.1:0", "state_dir": "s", "signing_key_file": "k"})
        cfg = replace(cfg, admission=default.admission)
        async with running(cfg, clock=clock) as (server, client):
            a, rogue = client(A), client(ROGUE)
            await a.register(ROUTE, "10.96.0.0/16")
            r = await rogue.register(ROUTE, "10.50.0.0/16")
            assert statuses(r)[0] == (ROUTE, REFUSED, "exact", False)

            def rogue_never_serves_it() -> None:
                assert ROUTE not in served(server).get("rogue", []), served(server)

            # the owner flaps: registers once without the route
            clock.now += 10
            await a.register("10.96.0.0/16")
            held_until = "2025-10-09T09:03:30Z"  # 1_760_000_010 + 600, in UTC
            r = await rogue.register(ROUTE, "10.50.0.0/16")
            assert statuses(r)[0] == (ROUTE, REFUSED, "exact", False)
            assert f"is held for edge 'vpc-a' until {held_until}" in r.routes[0].reason
            rogue_never_serves_it()
            clock.now += HOLD - 20  # still within the hold
            await server.service.renew()
            r = await rogue.register(ROUTE, "10.50.0.0/16")
            assert statuses(r)[0][1:3] == (REFUSED, "exact")
            rogue_never_serves_it()
            r = await a.register(ROUTE, "10.96.0.0/16")
            assert statuses(r)[0] == (ROUTE, SERVING, "", False)
            assert r.routes[0].since_version == 1  # its old place
            assert served(server)["vpc-a"] == ["10.96.0.0/16", ROUTE]

            # the owner's key is rotated: the old key's edge is removed, the name keeps
            # the claim; the new key registers later and gets it back
            a2 = edge_keys("vpc-a", 9)
            rotated = (a2.allowed("10.244.0.0/16", "10.96.0.0/16"), *edges()[1:])
            await server.reload(replace(cfg, edges=rotated))
            assert "vpc-a" not in served(server)
            clock.now += 60
            r = await rogue.register(ROUTE, "10.50.0.0/16")
            assert statuses(r)[0][1:3] == (REFUSED, "exact")
            assert "is held for edge 'vpc-a'" in r.routes[0].reason
            rogue_never_serves_it()
            e = await refused(a.register(ROUTE))  # the old key is locked out
            assert e.code() == grpc.StatusCode.UNAUTHENTICATED
            r = await client(a2).register(ROUTE, "10.96.0.0/16")
            assert [s[:3] for s in statuses(r)] == [
                (ROUTE, SERVING, ""),
                ("10.96.0.0/16", SERVING, ""),
            ]
            assert r.routes[0].since_version == 1
            await rogue.register(ROUTE, "10.50.0.0/16")
            assert route_state(server, "rogue", ROUTE)[:2] == ("refused", "exact")
            assert served(server) == {
                "rogue": ["10.50.0.0/16"],
                "vpc-a": ["10.96.0.0/16", ROUTE],
            }

    run(body)


def test_f4_a_refused_route_keeps_no_place_in_the_queue(tmp_path: Path) -> None:
    """vpc-b (allowed 10.0.0.0/8) claims vpc-a's /16 first, rogue later: both refused.
    When vpc-a gives the route up for good (no hold), they are newcomers alike: the earlier
    refused claim has no head start, the edge name decides."""

    async def body() -> None:
        cfg = config(tmp_path, A.allowed(ROUTE), B.allowed("10.0.0.0/8"), edges()[2])
        async with running(cfg) as (server, client):
            await client(A).register(ROUTE)
            r = await client(B).register(ROUTE)
            assert statuses(r)[0][1:3] == (REFUSED, "exact")
            r = await client(ROGUE).register(ROUTE)
            assert statuses(r)[0][1:3] == (REFUSED, "exact")
            await client(A).register()  # hold_time 0: given up at once
            assert route_state(server, "rogue", ROUTE)[0] == "serving"
            assert route_state(server, "vpc-b", ROUTE)[:2] == ("refused", "exact")
            r = await client(B).register(ROUTE)
            assert r.routes[0].since_version == 0  # a refused route holds no place

    run(body)


def _host_ipv4() -> str | None:
    """A global IPv4 address of this host, from `ip -j addr`."""
    done = subprocess.run(
        ["ip", "-j", "-4", "addr", "show", "scope", "global"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return None
    for link in json.loads(done.stdout or "[]"):
        for info in link.get("addr_info", []):
            if info.get("local"):
                return str(info["local"])
    return None


def _wildcard(cfg: ControllerConfig) -> ControllerConfig:
    return replace(cfg, listen=Endpoint.parse("0.0.0.0:0", allow_port_zero=True))


def test_f12_a_wildcard_listen_keeps_routes_off_the_configured_controller_address(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        controller = ipaddress.ip_address("198.18.0.1")
        cfg = replace(_wildcard(config(tmp_path, *edges())), addresses=(controller,))
        async with running(cfg) as (_, client):
            r = await client(ROGUE).register("198.18.0.0/24", "198.18.0.1/32", "198.19.0.0/16")
            assert statuses(r) == [
                ("198.18.0.0/24", REFUSED, "overlay", False),
                ("198.18.0.1/32", REFUSED, "overlay", False),
                ("198.19.0.0/16", SERVING, "", False),
            ]
            assert r.routes[1].reason.startswith(
                "198.18.0.1/32 contains 198.18.0.1, the controller's address;"
            )

    run(body)


def test_f12_a_wildcard_listen_without_addresses_uses_the_hosts(tmp_path: Path) -> None:
    host = _host_ipv4()
    if host is None:
        pytest.skip("this host has no global IPv4 address")
    route = f"{host}/32"

    async def body() -> None:
        rogue = ROGUE.allowed("0.0.0.0/1", "128.0.0.0/1")
        async with running(_wildcard(config(tmp_path, rogue))) as (server, client):
            r = await client(ROGUE).register(route)
            assert statuses(r) == [(route, REFUSED, "overlay", False)]
            assert f"contains {host}, the controller's address" in r.routes[0].reason
            assert ipaddress.ip_address(host) in server.config.addresses

    run(body)

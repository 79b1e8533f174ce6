"""`isthmus status` and `isthmus explain IP` as subprocesses against an edge's admin socket:
a real unix socket, the real AdminServer, EdgeStatus and EdgeExplain over a real tunnel core
that completed a handshake with a second one; the kernel routes are the typed fake.

    python -m isthmus explain IP --socket P  --unix socket-->  AdminServer
        "status"     -> EdgeStatus.build    -+
        "explain IP" -> EdgeExplain.handle  -+-> Tunnel (vpc-a) <-handshake-> Tunnel (vpc-b)
                                                 FakeRouteTable, ControllerView
Checks the documents, the text, exit codes 0 / 1 / 2, colour only on a terminal, and that
no private key appears in any output.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

from edge.admin import AdminServer, EdgeStatus
from edge.control import ControllerView
from edge.explain import EdgeExplain
from edge.status import request
from edge.testing import FakeRouteTable
from edge.tunnel import Identity, Tunnel
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.routemap import RouteMap, parse_route
from tests.integration.clirun import isthmus, isthmus_on_a_tty
from tests.integration.test_edge_shell import CONTROLLER, entry, keys

CONTROLLER_SEED = bytes(range(32))  # the seed of test_edge_shell.CONTROLLER, which signs
WALL = 1_800_000_000.0


MAP = RouteMap(
    3, (entry("vpc-a", 1, "10.244.0.0/16"), entry("vpc-b", 2, "10.245.0.0/16", "fd00:b::/48"))
).validate()


def tunnel(name: str, seed: int, greet: bool) -> Tunnel:
    t = Tunnel(
        Identity.from_private_key(EdgeName(name), keys(seed)[1]),
        random=random.Random(seed).randbytes,
        wall_clock=lambda: WALL,
        greet=greet,
    )
    t.apply_map(MAP, 1.0)
    return t


def handshaken() -> Tunnel:
    """vpc-a's tunnel after its greeting handshake with vpc-b completed."""
    a, b = tunnel("vpc-a", 1, True), tunnel("vpc-b", 2, False)
    for _ in range(8):
        moved = False
        for src, dst, addr in ((a, b, ("198.18.0.1", 51820)), (b, a, ("198.18.0.2", 51820))):
            for datagram, _ in src.datagrams_to_send():
                dst.outside(datagram, addr, 2.0)
                moved = True
        if not moved:
            break
    assert a.peers(3.0)[0].session_age is not None, "the handshake did not complete"
    return a


class Edge:
    """The admin socket of one edge, with the state a test changes between requests."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tunnel = handshaken()
        self.routes = FakeRouteTable({parse_route("10.245.0.0/16"), parse_route("fd00:b::/48")})
        self.controller = ControllerView(("198.18.0.100:7000",), "198.18.0.100:7000", True, None, 3)
        status = EdgeStatus(
            endpoint=Endpoint.parse("198.18.0.1:51820"),
            tunnel=self.tunnel,
            route_map=lambda: MAP,
            controller=lambda: self.controller,
            routes=self.routes,
            clock=lambda: 3.0,
        )
        explainer = EdgeExplain(
            tunnel=self.tunnel,
            route_map=lambda: MAP,
            advertised=(parse_route("10.244.0.0/16"),),
            controller=lambda: self.controller,
            controller_key=CONTROLLER.public,
            routes=self.routes,
            tun_mtu=1420,
            clock=lambda: 3.0,
            wall_clock=lambda: WALL,
        )
        self.server = AdminServer(path, status.build, {"explain": explainer.handle})


def serve(tmp_path: Path, body: Callable[[Edge], Awaitable[None]]) -> None:
    async def main() -> None:
        edge = Edge(tmp_path / "admin.sock")
        await edge.server.start()
        try:
            await body(edge)
        finally:
            await edge.server.close()

    asyncio.run(main())


def test_status_and_explain_of_a_healthy_edge_exit_0(tmp_path: Path) -> None:
    async def body(edge: Edge) -> None:
        sock = ("--socket", str(edge.path))
        code, out, err = await isthmus("status", "--json", *sock)
        assert (code, err) == (0, "")
        assert json.loads(out)["peers"][0]["session_age_seconds"] == 1.0
        code, out, err = await isthmus("status", *sock)
        assert (code, err) == (0, "") and "\x1b[" not in out
        assert "10.245.0.0/16  via vpc-b  installed" in out and "problems:" not in out

        code, out, err = await isthmus("explain", "10.245.0.7", "--json", *sock)
        assert (code, err) == (0, "")
        doc = json.loads(out)
        assert (doc["verdict"], doc["installed"], doc["problems"]) == ("remote", True, [])
        assert doc["route"]["match"] == {"route": "10.245.0.0/16", "edge": "vpc-b"}
        assert doc["lease"]["verified"] is True and doc["lease"]["expires_at"] == WALL + 3600
        assert doc["health"]["session"]["established"] is True
        assert doc["mtu"] == {"tun": 1420, "inner": 1420, "overhead": 32, "outer": 1480}

        code, out, err = await isthmus("explain", "10.245.0.7", *sock)
        assert (code, err) == (0, "") and "\x1b[" not in out
        lines = out.splitlines()
        assert lines[2] == (
            "  verdict: remote: forwarded through the tunnel to edge 'vpc-b' by route 10.245.0.0/16"
        )
        assert "  kernel route on the TUN: installed" in lines
        assert lines[-1] == "problems: none"

        code, out, err = await isthmus("explain", "fd00:b::7", "--json", *sock)
        assert code == 0 and json.loads(out)["route"]["match"]["route"] == "fd00:b::/48"
        code, out, err = await isthmus("explain", "10.244.1.1", "--json", *sock)
        assert code == 0 and json.loads(out)["verdict"] == "local"
        code, out, err = await isthmus("explain", "192.0.2.1", *sock)
        assert code == 0 and "verdict: no_route: no route of the map holds it" in out

    serve(tmp_path, body)


def test_degraded_edge_exits_2_and_names_every_problem(tmp_path: Path) -> None:
    async def body(edge: Edge) -> None:
        sock = ("--socket", str(edge.path))
        edge.controller = ControllerView(("c:7000",), "c:7000", False, "UNAVAILABLE: down", 3)
        edge.routes.routes.discard(parse_route("10.245.0.0/16"))

        code, out, err = await isthmus("status", *sock)
        assert (code, err) == (2, "")
        assert out.splitlines()[-3:] == [
            "problems:",
            "  the controller c:7000 is disconnected: UNAVAILABLE: down",
            "  route 10.245.0.0/16 via vpc-b is not installed on the TUN",
        ]
        code, out, err = await isthmus("status", "--json", *sock)
        assert code == 2 and json.loads(out)["controller"]["connected"] is False

        code, out, err = await isthmus("explain", "10.245.0.7", "--json", *sock)
        assert code == 2
        doc = json.loads(out)
        assert doc["installed"] is False
        assert [p.split(":")[0] for p in doc["problems"]] == [
            "the controller c",
            "route 10.245.0.0/16 is not installed on the TUN",
        ]
        code, out, err = await isthmus("explain", "10.245.0.7", *sock)
        assert code == 2 and "  kernel route on the TUN: NOT installed" in out.splitlines()

    serve(tmp_path, body)


def test_bad_requests_and_errors_exit_1(tmp_path: Path) -> None:
    async def body(edge: Edge) -> None:
        sock = ("--socket", str(edge.path))
        code, out, err = await isthmus("explain", "10.245.0.0/16", *sock)
        assert (code, out) == (1, "")
        assert "IP: '10.245.0.0/16' is a network, not an address; allowed: one IPv4" in err
        # the edge refuses a bad address on its own too (the CLI checks first)
        reply = await asyncio.to_thread(request, edge.path, "explain bogus")
        assert reply == {
            "error": "'bogus' is not an IP address; allowed: one IPv4 or IPv6 address, "
            "e.g. 10.245.0.7 or fd00:b::7 (no prefix length)"
        }
        reply = await asyncio.to_thread(request, edge.path, "frobnicate")
        assert reply == {"error": "unknown command 'frobnicate'; allowed: explain, status"}
        code, out, err = await isthmus("explain", "10.1.1.1", "--socket", str(edge.path) + "x")
        assert (code, out) == (1, "") and "the edge is not running" in err

    serve(tmp_path, body)


def test_colour_only_on_a_terminal(tmp_path: Path) -> None:
    async def body(edge: Edge) -> None:
        sock = ("--socket", str(edge.path))
        edge.routes.routes.discard(parse_route("fd00:b::/48"))
        code, out = await isthmus_on_a_tty("status", *sock)
        assert code == 2
        assert "\x1b[32minstalled\x1b[0m" in out and "\x1b[1;31mNOT installed\x1b[0m" in out
        assert "\x1b[32mconnected\x1b[0m" in out
        code, out = await isthmus_on_a_tty("explain", "fd00:b::1", *sock)
        assert code == 2 and "\x1b[1;31mNOT installed\x1b[0m" in out
        for env in ({"NO_COLOR": "1"}, {"TERM": "dumb"}):
            for argv in (("status",), ("explain", "fd00:b::1")):
                code, out = await isthmus_on_a_tty(*argv, *sock, env=env)
                assert code == 2 and "NOT installed" in out and "\x1b[" not in out, (argv, env)
        for argv in (("status",), ("explain", "fd00:b::1")):
            code, out = await isthmus_on_a_tty(*argv, "--json", *sock)
            assert code == 2 and "\x1b[" not in out
            json.loads(out)

    serve(tmp_path, body)


def test_no_private_key_in_any_output(tmp_path: Path) -> None:
    secrets = []
    for seed in (1, 2):
        private = keys(seed)[1]
        secrets += [base64.b64encode(private).decode(), private.hex()]
    secrets += [base64.b64encode(CONTROLLER_SEED).decode(), CONTROLLER_SEED.hex()]

    async def body(edge: Edge) -> None:
        sock = ("--socket", str(edge.path))
        outputs = []
        for argv in (
            ("status",),
            ("explain", "10.245.0.7"),
            ("explain", "10.244.0.7"),
            ("explain", "192.0.2.7"),
        ):
            for form in ((), ("--json",)):
                code, out, err = await isthmus(*argv, *form, *sock)
                assert code in (0, 2), err
                outputs.append(out + err)
        for text in outputs:
            for secret in secrets:
                assert secret not in text

    serve(tmp_path, body)

"""The Admin service over a real grpc.aio server on a unix socket, and `isthmus routes` /
`isthmus edges` against it as subprocesses.

The backend is a small in-test `AdminBackend`: this tests the admin shell (parsing,
conversion, error codes, the socket's lifecycle, the CLI), not admission, which
tests/unit/test_admission.py and the controller service tests cover.

    python -m isthmus routes --socket P  --gRPC over unix:P-->  AdminService --> TestBackend
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
import nacl.bindings
import pytest

from controller.admin import EdgeView, start_admin_server, stop_admin_server
from controller.admission import Decision, Reason, RouteState
from controller.errors import AmbiguousRoute, ControllerError, NotPending, StoreError, UnknownRoute
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.routemap import Network
from isthmus.v1 import isthmus_pb2 as pb
from isthmus.v1 import isthmus_pb2_grpc as pb_grpc
from tests.integration.clirun import isthmus, isthmus_on_a_tty


def key(seed: int) -> PublicKey:
    pk, _ = nacl.bindings.crypto_box_seed_keypair(bytes([seed]) * 32)
    return PublicKey(pk)


def net(text: str) -> Network:
    return ipaddress.ip_network(text)


def decision(
    edge: str,
    route: str,
    state: RouteState = RouteState.SERVING,
    reason: Reason = Reason.NONE,
    detail: str = "",
    since: int = 1,
    approved: bool = False,
) -> Decision:
    return Decision(EdgeName(edge), net(route), state, reason, detail, since, approved)


PENDING_DETAIL = (
    "10.97.1.0/24 is more specific than 10.97.0.0/16 of edge 'vpc-b'; "
    "pending: approve with 'isthmus routes approve 10.97.1.0/24 --edge rogue'"
)
# In admission order (since, edge, route), as the registry keeps them.
DECISIONS = (
    decision("vpc-a", "10.244.0.0/16"),
    decision("vpc-b", "10.97.0.0/16"),
    decision("vpc-a", "fd00:a::/48", since=2),
    decision(
        "rogue", "10.97.1.0/24", RouteState.PENDING, Reason.MORE_SPECIFIC, PENDING_DETAIL, since=3
    ),
    decision(
        "rogue",
        "10.244.0.0/16",
        RouteState.REFUSED,
        Reason.EXACT,
        "10.244.0.0/16 is already a route of edge 'vpc-a'",
        since=3,
    ),
)
EDGES = (
    EdgeView(EdgeName("rogue"), key(3), (), "never", "", 0, "", 0.0),
    EdgeView(
        EdgeName("vpc-a"),
        key(1),
        (Endpoint.parse("198.18.0.11:51820"), Endpoint.parse("[2001:db8::1]:51820")),
        "connected",
        "ctl-1-4242",
        7,
        "",
        1_800_000_000.5,
    ),
    EdgeView(
        EdgeName("vpc-b"),
        key(2),
        (Endpoint.parse("198.18.0.12:51820"),),
        "disconnected",
        "",
        6,
        "map 7 refused: edge 'vpc-a' route 10.244.0.0/16: bad lease signature",
        1_799_999_000.0,
    ),
)


@dataclass
class TestBackend:
    """An AdminBackend over a list of decisions; approve serves a pending route (version+1)
    unless `errors` names an error for that route."""

    __test__ = False  # not a pytest class

    decisions: list[Decision] = field(default_factory=lambda: list(DECISIONS))
    edges: tuple[EdgeView, ...] = EDGES
    errors: dict[str, ControllerError] = field(default_factory=dict)
    approvals: list[tuple[Network, EdgeName | None]] = field(default_factory=list)
    _version: int = 7

    def route_statuses(self) -> tuple[Decision, ...]:
        return tuple(self.decisions)

    @property
    def version(self) -> int:
        return self._version

    @property
    def epoch(self) -> bytes:
        return b""  # no signed map yet, as the edges in EDGES report

    async def approve(self, route: Network, edge: EdgeName | None) -> Decision:
        self.approvals.append((route, edge))
        if str(route) in self.errors:
            raise self.errors[str(route)]
        for i, d in enumerate(self.decisions):
            if d.route == route and d.state == RouteState.PENDING and edge in (None, d.edge):
                self._version += 1
                self.decisions[i] = replace(d, state=RouteState.SERVING, approved=True)
                return self.decisions[i]
        raise UnknownRoute(f"no edge advertises {route} pending")

    async def edge_statuses(self) -> tuple[EdgeView, ...]:
        return self.edges


@asynccontextmanager
async def serving(path: Path, backend: TestBackend) -> AsyncIterator[pb_grpc.AdminStub]:
    server = await start_admin_server(path, backend)
    try:
        async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
            yield pb_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
    finally:
        await stop_admin_server(server, path)


def run(
    tmp_path: Path,
    body: Callable[[pb_grpc.AdminStub, Path], Awaitable[None]],
    backend: TestBackend | None = None,
) -> None:
    path = tmp_path / "run" / "admin.sock"

    async def main() -> None:
        async with serving(path, backend or TestBackend()) as stub:
            await body(stub, path)

    asyncio.run(main())


def test_list_routes_sorted_by_route_with_version(tmp_path: Path) -> None:
    async def body(stub: pb_grpc.AdminStub, path: Path) -> None:
        reply = await stub.ListRoutes(pb.ListRoutesRequest())
        assert reply.version == 7
        assert [(r.route, r.edge) for r in reply.routes] == [
            ("10.97.0.0/16", "vpc-b"),
            ("10.97.1.0/24", "rogue"),
            ("10.244.0.0/16", "rogue"),
            ("10.244.0.0/16", "vpc-a"),
            ("fd00:a::/48", "vpc-a"),
        ]
        pending = reply.routes[1]
        assert pending == pb.RouteStatus(
            route="10.97.1.0/24",
            edge="rogue",
            state=pb.ROUTE_STATE_PENDING,
            reason_code="more_specific",
            reason=PENDING_DETAIL,
            since_version=3,
            approved=False,
        )
        assert reply.routes[2].state == pb.ROUTE_STATE_REFUSED
        assert reply.routes[2].reason_code == "exact"
        assert reply.routes[3].state == pb.ROUTE_STATE_SERVING
        assert reply.routes[3].reason_code == ""

    run(tmp_path, body)


def test_approve_serves_the_pending_route(tmp_path: Path) -> None:
    backend = TestBackend()

    async def body(stub: pb_grpc.AdminStub, path: Path) -> None:
        reply = await stub.ApproveRoute(pb.ApproveRouteRequest(route="10.97.1.0/24"))
        assert reply.version == 8
        assert reply.route.route == "10.97.1.0/24" and reply.route.edge == "rogue"
        assert reply.route.state == pb.ROUTE_STATE_SERVING and reply.route.approved
        listed = await stub.ListRoutes(pb.ListRoutesRequest())
        assert listed.version == 8
        assert [r.state for r in listed.routes if r.edge == "rogue"] == [
            pb.ROUTE_STATE_SERVING,
            pb.ROUTE_STATE_REFUSED,
        ]

    run(tmp_path, body, backend)
    assert backend.approvals == [(net("10.97.1.0/24"), None)]


def test_approve_passes_the_named_edge(tmp_path: Path) -> None:
    backend = TestBackend()

    async def body(stub: pb_grpc.AdminStub, path: Path) -> None:
        await stub.ApproveRoute(pb.ApproveRouteRequest(route="10.97.1.0/24", edge="rogue"))

    run(tmp_path, body, backend)
    assert backend.approvals == [(net("10.97.1.0/24"), EdgeName("rogue"))]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (
            NotPending("10.244.0.0/16 of edge 'vpc-a' is serving, not pending"),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (UnknownRoute("no edge advertises 10.244.0.0/16"), grpc.StatusCode.NOT_FOUND),
        (
            AmbiguousRoute("10.244.0.0/16 is advertised by edges 'rogue', 'vpc-a'; use --edge"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (StoreError("cannot write state.json: No space left"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_approve_refusals_carry_the_code_and_the_message(
    tmp_path: Path, error: ControllerError, code: grpc.StatusCode
) -> None:
    backend = TestBackend(errors={"10.244.0.0/16": error})

    async def body(stub: pb_grpc.AdminStub, path: Path) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ApproveRoute(pb.ApproveRouteRequest(route="10.244.0.0/16"))
        assert caught.value.code() == code
        assert caught.value.details() == str(error)

    run(tmp_path, body, backend)
    assert backend.approvals == [(net("10.244.0.0/16"), None)]


@pytest.mark.parametrize(
    ("route", "edge", "details"),
    [
        (
            "10.97.1.1/24",
            "",
            "route: '10.97.1.1/24' is not a route (10.97.1.1/24 has host bits set)",
        ),
        ("", "", "route: '' is not a route: use an IPv4 or IPv6 network"),
        ("10.97.1.0/24", "Rogue", "edge: 'Rogue' is not a valid edge name: use 1-63 characters"),
    ],
)
def test_approve_malformed_field_is_invalid_argument_naming_it(
    tmp_path: Path, route: str, edge: str, details: str
) -> None:
    backend = TestBackend()

    async def body(stub: pb_grpc.AdminStub, path: Path) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ApproveRoute(pb.ApproveRouteRequest(route=route, edge=edge))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (caught.value.details() or "").startswith(details)

    run(tmp_path, body, backend)
    assert backend.approvals == []


def test_list_edges(tmp_path: Path) -> None:
    async def body(stub: pb_grpc.AdminStub, path: Path) -> None:
        reply = await stub.ListEdges(pb.ListEdgesRequest())
        assert reply.version == 7
        assert [e.name for e in reply.edges] == ["rogue", "vpc-a", "vpc-b"]
        a = reply.edges[1]
        assert a == pb.EdgeStatus(
            name="vpc-a",
            public_key=key(1).raw,
            endpoints=["198.18.0.11:51820", "[2001:db8::1]:51820"],
            state="connected",
            replica="ctl-1-4242",
            applied_version=7,
            last_error="",
            reported_at=1_800_000_000.5,
        )
        assert reply.edges[2].last_error.startswith("map 7 refused")

    run(tmp_path, body)


def test_socket_is_0600_in_a_new_0700_directory_and_removed_on_stop(tmp_path: Path) -> None:
    path = tmp_path / "run" / "isthmus" / "admin.sock"

    async def main() -> None:
        server = await start_admin_server(path, TestBackend())
        try:
            assert os.umask(0o022) == 0o022  # the process umask is back as it was
            st = path.lstat()
            assert stat.S_ISSOCK(st.st_mode)
            assert stat.S_IMODE(st.st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        finally:
            await stop_admin_server(server, path)
        assert not path.exists()

    old = os.umask(0o022)  # a permissive umask must not leak into the socket's mode
    try:
        asyncio.run(main())
    finally:
        os.umask(old)


def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "admin.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a crashed controller's leftover
    assert stat.S_ISSOCK(path.lstat().st_mode)

    async def main() -> None:
        async with serving(path, TestBackend()) as stub:
            assert (await stub.ListRoutes(pb.ListRoutesRequest())).version == 7
            assert stat.S_IMODE(path.lstat().st_mode) == 0o600

    asyncio.run(main())


def test_refuses_a_live_socket_and_a_file_that_is_not_a_socket(tmp_path: Path) -> None:
    live = tmp_path / "live.sock"
    plain = tmp_path / "plain"
    plain.write_text("not a socket")

    async def main() -> None:
        async with serving(live, TestBackend()):
            with pytest.raises(OSError, match="another process answers on the admin socket"):
                await start_admin_server(live, TestBackend())
        with pytest.raises(OSError, match="exists and is not a socket; refusing to remove it"):
            await start_admin_server(plain, TestBackend())

    asyncio.run(main())
    assert plain.read_text() == "not a socket"


# --- the CLI, end to end -------------------------------------------------------------------


def test_cli_routes_json_and_text(tmp_path: Path) -> None:
    async def body(stub: pb_grpc.AdminStub, path: Path) -> None:
        code, out, err = await isthmus("routes", "--socket", str(path), "--json")
        assert code == 2, err  # degraded: a route is pending, one refused
        doc = json.loads(out)
        assert doc["version"] == 7
        assert [r["route"] for r in doc["routes"]] == [
            "10.97.0.0/16",
            "10.97.1.0/24",
            "10.244.0.0/16",
            "10.244.0.0/16",
            "fd00:a::/48",
        ]
        assert doc["routes"][1] == {
            "route": "10.97.1.0/24",
            "edge": "rogue",
            "state": "pending",
            "reason_code": "more_specific",
            "reason": PENDING_DETAIL,
            "since_version": 3,
            "approved": False,
        }

        code, out, err = await isthmus("routes", "--socket", str(path))
        assert (code, err) == (2, "")  # pending and refused routes: degraded, no error
        assert "\x1b[" not in out  # piped: no colour
        lines = out.splitlines()
        assert lines[0].split() == ["ROUTE", "EDGE", "STATE", "REASON"]
        assert lines[2].split(None, 3) == ["10.97.1.0/24", "rogue", "pending", PENDING_DETAIL]
        assert lines[1].split() == ["10.97.0.0/16", "vpc-b", "serving"]
        assert len(lines) == 6

    run(tmp_path, body)


def test_cli_routes_approve(tmp_path: Path) -> None:
    backend = TestBackend(errors={"10.244.0.0/16": NotPending("10.244.0.0/16 is refused")})

    async def body(stub: pb_grpc.AdminStub, path: Path) -> None:
        sock = ("--socket", str(path))
        code, out, err = await isthmus(
            "routes", "approve", "10.97.1.0/24", "--edge", "rogue", *sock
        )
        assert code == 0, err
        assert out == "approved 10.97.1.0/24 of edge 'rogue': serving (map version 8)\n"

        code, out, err = await isthmus("routes", "approve", "10.244.0.0/16", *sock)
        assert (code, out) == (1, "")
        assert err == "isthmus routes approve: 10.244.0.0/16 is refused\n"

        code, out, err = await isthmus("routes", "approve", "10.97.1.1/24", *sock)
        assert code == 1 and "ROUTE: '10.97.1.1/24' is not a route" in err

        code, out, err = await isthmus("routes", "approve", "10.97.1.0/24", "--edge", "A!", *sock)
        assert code == 1 and "--edge: 'A!' is not a valid edge name" in err

    run(tmp_path, body, backend)
    assert backend.approvals == [
        (net("10.97.1.0/24"), EdgeName("rogue")),
        (net("10.244.0.0/16"), None),
    ]


def test_cli_edges_json_and_text_via_config(tmp_path: Path) -> None:
    async def body(stub: pb_grpc.AdminStub, path: Path) -> None:
        config = tmp_path / "controller.toml"
        config.write_text(f'listen = "127.0.0.1:7000"\nstate_dir = "{path.parent}"\n')
        code, out, err = await isthmus("edges", "--config", str(config), "--json")
        assert code == 2, err  # degraded: rogue never applied version 7, vpc-b reports an error
        doc = json.loads(out)
        assert doc["version"] == 7
        assert doc["edges"][1] == {
            "name": "vpc-a",
            "public_key": key(1).to_base64(),
            "endpoints": ["198.18.0.11:51820", "[2001:db8::1]:51820"],
            "state": "connected",
            "replica": "ctl-1-4242",
            "applied_version": 7,
            "epoch": "-",
            "last_error": "",
            "reported_at": 1_800_000_000.5,
        }
        assert doc["epoch"] == "-"
        assert [e["state"] for e in doc["edges"]] == ["never", "connected", "disconnected"]

        code, out, err = await isthmus("edges", "--socket", str(path))
        assert (code, err) == (2, "")
        lines = out.splitlines()
        assert lines[0].split() == [
            "EDGE",
            "STATE",
            "APPLIED",
            "EPOCH",
            "REPORTED",
            "REPLICA",
            "ENDPOINTS",
            "LAST",
            "ERROR",
        ]
        assert lines[1].split() == ["rogue", "never", "0", "-", "never", "-", "-", "-"]
        assert lines[3].startswith("vpc-b") and lines[3].endswith("bad lease signature")

    run(tmp_path, body)


def test_cli_cannot_connect_names_the_socket_and_the_options(tmp_path: Path) -> None:
    path = tmp_path / "nobody.sock"

    async def main() -> list[tuple[int, str, str]]:
        return [
            await isthmus("routes", "--socket", str(path)),
            await isthmus("edges", "--socket", str(path), "--json"),
            await isthmus("routes", "approve", "10.97.1.0/24", "--socket", str(path)),
        ]

    for code, out, err in asyncio.run(main()):
        assert (code, out) == (1, "")
        assert f"nothing listens on {path}" in err
        assert "--socket PATH" in err and "--config FILE" in err


def test_cli_on_a_socket_that_is_not_a_controller(tmp_path: Path) -> None:
    """Something else listens there (say an edge's admin socket): a clear error, exit 1."""
    path = tmp_path / "other.sock"

    async def main() -> tuple[int, str, str]:
        async def close_at_once(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b'{"error": "unknown command"}\n')
            w.close()

        server = await asyncio.start_unix_server(close_at_once, path=str(path))
        async with server:
            return await isthmus("routes", "--socket", str(path))

    code, out, err = asyncio.run(main())
    assert (code, out) == (1, "")
    assert err.startswith(f"isthmus routes: the controller on {path} is unavailable: ")


def test_cli_routes_approve_json_and_a_healthy_map_exits_0(tmp_path: Path) -> None:
    serving = TestBackend(
        decisions=[decision("vpc-b", "10.97.0.0/16"), decision("vpc-a", "10.244.0.0/16")],
        edges=(),
    )

    async def body(stub: pb_grpc.AdminStub, path: Path) -> None:
        sock = ("--socket", str(path))
        code, out, err = await isthmus("routes", *sock)
        assert (code, err) == (0, "")
        code, out, err = await isthmus("edges", *sock, "--json")
        assert (code, err) == (0, "") and json.loads(out)["edges"] == []

    run(tmp_path, body, serving)

    async def approve(stub: pb_grpc.AdminStub, path: Path) -> None:
        code, out, err = await isthmus(
            "routes", "approve", "10.97.1.0/24", "--edge", "rogue", "--json", "--socket", str(path)
        )
        assert code == 0, err
        assert json.loads(out) == {
            "route": "10.97.1.0/24",
            "edge": "rogue",
            "state": "serving",
            "version": 8,
        }

    run(tmp_path / "approve", approve)


def test_cli_colours_states_on_a_terminal_only(tmp_path: Path) -> None:
    async def body(stub: pb_grpc.AdminStub, path: Path) -> None:
        sock = ("--socket", str(path))
        code, out = await isthmus_on_a_tty("routes", *sock)
        assert code == 2
        assert "\x1b[33mpending\x1b[0m" in out and "\x1b[32mserving\x1b[0m" in out
        code, out = await isthmus_on_a_tty("edges", *sock)
        assert code == 2 and "\x1b[32mconnected\x1b[0m" in out
        for env in ({"NO_COLOR": "1"}, {"TERM": "dumb"}):
            code, out = await isthmus_on_a_tty("routes", *sock, env=env)
            assert code == 2 and "pending" in out and "\x1b[" not in out, env
        code, out = await isthmus_on_a_tty("routes", "--json", *sock)
        assert "\x1b[" not in out and json.loads(out)["version"] == 7
        code, out = await isthmus_on_a_tty("edges", "--json", *sock)
        assert "\x1b[" not in out and json.loads(out)["version"] == 7

    run(tmp_path, body)

"""The `isthmus` command: routing, `config check` on both kinds, usage errors, and the
rendering, socket lookup and usage of `isthmus routes` / `isthmus edges` (their calls to a
live Admin service: tests/integration/test_admin.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from isthmus import admin_cli
from isthmus.configfile import ConfigError
from isthmus.keys import PublicKey
from isthmus.v1 import isthmus_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples"


def isthmus(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "isthmus", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("name", "kind"), [("controller.toml", "controller"), ("edge.toml", "edge")]
)
def test_config_check_accepts_the_documented_examples(name: str, kind: str) -> None:
    proc = isthmus("config", "check", str(EXAMPLES / name))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{EXAMPLES / name}: valid {kind} config"


def test_config_check_names_the_dotted_key(tmp_path: Path) -> None:
    bad = tmp_path / "edge.toml"
    text = (EXAMPLES / "edge.toml").read_text().replace("mtu = 1420", "mtu = 99999")
    bad.write_text(text)
    proc = isthmus("config", "check", str(bad))
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"{bad}: tun.mtu: 99999 is out of range; allowed: an integer 576-9000"
    )


def test_config_check_controller_route_error(tmp_path: Path) -> None:
    bad = tmp_path / "controller.toml"
    text = (EXAMPLES / "controller.toml").read_text()
    bad.write_text(text.replace('"192.168.10.0/24"', '"192.168.10.1/24"'))
    proc = isthmus("config", "check", "--kind", "controller", str(bad))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"{bad}: edges[2].routes[0]: '192.168.10.1/24' is not a route")


def test_unreadable_file_and_unknown_command(tmp_path: Path) -> None:
    proc = isthmus("config", "check", str(tmp_path / "missing.toml"))
    assert proc.returncode == 1 and "cannot read" in proc.stderr
    proc = isthmus("frobnicate")
    assert proc.returncode == 2 and "unknown command 'frobnicate'" in proc.stderr
    assert isthmus("version").stdout.startswith("isthmus ")


# --- `isthmus routes` and `isthmus edges`: rendering, the socket path, usage --------------

ROUTES_REPLY = pb.ListRoutesResponse(
    version=9,
    routes=[
        pb.RouteStatus(
            route="10.97.0.0/16", edge="vpc-b", state=pb.ROUTE_STATE_SERVING, since_version=2
        ),
        pb.RouteStatus(
            route="10.97.1.0/24",
            edge="rogue",
            state=pb.ROUTE_STATE_SERVING,
            reason_code="more_specific",
            reason="10.97.1.0/24 is more specific than 10.97.0.0/16 of edge 'vpc-b'",
            since_version=5,
            approved=True,
        ),
        pb.RouteStatus(
            route="0.0.0.0/0",
            edge="rogue",
            state=pb.ROUTE_STATE_REFUSED,
            reason_code="reserved",
            reason="0.0.0.0/0 is reserved (default route)",
            since_version=5,
        ),
        pb.RouteStatus(route="fd00::/8", edge="rogue", state=pb.ROUTE_STATE_PENDING),
    ],
)


def test_routes_json_document_is_stable() -> None:
    doc = admin_cli.routes_doc(ROUTES_REPLY)
    assert list(doc) == ["version", "routes"]
    assert doc["version"] == 9
    assert doc["routes"][1] == {
        "route": "10.97.1.0/24",
        "edge": "rogue",
        "state": "serving",
        "reason_code": "more_specific",
        "reason": "10.97.1.0/24 is more specific than 10.97.0.0/16 of edge 'vpc-b'",
        "since_version": 5,
        "approved": True,
    }
    assert [r["state"] for r in doc["routes"]] == ["serving", "serving", "refused", "pending"]
    assert json.loads(json.dumps(doc)) == doc
    assert admin_cli.state_name(pb.ROUTE_STATE_UNSPECIFIED) == "unspecified"


def test_routes_table_shows_the_reason_of_routes_not_serving() -> None:
    text = admin_cli.render_routes(admin_cli.routes_doc(ROUTES_REPLY))
    assert text == (
        "ROUTE         EDGE   STATE    REASON\n"
        "10.97.0.0/16  vpc-b  serving\n"
        "10.97.1.0/24  rogue  serving  approved\n"
        "0.0.0.0/0     rogue  refused  0.0.0.0/0 is reserved (default route)\n"
        "fd00::/8      rogue  pending\n"
    )


def test_routes_table_without_routes() -> None:
    doc = admin_cli.routes_doc(pb.ListRoutesResponse(version=0))
    assert doc == {"version": 0, "routes": []}
    assert admin_cli.render_routes(doc) == "ROUTE  EDGE  STATE  REASON\n(no routes advertised)\n"


def test_edges_json_document_and_table() -> None:
    public = PublicKey(bytes(range(1, 33)))
    reply = pb.ListEdgesResponse(
        version=4,
        edges=[
            pb.EdgeStatus(name="rogue", public_key=public.raw, state="never"),
            pb.EdgeStatus(
                name="vpc-a",
                public_key=public.raw,
                endpoints=["198.18.0.11:51820", "[2001:db8::1]:51820"],
                state="connected",
                replica="ctl-2",
                applied_version=4,
                reported_at=10_000.0,
            ),
            pb.EdgeStatus(
                name="vpc-b",
                public_key=public.raw,
                endpoints=["198.18.0.12:51820"],
                state="disconnected",
                applied_version=3,
                last_error="map 4 refused: bad lease",
                reported_at=10_000.0 - 3725,
            ),
        ],
    )
    doc = admin_cli.edges_doc(reply)
    assert list(doc) == ["version", "edges"]
    assert doc["edges"][1] == {
        "name": "vpc-a",
        "public_key": public.to_base64(),
        "endpoints": ["198.18.0.11:51820", "[2001:db8::1]:51820"],
        "state": "connected",
        "replica": "ctl-2",
        "applied_version": 4,
        "last_error": "",
        "reported_at": 10_000.0,
    }
    assert admin_cli.render_edges(doc, now=10_065.0).splitlines() == [
        "EDGE   STATE         APPLIED  REPORTED   REPLICA  ENDPOINTS" + " " * 30 + "LAST ERROR",
        "rogue  never         0        never      -        -" + " " * 38 + "-",
        "vpc-a  connected     4        1m05s ago  ctl-2    "
        + "198.18.0.11:51820,[2001:db8::1]:51820  -",
        "vpc-b  disconnected  3        1h03m ago  -        198.18.0.12:51820"
        + " " * 22
        + "map 4 refused: bad lease",
    ]


def test_socket_path_from_the_options_and_the_controller_config(tmp_path: Path) -> None:
    assert admin_cli.socket_path(None, "/x/a.sock") == Path("/x/a.sock")
    assert admin_cli.socket_path(None, None) == admin_cli.DEFAULT_SOCKET
    default = tmp_path / "default.toml"
    default.write_text('state_dir = "/srv/ctl"\n[[edges]]\nname = "a"\n')
    assert admin_cli.socket_path(str(default), None) == Path("/srv/ctl/admin.sock")
    named = tmp_path / "named.toml"
    named.write_text('state_dir = "/srv/ctl"\nadmin_socket = "/run/ctl/admin.sock"\n')
    assert admin_cli.socket_path(str(named), None) == Path("/run/ctl/admin.sock")
    bad = tmp_path / "bad.toml"
    bad.write_text("admin_socket = 7\n")
    with pytest.raises(ConfigError, match=r"^admin_socket: 7 is not a non-empty string"):
        admin_cli.socket_path(str(bad), None)
    neither = tmp_path / "neither.toml"
    neither.write_text('listen = "127.0.0.1:7000"\n')
    with pytest.raises(ConfigError, match=r"^state_dir: is missing"):
        admin_cli.socket_path(str(neither), None)


def test_admin_commands_usage_errors_exit_2(tmp_path: Path) -> None:
    proc = isthmus("routes", "--config", "a.toml", "--socket", "b.sock")
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr
    proc = isthmus("routes", "approve")
    assert proc.returncode == 2 and "ROUTE" in proc.stderr
    proc = isthmus("routes", "approve", "10.1.0.0", "--socket", str(tmp_path / "s"))
    assert proc.returncode == 2
    assert "ROUTE: '10.1.0.0' is not a route: use an IPv4 or IPv6 network" in proc.stderr
    proc = isthmus("edges", "--frobnicate")
    assert proc.returncode == 2
    assert isthmus("routes", "--help").returncode == 0
    usage = isthmus("--help").stdout
    assert "routes" in usage and "approve ROUTE [--edge NAME]" in usage and "edges" in usage


def test_admin_commands_config_errors_exit_1(tmp_path: Path) -> None:
    proc = isthmus("edges", "--config", str(tmp_path / "missing.toml"))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"isthmus edges: {tmp_path / 'missing.toml'}: cannot read")


def test_the_cli_imports_neither_controller_nor_edge() -> None:
    code = (
        "import sys, isthmus.cli, isthmus.admin_cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('controller', 'edge')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"

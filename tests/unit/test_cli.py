"""The `isthmus` command: routing, `config check` and `version` (text and --json), `keygen
--json` without key material, usage errors (exit 1), and the rendering, socket lookup,
degraded rules (exit 2) and colour of `isthmus routes` / `edges` / `status` (their calls to
live services: tests/integration/test_admin.py and test_explain.py)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from controller import admin_cli, admin_view
from edge.status import problems, render
from isthmus import __version__ as isthmus_version
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
    assert proc.returncode == 1 and "unknown command 'frobnicate'" in proc.stderr
    assert isthmus("version").stdout.startswith("isthmus ")
    proc = isthmus()
    assert (proc.returncode, proc.stdout) == (1, "") and "usage: isthmus COMMAND" in proc.stderr
    assert isthmus("--help").returncode == 0


def test_version_and_config_check_json(tmp_path: Path) -> None:
    proc = isthmus("version", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout) == {"version": isthmus_version}
    assert isthmus("version", "--bogus").returncode == 1
    good = EXAMPLES / "edge.toml"
    proc = isthmus("config", "check", str(good), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"valid": True, "file": str(good), "kind": "edge"}
    bad = tmp_path / "edge.toml"
    bad.write_text(good.read_text().replace("mtu = 1420", "mtu = 99999"))
    proc = isthmus("config", "check", str(bad), "--json")
    assert (proc.returncode, proc.stderr) == (1, "")
    assert json.loads(proc.stdout) == {
        "valid": False,
        "file": str(bad),
        "error": "tun.mtu: 99999 is out of range; allowed: an integer 576-9000",
    }
    proc = isthmus("config", "check")
    assert proc.returncode == 1 and "the following arguments are required: file" in proc.stderr
    proc = isthmus("config", "check", str(good), "--kind", "router")
    assert proc.returncode == 1 and "invalid choice: 'router'" in proc.stderr


def test_keygen_json_names_the_file_and_never_the_private_key(tmp_path: Path) -> None:
    for controller in (False, True):
        out = tmp_path / f"key-{controller}"
        proc = isthmus("keygen", *(["--controller"] if controller else []), "--out", str(out))
        proc_json = isthmus(
            "keygen", *(["--controller"] if controller else []), "--out", str(out) + ".j", "--json"
        )
        assert proc.returncode == 0 and proc_json.returncode == 0, proc.stderr + proc_json.stderr
        assert len(proc.stdout.split()) == 1  # the public key alone: scripts redirect it
        doc = json.loads(proc_json.stdout)
        assert doc == {
            "kind": "controller" if controller else "edge",
            "public_key": doc["public_key"],
            "private_key_file": str(out) + ".j",
        }
        for path, printed in ((out, proc.stdout), (Path(str(out) + ".j"), proc_json.stdout)):
            text = path.read_text().strip()
            raw = base64.b64decode(text)
            for secret in (text, raw.hex(), base64.b64encode(raw).decode()):
                assert secret not in printed
    proc = isthmus("keygen", "--out", str(tmp_path / "key-False"), "--json")
    assert (proc.returncode, proc.stdout) == (1, "") and "refusing to overwrite" in proc.stderr
    assert isthmus("keygen").returncode == 1  # --out is required: a usage error


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
    doc = admin_view.routes_doc(ROUTES_REPLY)
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
    assert admin_view.state_name(pb.ROUTE_STATE_UNSPECIFIED) == "unspecified"


def test_routes_table_shows_the_reason_of_routes_not_serving() -> None:
    text = admin_view.render_routes(admin_view.routes_doc(ROUTES_REPLY))
    assert text == (
        "ROUTE         EDGE   STATE    REASON\n"
        "10.97.0.0/16  vpc-b  serving\n"
        "10.97.1.0/24  rogue  serving  approved\n"
        "0.0.0.0/0     rogue  refused  0.0.0.0/0 is reserved (default route)\n"
        "fd00::/8      rogue  pending\n"
    )


def test_routes_table_without_routes() -> None:
    doc = admin_view.routes_doc(pb.ListRoutesResponse(version=0))
    assert doc == {"version": 0, "routes": []}
    assert admin_view.render_routes(doc) == "ROUTE  EDGE  STATE  REASON\n(no routes advertised)\n"


EPOCH = bytes(range(16))


def test_edges_json_document_and_table() -> None:
    public = PublicKey(bytes(range(1, 33)))
    reply = pb.ListEdgesResponse(
        version=4,
        epoch=EPOCH,
        edges=[
            pb.EdgeStatus(name="rogue", public_key=public.raw, state="never"),
            pb.EdgeStatus(
                name="vpc-a",
                epoch=EPOCH,
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
    doc = admin_view.edges_doc(reply)
    assert list(doc) == ["version", "epoch", "edges"]
    assert doc["epoch"] == EPOCH[8:12].hex()
    assert doc["edges"][1] == {
        "name": "vpc-a",
        "public_key": public.to_base64(),
        "endpoints": ["198.18.0.11:51820", "[2001:db8::1]:51820"],
        "state": "connected",
        "replica": "ctl-2",
        "applied_version": 4,
        "epoch": EPOCH[8:12].hex(),
        "last_error": "",
        "reported_at": 10_000.0,
    }
    e = EPOCH[8:12].hex()
    assert admin_view.render_edges(doc, now=10_065.0).splitlines() == [
        "EDGE   STATE         APPLIED  EPOCH     REPORTED   REPLICA  ENDPOINTS"
        + " " * 30
        + "LAST ERROR",
        "rogue  never         0        -         never      -        -" + " " * 38 + "-",
        f"vpc-a  connected     4        {e}  1m05s ago  ctl-2    "
        + "198.18.0.11:51820,[2001:db8::1]:51820  -",
        "vpc-b  disconnected  3        -         1h03m ago  -        198.18.0.12:51820"
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


def test_usage_errors_exit_1(tmp_path: Path) -> None:
    proc = isthmus("routes", "--config", "a.toml", "--socket", "b.sock")
    assert proc.returncode == 1 and "not allowed with argument" in proc.stderr
    proc = isthmus("routes", "approve")
    assert proc.returncode == 1 and "ROUTE" in proc.stderr
    proc = isthmus("routes", "approve", "10.1.0.0", "--socket", str(tmp_path / "s"))
    assert proc.returncode == 1
    assert "ROUTE: '10.1.0.0' is not a route: use an IPv4 or IPv6 network" in proc.stderr
    proc = isthmus("edges", "--frobnicate")
    assert proc.returncode == 1
    proc = isthmus("routes", "--limit", "2", "--socket", str(tmp_path / "s"))
    assert proc.returncode == 1 and "--limit needs --history" in proc.stderr
    for argv in (
        ("status", "--bogus"),
        ("explain",),
        ("explain", "10.1.0.0/16", "--socket", str(tmp_path / "s")),
        ("explain", "vpc-b", "--socket", str(tmp_path / "s")),
        ("edge",),
        ("controller",),
        ("controller", "--config"),
    ):
        proc = isthmus(*argv)
        assert (proc.returncode, proc.stdout) == (1, ""), argv
    proc = isthmus("explain", "10.1.0.0/16", "--socket", str(tmp_path / "s"))
    assert proc.stderr == (
        "isthmus explain: error: IP: '10.1.0.0/16' is a network, not an address; allowed: "
        "one IPv4 or IPv6 address, e.g. 10.245.0.7 or fd00:b::7 (no prefix length)\n"
    )
    proc = isthmus("explain", "10.1.0.1", "--socket", str(tmp_path / "s"))
    assert proc.returncode == 1 and "the edge is not running" in proc.stderr
    assert isthmus("routes", "--help").returncode == 0
    usage = isthmus("--help").stdout
    assert "routes" in usage and "approve ROUTE [--edge NAME]" in usage and "edges" in usage


def test_admin_commands_config_errors_exit_1(tmp_path: Path) -> None:
    proc = isthmus("edges", "--config", str(tmp_path / "missing.toml"))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"isthmus edges: {tmp_path / 'missing.toml'}: cannot read")


def test_the_cli_imports_neither_controller_nor_edge() -> None:
    """Nor the lab nor the daemons' I/O: every command is loaded by its module path."""
    code = (
        "import sys, isthmus.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('controller', 'edge', 'isthmus_io', 'isthmus_lab')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_admin_cli_imports_no_other_controller_module_nor_edge() -> None:
    """`isthmus routes|edges` is a gRPC client: it loads none of the controller's server."""
    code = (
        "import sys, controller.admin_cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('controller', 'edge')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    expected = ["controller", "controller.admin_cli", "controller.admin_view"]
    assert proc.stdout.strip() == str(expected)


# --- degraded (exit 2) and colour: the pure parts ------------------------------------------


def _strip(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_routes_degraded_when_a_route_is_pending_or_refused_and_coloured_states() -> None:
    doc = admin_view.routes_doc(ROUTES_REPLY)
    assert admin_view.route_problems(doc) == [
        "route 0.0.0.0/0 of edge 'rogue' is refused",
        "route fd00::/8 of edge 'rogue' is pending",
    ]
    serving = {"version": 9, "routes": [r for r in doc["routes"] if r["state"] == "serving"]}
    assert admin_view.route_problems(serving) == []
    plain = admin_view.render_routes(doc)
    coloured = admin_view.render_routes(doc, colour=True)
    assert "\x1b[" not in plain
    assert "\x1b[32mserving\x1b[0m" in coloured
    assert "\x1b[1;31mrefused\x1b[0m" in coloured and "\x1b[33mpending\x1b[0m" in coloured
    assert _strip(coloured) == plain  # columns stay aligned: padding is outside the colour


def test_edges_degraded_on_a_last_error_or_an_older_version() -> None:
    doc = {
        "version": 4,
        "edges": [
            {"name": "a", "state": "connected", "applied_version": 4, "last_error": "",
             "reported_at": 0.0, "replica": "", "endpoints": []},
            {"name": "b", "state": "disconnected", "applied_version": 3, "last_error": "",
             "reported_at": 0.0, "replica": "", "endpoints": []},
            {"name": "c", "state": "connected", "applied_version": 4, "last_error": "bad lease",
             "reported_at": 0.0, "replica": "", "endpoints": []},
        ],
    }  # fmt: skip
    assert admin_view.edge_problems(doc) == [
        "edge 'b' applied map version 3, not 4",
        "edge 'c' reports: bad lease",
    ]
    assert admin_view.edge_problems({"version": 4, "edges": doc["edges"][:1]}) == []
    # Another epoch (the controller's state was created anew): not in sync either.
    other = {"version": 4, "epoch": "0a0b0c0d", "edges": [doc["edges"][0] | {"epoch": "01020304"}]}
    assert admin_view.edge_problems(other) == [
        "edge 'a' is on epoch 01020304, not the controller's 0a0b0c0d"
    ]
    plain = admin_view.render_edges(doc, now=10.0)
    coloured = admin_view.render_edges(doc, now=10.0, colour=True)
    assert "\x1b[32mconnected\x1b[0m" in coloured and "\x1b[33mdisconnected\x1b[0m" in coloured
    assert "\x1b[1;31mbad lease\x1b[0m" in coloured
    assert _strip(coloured) == plain and "\x1b[" not in plain


STATUS = {
    "edge": "vpc-a",
    "public_key": "pub",
    "endpoint": "198.18.0.1:51820",
    "map_version": 3,
    "controller": {"controllers": ["c:1"], "address": "c:1", "connected": True,
                   "applied_version": 3, "last_error": None},
    "peers": [
        {"name": "vpc-b", "endpoint": "198.18.0.2:51820", "rx_packets": 1, "rx_bytes": 1,
         "tx_packets": 1, "tx_bytes": 1, "last_rx_seconds_ago": 1.0,
         "session_age_seconds": 5.0, "handshakes": 1, "last_handshake_seconds_ago": 5.0},
        {"name": "vpc-c", "endpoint": None, "rx_packets": 0, "rx_bytes": 0, "tx_packets": 0,
         "tx_bytes": 0, "last_rx_seconds_ago": None, "session_age_seconds": None,
         "handshakes": 0, "last_handshake_seconds_ago": None},
    ],
    "routes": [{"route": "10.245.0.0/16", "edge": "vpc-b", "installed": True}],
    "drops": {"malformed": 0},
}  # fmt: skip


def test_status_degraded_rules() -> None:
    assert problems(STATUS) == []  # vpc-c owns no route: no problem whatever its state
    idle = json.loads(json.dumps(STATUS))
    idle["peers"][0].update(session_age_seconds=None)
    assert problems(idle) == []  # no session alone is healthy: sessions are made on demand
    bad = json.loads(json.dumps(STATUS))
    bad["controller"].update(connected=False, last_error="UNAVAILABLE: down")
    bad["routes"].append({"route": "10.0.0.0/8", "edge": "vpc-c", "installed": False})
    assert problems(bad) == [
        "the controller c:1 is disconnected: UNAVAILABLE: down",
        "route 10.0.0.0/8 via vpc-c is not installed on the TUN",
        "peer vpc-c owns routes and has neither a session nor an endpoint",
    ]
    plain = render(bad)
    assert plain.splitlines()[-4:] == [
        "problems:",
        "  the controller c:1 is disconnected: UNAVAILABLE: down",
        "  route 10.0.0.0/8 via vpc-c is not installed on the TUN",
        "  peer vpc-c owns routes and has neither a session nor an endpoint",
    ]
    assert "problems:" not in render(STATUS)
    coloured = render(bad, colour=True)
    assert "\x1b[1;31mdisconnected\x1b[0m" in coloured
    assert "\x1b[1;31mNOT installed\x1b[0m" in coloured
    assert "\x1b[32minstalled\x1b[0m" in coloured
    assert _strip(coloured) == plain and "\x1b[" not in plain

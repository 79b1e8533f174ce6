"""`isthmus routes` and `isthmus edges`: the operator's commands on a running controller.

    isthmus routes [--json] [--config F | --socket P]
    isthmus routes --history [--limit N] [--json] [--config F | --socket P]
    isthmus routes approve ROUTE [--edge NAME] [--json] [--config F | --socket P]
    isthmus edges [--json] [--config F | --socket P]

Owns the client side of the controller's admin socket (gRPC `isthmus.v1.Admin` over
"unix:PATH") and the rendering: a text table (states coloured on a terminal only,
isthmus.clikit) or a stable JSON document.
Rule: this module imports neither `controller` nor `edge`; from the controller config it
reads only `admin_socket` (default `<state_dir>/admin.sock`).
Exit codes: 0 ok; 1 error (the controller cannot be reached, or it refused: its message;
a usage error); 2 degraded: `routes`, a route is pending or refused (or its state is
unknown); `edges`, an edge reports a last error or has not applied the map's current
version. `routes --history` and `routes approve` are never degraded.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import grpc

from isthmus import clikit
from isthmus.clikit import Style, paint
from isthmus.configfile import ConfigError, get_str, read_toml
from isthmus.ids import parse_edge_name
from isthmus.keys import PublicKey
from isthmus.routemap import parse_route
from isthmus.v1 import isthmus_pb2 as pb
from isthmus.v1 import isthmus_pb2_grpc as pb_grpc

DEFAULT_SOCKET: Final = Path("/var/lib/isthmus-controller/admin.sock")
TIMEOUT: Final = 10.0

ROUTE_COLUMNS: Final = ("ROUTE", "EDGE", "STATE", "REASON")
HISTORY_COLUMNS: Final = ("TIME", "VERSION", "ACTOR", "KIND", "EDGE", "ROUTE", "REASON")
HISTORY_DEFAULT: Final = 100
HISTORY_MAX: Final = 10_000
EDGE_COLUMNS: Final = ("EDGE", "STATE", "APPLIED", "REPORTED", "REPLICA", "ENDPOINTS", "LAST ERROR")

_STATES: Final[dict[int, str]] = {
    pb.ROUTE_STATE_SERVING: "serving",
    pb.ROUTE_STATE_PENDING: "pending",
    pb.ROUTE_STATE_REFUSED: "refused",
}
_ROUTE_STYLES: Final[dict[str, Style]] = {"serving": "good", "pending": "warn", "refused": "bad"}
_EDGE_STYLES: Final[dict[str, Style]] = {"connected": "good"}


class AdminError(Exception):
    """The controller could not be reached or refused the request; the message says why."""


# --- the socket and the calls --------------------------------------------------------------


def socket_path(config: str | None, sock: str | None) -> Path:
    """The admin socket named by --socket, else by the controller config, else the default.

    Raises:
        ConfigError: the config file is unreadable or its admin_socket/state_dir is wrong.
    """
    if sock is not None:
        return Path(sock)
    if config is None:
        return DEFAULT_SOCKET
    table = read_toml(Path(config))
    if "admin_socket" in table:
        return Path(get_str(table, "", "admin_socket"))
    return Path(get_str(table, "", "state_dir")) / "admin.sock"


def _probe(path: Path) -> None:
    """Fail fast, naming the path, when nothing listens there (gRPC would retry until timeout)."""
    hint = "name the controller's socket with --socket PATH or its config with --config FILE"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(TIMEOUT)
    try:
        probe.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        raise AdminError(
            f"cannot connect to the controller: nothing listens on {path}; "
            f"is the controller running? {hint}"
        ) from None
    except PermissionError:
        raise AdminError(
            f"cannot connect to the controller on {path}: permission denied; "
            "run as the controller's user or root"
        ) from None
    except OSError as e:
        raise AdminError(
            f"cannot connect to the controller on {path}: {e.strerror or e}; {hint}"
        ) from None
    finally:
        probe.close()


def call(path: Path, method: str, request: Any, timeout: float = TIMEOUT) -> Any:
    """Call one Admin method on the controller listening on `path`.

    Raises:
        AdminError: nothing listens there, or the call failed (the controller's message).
    """
    _probe(path)
    with grpc.insecure_channel(f"unix:{path}") as channel:
        stub = pb_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
        try:
            return getattr(stub, method)(request, timeout=timeout)
        except grpc.RpcError as e:
            code = e.code()
            details = e.details() or code.name
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise AdminError(
                    f"the controller on {path} did not answer within {timeout:g} s"
                ) from None
            if code == grpc.StatusCode.UNAVAILABLE:
                raise AdminError(f"the controller on {path} is unavailable: {details}") from None
            if code == grpc.StatusCode.UNIMPLEMENTED:
                raise AdminError(f"{path} is not a controller's admin socket: {details}") from None
            raise AdminError(details) from None


# --- rendering (pure) --------------------------------------------------------------------


def state_name(state: int) -> str:
    return _STATES.get(state, "unspecified")


def routes_doc(reply: pb.ListRoutesResponse) -> dict[str, Any]:
    """The stable `isthmus routes --json` document."""
    return {
        "version": reply.version,
        "routes": [
            {
                "route": r.route,
                "edge": r.edge,
                "state": state_name(r.state),
                "reason_code": r.reason_code,
                "reason": r.reason,
                "since_version": r.since_version,
                "approved": r.approved,
            }
            for r in reply.routes
        ],
    }


def history_doc(reply: pb.ListHistoryResponse) -> dict[str, Any]:
    """The stable `isthmus routes --history --json` document (entries oldest first)."""
    return {
        "version": reply.version,
        "entries": [
            {
                "time": e.time,
                "version": e.version,
                "actor": e.actor,
                "kind": e.kind,
                "edge": e.edge,
                "route": e.route or None,
                "reason": e.reason,
            }
            for e in reply.entries
        ],
    }


def edges_doc(reply: pb.ListEdgesResponse) -> dict[str, Any]:
    """The stable `isthmus edges --json` document."""
    return {
        "version": reply.version,
        "edges": [
            {
                "name": e.name,
                "public_key": _key(e.public_key),
                "endpoints": list(e.endpoints),
                "state": e.state,
                "replica": e.replica,
                "applied_version": e.applied_version,
                "last_error": e.last_error,
                "reported_at": e.reported_at,
            }
            for e in reply.edges
        ],
    }


def _key(raw: bytes) -> str:
    try:
        return PublicKey(raw).to_base64()
    except ValueError:
        return raw.hex()


def table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    styles: Sequence[Sequence[Style | None]] = (),
    colour: bool = False,
) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded.

    `styles[i][j]` colours cell j of row i when `colour` (widths count the text only).
    """
    widths = [max(len(r[i]) for r in (columns, *rows)) for i in range(len(columns) - 1)]
    lines = []
    for i, row in enumerate((columns, *rows)):
        marks = styles[i - 1] if 0 < i <= len(styles) else ()
        cells = []
        for j, cell in enumerate(row):
            style = marks[j] if j < len(marks) else None
            pad = " " * (widths[j] - len(cell)) if j < len(widths) else ""
            cells.append(paint(cell, style, colour) + pad)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def route_problems(doc: dict[str, Any]) -> list[str]:
    """Why `isthmus routes` is degraded (exit 2): every route not serving."""
    return [
        f"route {r['route']} of edge {r['edge']!r} is {r['state']}"
        for r in doc["routes"]
        if r["state"] != "serving"
    ]


def edge_problems(doc: dict[str, Any]) -> list[str]:
    """Why `isthmus edges` is degraded (exit 2): a last error, or an older applied version."""
    found = []
    for e in doc["edges"]:
        if e["last_error"]:
            found.append(f"edge {e['name']!r} reports: {e['last_error']}")
        elif e["applied_version"] != doc["version"]:
            found.append(
                f"edge {e['name']!r} applied map version {e['applied_version']}, "
                f"not {doc['version']}"
            )
    return found


def render_routes(doc: dict[str, Any], colour: bool = False) -> str:
    """The routes as a text table; REASON is the detail of every route not serving."""
    rows = []
    styles: list[tuple[Style | None, ...]] = []
    for r in doc["routes"]:
        if r["state"] == "serving":
            reason = "approved" if r["approved"] else ""
        else:
            reason = r["reason"] or r["reason_code"]
        rows.append((r["route"], r["edge"], r["state"], reason))
        styles.append((None, None, _ROUTE_STYLES.get(r["state"], "bad"), None))
    text = table(ROUTE_COLUMNS, rows, styles, colour)
    return text if rows else text + "(no routes advertised)\n"


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def render_history(doc: dict[str, Any]) -> str:
    """The audit entries as a text table, oldest first, times in UTC."""
    rows = [
        (
            _utc(e["time"]),
            str(e["version"]),
            e["actor"],
            e["kind"],
            e["edge"],
            e["route"] or "-",
            e["reason"],
        )
        for e in doc["entries"]
    ]
    text = table(HISTORY_COLUMNS, rows)
    return text if rows else text + "(no map changes recorded)\n"


def _ago(then: float, now: float) -> str:
    if then <= 0:
        return "never"
    s = max(0, int(now - then))
    if s < 60:
        return f"{s}s ago"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s ago"
    return f"{s // 3600}h{s % 3600 // 60:02d}m ago"


def render_edges(doc: dict[str, Any], now: float, colour: bool = False) -> str:
    """The edges as a text table; `now` (unix time) dates the last reports."""
    rows = [
        (
            e["name"],
            e["state"],
            str(e["applied_version"]),
            _ago(e["reported_at"], now),
            e["replica"] or "-",
            ",".join(e["endpoints"]) or "-",
            e["last_error"] or "-",
        )
        for e in doc["edges"]
    ]
    styles: list[tuple[Style | None, ...]] = [
        (
            None,
            _EDGE_STYLES.get(e["state"], "warn"),
            None if e["applied_version"] == doc["version"] else "warn",
            None,
            None,
            None,
            "bad" if e["last_error"] else None,
        )
        for e in doc["edges"]
    ]
    text = table(EDGE_COLUMNS, rows, styles, colour)
    return text if rows else text + "(no edges configured)\n"


# --- the commands --------------------------------------------------------------------------


def _parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    parser = clikit.parser(prog, description, epilog)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", metavar="FILE", help="the controller's config file")
    where.add_argument("--socket", metavar="PATH", help=f"default {DEFAULT_SOCKET}")
    return parser


def _check_approval(args: argparse.Namespace) -> str | None:
    """What is wrong with ROUTE or --edge (checked before connecting), or None."""
    try:
        parse_route(args.route)
    except ValueError as e:
        return f"ROUTE: {e}"
    if args.edge is not None:
        try:
            parse_edge_name(args.edge)
        except ValueError as e:
            return f"--edge: {e}"
    return None


def _run(prog: str, args: argparse.Namespace, work: Callable[[Path], int]) -> int:
    try:
        path = socket_path(args.config, args.socket)
    except ConfigError as e:
        return clikit.fail(prog, f"{args.config}: {e}")
    try:
        return work(path)
    except AdminError as e:
        return clikit.fail(prog, str(e))


def _limit(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= n <= HISTORY_MAX:
        raise argparse.ArgumentTypeError(f"{n} is out of range; allowed: 1-{HISTORY_MAX}")
    return n


def _colour(args: argparse.Namespace) -> bool:
    return not args.json and clikit.wants_colour(sys.stdout)


def routes_main(argv: list[str]) -> int:
    """`isthmus routes [--json]`, `isthmus routes --history [--limit N] [--json]` or
    `isthmus routes approve ROUTE [--edge NAME] [--json]`."""
    if argv[:1] == ["approve"]:
        return approve_main(argv[1:])
    prog = "isthmus routes"
    parser = _parser(
        prog,
        "Show every advertised route: its edge, its state (serving, pending, refused) and why.",
        "'isthmus routes approve ROUTE [--edge NAME]' approves a pending route. "
        "Exit codes: 0 ok, 1 error, 2 degraded (a route is pending or refused).",
    )
    parser.add_argument("--json", action="store_true", help="print the routes as JSON")
    parser.add_argument(
        "--history",
        action="store_true",
        help="show the audit log of map changes instead: time, version, actor, kind, reason",
    )
    parser.add_argument(
        "--limit",
        type=_limit,
        metavar="N",
        help=f"with --history: the last N changes (default {HISTORY_DEFAULT})",
    )
    args = clikit.parse(parser, argv)
    if isinstance(args, int):
        return args
    if args.limit is not None and not args.history:
        return clikit.usage_error(prog, "--limit needs --history")
    if args.history:
        return _run(prog, args, lambda path: _history(path, args))

    def work(path: Path) -> int:
        doc = routes_doc(call(path, "ListRoutes", pb.ListRoutesRequest()))
        clikit.emit(doc, args.json, "" if args.json else render_routes(doc, _colour(args)))
        return clikit.exit_code(route_problems(doc))

    return _run(prog, args, work)


def _history(path: Path, args: argparse.Namespace) -> int:
    limit = args.limit or HISTORY_DEFAULT
    doc = history_doc(call(path, "ListHistory", pb.ListHistoryRequest(limit=limit)))
    clikit.emit(doc, args.json, "" if args.json else render_history(doc))
    return clikit.EXIT_OK


def approve_main(argv: list[str]) -> int:
    """`isthmus routes approve ROUTE [--edge NAME] [--json]`: approve a pending route."""
    prog = "isthmus routes approve"
    parser = _parser(prog, "Approve a pending route; it serves from the next map version.")
    parser.add_argument("route", metavar="ROUTE", help="the pending route, e.g. 10.97.1.0/24")
    parser.add_argument("--edge", metavar="NAME", help="needed when several edges advertise it")
    parser.add_argument("--json", action="store_true", help="print the approved route as JSON")
    args = clikit.parse(parser, argv)
    if isinstance(args, int):
        return args
    wrong = _check_approval(args)
    if wrong is not None:
        return clikit.usage_error(prog, wrong)

    def work(path: Path) -> int:
        request = pb.ApproveRouteRequest(route=args.route, edge=args.edge or "")
        reply = call(path, "ApproveRoute", request)
        r = reply.route
        doc = {"route": r.route, "edge": r.edge, "state": state_name(r.state)}
        doc["version"] = reply.version
        text = (
            f"approved {r.route} of edge {r.edge!r}: {state_name(r.state)} "
            f"(map version {reply.version})"
        )
        clikit.emit(doc, args.json, text)
        return clikit.EXIT_OK

    return _run(prog, args, work)


def edges_main(argv: list[str]) -> int:
    """`isthmus edges [--json]`: every configured edge and what it last reported."""
    prog = "isthmus edges"
    parser = _parser(
        prog,
        "Show every configured edge and what it last reported.",
        "Exit codes: 0 ok, 1 error, 2 degraded (an edge reports a last error or has not "
        "applied the current map version).",
    )
    parser.add_argument("--json", action="store_true", help="print the edges as JSON")
    args = clikit.parse(parser, argv)
    if isinstance(args, int):
        return args

    def work(path: Path) -> int:
        doc = edges_doc(call(path, "ListEdges", pb.ListEdgesRequest()))
        text = "" if args.json else render_edges(doc, time.time(), _colour(args))
        clikit.emit(doc, args.json, text)
        return clikit.exit_code(edge_problems(doc))

    return _run(prog, args, work)

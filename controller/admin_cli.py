"""`isthmus routes` and `isthmus edges`: the operator's commands on a running controller.

    isthmus routes [--json] [--config F | --socket P]
    isthmus routes --history [--limit N] [--json] [--config F | --socket P]
    isthmus routes approve ROUTE [--edge NAME] [--json] [--config F | --socket P]
    isthmus edges [--json] [--config F | --socket P]

Owns the client side of the controller's admin socket (gRPC `isthmus.v1.Admin` over
"unix:PATH") and the commands' options; what they print (a text table with states
coloured on a terminal only, or a stable JSON document) is controller.admin_view.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import grpc

from controller.admin_view import (
    edge_problems,
    edges_doc,
    history_doc,
    render_edges,
    render_history,
    render_routes,
    route_problems,
    routes_doc,
    state_name,
)
from isthmus import clikit
from isthmus.configfile import ConfigError, get_str, read_toml
from isthmus.ids import parse_edge_name
from isthmus.routemap import parse_route
from isthmus.v1 import isthmus_pb2 as pb
from isthmus.v1 import isthmus_pb2_grpc as pb_grpc

DEFAULT_SOCKET: Final = Path("/var/lib/isthmus-controller/admin.sock")
TIMEOUT: Final = 10.0
HISTORY_DEFAULT: Final = 100
HISTORY_MAX: Final = 10_000


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
        text = clikit.printable(
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

"""`isthmus status` and `isthmus explain IP`: show a running edge, from its admin socket.

    isthmus status [--json] [--config EDGE_FILE | --socket PATH]
    isthmus explain IP [--json] [--config EDGE_FILE | --socket PATH]

Owns the client side of the admin socket and the human-readable rendering (in the
manner of `wg show`). It only reads: connect, send one request line ("status" or
"explain IP"), read JSON until EOF.
Exit codes: 0 ok; 1 error (the edge is not running or replied nonsense, a bad config file,
a usage error, an address that is not one IP address); 2 degraded:
- status: the controller is disconnected, a route of another edge is not installed on the
  TUN (with the reason when the edge knows it: "collides with an existing route ..."),
  or a peer that owns a route has neither a session nor an endpoint (no handshake can
  start) though the map advertises one, or masquerade ranges are configured and their
  nftables table is not installed. A peer without a session alone is healthy:
  sessions are made on demand (the first packet starts a handshake) and end after 180 s
  idle, as in WireGuard. A peer behind NAT (the map lists no endpoint for it) that has not
  been heard from is shown so, not as a problem: it starts the session itself, and packets
  to it count as no_route drops until it does;
- explain: the explanation lists a problem (edge.explain says which).
Colour (clikit) marks states only on a terminal.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

from isthmus import clikit
from isthmus.clikit import Style, paint, printable_doc
from isthmus.configfile import ConfigError

DEFAULT_SOCKET = Path("/var/lib/isthmus/admin.sock")
TIMEOUT = 5.0


class StatusError(Exception):
    """The status could not be fetched; the message says why."""


def fetch(path: Path, timeout: float = TIMEOUT) -> dict[str, Any]:
    """Ask the edge listening on `path` for its status.

    Raises:
        StatusError: no edge is running there, or it replied something else than JSON.
    """
    reply = request(path, "status", timeout)
    if "edge" not in reply:
        raise StatusError(f"the edge on {path} replied: {reply!r}")
    return reply


def request(path: Path, line: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """Send one request line ("VERB [ARGUMENT]") to the edge's admin socket at `path` and
    return its JSON reply object (which may hold an "error" key: the edge refused).

    Raises:
        StatusError: no edge is running there, or it replied something else than a JSON object.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise StatusError(
                f"the edge is not running (nothing listens on {path}); "
                "start it with 'isthmus edge --config FILE'"
            ) from None
        except PermissionError:
            raise StatusError(f"permission denied on {path}; run as root") from None
        sock.sendall(line.encode("ascii") + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except OSError as e:
        raise StatusError(f"cannot talk to the edge on {path}: {e.strerror or e}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(b"".join(chunks))
    except ValueError:
        raise StatusError(f"the edge on {path} replied something that is not JSON") from None
    if not isinstance(reply, dict):
        raise StatusError(f"the edge on {path} replied: {reply!r}")
    return reply


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return f"{n} B"


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = int(seconds)
    if s < 60:
        return f"{s} seconds ago"
    if s < 3600:
        return f"{s // 60} minutes, {s % 60} seconds ago"
    return f"{s // 3600} hours, {s % 3600 // 60} minutes ago"


def _age(seconds: float | None) -> str:
    return "no session" if seconds is None else f"{int(seconds)} seconds"


def _peer_endpoint(peer: dict[str, Any]) -> str:
    endpoint = peer.get("endpoint")
    if peer.get("behind_nat"):
        return f"{endpoint} (behind NAT, learned)" if endpoint else "behind NAT, not yet heard from"
    return endpoint or "(none)"


def problems(status: dict[str, Any]) -> list[str]:
    """Why the status is degraded (exit 2), in plain words; empty when healthy."""
    found = []
    ctl = status.get("controller", {})
    if not ctl.get("connected"):
        why = f": {ctl['last_error']}" if ctl.get("last_error") else ""
        found.append(f"the controller {ctl.get('address')} is disconnected{why}")
    routes = status.get("routes", [])
    found += [
        f"route {r['route']} via {r['edge']} is not installed on the TUN"
        + (f": it {r['reason']}" if r.get("reason") else "")
        for r in routes
        if not r.get("installed")
    ]
    owners = {r["edge"] for r in routes}
    found += [
        f"peer {p['name']} owns routes and has neither a session nor an endpoint"
        for p in status.get("peers", [])
        if p["name"] in owners
        and p.get("session_age_seconds") is None
        and not p.get("endpoint")
        and not p.get("behind_nat")
    ]
    masq = status.get("masquerade") or {}
    if masq.get("ranges") and not masq.get("installed"):
        state = "could not be read" if masq.get("installed") is None else "is not installed"
        found.append(f"the masquerade table {masq.get('table')} {state}")
    return found


def render(status: dict[str, Any], colour: bool = False) -> str:
    """The status as indented text, in the manner of `wg show`; `colour` marks states.
    Every string of `status` is shown `printable` (it quotes the controller and peers)."""
    status = printable_doc(status)
    ctl = status.get("controller", {})
    state = (
        paint("connected", "good", colour)
        if ctl.get("connected")
        else paint("disconnected", "bad", colour)
    )
    lines = [
        f"edge: {status['edge']}",
        f"  public key: {status.get('public_key')}",
        f"  endpoint: {status.get('endpoint') or '(none: behind NAT)'}",
        f"  map version: {status.get('map_version')}",
        f"  controller: {ctl.get('address')} ({state})",
    ]
    others = [c for c in ctl.get("controllers", []) if c != ctl.get("address")]
    if others:
        lines.append(f"  other controllers: {', '.join(others)}")
    if "applied_version" in ctl:
        lines.append(f"  applied version: {ctl['applied_version']}")
    if ctl.get("last_error"):
        lines.append(f"  last error: {paint(ctl['last_error'], 'bad', colour)}")
    for p in status.get("peers", []):
        age = p.get("session_age_seconds")
        lines += [
            "",
            f"peer: {p['name']}",
            f"  endpoint: {_peer_endpoint(p)}",
            f"  latest handshake: {_ago(p.get('last_handshake_seconds_ago'))}"
            f" ({p.get('handshakes', 0)} in all)",
            f"  session age: {paint(_age(age), 'warn' if age is None else None, colour)}",
            f"  last authenticated packet: {_ago(p.get('last_rx_seconds_ago'))}",
            f"  transfer: {p['rx_packets']} packets ({_bytes(p['rx_bytes'])}) received, "
            f"{p['tx_packets']} packets ({_bytes(p['tx_bytes'])}) sent",
        ]
    routes = status.get("routes", [])
    lines += ["", "routes:" if routes else "routes: (none)"]
    width = max((len(r["route"]) for r in routes), default=0)
    for r in routes:
        mark = (
            paint("installed", "good", colour)
            if r.get("installed")
            else paint("NOT installed", "bad", colour)
        )
        why = f" ({r['reason']})" if r.get("reason") and not r.get("installed") else ""
        lines.append(f"  {r['route']:<{width}}  via {r['edge']}  {mark}{why}")
    masq = status.get("masquerade")
    if masq is not None and masq.get("ranges"):
        mark = (
            paint("installed", "good", colour)
            if masq.get("installed")
            else paint("NOT installed", "bad", colour)
        )
        lines += ["", f"masquerade: {', '.join(masq['ranges'])}"]
        lines.append(f"  table {masq.get('table')}: {mark}")
    elif masq is not None:
        lines += ["", "masquerade: (none)"]
    drops = status.get("drops", {})
    lines += ["", "drops:"]
    lines += [f"  {reason}: {count}" for reason, count in drops.items()]
    found = problems(status)
    if found:
        lines += ["", paint("problems:", "bad", colour)]
        lines += [f"  {text}" for text in found]
    return "\n".join(lines) + "\n"


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def render_explain(doc: dict[str, Any], colour: bool = False) -> str:
    """The explanation as indented text; `colour` marks the verdict and states. Every
    string of `doc` is shown `printable` (it quotes the map and the controller)."""
    doc = printable_doc(doc)
    verdict = doc["verdict"]
    style: Style = "warn" if verdict == "no_route" else "good"
    lines = [
        f"address: {doc['address']}",
        f"  edge: {doc.get('edge_self')} (this one)",
        f"  verdict: {paint(verdict, style, colour)}: {doc.get('detail', '')}",
    ]
    route = doc.get("route")
    if route is not None:
        match = route["match"]
        lines.append(f"  route: {match['route']} via {match['edge']} (longest prefix match)")
        lines += [f"  also holding it: {r['route']} via {r['edge']}" for r in route["containing"]]
    edge = doc.get("edge")
    if edge is not None:
        lines += [
            f"  owning edge: {edge['name']}",
            f"    public key: {edge['public_key']}",
            f"    endpoints: {', '.join(edge['endpoints']) or '(none)'}",
        ]
        if edge.get("endpoint_in_use"):
            lines.append(f"    endpoint in use: {edge['endpoint_in_use']}")
    lease = doc.get("lease")
    if lease is not None:
        check = (
            paint("verified", "good", colour)
            if lease["verified"]
            else paint("NOT verified", "bad", colour)
        )
        lines.append(
            f"  lease: version {lease['version']}, expires {_utc(lease['expires_at'])} "
            f"(in {int(lease['expires_in_seconds'])} s), {check}"
        )
    mtu = doc.get("mtu", {})
    outer = f", outer packets up to {mtu['outer']} bytes" if mtu.get("outer") else ""
    lines.append(f"  mtu: {mtu.get('tun')} (TUN = largest inner packet){outer}")
    installed = doc.get("installed")
    if installed is not None:
        mark = (
            paint("installed", "good", colour)
            if installed
            else paint("NOT installed", "bad", colour)
        )
        lines.append(f"  kernel route on the TUN: {mark}")
    health = doc.get("health", {})
    ctl = health.get("controller", {})
    state = (
        paint("connected", "good", colour)
        if ctl.get("connected")
        else paint("disconnected", "bad", colour)
    )
    lines.append("  health:")
    session = health.get("session")
    if session is not None:
        if session["established"]:
            text = paint("established", "good", colour) + f", age {int(session['age_seconds'])} s"
        else:
            text = paint("none", "warn", colour) + " (made on demand: the first packet starts one)"
        lines += [
            f"    session: {text}",
            f"    last authenticated packet: {_ago(session['last_rx_seconds_ago'])}",
        ]
    lines += [
        f"    controller: {ctl.get('address')} ({state})",
        f"    map version: {health.get('map_version')}",
    ]
    masq = doc.get("masquerade")
    if masq is not None:
        via = (
            f" on {masq['interface']}"
            if masq.get("interface")
            else " on the interface it leaves by (the kernel routes it only after a DNAT)"
        )
        source = f" ({masq['source']})" if masq.get("source") else ""
        lines.append(
            f"  masquerade: {masq['range']}: from the tunnel, masqueraded to this edge's "
            f"address{via}{source}"
        )
    lines += [f"  note: {text}" for text in doc.get("notes", [])]
    found = doc.get("problems", [])
    if found:
        lines.append(paint("problems:", "bad", colour))
        lines += [f"  {text}" for text in found]
    else:
        lines.append("problems: none")
    return "\n".join(lines) + "\n"


def socket_path(args: argparse.Namespace) -> Path:
    """The admin socket from --socket, else from the edge config of --config, else the default.

    Raises:
        ConfigError: the --config file is invalid.
    """
    if args.socket is not None:
        return Path(args.socket)
    if args.config is not None:
        from edge.config import load

        return load(Path(args.config)).admin_socket
    return DEFAULT_SOCKET


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = clikit.parser(prog, description)
    parser.add_argument("--json", action="store_true", help="print the JSON document")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", metavar="EDGE_FILE", help="the edge's config file")
    where.add_argument("--socket", metavar="PATH", help=f"default {DEFAULT_SOCKET}")
    return parser


def _ask(prog: str, args: argparse.Namespace, line: str) -> dict[str, Any] | int:
    """The edge's reply to `line`, or exit code 1 after printing why not."""
    try:
        reply = request(socket_path(args), line)
    except ConfigError as e:
        return clikit.fail(prog, f"{args.config}: {e}")
    except StatusError as e:
        return clikit.fail(prog, str(e))
    if "error" in reply:
        return clikit.fail(prog, f"the edge refused: {reply['error']}")
    return reply


def main(argv: list[str]) -> int:
    """`isthmus status [--json] [--config F | --socket P]`: 0 ok, 1 error, 2 degraded."""
    prog = "isthmus status"
    args = clikit.parse(_parser(prog, "Show a running edge's status."), argv)
    if isinstance(args, int):
        return args
    status = _ask(prog, args, "status")
    if isinstance(status, int):
        return status
    if "edge" not in status:
        return clikit.fail(prog, f"the edge replied: {status!r}")
    colour = not args.json and clikit.wants_colour(sys.stdout)
    clikit.emit(status, args.json, "" if args.json else render(status, colour))
    return clikit.exit_code(problems(status))


def explain_main(argv: list[str]) -> int:
    """`isthmus explain IP [--json] [--config F | --socket P]`: 0 ok, 1 error, 2 degraded."""
    from edge.explain import AddressError, parse_address

    prog = "isthmus explain"
    parser = _parser(
        prog,
        "Which route, edge, lease, MTU and health apply to an address, from the edge's tables.",
    )
    parser.add_argument("address", metavar="IP", help="an IPv4 or IPv6 address")
    args = clikit.parse(parser, argv)
    if isinstance(args, int):
        return args
    try:
        address = parse_address(args.address)
    except AddressError as e:
        return clikit.usage_error(prog, f"IP: {e}")
    doc = _ask(prog, args, f"explain {address}")
    if isinstance(doc, int):
        return doc
    if "verdict" not in doc:
        return clikit.fail(prog, f"the edge replied: {doc!r}")
    colour = not args.json and clikit.wants_colour(sys.stdout)
    clikit.emit(doc, args.json, "" if args.json else render_explain(doc, colour))
    return clikit.exit_code(list(doc.get("problems", [])))

"""`isthmus status [--json] [--config EDGE_FILE | --socket PATH]`: show a running edge.

Owns the client side of the admin socket and the human-readable rendering (in the
manner of `wg show`). It only reads: connect, send "status\\n", read JSON until EOF.
Exit codes: 0 shown, 1 the edge is not running or replied nonsense, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import Any

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
        sock.sendall(b"status\n")
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
    if not isinstance(reply, dict) or "edge" not in reply:
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


def render(status: dict[str, Any]) -> str:
    """The status as indented text, in the manner of `wg show`."""
    ctl = status.get("controller", {})
    state = "connected" if ctl.get("connected") else "disconnected"
    lines = [
        f"edge: {status['edge']}",
        f"  public key: {status.get('public_key')}",
        f"  endpoint: {status.get('endpoint')}",
        f"  map version: {status.get('map_version')}",
        f"  controller: {ctl.get('address')} ({state})",
    ]
    others = [c for c in ctl.get("controllers", []) if c != ctl.get("address")]
    if others:
        lines.append(f"  other controllers: {', '.join(others)}")
    if "applied_version" in ctl:
        lines.append(f"  applied version: {ctl['applied_version']}")
    if ctl.get("last_error"):
        lines.append(f"  last error: {ctl['last_error']}")
    for p in status.get("peers", []):
        lines += [
            "",
            f"peer: {p['name']}",
            f"  endpoint: {p.get('endpoint') or '(none)'}",
            f"  latest handshake: {_ago(p.get('last_handshake_seconds_ago'))}"
            f" ({p.get('handshakes', 0)} in all)",
            f"  session age: {_age(p.get('session_age_seconds'))}",
            f"  last authenticated packet: {_ago(p.get('last_rx_seconds_ago'))}",
            f"  transfer: {p['rx_packets']} packets ({_bytes(p['rx_bytes'])}) received, "
            f"{p['tx_packets']} packets ({_bytes(p['tx_bytes'])}) sent",
        ]
    routes = status.get("routes", [])
    lines += ["", "routes:" if routes else "routes: (none)"]
    width = max((len(r["route"]) for r in routes), default=0)
    for r in routes:
        mark = "installed" if r.get("installed") else "NOT installed"
        lines.append(f"  {r['route']:<{width}}  via {r['edge']}  {mark}")
    drops = status.get("drops", {})
    lines += ["", "drops:"]
    lines += [f"  {reason}: {count}" for reason, count in drops.items()]
    return "\n".join(lines) + "\n"


def _socket_path(args: argparse.Namespace) -> Path:
    if args.socket is not None:
        return Path(args.socket)
    if args.config is not None:
        from edge.config import load

        return load(Path(args.config)).admin_socket
    return DEFAULT_SOCKET


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="isthmus status", description="Show a running edge's status."
    )
    parser.add_argument("--json", action="store_true", help="print the status JSON")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", metavar="EDGE_FILE", help="the edge's config file")
    where.add_argument("--socket", metavar="PATH", help=f"default {DEFAULT_SOCKET}")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return 0 if e.code == 0 else 2
    try:
        status = fetch(_socket_path(args))
    except ConfigError as e:
        print(f"isthmus status: {args.config}: {e}", file=sys.stderr)
        return 1
    except StatusError as e:
        print(f"isthmus status: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(render(status), end="")
    return 0

"""The admin socket: a unix socket that answers one-line requests with one JSON object.

Owns the status JSON (docs/design.md, "Edge status JSON") and the socket's lifecycle:
mode 0600, a stale socket file removed at start and the file removed on exit. One
request per connection: read one line "VERB [ARGUMENT]", reply, close. "status" is always
served; other verbs come as extra handlers (an async function of the argument returning the
reply object; a reply with an "error" key is a refusal the client shows). Reads the kernel routes at
request time so "installed" is the truth, not what we believe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from edge.control import ControllerView
from edge.masquerade import MasqueradeState
from edge.ports import RouteError, RouteTable
from edge.reconcile import desired_routes
from edge.tunnel import Tunnel
from isthmus.endpoint import Endpoint
from isthmus.logfmt import kv
from isthmus.lpm import route_sort_key
from isthmus.routemap import Network, RouteMap

READ_TIMEOUT = 5.0
MAX_REQUEST = 1024

_log = logging.getLogger(__name__)


class AdminError(Exception):
    """The admin socket cannot be created; the message says why."""


class EdgeStatus:
    """Builds the status JSON object from the live parts of the edge."""

    def __init__(
        self,
        *,
        endpoint: Endpoint | None,
        tunnel: Tunnel,
        route_map: Callable[[], RouteMap],
        controller: Callable[[], ControllerView],
        routes: RouteTable,
        clock: Callable[[], float] = time.monotonic,
        datapath: Callable[[], dict[str, int]] | None = None,
        collisions: Callable[[], Mapping[Network, str]] | None = None,
        masquerade: Callable[[], MasqueradeState] | None = None,
    ) -> None:
        """`datapath()` gives the data path shell's own counters (Dataplane.stats): what
        the offloads did (GSO runs, GRO reads, coalesced writes), shown as "datapath".
        `collisions()` gives the routes left out because they collide with a route isthmus
        did not install, with the reason (MapApplier.collisions), shown as a route's
        "reason". `masquerade()` gives the masquerade ranges and whether their nftables
        table is installed, read at request time (edge.nft), shown as "masquerade"."""
        self._endpoint = endpoint
        self._tunnel = tunnel
        self._route_map = route_map
        self._controller = controller
        self._routes = routes
        self._clock = clock
        self._datapath = datapath
        self._collisions = collisions
        self._masquerade = masquerade

    def build(self) -> dict[str, Any]:
        identity = self._tunnel.identity
        now = self._clock()
        ctl = self._controller()
        try:
            installed = self._routes.list_routes()
        except RouteError as e:
            _log.warning(kv("status_routes_unreadable", error=str(e)))
            installed = set()
        wanted = desired_routes(self._route_map(), identity.name)
        collisions = self._collisions() if self._collisions is not None else {}
        doc: dict[str, Any] = {
            "edge": identity.name,
            "public_key": identity.public_key.to_base64(),
            "endpoint": str(self._endpoint) if self._endpoint is not None else None,
            "map_version": self._tunnel.map_version,
            "controller": {
                "controllers": list(ctl.controllers),
                "address": ctl.address,
                "connected": ctl.connected,
                "applied_version": ctl.applied_version,
                "last_error": ctl.last_error,
            },
            "peers": [
                {
                    "name": p.name,
                    "endpoint": p.endpoint,
                    "behind_nat": p.behind_nat,
                    "rx_packets": p.rx_packets,
                    "rx_bytes": p.rx_bytes,
                    "tx_packets": p.tx_packets,
                    "tx_bytes": p.tx_bytes,
                    "last_rx_seconds_ago": _ago(now, p.last_rx),
                    "session_age_seconds": _age(p.session_age),
                    "handshakes": p.handshakes,
                    "last_handshake_seconds_ago": _ago(now, p.last_handshake),
                }
                for p in self._tunnel.peers(now)
            ],
            "routes": [
                {
                    "route": str(net),
                    "edge": wanted[net],
                    "installed": net in installed,
                    "reason": None if net in installed else collisions.get(net),
                }
                for net in sorted(wanted, key=route_sort_key)
            ],
            "drops": self._tunnel.drops(),
            "datapath": self._datapath() if self._datapath is not None else {},
        }
        if self._masquerade is not None:
            doc["masquerade"] = self._masquerade().as_dict()
        return doc


def _ago(now: float, then: float | None) -> float | None:
    return None if then is None else round(max(0.0, now - then), 1)


def _age(age: float | None) -> float | None:
    return None if age is None else round(max(0.0, age), 1)


Handler = Callable[[str], Awaitable[dict[str, Any]]]


class AdminServer:
    """The unix socket server; `start` then `close`."""

    def __init__(
        self,
        path: Path,
        status: Callable[[], dict[str, Any]],
        handlers: Mapping[str, Handler] | None = None,
    ) -> None:
        self.path = path
        self._status = status
        self._handlers = dict(handlers or {})
        self._server: asyncio.Server | None = None
        self._owned = False

    async def start(self) -> None:
        """Remove a stale socket file, listen, chmod 0600.

        Raises:
            AdminError: another edge answers on the socket, or the path is not a socket.
        """
        self._remove_stale()
        try:
            self._server = await asyncio.start_unix_server(self._handle, path=str(self.path))
            self._owned = True
            os.chmod(self.path, 0o600)
        except OSError as e:
            raise AdminError(f"cannot listen on {self.path}: {e.strerror or e}") from None
        _log.info(kv("admin_listening", socket=self.path))

    def _remove_stale(self) -> None:
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise AdminError(f"{self.path} exists and is not a socket; refusing to remove it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink(missing_ok=True)
            _log.info(kv("admin_stale_socket_removed", socket=self.path))
            return
        finally:
            probe.close()
        raise AdminError(f"another edge is running: it answers on {self.path}")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
            request = line[:MAX_REQUEST].strip().decode("ascii", "replace")
            verb, _, argument = request.partition(" ")
            handler = self._handlers.get(verb)
            if verb == "status":
                reply: dict[str, Any] = self._status()
            elif handler is not None:
                reply = await handler(argument.strip())
            else:
                allowed = ", ".join(sorted({"status", *self._handlers}))
                reply = {"error": f"unknown command {verb!r}; allowed: {allowed}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, OSError, ValueError):
            pass
        except Exception:
            _log.exception(kv("admin_request_failed"))
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        """Stop listening and remove the socket file; idempotent."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._owned:
            self._owned = False
            self.path.unlink(missing_ok=True)

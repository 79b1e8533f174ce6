"""The Admin gRPC service on the controller's admin unix socket: the operator's side.

Owns three things:

- `AdminService`, the `isthmus.v1.Admin` servicer over an `AdminBackend` (the controller
  service of this replica): ListRoutes (every admission decision, sorted by route then
  edge), ApproveRoute, ListEdges and ListHistory (the audit log, controller.audit; the
  last `limit` entries, oldest first). It parses the request, calls the backend and
  converts; it decides nothing. A malformed request field is INVALID_ARGUMENT naming the
  field; a refused approval is the backend's `ControllerError`, reported through
  `controller.errors.to_status` (the one mapping of controller errors to gRPC status
  codes), its message sent unchanged (it names the route, the edge and what to do).
- `route_status`: the wire form of a decision.
- The socket's lifecycle: `start_admin_server` binds "unix:PATH" with umask 077 and
  chmods the socket 0600 right after (whoever can open it is the operator: the service
  has no other authentication), creates a missing parent directory 0700, and replaces a
  stale socket file, but refuses to remove anything that is not a socket or a socket
  another process answers on. `stop_admin_server` stops it and removes the socket file.

Never listen on anything but a unix socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import grpc

from controller.admission import Decision, RouteState
from controller.audit import DEFAULT_LIMIT, MAX_LIMIT, AuditEntry
from controller.errors import ControllerError, InvalidRequest, StoreError, to_status
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName, parse_edge_name
from isthmus.keys import PublicKey
from isthmus.logfmt import kv
from isthmus.lpm import route_sort_key
from isthmus.routemap import Network, parse_route
from isthmus.v1 import isthmus_pb2 as pb
from isthmus.v1 import isthmus_pb2_grpc as pb_grpc

log = logging.getLogger("controller.admin")

# sockaddr_un.sun_path is 108 bytes on Linux, one of them the terminating NUL.
MAX_SOCKET_PATH: Final = 107
# Seconds a stale-socket probe waits for a live server to accept.
PROBE_TIMEOUT: Final = 1.0
# Request text quoted back in errors is cut to this length.
MAX_QUOTED: Final = 64

_ROUTE_STATES: Final = {
    RouteState.SERVING: pb.ROUTE_STATE_SERVING,
    RouteState.PENDING: pb.ROUTE_STATE_PENDING,
    RouteState.REFUSED: pb.ROUTE_STATE_REFUSED,
}


@dataclass(frozen=True, slots=True)
class EdgeView:
    """One configured edge as `isthmus edges` shows it.

    `state` is "connected" (a watch stream is open at some replica), "disconnected" or
    "never"; `replica` the replica serving its watch ("" for this controller);
    `reported_at` the unix time of its last report (0.0 for none).
    """

    name: EdgeName
    public_key: PublicKey
    endpoints: tuple[Endpoint, ...]
    state: str
    replica: str
    applied_version: int
    last_error: str
    reported_at: float
    epoch: bytes = b""  # of the map it reported applying; b"" for none


class AdminBackend(Protocol):
    """What the Admin service needs from the controller (ControllerService conforms)."""

    def route_statuses(self) -> tuple[Decision, ...]:
        """Every advertised (edge, route) with its admission decision."""
        ...

    @property
    def version(self) -> int:
        """The current map version."""
        ...

    @property
    def epoch(self) -> bytes:
        """The epoch of the current map (isthmus.mapsig)."""
        ...

    async def approve(self, route: Network, edge: EdgeName | None) -> Decision:
        """Approve a pending route; the decision after approval.

        Raises:
            ControllerError: NotPending, UnknownRoute, AmbiguousRoute or StoreError.
        """
        ...

    async def edge_statuses(self) -> tuple[EdgeView, ...]:
        """Every configured edge, sorted by name."""
        ...

    async def history(self, limit: int) -> list[AuditEntry]:
        """The last `limit` audit entries, oldest first.

        Raises:
            StoreError: the audit log cannot be read.
        """
        ...


def route_status(d: Decision) -> pb.RouteStatus:
    """The wire form of one admission decision."""
    return pb.RouteStatus(
        route=str(d.route),
        edge=d.edge,
        state=_ROUTE_STATES[d.state],
        reason_code=d.reason.value,
        reason=d.detail,
        since_version=d.since,
        approved=d.approved,
    )


def edge_status(v: EdgeView) -> pb.EdgeStatus:
    """The wire form of one edge's view."""
    return pb.EdgeStatus(
        name=v.name,
        public_key=v.public_key.raw,
        endpoints=[str(e) for e in v.endpoints],
        state=v.state,
        replica=v.replica,
        applied_version=v.applied_version,
        last_error=v.last_error,
        reported_at=v.reported_at,
        epoch=v.epoch,
    )


def history_entry(e: AuditEntry) -> pb.HistoryEntry:
    """The wire form of one audit entry."""
    return pb.HistoryEntry(
        time=e.time,
        version=e.version,
        actor=e.actor,
        kind=e.kind,
        edge=e.edge,
        route=str(e.route) if e.route is not None else "",
        reason=e.reason,
    )


def parse_limit(request: pb.ListHistoryRequest) -> int:
    """The number of entries asked for: 0 means DEFAULT_LIMIT.

    Raises:
        InvalidRequest: more than MAX_LIMIT; the message names the field.
    """
    if request.limit == 0:
        return DEFAULT_LIMIT
    if request.limit > MAX_LIMIT:
        raise InvalidRequest(
            f"limit: {request.limit} is too many; allowed: 1-{MAX_LIMIT} (0: {DEFAULT_LIMIT})"
        )
    return request.limit


def _route_order(d: Decision) -> tuple[int, int, int, str]:
    """IPv4 before IPv6, then by address, a covering route before its more specific ones."""
    return (*route_sort_key(d.route), d.edge)


def _quote(text: str) -> str:
    return repr(text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED] + "...")


def parse_approval(request: pb.ApproveRouteRequest) -> tuple[Network, EdgeName | None]:
    """The route and (optional) edge of an approval.

    Raises:
        InvalidRequest: the message names the field ("route: ..." or "edge: ...").
    """
    try:
        route = parse_route(request.route)
    except ValueError as e:
        text = str(e).replace(repr(request.route), _quote(request.route), 1)
        raise InvalidRequest(f"route: {text}") from None
    if not request.edge:
        return route, None
    try:
        return route, parse_edge_name(request.edge)
    except ValueError as e:
        text = str(e).replace(repr(request.edge), _quote(request.edge), 1)
        raise InvalidRequest(f"edge: {text}") from None


class AdminService(pb_grpc.AdminServicer):
    """`isthmus.v1.Admin` over one backend; stateless."""

    def __init__(self, backend: AdminBackend) -> None:
        self._backend = backend

    async def ListRoutes(
        self, request: pb.ListRoutesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListRoutesResponse:
        version = self._backend.version
        decisions = sorted(self._backend.route_statuses(), key=_route_order)
        return pb.ListRoutesResponse(version=version, routes=[route_status(d) for d in decisions])

    async def ApproveRoute(
        self, request: pb.ApproveRouteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ApproveRouteResponse:
        try:
            route, edge = parse_approval(request)
            decision = await self._backend.approve(route, edge)
        except ControllerError as e:
            status = to_status(e)
            log.log(
                logging.ERROR if isinstance(e, StoreError) else logging.WARNING,
                kv(
                    "approve_refused",
                    route=_quote(request.route),
                    edge=_quote(request.edge),
                    code=status.code.name,
                    reason=str(e),
                ),
            )
            await context.abort(status.code, status.message)
        version = self._backend.version
        log.info(
            kv(
                "approve_done",
                route=decision.route,
                edge=decision.edge,
                state=decision.state.value,
                version=version,
            )
        )
        return pb.ApproveRouteResponse(version=version, route=route_status(decision))

    async def ListEdges(
        self, request: pb.ListEdgesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListEdgesResponse:
        views = await self._backend.edge_statuses()
        version, epoch = self._backend.version, self._backend.epoch
        return pb.ListEdgesResponse(
            version=version, epoch=epoch, edges=[edge_status(v) for v in views]
        )

    async def ListHistory(
        self, request: pb.ListHistoryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListHistoryResponse:
        try:
            entries = await self._backend.history(parse_limit(request))
        except ControllerError as e:
            status = to_status(e)
            log.log(
                logging.ERROR if isinstance(e, StoreError) else logging.WARNING,
                kv("history_refused", limit=request.limit, code=status.code.name, reason=str(e)),
            )
            await context.abort(status.code, status.message)
        return pb.ListHistoryResponse(
            version=self._backend.version, entries=[history_entry(e) for e in entries]
        )


async def start_admin_server(path: Path, backend: AdminBackend) -> grpc.aio.Server:
    """Serve the Admin service on the unix socket `path` (mode 0600); the started server.

    The caller stops it with `stop_admin_server`.

    Raises:
        OSError: the path is too long, is not a socket, another process answers on it, or
            it cannot be bound; the message names the path.
    """
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise OSError(
            f"admin socket {path}: the path is {len(os.fsencode(path))} bytes; "
            f"allowed: at most {MAX_SOCKET_PATH} bytes (a unix socket path)"
        )
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _remove_stale(path)
    server = grpc.aio.server()
    pb_grpc.add_AdminServicer_to_server(AdminService(backend), server)  # type: ignore[no-untyped-call]
    # umask is per process: other threads creating files meanwhile get 0600/0700 too,
    # which is only stricter. The chmod after the bind is what the contract rests on.
    old = os.umask(0o077)
    try:
        try:
            port = server.add_insecure_port(f"unix:{path}")
        except RuntimeError as e:  # grpc reports a failed bind this way
            raise OSError(f"cannot listen on the admin socket {path}: {e}") from None
        if port == 0:
            raise OSError(f"cannot listen on the admin socket {path}")
        os.chmod(path, 0o600)
        await server.start()
    except BaseException:
        await server.stop(None)
        raise
    finally:
        os.umask(old)
    log.info(kv("admin_listening", socket=path))
    return server


async def stop_admin_server(
    server: grpc.aio.Server, path: Path, grace: float | None = None
) -> None:
    """Stop the server (in-flight calls get `grace` seconds) and remove its socket file."""
    await server.stop(grace)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()


def _remove_stale(path: Path) -> None:
    """Remove a socket file nobody answers on; refuse to touch anything else."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(f"admin socket {path} exists and is not a socket; refusing to remove it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(PROBE_TIMEOUT)
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)
        log.info(kv("admin_stale_socket_removed", socket=path))
        return
    finally:
        probe.close()
    raise OSError(f"another process answers on the admin socket {path}; is a controller running?")

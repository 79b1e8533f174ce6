"""The one seam between protobuf messages and domain types.

Owns every pb <-> domain conversion. Decoding treats its input as hostile: every
field is checked and any problem raises `WireError` naming the field, what was
wrong and what is allowed. Protobuf objects never travel past this module's
callers (`controller.service`, `edge.control`).
"""

from __future__ import annotations

from dataclasses import dataclass

from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName, parse_edge_name
from isthmus.keys import PublicKey
from isthmus.routemap import EdgeEntry, MapError, Network, RouteMap, parse_route
from isthmus.v1 import isthmus_pb2 as pb

# Bounds on what one message may carry: generous for real sites, small enough that a
# hostile message cannot make the receiver build an unbounded map.
MAX_EDGES = 10_000
MAX_ROUTES_PER_EDGE = 1_000
MAX_ENDPOINTS_PER_EDGE = 8


class WireError(ValueError):
    """A message field is invalid; the message names the field."""


@dataclass(frozen=True, slots=True)
class Registration:
    """What an edge asks the controller to admit."""

    name: EdgeName
    public_key: PublicKey
    endpoints: tuple[Endpoint, ...]
    routes: tuple[Network, ...]


def registration_to_pb(reg: Registration) -> pb.RegisterRequest:
    return pb.RegisterRequest(
        name=reg.name,
        public_key=reg.public_key.raw,
        endpoints=[str(e) for e in reg.endpoints],
        routes=[str(r) for r in reg.routes],
    )


def registration_from_pb(msg: pb.RegisterRequest) -> Registration:
    """Raises: WireError naming the bad field."""
    name = _name(msg.name, "name")
    return Registration(
        name=name,
        public_key=_key(msg.public_key, "public_key"),
        endpoints=_endpoints(msg.endpoints, "endpoints"),
        routes=_routes(msg.routes, "routes"),
    )


def map_to_pb(m: RouteMap) -> pb.MapSnapshot:
    return pb.MapSnapshot(
        version=m.version,
        edges=[
            pb.Edge(
                name=e.name,
                public_key=e.public_key.raw,
                endpoints=[str(x) for x in e.endpoints],
                routes=[str(r) for r in e.routes],
            )
            for e in m.edges
        ],
    )


def map_from_pb(msg: pb.MapSnapshot) -> RouteMap:
    """Decode and validate a snapshot.

    Raises:
        WireError: a field is invalid or the map breaks a map rule.
    """
    if len(msg.edges) > MAX_EDGES:
        raise WireError(f"edges: {len(msg.edges)} edges; at most {MAX_EDGES} are allowed")
    edges = []
    for i, e in enumerate(msg.edges):
        where = f"edges[{i}]"
        edges.append(
            EdgeEntry(
                name=_name(e.name, f"{where}.name"),
                public_key=_key(e.public_key, f"{where}.public_key"),
                endpoints=_endpoints(e.endpoints, f"{where}.endpoints"),
                routes=_routes(e.routes, f"{where}.routes"),
            )
        )
    try:
        return RouteMap(version=msg.version, edges=tuple(edges)).validate()
    except MapError as e:
        raise WireError(f"edges: {e}") from None


def _name(value: str, field: str) -> EdgeName:
    try:
        return parse_edge_name(value)
    except ValueError as e:
        raise WireError(f"{field}: {e}") from None


def _key(value: bytes, field: str) -> PublicKey:
    try:
        return PublicKey(bytes(value))
    except ValueError as e:
        raise WireError(f"{field}: {e}") from None


def _endpoints(values: object, field: str) -> tuple[Endpoint, ...]:
    items = list(values)  # type: ignore[call-overload]
    if len(items) > MAX_ENDPOINTS_PER_EDGE:
        raise WireError(f"{field}: {len(items)} endpoints; at most {MAX_ENDPOINTS_PER_EDGE}")
    out = []
    for i, text in enumerate(items):
        try:
            out.append(Endpoint.parse(text))
        except ValueError as e:
            raise WireError(f"{field}[{i}]: {e}") from None
    return tuple(out)


def _routes(values: object, field: str) -> tuple[Network, ...]:
    items = list(values)  # type: ignore[call-overload]
    if len(items) > MAX_ROUTES_PER_EDGE:
        raise WireError(f"{field}: {len(items)} routes; at most {MAX_ROUTES_PER_EDGE}")
    out: list[Network] = []
    for i, text in enumerate(items):
        try:
            net = parse_route(text)
        except ValueError as e:
            raise WireError(f"{field}[{i}]: {e}") from None
        if net in out:
            raise WireError(f"{field}[{i}]: route {net} is listed twice")
        out.append(net)
    return tuple(out)

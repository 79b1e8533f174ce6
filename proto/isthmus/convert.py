"""The one seam between protobuf messages and domain types.

Owns every pb <-> domain conversion. Decoding treats its input as hostile: every
field is checked and any problem raises `WireError` naming the field, what was
wrong and what is allowed. Every route of a decoded map entry carries a lease with
a 64-byte signature; verifying it is the receiver's job (`isthmus.lease`). Protobuf
objects never travel past this module's callers (`controller.service`,
`controller.history`, `edge.control`, `edge.mapcache`).
"""

from __future__ import annotations

from dataclasses import dataclass

from isthmus.endpoint import UNICAST_RULE, Endpoint
from isthmus.ids import EdgeName, parse_edge_name
from isthmus.keys import PublicKey
from isthmus.lease import SIGNATURE_LEN, Lease
from isthmus.mapdelta import MapDelta
from isthmus.mapsig import EPOCH_LEN, SignedMap
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
    """Every endpoint must be unicast (isthmus.endpoint.UNICAST_RULE): other edges send there.

    Raises: WireError naming the bad field.
    """
    name = _name(msg.name, "name")
    return Registration(
        name=name,
        public_key=_key(msg.public_key, "public_key"),
        endpoints=_endpoints(msg.endpoints, "endpoints", unicast=True),
        routes=_routes(msg.routes, "routes"),
    )


def map_to_pb(m: RouteMap, *, epoch: bytes = b"", signature: bytes = b"") -> pb.MapUpdate:
    """The whole map: full=True, base_version 0, every edge with its routes' leases, and
    the map's epoch and signature (isthmus.mapsig; empty when not given).

    An entry without leases is encoded with lease-less routes, which receivers refuse.
    """
    return pb.MapUpdate(
        version=m.version,
        full=True,
        edges=[_edge_to_pb(e) for e in m.edges],
        epoch=epoch,
        signature=signature,
    )


def signed_map_to_pb(s: SignedMap) -> pb.MapUpdate:
    """The whole signed map (what a watcher without a usable base gets, and the cache)."""
    return map_to_pb(s.route_map, epoch=s.epoch, signature=s.signature)


def delta_to_pb(d: MapDelta, *, epoch: bytes = b"", signature: bytes = b"") -> pb.MapUpdate:
    """A delta: full=False, the changed edges whole, the names of the removed ones, and
    the epoch and signature of the map it makes (empty when not given)."""
    return pb.MapUpdate(
        version=d.version,
        full=False,
        base_version=d.base_version,
        edges=[_edge_to_pb(e) for e in d.upserts],
        removed=[str(n) for n in d.removed],
        epoch=epoch,
        signature=signature,
    )


def seal_from_pb(msg: pb.MapUpdate) -> tuple[bytes, bytes]:
    """The update's (epoch, signature). Either may be empty (an unsigned update, which the
    edge refuses when it verifies the map); when present they have their sizes.

    Raises:
        WireError: epoch not 16 bytes or signature not 64 bytes.
    """
    epoch, signature = bytes(msg.epoch), bytes(msg.signature)
    if epoch and len(epoch) != EPOCH_LEN:
        raise WireError(f"epoch: {len(epoch)} bytes; expected {EPOCH_LEN} (or none)")
    if signature and len(signature) != SIGNATURE_LEN:
        raise WireError(f"signature: {len(signature)} bytes; expected {SIGNATURE_LEN} (or none)")
    return epoch, signature


def update_from_pb(msg: pb.MapUpdate) -> RouteMap | MapDelta:
    """Decode a map update: the whole map (validated) or a delta (checked field by field).

    Every route must carry a lease with a 64-byte signature; whether the signature is
    right is for the receiver to check (`isthmus.lease.verify_lease`) against its key.

    Raises:
        WireError: a field is invalid, the full map breaks a map rule, or the delta is
            inconsistent (goes backwards, names an edge twice).
    """
    if len(msg.edges) > MAX_EDGES:
        raise WireError(f"edges: {len(msg.edges)} edges; at most {MAX_EDGES} are allowed")
    if len(msg.removed) > MAX_EDGES:
        raise WireError(f"removed: {len(msg.removed)} names; at most {MAX_EDGES} are allowed")
    edges = tuple(_edge_from_pb(e, f"edges[{i}]") for i, e in enumerate(msg.edges))
    if msg.full:
        if msg.base_version != 0:
            raise WireError(
                f"base_version: {msg.base_version} in a full map; allowed: 0 (only deltas "
                "have a base)"
            )
        if msg.removed:
            raise WireError(f"removed: {len(msg.removed)} names in a full map; allowed: none")
        try:
            return RouteMap(version=msg.version, edges=edges).validate()
        except MapError as err:
            raise WireError(f"edges: {err}") from None
    if msg.base_version > msg.version:
        raise WireError(
            f"base_version: {msg.base_version} is above version {msg.version}; "
            "a delta never goes backwards"
        )
    names: set[str] = set()
    for i, e in enumerate(edges):
        if e.name in names:
            raise WireError(f"edges[{i}].name: edge {e.name!r} appears twice in the delta")
        names.add(e.name)
    removed: list[EdgeName] = []
    for i, text in enumerate(msg.removed):
        name = _name(text, f"removed[{i}]")
        if name in removed:
            raise WireError(f"removed[{i}]: edge {name!r} is listed twice")
        if name in names:
            raise WireError(f"removed[{i}]: edge {name!r} is both changed and removed")
        removed.append(name)
    return MapDelta(
        base_version=msg.base_version, version=msg.version, upserts=edges, removed=tuple(removed)
    )


def map_from_pb(msg: pb.MapUpdate) -> RouteMap:
    """Decode and validate a whole map (e.g. one an edge cached).

    Raises:
        WireError: not a full map, a field is invalid or the map breaks a map rule.
    """
    if not msg.full:
        raise WireError("full: false; expected a whole map (full=true), not a delta")
    update = update_from_pb(msg)
    assert isinstance(update, RouteMap)
    return update


def signed_map_from_pb(msg: pb.MapUpdate) -> SignedMap:
    """Decode a whole map with its epoch and signature (not verified: the caller's job).

    Raises:
        WireError: see `map_from_pb` and `seal_from_pb`.
    """
    route_map = map_from_pb(msg)
    epoch, signature = seal_from_pb(msg)
    return SignedMap(route_map, epoch, signature)


def _edge_to_pb(e: EdgeEntry) -> pb.Edge:
    routes = []
    for i, r in enumerate(e.routes):
        route = pb.Route(cidr=str(r))
        if i < len(e.leases):
            lease = e.leases[i]
            route.lease.CopyFrom(
                pb.Lease(version=lease.version, expires=lease.expires, signature=lease.signature)
            )
        routes.append(route)
    return pb.Edge(
        name=e.name,
        public_key=e.public_key.raw,
        endpoints=[str(x) for x in e.endpoints],
        routes=routes,
    )


def _edge_from_pb(e: pb.Edge, where: str) -> EdgeEntry:
    if len(e.routes) > MAX_ROUTES_PER_EDGE:
        raise WireError(f"{where}.routes: {len(e.routes)} routes; at most {MAX_ROUTES_PER_EDGE}")
    routes: list[Network] = []
    leases: list[Lease] = []
    for j, route in enumerate(e.routes):
        field = f"{where}.routes[{j}]"
        try:
            net = parse_route(route.cidr)
        except ValueError as err:
            raise WireError(f"{field}.cidr: {err}") from None
        if net in routes:
            raise WireError(f"{field}.cidr: route {net} is listed twice")
        routes.append(net)
        leases.append(_lease(route, field))
    return EdgeEntry(
        name=_name(e.name, f"{where}.name"),
        public_key=_key(e.public_key, f"{where}.public_key"),
        endpoints=_endpoints(e.endpoints, f"{where}.endpoints"),
        routes=tuple(routes),
        leases=tuple(leases),
    )


def _lease(route: pb.Route, field: str) -> Lease:
    if not route.HasField("lease"):
        raise WireError(f"{field}.lease: missing; every route of a map carries a lease")
    signature = bytes(route.lease.signature)
    if len(signature) != SIGNATURE_LEN:
        raise WireError(
            f"{field}.lease.signature: {len(signature)} bytes; expected {SIGNATURE_LEN}"
        )
    return Lease(version=route.lease.version, expires=route.lease.expires, signature=signature)


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


def _endpoints(values: object, field: str, *, unicast: bool = False) -> tuple[Endpoint, ...]:
    items = list(values)  # type: ignore[call-overload]
    if len(items) > MAX_ENDPOINTS_PER_EDGE:
        raise WireError(f"{field}: {len(items)} endpoints; at most {MAX_ENDPOINTS_PER_EDGE}")
    out = []
    for i, text in enumerate(items):
        try:
            ep = Endpoint.parse(text)
        except ValueError as e:
            raise WireError(f"{field}[{i}]: {e}") from None
        if unicast:
            try:
                ep.check_unicast()
            except ValueError as e:
                raise WireError(f"{field}[{i}]: {e}; allowed: {UNICAST_RULE}") from None
        out.append(ep)
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

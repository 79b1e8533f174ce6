"""`isthmus explain IP`, the edge's side: which route, edge, lease, MTU and health apply.

Owns the explanation document (docs/design.md, "Edge explain JSON") and its rules:
- The verdict is the tunnel's own forwarding decision (`ForwardingTable.owner`, longest
  prefix match over every route of the map the tunnel uses): "local" (the match is one
  of this edge's own routes: packets to the address leave here, not through the
  tunnel), "remote" (the match belongs to another edge: the tunnel forwards to it) or
  "no_route" (the map holds no route with the address: the kernel's other routes
  apply). Every other map route that
  contains the address is listed too, most specific first, so overlaps are visible.
- `installed` is read from the kernel at request time: the matching route is present on
  the TUN (remote only; null where no TUN route applies, or the routes were unreadable).
- A lease is re-verified against the controller's key here; "verified" is that check.
- `problems` lists what is wrong for this address, in plain words, and nothing else: the
  controller disconnected, the route not installed (why, when it collides with a route
  isthmus did not install; or the kernel routes unreadable), the
  owning edge without an endpoint (no handshake can start) or not a peer of the tunnel, a
  lease unverified, expired or void within EXPIRY_WARNING seconds, no map yet, or an
  advertised route of this edge holding the address that the map does not hold (pending
  or refused at the controller). `notes` says what is normal but worth knowing: no
  session with the owning edge right now is not a problem, since sessions are made on
  demand (the first packet starts a handshake) and end after REJECT_AFTER_TIME idle, as
  in WireGuard; a note says so and what to check if traffic fails.
- `masquerade` (only for an address inside one of the edge's masquerade ranges): packets
  from the tunnel to it leave with this edge's address on the outgoing interface as their
  source (edge.masquerade); the interface and source the kernel routes the address by
  come in as `outgoing`. The table missing from the kernel is a problem.
`explain` is pure: the tables and both clocks come in. `EdgeExplain` reads them from the
live parts of the edge; the admin socket serves it as the "explain IP" request.
Never puts private key material in the document: only public keys, base64.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from edge.control import ControllerView
from edge.masquerade import MasqueradeState, covering
from edge.ports import RouteError, RouteTable
from edge.tunnel import OVERHEAD, ForwardingTable, PeerView, Tunnel
from isthmus.lease import verify_lease
from isthmus.logfmt import kv
from isthmus.routemap import EdgeEntry, Network, RouteMap
from isthmus.signing import ControllerPublicKey

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

EXPIRY_WARNING: Final = 60.0  # seconds: a lease void sooner than this is a problem
ADDRESS_RULE: Final = "one IPv4 or IPv6 address, e.g. 10.245.0.7 or fd00:b::7 (no prefix length)"
MAX_ADDRESS_LEN: Final = 64
UDP_HEADER: Final = 8
IP_HEADER: Final[dict[int, int]] = {4: 20, 6: 40}

_log = logging.getLogger(__name__)


class AddressError(ValueError):
    """The text is not one IP address; the message quotes it and says what is allowed."""


def parse_address(text: str) -> IPAddress:
    """One IPv4 or IPv6 address.

    Raises:
        AddressError: empty, too long, a network, a scoped IPv6 address or no address.
    """
    shown = text if len(text) <= MAX_ADDRESS_LEN else text[:MAX_ADDRESS_LEN] + "..."
    if not text:
        raise AddressError(f"no address given; allowed: {ADDRESS_RULE}")
    if len(text) > MAX_ADDRESS_LEN:
        raise AddressError(f"{shown!r} is too long to be an address; allowed: {ADDRESS_RULE}")
    if "/" in text:
        raise AddressError(f"{shown!r} is a network, not an address; allowed: {ADDRESS_RULE}")
    if "%" in text:
        raise AddressError(f"{shown!r} has a scope (%); allowed: {ADDRESS_RULE}")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise AddressError(f"{shown!r} is not an IP address; allowed: {ADDRESS_RULE}") from None


@dataclass(frozen=True, slots=True)
class Tables:
    """Everything the explanation is read from, at one moment."""

    self_name: str
    route_map: RouteMap
    advertised: tuple[Network, ...]  # the routes this edge's config advertises
    forwarding: ForwardingTable[Any]  # the tunnel's: who owns an address
    peers: Sequence[PeerView]
    installed: frozenset[Network] | None  # the kernel's routes on the TUN; None: unreadable
    tun_mtu: int
    controller: ControllerView
    controller_key: ControllerPublicKey
    now: float  # the peers' clock (monotonic seconds)
    wall: float  # the leases' clock (unix seconds)
    # remote routes left out: the kernel routes the prefix otherwise (MapApplier.collisions)
    collisions: Mapping[Network, str] = field(default_factory=dict)
    masquerade: MasqueradeState | None = None  # None: the edge masquerades nothing


def explain(
    address: IPAddress, t: Tables, outgoing: tuple[str, str] | None = None
) -> dict[str, Any]:
    """The explanation document for `address` (docs/design.md, "Edge explain JSON");
    `outgoing` is the (interface, source address) the kernel routes `address` by."""
    owner = t.forwarding.owner(address.packed)
    match = None if owner is None else (owner.network, owner.edge)
    others = [
        (r.network, r.edge) for r in t.forwarding.containing(address.packed) if r is not owner
    ]
    problems: list[str] = []
    ctl = t.controller
    if not ctl.connected:
        why = f": {ctl.last_error}" if ctl.last_error else ""
        problems.append(
            f"the controller {ctl.address} is disconnected{why}; this edge forwards on map "
            f"version {t.route_map.version} until its leases run out"
        )
    if t.route_map.version == 0:
        problems.append("this edge has no map yet (version 0): no tunnel route applies")
    verdict = _verdict(match, t.self_name)
    peer = None
    if match is not None and verdict == "remote":
        peer = next((p for p in t.peers if p.name == match[1].name), None)
    installed = None
    if match is not None and verdict == "remote" and t.installed is not None:
        installed = match[0] in t.installed
    lease = _lease(match, t, problems)
    if verdict == "remote" and match is not None:
        _remote_problems(str(address), match, peer, installed, t, problems)
    _advertised_problems(address, t, problems)
    notes = []
    if peer is not None and peer.session_age is None and peer.endpoint is not None:
        notes.append(
            f"no session with edge {peer.name!r} now: the first packet starts a handshake; "
            f"if traffic to {address} fails, check that {peer.endpoint} is reachable on UDP "
            f"and that edge {peer.name!r} runs"
        )
    doc: dict[str, Any] = {
        "address": str(address),
        "edge_self": t.self_name,
        "verdict": verdict,
        "detail": _detail(verdict, match),
        "route": None
        if match is None
        else {
            "match": _route(*match),
            "containing": [_route(net, e) for net, e in others],
        },
        "edge": None if match is None else _edge(match[1], peer),
        "lease": lease,
        "mtu": _mtu(t.tun_mtu, peer if verdict == "remote" else None),
        "installed": installed,
        "health": {
            "session": None if verdict != "remote" else _session(peer, t.now),
            "controller": {
                "address": ctl.address,
                "connected": ctl.connected,
                "last_error": ctl.last_error,
            },
            "map_version": t.route_map.version,
            "applied_version": ctl.applied_version,
        },
        "problems": problems,
        "notes": notes,
    }
    masquerade = _masquerade(address, t.masquerade, outgoing, problems)
    if masquerade is not None:
        doc["masquerade"] = masquerade
    return doc


def _masquerade(
    address: IPAddress,
    state: MasqueradeState | None,
    outgoing: tuple[str, str] | None,
    problems: list[str],
) -> dict[str, Any] | None:
    net = None if state is None else covering(address, state.ranges)
    if state is None or net is None:
        return None
    if not state.installed:
        problems.append(
            f"{address} is inside masquerade range {net} but the table {state.table} is "
            f"{'unreadable' if state.installed is None else 'not installed'}: tunnelled "
            "packets to it keep their source address"
        )
    return {
        "range": str(net),
        "installed": state.installed,
        "interface": outgoing[0] if outgoing is not None else None,
        "source": (outgoing[1] or None) if outgoing is not None else None,
    }


def _verdict(match: tuple[Network, EdgeEntry] | None, self_name: str) -> str:
    if match is None:
        return "no_route"
    return "local" if match[1].name == self_name else "remote"


def _detail(verdict: str, match: tuple[Network, EdgeEntry] | None) -> str:
    if match is None:
        return "no route of the map holds it: the kernel's other routes apply"
    net, entry = match
    if verdict == "local":
        return f"inside this edge's own route {net}: it is delivered here, not tunnelled"
    return f"forwarded through the tunnel to edge {entry.name!r} by route {net}"


def _route(net: Network, entry: EdgeEntry) -> dict[str, Any]:
    return {"route": str(net), "edge": entry.name}


def _edge(entry: EdgeEntry, peer: PeerView | None) -> dict[str, Any]:
    return {
        "name": entry.name,
        "public_key": entry.public_key.to_base64(),
        "endpoints": [str(e) for e in entry.endpoints],
        "endpoint_in_use": peer.endpoint if peer is not None else None,
    }


def _lease(
    match: tuple[Network, EdgeEntry] | None, t: Tables, problems: list[str]
) -> dict[str, Any] | None:
    if match is None:
        return None
    net, entry = match
    if not entry.leases:
        problems.append(f"route {net} has no lease in the map this edge uses")
        return None
    lease = entry.leases[entry.routes.index(net)]
    verified = verify_lease(t.controller_key, entry.public_key, net, lease)
    left = lease.expires - t.wall
    if not verified:
        problems.append(f"the lease of route {net} does not verify against controller_public_key")
    if lease.expired(t.wall):
        problems.append(f"the lease of route {net} expired {int(-left)} s ago")
    elif left < EXPIRY_WARNING:
        problems.append(
            f"the lease of route {net} runs out in {int(left)} s; the controller renews it "
            "while reachable, else the route is withdrawn then"
        )
    return {
        "version": lease.version,
        "expires_at": lease.expires,
        "expires_in_seconds": round(left, 1),
        "verified": verified,
    }


def _mtu(tun_mtu: int, peer: PeerView | None) -> dict[str, Any]:
    """Inner packets up to the TUN MTU; outer = inner + tunnel + UDP + IP of the endpoint."""
    outer = None
    if peer is not None and peer.endpoint is not None:
        family = 6 if peer.endpoint.startswith("[") else 4
        outer = tun_mtu + OVERHEAD + UDP_HEADER + IP_HEADER[family]
    return {"tun": tun_mtu, "inner": tun_mtu, "overhead": OVERHEAD, "outer": outer}


def _ago(now: float, then: float | None) -> float | None:
    return None if then is None else round(max(0.0, now - then), 1)


def _session(peer: PeerView | None, now: float) -> dict[str, Any] | None:
    if peer is None:
        return None
    return {
        "established": peer.session_age is not None,
        "age_seconds": None if peer.session_age is None else round(max(0.0, peer.session_age), 1),
        "last_rx_seconds_ago": _ago(now, peer.last_rx),
        "handshakes": peer.handshakes,
        "last_handshake_seconds_ago": _ago(now, peer.last_handshake),
    }


def _remote_problems(
    address: str,
    match: tuple[Network, EdgeEntry],
    peer: PeerView | None,
    installed: bool | None,
    t: Tables,
    problems: list[str],
) -> None:
    net, entry = match
    if t.installed is None:
        problems.append(
            f"the kernel routes could not be read: whether {net} is installed is unknown"
        )
    elif not installed and net in t.collisions:
        problems.append(
            f"route {net} is not installed on the TUN: it {t.collisions[net]}, which "
            f"isthmus never replaces; packets to {address} take that route (the edge "
            "retries every 5 s and installs its own once that route is gone, "
            "event=route_collision)"
        )
    elif not installed:
        problems.append(
            f"route {net} is not installed on the TUN: packets to {address} take the "
            "kernel's other routes (the edge retries at the next map; its log says why, "
            "event=route_error)"
        )
    if peer is None:
        problems.append(f"edge {entry.name!r} is not a peer of the tunnel")
        return
    if peer.endpoint is None and peer.session_age is None:
        if not entry.endpoints:
            problems.append(
                f"edge {entry.name!r} is behind NAT (the map lists no endpoint) and not yet "
                "heard from: packets to it are dropped (no_route) until it handshakes"
            )
        else:
            problems.append(
                f"edge {entry.name!r} has no endpoint and no session: no handshake can start"
            )


def _advertised_problems(address: IPAddress, t: Tables, problems: list[str]) -> None:
    own = t.route_map.edge(t.self_name)
    served = set(own.routes) if own is not None else set()
    for net in t.advertised:
        if net.version == address.version and address in net and net not in served:
            problems.append(
                f"this edge advertises {net} but the map does not hold it: pending or "
                "refused at the controller ('isthmus routes' there says why)"
            )


class EdgeExplain:
    """Reads the tables from the live parts of the edge; `handle` serves "explain IP"."""

    def __init__(
        self,
        *,
        tunnel: Tunnel,
        route_map: Callable[[], RouteMap],
        advertised: tuple[Network, ...],
        controller: Callable[[], ControllerView],
        controller_key: ControllerPublicKey,
        routes: RouteTable,
        tun_mtu: int,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        collisions: Callable[[], Mapping[Network, str]] | None = None,
        masquerade: Callable[[], MasqueradeState] | None = None,
        outgoing: Callable[[IPAddress], tuple[str, str] | None] | None = None,
    ) -> None:
        self._tunnel = tunnel
        self._masquerade = masquerade
        self._outgoing = outgoing
        self._collisions = collisions
        self._route_map = route_map
        self._advertised = advertised
        self._controller = controller
        self._controller_key = controller_key
        self._routes = routes
        self._tun_mtu = tun_mtu
        self._clock = clock
        self._wall_clock = wall_clock

    def tables(self) -> Tables:
        now = self._clock()
        try:
            installed: frozenset[Network] | None = frozenset(self._routes.list_routes())
        except RouteError as e:
            _log.warning(kv("explain_routes_unreadable", error=str(e)))
            installed = None
        return Tables(
            self_name=self._tunnel.identity.name,
            route_map=self._route_map(),
            advertised=self._advertised,
            forwarding=self._tunnel.forwarding,
            peers=self._tunnel.peers(now),
            installed=installed,
            tun_mtu=self._tun_mtu,
            controller=self._controller(),
            controller_key=self._controller_key,
            now=now,
            wall=self._wall_clock(),
            collisions=dict(self._collisions()) if self._collisions is not None else {},
            masquerade=self._masquerade() if self._masquerade is not None else None,
        )

    async def handle(self, argument: str) -> dict[str, Any]:
        """The reply to "explain IP": the document, or {"error": ...} for a bad address."""
        try:
            address = parse_address(argument)
        except AddressError as e:
            return {"error": str(e)}
        t = self.tables()
        outgoing = None
        if (
            self._outgoing is not None
            and t.masquerade is not None
            and covering(address, t.masquerade.ranges) is not None
        ):
            outgoing = self._outgoing(address)
        return explain(address, t, outgoing)

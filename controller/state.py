"""The controller's state: what the store keeps and every replica agrees on.

Owns `State` (registered edges with their advertised routes, operator approvals, the
leases of serving routes, the holds of withdrawn routes, at one version) and its JSON
codec. Decisions are not stored: they follow from the state, the config and
`controller.admission`. The document is:

    {"version": 7, "epoch": "<32 hex digits: created_ms (u64 BE) || 8 random bytes>",
     "edges": [{"name": "vpc-a", "public_key": "<base64>", "endpoints": ["198.18.0.11:51820"],
                "advertised": [{"route": "10.244.0.0/16", "since": 3},
                               {"route": "10.0.0.0/8", "since": null}]}],
     "approvals": [{"edge": "vpc-a", "route": "10.244.1.0/24"}],
     "leases": [{"edge": "vpc-a", "route": "10.244.0.0/16", "version": 7,
                 "expires": 1760000000, "signature": "<base64, 64 bytes>"}],
     "holds": [{"edge": "vpc-b", "route": "10.97.0.0/16", "since": 2, "until": 1760000600}]}

`since` null: the route was refused at the last decision and holds no place in the
first-come order. "holds" is written only when there are some.

Rules `decode` enforces (a hand-edited or corrupt document is refused, never guessed at):
edge names and keys unique; each route advertised once per edge; `since` and lease
versions at most `version`; every approval and lease names an advertised route of a known
edge, once; a hold names a route its edge does not advertise, once, with `since` at most
`version`. `decode` sorts edges by name and approvals and leases by (edge, route), the
order `encode` writes. A state file of the previous release (edges with "routes" and no
"approvals" or "leases") decodes with every route advertised since the stored version.
The epoch names the lineage of versions (isthmus.mapsig): made once, when a state is
first created (`ensure_epoch`), and kept by every later version; a document without one
(older releases) decodes with none and gets one on load. Pure: no I/O (randomness and
time are given).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName, parse_edge_name
from isthmus.keys import PublicKey
from isthmus.lease import SIGNATURE_LEN, U64_MAX, Lease
from isthmus.lpm import route_sort_key as route_order
from isthmus.mapsig import EPOCH_LEN, new_epoch
from isthmus.routemap import Network, parse_route

_TOP_KEYS = {"version", "edges", "approvals", "leases"}
_OPTIONAL_TOP_KEYS = {"holds", "epoch"}
_LEGACY_TOP_KEYS = {"version", "edges"}
_EDGE_KEYS = {"name", "public_key", "endpoints", "advertised"}
_LEGACY_EDGE_KEYS = {"name", "public_key", "endpoints", "routes"}
_ADVERTISED_KEYS = {"route", "since"}
_APPROVAL_KEYS = {"edge", "route"}
_LEASE_KEYS = {"edge", "route", "version", "expires", "signature"}
_HOLD_KEYS = {"edge", "route", "since", "until"}


@dataclass(frozen=True, slots=True)
class Advertised:
    """A route an edge advertises, and its place in the first-come order: the version since
    which it has been advertised and admitted (serving or pending) without a break longer
    than a hold; None while it is refused (it holds no place)."""

    route: Network
    since: int | None


@dataclass(frozen=True, slots=True)
class Hold:
    """The place of an admitted route its edge withdrew or lost with its key, kept for the
    edge's name until `until` (unix seconds; admission.hold_time after it left)."""

    edge: EdgeName
    route: Network
    since: int
    until: int


@dataclass(frozen=True, slots=True)
class EdgeRecord:
    """A registered edge: its key, endpoints and advertised routes (in its own order)."""

    name: EdgeName
    public_key: PublicKey
    endpoints: tuple[Endpoint, ...]
    advertised: tuple[Advertised, ...]

    @property
    def routes(self) -> tuple[Network, ...]:
        """The advertised routes, in advertised order."""
        return tuple(a.route for a in self.advertised)


@dataclass(frozen=True, slots=True)
class State:
    """Everything the controller persists, at `version` (0: nothing stored yet)."""

    version: int = 0
    edges: tuple[EdgeRecord, ...] = ()  # sorted by name
    approvals: tuple[tuple[EdgeName, Network], ...] = ()  # sorted by (edge, route_order)
    leases: tuple[tuple[EdgeName, Network, Lease], ...] = ()  # of serving routes, sorted
    holds: tuple[Hold, ...] = ()  # sorted by (edge, route_order)
    epoch: bytes = b""  # 16 bytes (isthmus.mapsig); empty only before `ensure_epoch`

    def edge(self, name: str) -> EdgeRecord | None:
        for e in self.edges:
            if e.name == name:
                return e
        return None

    def lease(self, edge: str, route: Network) -> Lease | None:
        for name, net, lease in self.leases:
            if name == edge and net == route:
                return lease
        return None


def ensure_epoch(state: State, now: float, random: Callable[[int], bytes] = os.urandom) -> State:
    """`state` with an epoch: its own, or a new one created at `now` (unix seconds)."""
    if state.epoch:
        return state
    return replace(state, epoch=new_epoch(now, random))


def pair_order(item: tuple[EdgeName, Network] | tuple[EdgeName, Network, Lease]) -> tuple[Any, ...]:
    """The canonical order of approvals and leases: edge name, then route."""
    return (item[0], *route_order(item[1]))


def hold_order(hold: Hold) -> tuple[Any, ...]:
    """The canonical order of holds: edge name, then route."""
    return (hold.edge, *route_order(hold.route))


def encode(state: State) -> dict[str, Any]:
    """The JSON document for `state` ("holds" and "epoch" only when it has them)."""
    doc: dict[str, Any] = {
        "version": state.version,
        "edges": [
            {
                "name": e.name,
                "public_key": e.public_key.to_base64(),
                "endpoints": [str(x) for x in e.endpoints],
                "advertised": [{"route": str(a.route), "since": a.since} for a in e.advertised],
            }
            for e in state.edges
        ],
        "approvals": [{"edge": name, "route": str(route)} for name, route in state.approvals],
        "leases": [
            {
                "edge": name,
                "route": str(route),
                "version": lease.version,
                "expires": lease.expires,
                "signature": base64.b64encode(lease.signature).decode("ascii"),
            }
            for name, route, lease in state.leases
        ],
    }
    if state.holds:
        doc["holds"] = [
            {"edge": h.edge, "route": str(h.route), "since": h.since, "until": h.until}
            for h in state.holds
        ]
    if state.epoch:
        doc["epoch"] = state.epoch.hex()
    return doc


def decode(doc: object) -> State:
    """Parse and check a JSON document written by `encode` (or by the previous release).

    Raises:
        ValueError: naming the JSON path of the first problem and what is allowed.
    """
    if not isinstance(doc, dict) or set(doc) - _OPTIONAL_TOP_KEYS not in (
        _TOP_KEYS,
        _LEGACY_TOP_KEYS,
    ):
        raise ValueError(f"the top level must be an object with keys {_keys(_TOP_KEYS)}")
    version = _uint(doc["version"], "version")
    epoch = _epoch(doc["epoch"]) if "epoch" in doc else b""
    edges = tuple(
        sorted(
            (_edge(item, f"edges[{i}]", version) for i, item in enumerate(_list(doc, "edges"))),
            key=lambda e: e.name,
        )
    )
    _check_unique_edges(edges)
    advertised = {(e.name, a.route) for e in edges for a in e.advertised}
    approvals: list[tuple[EdgeName, Network]] = []
    for i, item in enumerate(_list(doc, "approvals") if "approvals" in doc else []):
        where = f"approvals[{i}]"
        pair = _pair(_object(item, where, _APPROVAL_KEYS), where, advertised)
        if pair in approvals:
            raise ValueError(f"{where}: route {pair[1]} of edge {pair[0]!r} is approved twice")
        approvals.append(pair)
    leases: list[tuple[EdgeName, Network, Lease]] = []
    leased: set[tuple[EdgeName, Network]] = set()
    for i, item in enumerate(_list(doc, "leases") if "leases" in doc else []):
        where = f"leases[{i}]"
        item = _object(item, where, _LEASE_KEYS)
        name, route = _pair(item, where, advertised)
        if (name, route) in leased:
            raise ValueError(f"{where}: route {route} of edge {name!r} has two leases")
        leased.add((name, route))
        lease_version = _uint(item["version"], f"{where}.version")
        if lease_version > version:
            raise ValueError(
                f"{where}.version: {lease_version} is above the state version {version}"
            )
        lease = Lease(
            version=lease_version,
            expires=_uint(item["expires"], f"{where}.expires"),
            signature=_signature(item["signature"], f"{where}.signature"),
        )
        leases.append((name, route, lease))
    holds: list[Hold] = []
    held: set[tuple[EdgeName, Network]] = set()
    for i, item in enumerate(_list(doc, "holds") if "holds" in doc else []):
        where = f"holds[{i}]"
        item = _object(item, where, _HOLD_KEYS)
        try:
            name = parse_edge_name(item["edge"])
        except ValueError as e:
            raise ValueError(f"{where}.edge: {e}") from None
        route = _route(item["route"], f"{where}.route")
        if (name, route) in advertised:
            raise ValueError(f"{where}: edge {name!r} advertises route {route}; no hold needed")
        if (name, route) in held:
            raise ValueError(f"{where}: route {route} of edge {name!r} is held twice")
        held.add((name, route))
        since = _uint(item["since"], f"{where}.since")
        if since > version:
            raise ValueError(f"{where}.since: {since} is above the state version {version}")
        holds.append(Hold(name, route, since, _uint(item["until"], f"{where}.until")))
    return State(
        version=version,
        edges=edges,
        approvals=tuple(sorted(approvals, key=pair_order)),
        leases=tuple(sorted(leases, key=pair_order)),
        holds=tuple(sorted(holds, key=hold_order)),
        epoch=epoch,
    )


def dumps(state: State) -> bytes:
    """The state as compact JSON (sorted keys), one line ending in a newline."""
    text = json.dumps(encode(state), sort_keys=True, separators=(",", ":"))
    return (text + "\n").encode("utf-8")


def loads(data: bytes) -> State:
    """Parse what `dumps` wrote.

    Raises:
        ValueError: not UTF-8 JSON, or `decode` refuses it.
    """
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not a JSON document ({e})") from None
    return decode(doc)


def _edge(doc: object, where: str, version: int) -> EdgeRecord:
    if isinstance(doc, dict) and set(doc) == _LEGACY_EDGE_KEYS:
        item: dict[str, Any] = doc
        # The previous release stored admitted routes only: advertised since the stored version.
        routes = _list(item, "routes", where)
        advertised = [
            Advertised(_route(r, f"{where}.routes[{j}]"), version) for j, r in enumerate(routes)
        ]
    else:
        item = _object(doc, where, _EDGE_KEYS)
        advertised = []
        for j, a in enumerate(_list(item, "advertised", where)):
            at = f"{where}.advertised[{j}]"
            a = _object(a, at, _ADVERTISED_KEYS)
            since = None if a["since"] is None else _uint(a["since"], f"{at}.since")
            if since is not None and since > version:
                raise ValueError(f"{at}.since: {since} is above the state version {version}")
            advertised.append(Advertised(_route(a["route"], f"{at}.route"), since))
    seen: set[Network] = set()
    for j, a in enumerate(advertised):
        if a.route in seen:
            raise ValueError(f"{where}: route {a.route} is advertised twice (entry {j})")
        seen.add(a.route)
    try:
        name = parse_edge_name(item["name"])
    except ValueError as e:
        raise ValueError(f"{where}.name: {e}") from None
    key = item["public_key"]
    if not isinstance(key, str):
        raise ValueError(f"{where}.public_key: {key!r} is not a base64 string")
    try:
        public_key = PublicKey.from_base64(key)
    except ValueError as e:
        raise ValueError(f"{where}.public_key: {e}") from None
    endpoints: list[Endpoint] = []
    for j, text in enumerate(_list(item, "endpoints", where)):
        try:
            endpoints.append(Endpoint.parse(text))
        except ValueError as e:
            raise ValueError(f"{where}.endpoints[{j}]: {e}") from None
    return EdgeRecord(name, public_key, tuple(endpoints), tuple(advertised))


def _check_unique_edges(edges: tuple[EdgeRecord, ...]) -> None:
    keys: dict[bytes, str] = {}
    for prev, e in zip((None, *edges), edges, strict=False):
        if prev is not None and prev.name == e.name:
            raise ValueError(f"edges: edge {e.name!r} appears twice")
        if e.public_key.raw in keys:
            raise ValueError(
                f"edges: edges {keys[e.public_key.raw]!r} and {e.name!r} have the same public key"
            )
        keys[e.public_key.raw] = e.name


def _pair(
    item: dict[str, Any], where: str, advertised: set[tuple[EdgeName, Network]]
) -> tuple[EdgeName, Network]:
    try:
        name = parse_edge_name(item["edge"])
    except ValueError as e:
        raise ValueError(f"{where}.edge: {e}") from None
    route = _route(item["route"], f"{where}.route")
    if (name, route) not in advertised:
        raise ValueError(f"{where}: edge {name!r} does not advertise route {route}")
    return name, route


def _route(text: object, where: str) -> Network:
    try:
        return parse_route(text)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _uint(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U64_MAX:
        raise ValueError(f"{where}: {value!r} is not an integer 0..2**64-1")
    return value


def _epoch(value: object) -> bytes:
    rule = f"{EPOCH_LEN * 2} hexadecimal digits"
    if not isinstance(value, str) or len(value) != EPOCH_LEN * 2:
        raise ValueError(f"epoch: {value!r} is not {rule}")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"epoch: {value!r} is not {rule}") from None


def _signature(value: object, where: str) -> bytes:
    rule = f"{SIGNATURE_LEN} bytes in standard base64"
    if not isinstance(value, str):
        raise ValueError(f"{where}: {value!r} is not a string; use {rule}")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}: {value!r} is not base64; use {rule}") from None
    if len(raw) != SIGNATURE_LEN:
        raise ValueError(f"{where}: {len(raw)} bytes; use {rule}")
    return raw


def _list(doc: dict[str, Any], key: str, where: str = "") -> list[Any]:
    value = doc[key]
    if not isinstance(value, list):
        raise ValueError(f"{where + '.' if where else ''}{key}: not a list")
    return value


def _object(item: object, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(item, dict) or set(item) != keys:
        raise ValueError(f"{where}: not an object with keys {_keys(keys)}")
    return item


def _keys(keys: set[str]) -> str:
    return ", ".join(sorted(keys))

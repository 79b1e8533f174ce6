"""The controller config: one frozen, validated `ControllerConfig` per process.

Owns the meaning of every key of the controller's TOML file and its defaults. Every
problem raises `isthmus.configfile.ConfigError` naming the dotted key, what was wrong
and what is allowed. Reading the file is the only I/O; `parse` checks a table alone.

Keys (the example file deploy/examples/controller.toml shows each):

    listen      required  "ip:port" or "[ipv6]:port" of the gRPC server; port 0 picks any free port
    state_dir   required  directory of the persisted state (state.json); created with mode 0700
    [[edges]]   optional  the edges allowed to register; default: none
      name        required  the edge's name (1-63 of a-z, 0-9, '-'); unique among edges
      public_key  required  the edge's public key, base64 as printed by 'isthmus keygen'; unique
      routes      required  the routes (CIDRs) this edge may advertise; may be empty; each listed
                            once; routes of different edges must not overlap

The registry does not rely on the last rule: it checks admitted routes for overlaps itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from isthmus.configfile import ConfigError, Table, check_keys, join, read_toml
from isthmus.configfile import domain as _domain
from isthmus.configfile import required as _required
from isthmus.endpoint import ENDPOINT_RULE, Endpoint
from isthmus.ids import NAME_RULE, EdgeName, parse_edge_name
from isthmus.keys import PublicKey
from isthmus.routemap import ROUTE_RULE, EdgeEntry, Network, first_conflict, parse_route

T = TypeVar("T")

LISTEN_RULE = (
    "'ip:port' or '[ipv6]:port' with a literal IP address and a port 0-65535 (0 = any free port)"
)
KEY_RULE = "a 32-byte Curve25519 public key in standard base64, as printed by 'isthmus keygen'"
STATE_DIR_RULE = "a directory path, e.g. /var/lib/isthmus-controller"
ROUTES_RULE = f"a list of routes, each {ROUTE_RULE}"
EDGE_RULE = "a table with name, public_key and routes ([[edges]])"

_TOP_KEYS = {"listen", "state_dir", "edges"}
_EDGE_KEYS = {"name", "public_key", "routes"}


@dataclass(frozen=True, slots=True)
class AllowedEdge:
    """An edge the config allows to register, with the routes it may own."""

    name: EdgeName
    public_key: PublicKey
    routes: tuple[Network, ...]


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """The whole validated controller config."""

    listen: Endpoint
    state_dir: Path
    edges: tuple[AllowedEdge, ...] = ()


def load(path: Path) -> ControllerConfig:
    """Read and validate a controller config file.

    Raises:
        ConfigError: unreadable file, invalid TOML, or any invalid key.
    """
    return parse(read_toml(path), source=str(path))


def parse(table: Table, source: str = "<config>") -> ControllerConfig:
    """Validate a parsed TOML table; `source` names it in messages that need a file.

    Raises:
        ConfigError: naming the dotted key, the problem and what is allowed.
    """
    check_keys(table, "", _TOP_KEYS)
    listen = _domain(
        "listen", _required(table, "", "listen", LISTEN_RULE), _listen, LISTEN_RULE, ENDPOINT_RULE
    )
    state_dir = _state_dir(table)
    raw_edges = table.get("edges", [])
    if not isinstance(raw_edges, list):
        raise ConfigError("edges", f"{raw_edges!r} is not a list", "[[edges]] tables")
    edges = tuple(_edge(t, f"edges[{i}]") for i, t in enumerate(raw_edges))
    _check_unique(edges)
    _check_disjoint(edges)
    return ControllerConfig(listen=listen, state_dir=state_dir, edges=edges)


def _listen(value: Any) -> Endpoint:
    return Endpoint.parse(value, allow_port_zero=True)


def _state_dir(table: Table) -> Path:
    value = _required(table, "", "state_dir", STATE_DIR_RULE)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("state_dir", f"{value!r} is not a non-empty string", STATE_DIR_RULE)
    return Path(value)


def _edge(entry: Any, where: str) -> AllowedEdge:
    if not isinstance(entry, dict):
        raise ConfigError(where, f"{entry!r} is not a table", EDGE_RULE)
    check_keys(entry, where, _EDGE_KEYS)
    name = _domain(
        join(where, "name"), _required(entry, where, "name", NAME_RULE), parse_edge_name, NAME_RULE
    )
    key = _domain(
        join(where, "public_key"),
        _required(entry, where, "public_key", KEY_RULE),
        _public_key,
        KEY_RULE,
    )
    raw_routes = _required(entry, where, "routes", ROUTES_RULE)
    if not isinstance(raw_routes, list):
        raise ConfigError(join(where, "routes"), f"{raw_routes!r} is not a list", ROUTES_RULE)
    routes: list[Network] = []
    for i, text in enumerate(raw_routes):
        at = f"{where}.routes[{i}]"
        net = _domain(at, text, parse_route, ROUTE_RULE)
        if net in routes:
            first = routes.index(net)
            raise ConfigError(
                at, f"{net} is listed twice (also {where}.routes[{first}])", "each route once"
            )
        routes.append(net)
    return AllowedEdge(name=name, public_key=key, routes=tuple(routes))


def _public_key(value: Any) -> PublicKey:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return PublicKey.from_base64(value)


def _check_unique(edges: tuple[AllowedEdge, ...]) -> None:
    names: dict[str, int] = {}
    keys: dict[bytes, int] = {}
    for i, e in enumerate(edges):
        if e.name in names:
            raise ConfigError(
                f"edges[{i}].name",
                f"{e.name!r} is already the name of edges[{names[e.name]}]",
                "a name unique among edges",
            )
        names[e.name] = i
        if e.public_key.raw in keys:
            j = keys[e.public_key.raw]
            raise ConfigError(
                f"edges[{i}].public_key",
                f"edge {e.name!r} has the same key as edges[{j}] ({edges[j].name!r})",
                "a key unique among edges",
            )
        keys[e.public_key.raw] = i


def _check_disjoint(edges: tuple[AllowedEdge, ...]) -> None:
    index = {e.name: i for i, e in enumerate(edges)}
    entries = [EdgeEntry(e.name, e.public_key, (), e.routes) for e in edges]
    conflict = first_conflict((r, entry) for entry in entries for r in entry.routes)
    if conflict is None:
        return
    (r1, e1), (r2, e2) = sorted(conflict, key=lambda p: index[p[1].name])
    i1, i2 = index[e1.name], index[e2.name]
    k1 = f"edges[{i1}].routes[{edges[i1].routes.index(r1)}]"
    k2 = f"edges[{i2}].routes[{edges[i2].routes.index(r2)}]"
    raise ConfigError(
        k2,
        f"route {r2} of edge {e2.name!r} overlaps route {r1} of edge {e1.name!r} ({k1})",
        "routes of different edges that do not overlap",
    )

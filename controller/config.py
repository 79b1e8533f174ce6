"""The controller config: one frozen, validated `ControllerConfig` per process.

Owns the meaning of every key of the controller's TOML file and its defaults. Every
problem raises `isthmus.configfile.ConfigError` naming the dotted key, what was wrong
and what is allowed. Reading the file is the only I/O; `parse` checks a table alone.

Keys (the example file deploy/examples/controller.toml shows each):

    listen            required  "ip:port" or "[ipv6]:port" of the gRPC server; port 0 picks any
                                free port
    state_dir         required  directory of the persisted state (state.json); created mode 0700
    signing_key_file  required  the controller's Ed25519 key ('isthmus keygen --controller')
    admin_socket      optional  the Admin service's unix socket; default <state_dir>/admin.sock
    lease_ttl         optional  seconds a route lease lasts, 300-2592000; default 86400
    metrics           optional  "ip:port" serving Prometheus metrics at /metrics (port 0 = any
                                free port); default "127.0.0.1:9586"; "" or "off" serves none
    log_format        optional  "kv" (key=value lines, the default) or "json" (one object a line)
    addresses         optional  the controller's IP addresses edges dial, which no route may
                                contain (admission's overlay check, with the listen IP); 1-64
                                distinct literal IPs, none unspecified; default: none, or when
                                listen is a wildcard (0.0.0.0 or ::) every address of the
                                host's interfaces, read at start and reload (controller.__main__)
    [store]           optional  where the state lives
      kind              optional  "file" (default) or "etcd"
      endpoints         etcd: required, others: refused; 1-16 distinct "http://host:port",
                                or all "https://host:port" (TLS: needs the three files below)
      prefix            etcd only; the key prefix, default "/isthmus/"; starts and ends with '/'
      ca_file           etcd only; all three or none, required with https:// endpoints and
      cert_file           refused with http:// ones: the PEM CA that signed the members'
      key_file            certificates, this replica's PEM client certificate and its key
    [admission]       optional  what happens to overlapping and reserved routes
      more_specific     optional  "pending" (default) or "refuse"
      less_specific     optional  "pending" (default) or "refuse"
      allow_reserved    optional  reserved routes allowed anyway, each listed exactly; default []
      hold_time         optional  seconds an admitted route an edge withdrew (or lost with a key
                                change) keeps its place for the edge's name; 0-86400, default 600
    [limits]          optional  what one source address or one edge may ask (controller.bounds)
    [audit]           optional  how much of the audit log is kept (controller.bounds)
    [[edges]]         optional  the edges allowed to register; default: none
      name              required  the edge's name (1-63 of a-z, 0-9, '-'); unique among edges
      public_key        required  the edge's public key, base64 as printed by 'isthmus keygen';
                                  unique
      routes            required  the routes (CIDRs) this edge may advertise, or subnets of
                                  them; may be empty; each listed once. Routes of different
                                  edges may overlap: admission decides at registration.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from controller.admission import DEFAULT_HOLD_TIME, Policy, RouteState, reserved_reason
from controller.bounds import AUDIT_KEYS, LIMIT_KEYS, AuditConfig, Limits, parse_audit, parse_limits
from isthmus.configfile import ConfigError, Table, check_keys, join, read_toml
from isthmus.configfile import domain as _domain
from isthmus.configfile import required as _required
from isthmus.endpoint import ENDPOINT_RULE, Endpoint, IPAddress
from isthmus.ids import NAME_RULE, EdgeName, parse_edge_name
from isthmus.keys import PublicKey
from isthmus.logfmt import FORMAT_RULE, LogFormat, parse_format
from isthmus.routemap import ROUTE_RULE, Network, parse_route
from isthmus_io.metricsserver import CONTROLLER_DEFAULT, METRICS_RULE
from isthmus_io.metricsserver import parse_listen as parse_metrics

T = TypeVar("T")

LISTEN_RULE = (
    "'ip:port' or '[ipv6]:port' with a literal IP address and a port 0-65535 (0 = any free port)"
)
KEY_RULE = "a 32-byte Curve25519 public key in standard base64, as printed by 'isthmus keygen'"
STATE_DIR_RULE = "a directory path, e.g. /var/lib/isthmus-controller"
SIGNING_KEY_RULE = (
    "a file path, e.g. /var/lib/isthmus-controller/controller.key, "
    "made with 'isthmus keygen --controller'"
)
ADMIN_SOCKET_RULE = "a unix socket path, e.g. /run/isthmus-controller/admin.sock"
ROUTES_RULE = f"a list of routes, each {ROUTE_RULE}"
EDGE_RULE = "a table with name, public_key and routes ([[edges]])"
LEASE_TTL_MIN = 300
LEASE_TTL_MAX = 2_592_000
LEASE_TTL_RULE = f"an integer number of seconds {LEASE_TTL_MIN}-{LEASE_TTL_MAX} (5 min - 30 days)"
STORE_KIND_RULE = '"file" or "etcd"'
MAX_STORE_ENDPOINTS = 16
STORE_ENDPOINT_RULE = (
    "'http://host:port' or 'https://host:port' with a host name or IP address ([ipv6] in "
    "brackets) and a port 1-65535; one scheme for every endpoint"
)
STORE_ENDPOINTS_RULE = (
    f"a list of 1-{MAX_STORE_ENDPOINTS} distinct etcd endpoints, each {STORE_ENDPOINT_RULE}"
)
STORE_TLS_FILES = ("ca_file", "cert_file", "key_file")
STORE_TLS_RULE = (
    "ca_file, cert_file and key_file all three (with https:// endpoints) or none (with "
    "http:// endpoints)"
)
STORE_TLS_FILE_RULE = (
    "a PEM file path: ca_file the CA of the etcd members' certificates, cert_file this "
    "replica's client certificate, key_file its private key"
)
STORE_PREFIX_RULE = "a key prefix of printable ASCII without spaces, starting and ending with '/'"
POLICY_RULE = '"pending" or "refuse"'
HOLD_TIME_MAX = 86_400
HOLD_TIME_RULE = f"an integer number of seconds 0-{HOLD_TIME_MAX} (0: no hold)"
MAX_ADDRESSES = 64
ADDRESS_RULE = "a literal IP address, not unspecified (0.0.0.0 or ::)"
ADDRESSES_RULE = f"a list of 1-{MAX_ADDRESSES} distinct IP addresses, each {ADDRESS_RULE}"
ALLOW_RESERVED_RULE = (
    "a list of reserved routes (0.0.0.0/0, ::/0, or routes overlapping loopback, link-local, "
    "multicast or 0.0.0.0/8), each listed once"
)

DEFAULT_LEASE_TTL = 86_400
DEFAULT_METRICS = Endpoint.parse(CONTROLLER_DEFAULT)
DEFAULT_STORE_PREFIX = "/isthmus/"
ADMIN_SOCKET_NAME = "admin.sock"

_TOP_KEYS = {
    "listen",
    "state_dir",
    "signing_key_file",
    "admin_socket",
    "lease_ttl",
    "metrics",
    "log_format",
    "store",
    "admission",
    "limits",
    "audit",
    "edges",
    "addresses",
}
_STORE_KEYS = {"kind", "endpoints", "prefix", *STORE_TLS_FILES}
_ADMISSION_KEYS = {"more_specific", "less_specific", "allow_reserved", "hold_time"}
_EDGE_KEYS = {"name", "public_key", "routes"}
_POLICIES = {"pending": RouteState.PENDING, "refuse": RouteState.REFUSED}
_HOST_RE = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$")
_PREFIX_RE = re.compile(r"^/([!-~]*/)?$")


@dataclass(frozen=True, slots=True)
class AllowedEdge:
    """An edge the config allows to register, with the routes it may own."""

    name: EdgeName
    public_key: PublicKey
    routes: tuple[Network, ...]


@dataclass(frozen=True, slots=True)
class StoreTLS:
    """The files of TLS to etcd ([store] ca_file, cert_file, key_file)."""

    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where the controller keeps its state ([store])."""

    kind: Literal["file", "etcd"] = "file"
    endpoints: tuple[str, ...] = ()  # etcd only: "http://host:port" or "https://host:port"
    prefix: str = DEFAULT_STORE_PREFIX  # etcd only
    tls: StoreTLS | None = None  # etcd only, with https:// endpoints


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """The whole validated controller config."""

    listen: Endpoint
    state_dir: Path
    signing_key_file: Path
    admin_socket: Path
    edges: tuple[AllowedEdge, ...] = ()
    lease_ttl: int = DEFAULT_LEASE_TTL
    store: StoreConfig = field(default_factory=StoreConfig)
    admission: Policy = field(default_factory=Policy)
    metrics: Endpoint | None = DEFAULT_METRICS  # None: no metrics served
    log_format: LogFormat = "kv"
    addresses: tuple[IPAddress, ...] = ()  # the controller's addresses edges dial
    limits: Limits = field(default_factory=Limits)
    audit: AuditConfig = field(default_factory=AuditConfig)


def overlay_addresses(config: ControllerConfig) -> tuple[IPAddress, ...]:
    """The controller's addresses no route may contain: the listen IP unless it is a
    wildcard, and `addresses` (which the process root fills from the host's interfaces
    for a wildcard listen when the config names none)."""
    listen = () if config.listen.ip.is_unspecified else (config.listen.ip,)
    return tuple(dict.fromkeys((*listen, *config.addresses)))


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
    state_dir = _path(table, "state_dir", STATE_DIR_RULE)
    signing_key_file = _path(table, "signing_key_file", SIGNING_KEY_RULE)
    admin_socket = (
        _path(table, "admin_socket", ADMIN_SOCKET_RULE)
        if "admin_socket" in table
        else state_dir / ADMIN_SOCKET_NAME
    )
    lease_ttl = _lease_ttl(table)
    metrics = _domain(
        "metrics", table.get("metrics", CONTROLLER_DEFAULT), parse_metrics, METRICS_RULE
    )
    log_format = _domain("log_format", table.get("log_format", "kv"), parse_format, FORMAT_RULE)
    store = _store(table.get("store", {}))
    admission = _admission(table.get("admission", {}))
    limits = parse_limits(_table(table.get("limits", {}), "limits", LIMIT_KEYS))
    audit = parse_audit(_table(table.get("audit", {}), "audit", AUDIT_KEYS))
    raw_edges = table.get("edges", [])
    if not isinstance(raw_edges, list):
        raise ConfigError("edges", f"{raw_edges!r} is not a list", "[[edges]] tables")
    edges = tuple(_edge(t, f"edges[{i}]") for i, t in enumerate(raw_edges))
    _check_unique(edges)
    addresses = _addresses(table["addresses"]) if "addresses" in table else ()
    return ControllerConfig(
        listen=listen,
        state_dir=state_dir,
        signing_key_file=signing_key_file,
        admin_socket=admin_socket,
        edges=edges,
        lease_ttl=lease_ttl,
        store=store,
        admission=admission,
        metrics=metrics,
        log_format=log_format,
        addresses=addresses,
        limits=limits,
        audit=audit,
    )


def _listen(value: Any) -> Endpoint:
    return Endpoint.parse(value, allow_port_zero=True)


def _addresses(raw: Any) -> tuple[IPAddress, ...]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_ADDRESSES:
        problem = (
            f"{raw!r} is not a list" if not isinstance(raw, list) else f"has {len(raw)} entries"
        )
        raise ConfigError("addresses", problem, ADDRESSES_RULE)
    out: list[IPAddress] = []
    for i, text in enumerate(raw):
        at = f"addresses[{i}]"
        ip = _domain(at, text, _address, ADDRESS_RULE)
        if ip in out:
            raise ConfigError(
                at, f"{ip} is listed twice (also addresses[{out.index(ip)}])", "each address once"
            )
        out.append(ip)
    return tuple(out)


def _address(value: Any) -> IPAddress:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    if ip.is_unspecified:
        raise ValueError(f"{value!r} is unspecified")
    return ip


def _path(table: Table, key: str, rule: str, where: str = "") -> Path:
    value = _required(table, where, key, rule)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(join(where, key), f"{value!r} is not a non-empty string", rule)
    return Path(value)


def _lease_ttl(table: Table) -> int:
    value = table.get("lease_ttl", DEFAULT_LEASE_TTL)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError("lease_ttl", f"{value!r} is not an integer", LEASE_TTL_RULE)
    if not LEASE_TTL_MIN <= value <= LEASE_TTL_MAX:
        raise ConfigError("lease_ttl", f"{value} is out of range", LEASE_TTL_RULE)
    return value


def _table(value: Any, key: str, known: set[str]) -> Table:
    if not isinstance(value, dict):
        raise ConfigError(key, f"{value!r} is not a table", f"a [{key}] table")
    check_keys(value, key, known)
    return value


def _store(value: Any) -> StoreConfig:
    table = _table(value, "store", _STORE_KEYS)
    kind = table.get("kind", "file")
    if kind == "file":
        for key in ("endpoints", "prefix", *STORE_TLS_FILES):
            if key in table:
                raise ConfigError(f"store.{key}", 'is only used with kind = "etcd"', "leave it out")
        return StoreConfig()
    if kind != "etcd":
        raise ConfigError("store.kind", f"{kind!r} is not a store kind", STORE_KIND_RULE)
    raw = _required(table, "store", "endpoints", STORE_ENDPOINTS_RULE)
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_STORE_ENDPOINTS:
        problem = (
            f"{raw!r} is not a list" if not isinstance(raw, list) else f"has {len(raw)} entries"
        )
        raise ConfigError("store.endpoints", problem, STORE_ENDPOINTS_RULE)
    endpoints: list[str] = []
    for i, text in enumerate(raw):
        at = f"store.endpoints[{i}]"
        url = _domain(at, text, _store_endpoint, STORE_ENDPOINT_RULE)
        if url in endpoints:
            raise ConfigError(
                at,
                f"{url} is listed twice (also store.endpoints[{endpoints.index(url)}])",
                "each endpoint once",
            )
        if endpoints and url.split("://")[0] != endpoints[0].split("://")[0]:
            raise ConfigError(
                at,
                f"{url} does not use the scheme of store.endpoints[0] ({endpoints[0]})",
                "one scheme for every endpoint",
            )
        endpoints.append(url)
    prefix = table.get("prefix", DEFAULT_STORE_PREFIX)
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise ConfigError("store.prefix", f"{prefix!r} is not a key prefix", STORE_PREFIX_RULE)
    tls = _store_tls(table, https=endpoints[0].startswith("https://"))
    return StoreConfig(kind="etcd", endpoints=tuple(endpoints), prefix=prefix, tls=tls)


def _store_tls(table: Table, https: bool) -> StoreTLS | None:
    given = [key for key in STORE_TLS_FILES if key in table]
    if not https:
        if given:
            raise ConfigError(
                f"store.{given[0]}", "is set but store.endpoints are http://", STORE_TLS_RULE
            )
        return None
    for key in STORE_TLS_FILES:
        if key not in table:
            why = "https:// endpoints need it" if not given else f"{given[0]} is set"
            raise ConfigError(f"store.{key}", f"is missing ({why})", STORE_TLS_RULE)
    paths = [_path(table, key, STORE_TLS_FILE_RULE, "store") for key in STORE_TLS_FILES]
    return StoreTLS(*paths)


def _store_endpoint(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    scheme = next((s for s in ("http://", "https://") if value.startswith(s)), None)
    if scheme is None:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    host, sep, port = value.removeprefix(scheme).rpartition(":")
    if not sep or not _HOST_RE.match(host) or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not {scheme}host:port")
    return value


def _admission(value: Any) -> Policy:
    table = _table(value, "admission", _ADMISSION_KEYS)
    more = _domain(
        "admission.more_specific", table.get("more_specific", "pending"), _policy, POLICY_RULE
    )
    less = _domain(
        "admission.less_specific", table.get("less_specific", "pending"), _policy, POLICY_RULE
    )
    raw = table.get("allow_reserved", [])
    if not isinstance(raw, list):
        raise ConfigError("admission.allow_reserved", f"{raw!r} is not a list", ALLOW_RESERVED_RULE)
    routes: list[Network] = []
    for i, text in enumerate(raw):
        at = f"admission.allow_reserved[{i}]"
        net = _domain(at, text, parse_route, ROUTE_RULE)
        if reserved_reason(net) is None:
            raise ConfigError(at, f"{net} is not reserved", ALLOW_RESERVED_RULE)
        if net in routes:
            raise ConfigError(
                at,
                f"{net} is listed twice (also admission.allow_reserved[{routes.index(net)}])",
                "each route once",
            )
        routes.append(net)
    hold_time = table.get("hold_time", DEFAULT_HOLD_TIME)
    if isinstance(hold_time, bool) or not isinstance(hold_time, int):
        raise ConfigError("admission.hold_time", f"{hold_time!r} is not an integer", HOLD_TIME_RULE)
    if not 0 <= hold_time <= HOLD_TIME_MAX:
        raise ConfigError("admission.hold_time", f"{hold_time} is out of range", HOLD_TIME_RULE)
    return Policy(
        more_specific=more, less_specific=less, allow_reserved=tuple(routes), hold_time=hold_time
    )


def _policy(value: Any) -> RouteState:
    if not isinstance(value, str) or value not in _POLICIES:
        raise ValueError(f"{value!r} is not a policy")
    return _POLICIES[value]


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

"""The edge config: one frozen, validated `EdgeConfig` per process.

Owns the meaning of every key of the edge's TOML file and its defaults. Every problem
raises `isthmus.configfile.ConfigError` naming the dotted key, what was wrong and what
is allowed. Reading the file is the only I/O; `parse` checks a table alone.

Keys (the example file deploy/examples/edge.toml shows each):

    name              required  this edge's name, as listed in the controller config
    private_key_file  required  path of the private key written by 'isthmus keygen' (mode 0600)
    controller        required  "host:port" of the controller's gRPC server, or a list of 1-8
                                of them (replicas of one controller, tried in turn)
    controller_public_key
                      required  the controller's Ed25519 public key, base64, as printed by
                                `isthmus keygen --controller`; it signs every route lease
    listen            required  "ip:port" the UDP socket binds; port 0 picks any free port
    endpoint          optional  "ip:port" peers send to (advertised to the controller); a
                                unicast address (isthmus.endpoint.UNICAST_RULE). Omitted: the
                                edge is behind NAT, advertises none, starts sessions to every
                                peer itself and keeps its NAT mapping open (docs/protocol.md "NAT")
    routes            required  the routes (CIDRs) this edge advertises; may be empty; each once
    state_dir         optional  default /var/lib/isthmus; holds the cached map (map.pb)
    admin_socket      optional  default <state_dir>/admin.sock; `isthmus status` connects here
    metrics           optional  "ip:port" serving Prometheus metrics at /metrics (port 0 = any
                                free port); default "127.0.0.1:9587"; "" or "off" serves none
    log_format        optional  "kv" (key=value lines, the default) or "json" (one object a line)
    masquerade        optional  default []: local ranges (CIDRs, each once); a packet from the
                                tunnel to one of them (before or after DNAT) leaves with this
                                edge's address as its source (edge.masquerade)
    [tun]             required
      name            optional  default "isthmus0"; 1-15 characters of A-Z a-z 0-9 _ . -
      address         required  this edge's IPv4 address on the TUN, CIDR form
      mtu             optional  default 1420 (= 1500 - 48 IPv6+UDP - 32 isthmus); 576-9000
    [tunnel]          optional
      persistent_keepalive  optional  default 0 (off), or 25 when `endpoint` is omitted; seconds,
                            0-3600: send a keepalive to each peer whenever nothing was sent
                            to it for this long (keeps NAT mappings open)
      rekey_after_time      optional  default 120; seconds, 1-120; lower only for tests
      reject_after_time     optional  default 180; seconds, up to 180 and more than
                            rekey_after_time + 5.333; lower only for tests
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from edge.tunnel import Timers
from edge.tunnel.wire import MAX_TUN_MTU
from isthmus.configfile import ConfigError, Table, check_keys, get_int, read_toml
from isthmus.configfile import domain as _domain
from isthmus.configfile import required as _required
from isthmus.endpoint import ENDPOINT_RULE, UNICAST_RULE, Endpoint
from isthmus.ids import NAME_RULE, EdgeName, parse_edge_name
from isthmus.logfmt import FORMAT_RULE, LogFormat, parse_format
from isthmus.routemap import ROUTE_RULE, Network, overlaps, parse_route
from isthmus.signing import ControllerPublicKey
from isthmus_io.metricsserver import EDGE_DEFAULT, METRICS_RULE
from isthmus_io.metricsserver import parse_listen as parse_metrics

T = TypeVar("T")

DEFAULT_STATE_DIR = Path("/var/lib/isthmus")
DEFAULT_TUN_NAME = "isthmus0"
DEFAULT_MTU = 1420
MTU_MIN, MTU_MAX = 576, MAX_TUN_MTU  # above it, peers drop our datagrams as oversize
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
DEFAULT_METRICS = Endpoint.parse(EDGE_DEFAULT)
# An edge behind NAT (no endpoint) keeps its mapping open by default: 25 s is WireGuard's
# advice, below the 30 s UDP timeout of the strictest common NATs.
NAT_PERSISTENT_KEEPALIVE = 25

LISTEN_RULE = (
    "'ip:port' or '[ipv6]:port' with a literal IP address and a port 0-65535 (0 = any free port)"
)
ENDPOINT_USE = f"{ENDPOINT_RULE}, with {UNICAST_RULE}"
CONTROLLER_RULE = "'host:port' or '[ipv6]:port' with a host name or IP address and a port 1-65535"
MAX_CONTROLLERS = 8
CONTROLLERS_RULE = f"{CONTROLLER_RULE}, or a list of 1-{MAX_CONTROLLERS} such addresses, each once"
CONTROLLER_KEY_RULE = (
    "the controller's Ed25519 public key in base64 (44 characters), "
    "as printed by 'isthmus keygen --controller'"
)
PATH_RULE = "a non-empty path"
ROUTES_RULE = f"a list of routes: {ROUTE_RULE}"
MASQUERADE_RULE = f"a list of local ranges, none overlapping another: {ROUTE_RULE}"
TUN_NAME_RULE = "1-15 characters of A-Z, a-z, 0-9, '_', '.' and '-'"
TUN_ADDRESS_RULE = "an IPv4 address with a prefix length, e.g. 10.244.255.254/32"
TUN_RULE = "a table with address and optionally name and mtu ([tun])"

_TOP_KEYS = {
    "name",
    "private_key_file",
    "controller",
    "controller_public_key",
    "listen",
    "endpoint",
    "routes",
    "state_dir",
    "admin_socket",
    "metrics",
    "log_format",
    "tun",
    "tunnel",
    "masquerade",
}
_TUN_KEYS = {"name", "address", "mtu"}
_TUNNEL_KEYS = {"persistent_keepalive", "rekey_after_time", "reject_after_time"}
TUNNEL_RULE = "a table with persistent_keepalive, rekey_after_time, reject_after_time ([tunnel])"
_TUN_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


@dataclass(frozen=True, slots=True)
class TunConfig:
    """The TUN device this edge creates."""

    name: str
    address: ipaddress.IPv4Interface
    mtu: int = DEFAULT_MTU


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """The whole validated edge config."""

    name: EdgeName
    private_key_file: Path
    controllers: tuple[str, ...]  # "host:port" as grpc takes it; tried in this order
    controller_public_key: ControllerPublicKey
    listen: Endpoint
    endpoint: Endpoint | None  # None: behind NAT, peers learn it from its packets
    routes: tuple[Network, ...]
    tun: TunConfig
    state_dir: Path = DEFAULT_STATE_DIR
    admin_socket: Path = DEFAULT_STATE_DIR / "admin.sock"
    timers: Timers = field(default_factory=Timers)
    metrics: Endpoint | None = DEFAULT_METRICS  # None: no metrics served
    log_format: LogFormat = "kv"
    masquerade: tuple[Network, ...] = ()  # local ranges masqueraded for tunnelled packets


def load(path: Path | str) -> EdgeConfig:
    """Read and validate an edge config file.

    Raises:
        ConfigError: unreadable file, invalid TOML, or any invalid key.
    """
    return parse(read_toml(Path(path)))


def parse(table: Table) -> EdgeConfig:
    """Validate a parsed TOML table.

    Raises:
        ConfigError: naming the dotted key, the problem and what is allowed.
    """
    check_keys(table, "", _TOP_KEYS)
    name = _domain("name", _required(table, "", "name", NAME_RULE), parse_edge_name, NAME_RULE)
    private_key_file = _path(table, "private_key_file", None)
    controllers = _controllers(_required(table, "", "controller", CONTROLLERS_RULE))
    controller_public_key = _domain(
        "controller_public_key",
        _required(table, "", "controller_public_key", CONTROLLER_KEY_RULE),
        _controller_key,
        CONTROLLER_KEY_RULE,
    )
    listen = _domain(
        "listen", _required(table, "", "listen", LISTEN_RULE), _listen, LISTEN_RULE, ENDPOINT_RULE
    )
    endpoint = (
        _domain("endpoint", table["endpoint"], _endpoint, ENDPOINT_USE, ENDPOINT_RULE)
        if "endpoint" in table
        else None
    )
    routes = _routes(table)
    masquerade = _masquerade(table.get("masquerade", []))
    tun = _tun(_required(table, "", "tun", TUN_RULE))
    state_dir = _path(table, "state_dir", DEFAULT_STATE_DIR)
    admin_socket = _path(table, "admin_socket", state_dir / "admin.sock")
    if len(bytes(admin_socket)) > MAX_SOCKET_PATH:
        raise ConfigError(
            "admin_socket" if "admin_socket" in table else "state_dir",
            f"the admin socket path {str(admin_socket)!r} is {len(bytes(admin_socket))} bytes long",
            f"a socket path of at most {MAX_SOCKET_PATH} bytes",
        )
    timers = _tunnel(table.get("tunnel", {}), behind_nat=endpoint is None)
    metrics = _domain("metrics", table.get("metrics", EDGE_DEFAULT), parse_metrics, METRICS_RULE)
    log_format = _domain("log_format", table.get("log_format", "kv"), parse_format, FORMAT_RULE)
    return EdgeConfig(
        name=name,
        private_key_file=private_key_file,
        controllers=controllers,
        controller_public_key=controller_public_key,
        listen=listen,
        endpoint=endpoint,
        routes=routes,
        tun=tun,
        state_dir=state_dir,
        admin_socket=admin_socket,
        timers=timers,
        metrics=metrics,
        log_format=log_format,
        masquerade=masquerade,
    )


def _tunnel(value: Any, *, behind_nat: bool) -> Timers:
    """The `[tunnel]` table: WireGuard's timers unless a test lowers them; behind NAT the
    persistent keepalive is on unless set."""
    if not isinstance(value, dict):
        raise ConfigError("tunnel", f"{value!r} is not a table", TUNNEL_RULE)
    check_keys(value, "tunnel", _TUNNEL_KEYS)
    defaults = Timers()
    default_keepalive = NAT_PERSISTENT_KEEPALIVE if behind_nat else 0
    keepalive = get_int(value, "tunnel", "persistent_keepalive", 0, 3600, default_keepalive)
    rekey = get_int(value, "tunnel", "rekey_after_time", 1, 120, int(defaults.rekey_after_time))
    reject = get_int(value, "tunnel", "reject_after_time", 1, 180, int(defaults.reject_after_time))
    try:
        return Timers(
            persistent_keepalive=float(keepalive),
            rekey_after_time=float(rekey),
            reject_after_time=float(reject),
        )
    except ValueError as e:
        raise ConfigError("tunnel.reject_after_time", str(e), "see [tunnel] in edge.toml") from None


def _controllers(value: Any) -> tuple[str, ...]:
    """`controller`: one address or a list of 1-8 distinct ones."""
    if isinstance(value, str):
        return (_domain("controller", value, _controller, CONTROLLER_RULE),)
    if not isinstance(value, list):
        raise ConfigError("controller", f"{value!r} is not a string or a list", CONTROLLERS_RULE)
    if not 1 <= len(value) <= MAX_CONTROLLERS:
        raise ConfigError(
            "controller", f"lists {len(value)} addresses", f"1-{MAX_CONTROLLERS} addresses"
        )
    out: list[str] = []
    for i, item in enumerate(value):
        at = f"controller[{i}]"
        target = _domain(at, item, _controller, CONTROLLER_RULE)
        if target in out:
            raise ConfigError(
                at,
                f"{target} is listed twice (also controller[{out.index(target)}])",
                "each address once",
            )
        out.append(target)
    return tuple(out)


def _controller_key(value: Any) -> ControllerPublicKey:
    # The problem is said here, not by ControllerPublicKey, so the message is the same
    # whatever the parser's wording; what is allowed (and where to get it) follows.
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    try:
        key = ControllerPublicKey.from_base64(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a base64 Ed25519 public key") from None
    try:
        key.x25519()  # the auth key exchange needs it; refuse a bad key now, not per call
    except ValueError:
        raise ValueError(
            f"{value!r} is not a valid Ed25519 public key (not a curve point)"
        ) from None
    return key


def _controller(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{value!r} is not a host:port address") from None
    elif not sep or not _HOST_RE.match(host):
        raise ValueError(f"{value!r} is not a host:port address")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not a host:port address")
    return value


def _listen(value: Any) -> Endpoint:
    return Endpoint.parse(value, allow_port_zero=True)


def _endpoint(value: Any) -> Endpoint:
    ep = Endpoint.parse(value)
    if ep.ip.is_unspecified:
        raise ValueError(f"{value!r} is an unspecified address peers cannot send to")
    return ep.check_unicast()


def _routes(table: Table) -> tuple[Network, ...]:
    raw = _required(table, "", "routes", ROUTES_RULE)
    if not isinstance(raw, list):
        raise ConfigError("routes", f"{raw!r} is not a list", ROUTES_RULE)
    routes: list[Network] = []
    for i, text in enumerate(raw):
        at = f"routes[{i}]"
        net = _domain(at, text, parse_route, ROUTE_RULE)
        if net in routes:
            raise ConfigError(
                at, f"{net} is listed twice (also routes[{routes.index(net)}])", "each route once"
            )
        routes.append(net)
    return tuple(routes)


def _masquerade(raw: Any) -> tuple[Network, ...]:
    """`masquerade`: local ranges, each once; none may overlap another (one rule each)."""
    if not isinstance(raw, list):
        raise ConfigError("masquerade", f"{raw!r} is not a list", MASQUERADE_RULE)
    ranges: list[Network] = []
    for i, text in enumerate(raw):
        at = f"masquerade[{i}]"
        net = _domain(at, text, parse_route, ROUTE_RULE)
        for j, other in enumerate(ranges):
            if overlaps(net, other):
                what = "is listed twice" if net == other else f"overlaps {other}"
                raise ConfigError(
                    at, f"{net} {what} (masquerade[{j}])", "each range once, none overlapping"
                )
        ranges.append(net)
    return tuple(ranges)


def _tun(value: Any) -> TunConfig:
    if not isinstance(value, dict):
        raise ConfigError("tun", f"{value!r} is not a table", TUN_RULE)
    check_keys(value, "tun", _TUN_KEYS)
    name = value.get("name", DEFAULT_TUN_NAME)
    if not isinstance(name, str) or not _TUN_NAME_RE.match(name) or name in (".", ".."):
        raise ConfigError("tun.name", f"{name!r} is not a valid interface name", TUN_NAME_RULE)
    address = _domain(
        "tun.address",
        _required(value, "tun", "address", TUN_ADDRESS_RULE),
        _tun_address,
        TUN_ADDRESS_RULE,
    )
    mtu = get_int(value, "tun", "mtu", MTU_MIN, MTU_MAX, DEFAULT_MTU)
    return TunConfig(name=name, address=address, mtu=mtu)


def _tun_address(value: Any) -> ipaddress.IPv4Interface:
    if not isinstance(value, str) or "/" not in value:
        raise ValueError(f"{value!r} is not an IPv4 address with a prefix length")
    try:
        return ipaddress.IPv4Interface(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address with a prefix length") from None


def _path(table: Table, key: str, default: Path | None) -> Path:
    if key not in table:
        if default is None:
            raise ConfigError(key, "is missing", PATH_RULE)
        return default
    value = table[key]
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise ConfigError(key, f"{value!r} is not a non-empty path", PATH_RULE)
    return Path(value)

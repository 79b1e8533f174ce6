"""Bounded fuzzing of every decoder at a trust boundary (reliability.md S25).

What each side may raise on hostile input, and nothing else:
- UDP: the wire decoders raise only `MalformedPacket`; `Tunnel.outside` and
  `Tunnel.outside_in_place` never raise, whatever the bytes and whatever the source
  address, and count every datagram they refuse as exactly one drop.
- gRPC: `FromString` raises only protobuf's `DecodeError`; every `isthmus.convert`
  `*_from_pb` only `WireError`; the edge's handling of an update (convert, patch a delta
  onto the map in use, verify the leases: edge.control `_on_update` without its I/O) only
  `WireError`, `MapError` or `LeaseError`.
- Config: `edge.config` and `controller.config` raise only `ConfigError`, for any text
  in a file (`load`) and for any TOML-shaped table (`parse`).
Complements test_wire (round trips, truncations), test_convert (mutated good maps) and
test_tunnel (bytes from a known peer's address). Hypothesis example counts are bounded so
the module runs in well under 30 s.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller import config as controller_config
from edge import config as edge_config
from edge.leases import LeaseError, verify_leases
from edge.tunnel import wire
from edge.tunnel.wire import MalformedPacket
from isthmus.configfile import ConfigError
from isthmus.convert import (
    WireError,
    map_from_pb,
    map_to_pb,
    registration_from_pb,
    update_from_pb,
)
from isthmus.mapdelta import MapDelta, patch
from isthmus.routemap import MapError
from isthmus.signing import ControllerKey
from isthmus.v1 import isthmus_pb2 as pb
from tests.unit.test_tunnel import ADDR, Net, ipv4

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DECODERS: tuple[Callable[[bytes], object], ...] = (
    wire.message_type,
    wire.decode_initiation,
    wire.decode_response,
    wire.decode_cookie_reply,
    wire.decode_data,
    wire.unpack_data,
)
# Datagrams that look like each message type, at its exact size or around it.
SIZES = (0, 1, 3, 4, 31, 32, 33, 63, 64, 65, 91, 92, 93, 147, 148, 149, 1500)


def _datagrams() -> st.SearchStrategy[bytes]:
    typed = st.tuples(st.integers(0, 255), st.sampled_from(SIZES), st.binary(max_size=1500)).map(
        lambda t: (bytes([t[0], 0, 0, 0]) + t[2])[: max(t[1], 4)].ljust(t[1], b"\0")
    )
    return st.one_of(st.binary(max_size=300), typed)


_sources = st.one_of(
    st.sampled_from(sorted(ADDR.values())),
    st.tuples(st.ip_addresses(v=4).map(str), st.integers(0, 65535)),
    st.tuples(st.ip_addresses(v=6).map(str), st.integers(0, 65535), st.just(0), st.just(0)),
)


# -- UDP ------------------------------------------------------------------------------------


@FUZZ
@given(_datagrams())
def test_wire_decoders_raise_only_malformed_packet(datagram: bytes) -> None:
    for decode in DECODERS:
        for buffer in (datagram, bytearray(datagram), memoryview(datagram)):
            with contextlib.suppress(MalformedPacket):
                decode(buffer)


_NET: Net | None = None


def _net() -> Net:
    """One mesh of three tunnels with sessions up, shared: hostile input must not change it."""
    global _NET
    if _NET is None:
        _NET = Net()
        _NET.connect()
    return _NET


def _drop_total(net: Net, name: str) -> int:
    return sum(net[name].drops().values())


@FUZZ
@given(st.lists(st.tuples(_datagrams(), _sources), min_size=1, max_size=8))
def test_outside_never_raises_and_counts_every_refused_datagram(
    datagrams: list[tuple[bytes, Any]],
) -> None:
    net = _net()
    tunnel = net["b"]
    for datagram, source in datagrams:
        before = _drop_total(net, "b")
        assert tunnel.outside(datagram, source, net.now) is None
        # A handshake-shaped datagram may be answered (a cookie) but never authenticated.
        assert _drop_total(net, "b") == before + 1, (datagram.hex(), source)
    tunnel.datagrams_to_send()
    assert tunnel.next_event() is None


@FUZZ
@given(st.lists(st.tuples(_datagrams(), _sources), min_size=1, max_size=8), st.integers(0, 64))
def test_outside_in_place_never_raises_and_counts_every_refused_datagram(
    datagrams: list[tuple[bytes, Any]], at: int
) -> None:
    net = _net()
    tunnel = net["a"]
    for datagram, source in datagrams:
        buf = bytearray(at) + bytearray(datagram) + bytearray(64)
        before = _drop_total(net, "a")
        assert tunnel.outside_in_place(buf, at, len(datagram), source, net.now) == -1
        assert _drop_total(net, "a") == before + 1, (datagram.hex(), source)
        assert buf[at + len(datagram) :] == bytearray(64), "wrote past the datagram"
    tunnel.datagrams_to_send()
    assert tunnel.next_event() is None


def test_the_shared_mesh_still_forwards_after_the_fuzzing() -> None:
    net = _net()
    delivered = len(net.tun["b"])
    net.send("a", ipv4("10.1.0.1", "10.2.0.1", b"after the fuzz"))
    net.pump()
    assert len(net.tun["b"]) == delivered + 1, net["b"].drops()


# -- gRPC -----------------------------------------------------------------------------------

MESSAGES = (pb.MapUpdate, pb.RegisterRequest, pb.WatchRequest, pb.ReportRequest, pb.Edge)

_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["vpc-a", "10.0.0.0/8", "192.0.2.1:51820", "::/0", "0.0.0.0/0", ""]),
)
_u64 = st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1))
_leases = st.builds(pb.Lease, version=_u64, expires=_u64, signature=st.binary(max_size=70))
_routes = st.builds(pb.Route, cidr=_text, lease=st.one_of(st.none(), _leases))
_keys = st.one_of(st.binary(max_size=40), st.binary(min_size=32, max_size=32))
_edges = st.builds(
    pb.Edge,
    name=_text,
    public_key=_keys,
    endpoints=st.lists(_text, max_size=3),
    routes=st.lists(_routes, max_size=3),
)
_updates = st.builds(
    pb.MapUpdate,
    version=_u64,
    full=st.booleans(),
    base_version=_u64,
    edges=st.lists(_edges, max_size=3),
    removed=st.lists(_text, max_size=3),
)
_registrations = st.builds(
    pb.RegisterRequest,
    name=_text,
    public_key=_keys,
    endpoints=st.lists(_text, max_size=3),
    routes=st.lists(_text, max_size=3),
)


def _convert_only_wire_errors(msg: Any) -> None:
    decoders: list[Callable[[Any], object]] = []
    if isinstance(msg, pb.MapUpdate):
        decoders = [update_from_pb, map_from_pb]
    elif isinstance(msg, pb.RegisterRequest):
        decoders = [registration_from_pb]
    for decode in decoders:
        with contextlib.suppress(WireError):
            decode(msg)


@FUZZ
@given(st.sampled_from(MESSAGES), st.binary(max_size=400))
def test_any_bytes_parse_or_raise_decode_error_then_convert_or_raise_wire_error(
    message: Any, data: bytes
) -> None:
    try:
        msg = message.FromString(data)
    except DecodeError:
        return
    _convert_only_wire_errors(msg)


@FUZZ
@given(st.one_of(_updates, _registrations))
def test_any_field_values_convert_or_raise_wire_error(msg: Any) -> None:
    _convert_only_wire_errors(msg)
    # The same message through the wire, as the edge and the controller receive it.
    _convert_only_wire_errors(type(msg).FromString(msg.SerializeToString()))


CONTROLLER_KEY = ControllerKey.generate().public
BASE = update_from_pb(pb.MapUpdate(version=1, full=True))


def _edge_handles(msg: pb.MapUpdate) -> None:
    """What the edge does with an update before it touches the tunnel (edge.control)."""
    update = update_from_pb(msg)
    route_map = patch(BASE, update) if isinstance(update, MapDelta) else update
    verify_leases(route_map, CONTROLLER_KEY, 1_800_000_000.0)


@FUZZ
@given(st.one_of(_updates, st.binary(max_size=300)))
def test_the_edge_refuses_any_update_only_with_its_declared_errors(value: Any) -> None:
    try:
        msg = value if isinstance(value, pb.MapUpdate) else pb.MapUpdate.FromString(value)
        _edge_handles(msg)
    except (DecodeError, WireError, MapError, LeaseError):
        pass


def test_the_base_map_of_the_edge_fuzz_is_a_map() -> None:
    assert map_from_pb(map_to_pb(BASE)) == BASE  # type: ignore[arg-type]


# -- config ---------------------------------------------------------------------------------

EDGE_TOML = f"""\
name = "vpc-a"
private_key_file = "/var/lib/isthmus/private.key"
controller = ["198.18.0.1:7000", "198.18.0.1:7001"]
controller_public_key = "{CONTROLLER_KEY.to_base64()}"
listen = "0.0.0.0:51820"
endpoint = "198.18.0.11:51820"
routes = ["10.244.0.0/16"]
metrics = "off"

[tun]
address = "10.244.255.254/32"
mtu = 1420

[tunnel]
rekey_after_time = 6
reject_after_time = 12
"""
CONTROLLER_TOML = """\
listen = "127.0.0.1:7000"
state_dir = "/var/lib/isthmus-controller"
signing_key_file = "/var/lib/isthmus-controller/controller.key"
lease_ttl = 86400
metrics = "off"

[store]
kind = "file"

[admission]
more_specific = "pending"

[[edges]]
name = "vpc-a"
public_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
routes = ["10.244.0.0/16"]
"""
LOADERS = (edge_config, controller_config)


def _mutated(text: str) -> st.SearchStrategy[str]:
    """`text` with a few characters replaced, inserted or deleted."""

    @st.composite
    def mutate(draw: st.DrawFn) -> str:
        chars = list(text)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(chars)))
            op = draw(st.sampled_from(["replace", "insert", "delete"]))
            c = draw(st.sampled_from([*list('"[]=.,#\n0123456789-_ab/:{}\\\x00'), "é"]))
            if op == "insert" or i == len(chars):
                chars.insert(i, c)
            elif op == "replace":
                chars[i] = c
            else:
                del chars[i]
        return "".join(chars)

    return mutate()


_toml_text = st.one_of(_mutated(EDGE_TOML), _mutated(CONTROLLER_TOML), st.text(max_size=200))
_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True),
    _text,
    st.datetimes(),
)
_tables = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=4)),
    max_leaves=12,
)
_keys_of = st.sampled_from(
    sorted(
        {
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
            "signing_key_file",
            "lease_ttl",
            "store",
            "admission",
            "edges",
        }
    )
)


@pytest.fixture(scope="module")
def config_dir() -> Any:
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(_toml_text)
def test_config_loaders_raise_only_config_error_on_any_file(config_dir: Path, text: str) -> None:
    path = config_dir / "fuzz.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    for module in LOADERS:
        with contextlib.suppress(ConfigError):
            module.load(path)


@FUZZ
@given(st.dictionaries(st.one_of(_keys_of, _text), _tables, max_size=8))
def test_config_parsers_raise_only_config_error_on_any_table(table: dict[str, Any]) -> None:
    for module in LOADERS:
        with contextlib.suppress(ConfigError):
            module.parse(table)

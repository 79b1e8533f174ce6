"""The edge config: a good file, defaults, and the exact messages for bad keys."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Any

import pytest

from edge.config import EdgeConfig, load, parse
from isthmus.configfile import ConfigError
from isthmus.endpoint import Endpoint
from isthmus.routemap import parse_route
from isthmus.signing import ControllerPublicKey

ROOT = Path(__file__).resolve().parents[2]
# The Ed25519 public key of the seed bytes(range(32)).
UNICAST = (
    "a unicast address other edges can reach: not unspecified, loopback, link-local, "
    "multicast, broadcast or reserved (240.0.0.0/4), not IPv4-mapped (::ffff:0:0/96; write "
    "the IPv4 address), without a %zone"
)
CONTROLLER_KEY = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="

GOOD = """
name = "vpc-a"
private_key_file = "/etc/isthmus/private.key"
controller = "198.18.0.1:7000"
controller_public_key = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
listen = "0.0.0.0:51820"
endpoint = "198.18.0.11:51820"
routes = ["10.244.0.0/16", "fd00:1::/64"]

[tun]
address = "10.244.255.254/32"
"""


def table(**changes: Any) -> dict[str, Any]:
    """The GOOD table with top-level keys replaced (None removes one)."""
    t = tomllib.loads(GOOD)
    for key, value in changes.items():
        if value is None:
            t.pop(key)
        else:
            t[key] = value
    return t


def error(t: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse(t)
    return str(info.value)


def test_good_file_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(GOOD)
    cfg = load(path)
    assert cfg == EdgeConfig(
        name=cfg.name,
        private_key_file=Path("/etc/isthmus/private.key"),
        controllers=("198.18.0.1:7000",),
        controller_public_key=ControllerPublicKey.from_base64(CONTROLLER_KEY),
        listen=Endpoint.parse("0.0.0.0:51820"),
        endpoint=Endpoint.parse("198.18.0.11:51820"),
        routes=(parse_route("10.244.0.0/16"), parse_route("fd00:1::/64")),
        tun=cfg.tun,
        state_dir=Path("/var/lib/isthmus"),
        admin_socket=Path("/var/lib/isthmus/admin.sock"),
    )
    assert cfg.name == "vpc-a"
    assert cfg.tun.name == "isthmus0"
    assert cfg.tun.address == ipaddress.IPv4Interface("10.244.255.254/32")
    assert cfg.tun.mtu == 1420


def test_admin_socket_follows_state_dir() -> None:
    cfg = parse(table(state_dir="/srv/isthmus"))
    assert cfg.admin_socket == Path("/srv/isthmus/admin.sock")
    cfg = parse(table(state_dir="/srv/isthmus", admin_socket="/run/isthmus.sock"))
    assert cfg.admin_socket == Path("/run/isthmus.sock")


def test_listen_port_zero_and_ipv6_and_controller_forms() -> None:
    assert parse(table(listen="[::]:0")).listen.port == 0
    for target in ("controller.example.com:7000", "[fd00::1]:7000", "127.0.0.1:1"):
        assert parse(table(controller=target)).controllers == (target,)


def test_controller_list() -> None:
    targets = ["198.18.0.1:7000", "198.18.0.2:7000", "[fd00::1]:7000"]
    assert parse(table(controller=targets)).controllers == tuple(targets)
    assert parse(table(controller=targets[:1])).controllers == ("198.18.0.1:7000",)
    assert error(table(controller=[])) == "controller: lists 0 addresses; allowed: 1-8 addresses"
    nine = [f"198.18.0.{i}:7000" for i in range(1, 10)]
    assert error(table(controller=nine)) == (
        "controller: lists 9 addresses; allowed: 1-8 addresses"
    )
    assert error(table(controller=["198.18.0.1:7000", "198.18.0.1"])) == (
        "controller[1]: '198.18.0.1' is not a host:port address; allowed: 'host:port' or "
        "'[ipv6]:port' with a host name or IP address and a port 1-65535"
    )
    assert error(table(controller=["198.18.0.1:7000", "198.18.0.1:7000"])) == (
        "controller[1]: 198.18.0.1:7000 is listed twice (also controller[0]); "
        "allowed: each address once"
    )
    assert error(table(controller=7000)) == (
        "controller: 7000 is not a string or a list; allowed: 'host:port' or '[ipv6]:port' "
        "with a host name or IP address and a port 1-65535, or a list of 1-8 such addresses, "
        "each once"
    )


def test_controller_public_key() -> None:
    assert parse(table()).controller_public_key.to_base64() == CONTROLLER_KEY
    allowed = (
        "allowed: the controller's Ed25519 public key in base64 (44 characters), "
        "as printed by 'isthmus keygen --controller'"
    )
    assert (
        error(table(controller_public_key=None)) == f"controller_public_key: is missing; {allowed}"
    )
    assert error(table(controller_public_key="AAAA")) == (
        f"controller_public_key: 'AAAA' is not a base64 Ed25519 public key; {allowed}"
    )
    assert error(table(controller_public_key=CONTROLLER_KEY[:-2] + "!=")) == (
        f"controller_public_key: {CONTROLLER_KEY[:-2] + '!='!r} is not a base64 Ed25519 "
        f"public key; {allowed}"
    )
    not_a_point = "AP////////////////////////////////////////8="
    assert error(table(controller_public_key=not_a_point)) == (
        f"controller_public_key: {not_a_point!r} is not a valid Ed25519 public key "
        f"(not a curve point); {allowed}"
    )
    assert error(table(controller_public_key=42)) == (
        f"controller_public_key: 42 is not a string; {allowed}"
    )


def test_the_example_file_is_valid() -> None:
    cfg = load(ROOT / "deploy" / "examples" / "edge.toml")
    assert cfg.tun.mtu == 1420 and cfg.tun.name == "isthmus0"
    assert cfg.controllers == ("198.18.0.1:7000", "198.18.0.2:7000")
    assert cfg.controller_public_key.to_base64() == CONTROLLER_KEY


def test_missing_key() -> None:
    # `endpoint` was required until edges behind NAT: test_endpoint_omitted_is_behind_nat.
    assert error(table(listen=None)) == (
        "listen: is missing; allowed: 'ip:port' or '[ipv6]:port' with a literal IP address "
        "and a port 0-65535 (0 = any free port)"
    )
    assert error(table(private_key_file=None)) == (
        "private_key_file: is missing; allowed: a non-empty path"
    )


def test_missing_tun_address() -> None:
    assert error(table(tun={"name": "isthmus0"})) == (
        "tun.address: is missing; allowed: an IPv4 address with a prefix length, "
        "e.g. 10.244.255.254/32"
    )


def test_bad_cidr() -> None:
    assert error(table(routes=["10.244.0.0/16", "10.1.2.3/16"])) == (
        "routes[1]: '10.1.2.3/16' is not a route (10.1.2.3/16 has host bits set); "
        "allowed: an IPv4 or IPv6 network in CIDR form with no host bits set, "
        "e.g. 10.244.0.0/16"
    )


def test_duplicate_route() -> None:
    assert error(table(routes=["10.244.0.0/16", "10.244.0.0/16"])) == (
        "routes[1]: 10.244.0.0/16 is listed twice (also routes[0]); allowed: each route once"
    )


def test_mtu_out_of_range() -> None:
    assert error(table(tun={"address": "10.244.255.254/32", "mtu": 99999})) == (
        "tun.mtu: 99999 is out of range; allowed: an integer 576-9000"
    )


def test_unknown_key() -> None:
    assert error(table(listen_port=51820)) == (
        "listen_port: unknown key; allowed: one of admin_socket, controller, "
        "controller_public_key, endpoint, listen, log_format, masquerade, metrics, name, "
        "private_key_file, routes, state_dir, tun, tunnel"
    )
    assert error(table(tun={"address": "10.244.255.254/32", "mut": 1400})) == (
        "tun.mut: unknown key; allowed: one of address, mtu, name"
    )


def test_bad_endpoint() -> None:
    assert error(table(endpoint="198.18.0.11")) == (
        "endpoint: '198.18.0.11' is not an endpoint; allowed: 'ip:port' or '[ipv6]:port' with "
        f"a literal IP address and a port 1-65535, with {UNICAST}"
    )
    assert error(table(endpoint="0.0.0.0:51820")) == (
        "endpoint: '0.0.0.0:51820' is an unspecified address peers cannot send to; "
        "allowed: 'ip:port' or '[ipv6]:port' with a literal IP address and a port 1-65535, "
        f"with {UNICAST}"
    )


@pytest.mark.parametrize(
    ("endpoint", "problem"),
    [
        ("127.0.0.1:51820", "'127.0.0.1:51820' is a loopback address (127.0.0.0/8)"),
        (
            "255.255.255.255:51820",
            "'255.255.255.255:51820' is the broadcast address (255.255.255.255/32)",
        ),
        ("224.0.0.1:51820", "'224.0.0.1:51820' is a multicast address (224.0.0.0/4)"),
        ("169.254.1.1:51820", "'169.254.1.1:51820' is a link-local address (169.254.0.0/16)"),
        ("[::1]:51820", "'[::1]:51820' is a loopback address (::1/128)"),
        (
            "[::ffff:127.0.0.1]:51820",
            "'[::ffff:7f00:1]:51820' is an IPv4-mapped IPv6 address (::ffff:0:0/96) of "
            "127.0.0.1, a loopback address (127.0.0.0/8)",
        ),
        (
            "[::ffff:198.18.0.1]:51820",
            "'[::ffff:c612:1]:51820' is an IPv4-mapped IPv6 address (::ffff:0:0/96)",
        ),
        ("[fe80::1]:51820", "'[fe80::1]:51820' is a link-local address (fe80::/10)"),
        (
            "[fe80::1%eth0]:51820",
            "'[fe80::1%eth0]:51820' is a scoped address (%eth0), which only one host's "
            "interface can reach",
        ),
        ("[ff02::1]:51820", "'[ff02::1]:51820' is a multicast address (ff00::/8)"),
    ],
)
def test_endpoint_must_be_unicast(endpoint: str, problem: str) -> None:
    assert error(table(endpoint=endpoint)) == (
        f"endpoint: {problem}; allowed: 'ip:port' or '[ipv6]:port' with a literal IP address "
        f"and a port 1-65535, with {UNICAST}"
    )


def test_bad_controller() -> None:
    assert error(table(controller="198.18.0.1")) == (
        "controller: '198.18.0.1' is not a host:port address; allowed: 'host:port' or "
        "'[ipv6]:port' with a host name or IP address and a port 1-65535"
    )


def test_bad_tun_name_and_address() -> None:
    assert error(table(tun={"name": "a-very-long-tun-name", "address": "10.0.0.1/32"})) == (
        "tun.name: 'a-very-long-tun-name' is not a valid interface name; "
        "allowed: 1-15 characters of A-Z, a-z, 0-9, '_', '.' and '-'"
    )
    assert error(table(tun={"address": "fd00::1/128"})) == (
        "tun.address: 'fd00::1/128' is not an IPv4 address with a prefix length; "
        "allowed: an IPv4 address with a prefix length, e.g. 10.244.255.254/32"
    )


def test_bad_name() -> None:
    assert error(table(name="VPC_A")) == (
        "name: 'VPC_A' is not a valid edge name; allowed: 1-63 characters of a-z, 0-9 and '-', "
        "starting and ending with a letter or digit"
    )


def test_admin_socket_too_long() -> None:
    assert error(table(admin_socket="/" + "a" * 120)).startswith(
        "admin_socket: the admin socket path '/aaaa"
    )


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "missing.toml")
    assert "cannot read" in str(info.value)


def test_tunnel_table_sets_timers_and_names_bad_keys() -> None:
    base = {
        "name": "vpc-a",
        "private_key_file": "/k",
        "controller": "127.0.0.1:7000",
        "controller_public_key": CONTROLLER_KEY,
        "listen": "0.0.0.0:51820",
        "endpoint": "198.18.0.11:51820",
        "routes": [],
        "tun": {"address": "10.244.255.254/32"},
    }
    cfg = parse({**base, "tunnel": {"rekey_after_time": 6, "reject_after_time": 12}})
    assert (cfg.timers.rekey_after_time, cfg.timers.reject_after_time) == (6.0, 12.0)
    assert parse(base).timers.rekey_after_time == 120.0
    with pytest.raises(ConfigError) as info:
        parse({**base, "tunnel": {"rekey_after_time": 121}})
    assert str(info.value) == (
        "tunnel.rekey_after_time: 121 is out of range; allowed: an integer 1-120"
    )
    with pytest.raises(ConfigError, match=r"^tunnel.reject_after_time: reject_after_time \(10"):
        parse({**base, "tunnel": {"rekey_after_time": 6, "reject_after_time": 10}})


def test_endpoint_omitted_is_behind_nat() -> None:
    cfg = parse(table(endpoint=None))
    assert cfg.endpoint is None
    assert cfg.timers.persistent_keepalive == 25.0  # keeps the NAT mapping open
    off = parse(table(endpoint=None, tunnel={"persistent_keepalive": 0}))
    assert off.endpoint is None and off.timers.persistent_keepalive == 0.0
    set_ = parse(table(endpoint=None, tunnel={"persistent_keepalive": 10}))
    assert set_.timers.persistent_keepalive == 10.0
    # With an endpoint the default stays off, and the endpoint is validated as before.
    assert parse(table()).timers.persistent_keepalive == 0.0
    assert parse(table()).endpoint == Endpoint.parse("198.18.0.11:51820")
    assert error(table(endpoint="0.0.0.0:51820")).startswith(
        "endpoint: '0.0.0.0:51820' is an unspecified address peers cannot send to; "
    )

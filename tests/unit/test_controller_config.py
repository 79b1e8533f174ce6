"""controller.config: the example file parses; every kind of error is pinned exactly."""

from __future__ import annotations

import base64
import copy
import ipaddress
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest

from controller.config import ControllerConfig, load, parse
from isthmus.configfile import ConfigError
from isthmus.endpoint import Endpoint

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "examples" / "controller.toml"

ROUTE_RULE = "an IPv4 or IPv6 network in CIDR form with no host bits set, e.g. 10.244.0.0/16"
LISTEN_RULE = (
    "'ip:port' or '[ipv6]:port' with a literal IP address and a port 0-65535 (0 = any free port)"
)
KEY_RULE = "a 32-byte Curve25519 public key in standard base64, as printed by 'isthmus keygen'"


def key(seed: int) -> str:
    pk, _ = nacl.bindings.crypto_box_seed_keypair(bytes([seed]) * 32)
    return base64.b64encode(pk).decode()


KA, KB = key(1), key(2)


def good() -> dict[str, Any]:
    return {
        "listen": "127.0.0.1:7000",
        "state_dir": "/var/lib/isthmus-controller",
        "edges": [
            {"name": "vpc-a", "public_key": KA, "routes": ["10.244.0.0/16", "10.96.0.0/16"]},
            {"name": "vpc-b", "public_key": KB, "routes": ["10.245.0.0/16", "fd00:b::/48"]},
        ],
    }


def error_of(table: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        parse(table)
    return str(e.value)


def test_example_file_parses() -> None:
    config = load(EXAMPLE)
    assert config.listen == Endpoint.parse("127.0.0.1:7000")
    assert config.state_dir == Path("/var/lib/isthmus-controller")
    assert [e.name for e in config.edges] == ["vpc-a", "vpc-b", "office"]
    assert config.edges[1].routes == (
        ipaddress.ip_network("10.245.0.0/16"),
        ipaddress.ip_network("fd00:b::/48"),
    )


def test_good_table() -> None:
    config = parse(good())
    assert isinstance(config, ControllerConfig)
    assert str(config.edges[0].public_key) == KA
    assert config.edges[0].routes == (
        ipaddress.ip_network("10.244.0.0/16"),
        ipaddress.ip_network("10.96.0.0/16"),
    )


def test_port_zero_and_ipv6_listen() -> None:
    t = good()
    t["listen"] = "[::1]:0"
    config = parse(t)
    assert config.listen.port == 0
    assert str(config.listen) == "[::1]:0"


def test_no_edges_is_allowed() -> None:
    t = good()
    del t["edges"]
    assert parse(t).edges == ()
    t["edges"] = []
    assert parse(t).edges == ()


def test_edge_with_no_routes_is_allowed() -> None:
    t = good()
    t["edges"][1]["routes"] = []
    assert parse(t).edges[1].routes == ()


def test_frozen() -> None:
    config = parse(good())
    with pytest.raises(AttributeError):
        config.listen = config.listen  # type: ignore[misc]


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as e:
        load(missing)
    assert str(e.value) == f"cannot read {missing}: No such file or directory"


def test_bad_route() -> None:
    t = good()
    t["edges"][1]["routes"][0] = "10.0.0/8"
    assert error_of(t) == (
        "edges[1].routes[0]: '10.0.0/8' is not a route ('10.0.0/8' does not appear to be an "
        f"IPv4 or IPv6 network); allowed: {ROUTE_RULE}"
    )


def test_route_with_host_bits() -> None:
    t = good()
    t["edges"][0]["routes"][1] = "10.96.0.1/16"
    assert error_of(t) == (
        "edges[0].routes[1]: '10.96.0.1/16' is not a route (10.96.0.1/16 has host bits set); "
        f"allowed: {ROUTE_RULE}"
    )


def test_route_not_a_string() -> None:
    t = good()
    t["edges"][0]["routes"][0] = 10
    assert error_of(t) == f"edges[0].routes[0]: 10 is not a route; allowed: {ROUTE_RULE}"


def test_routes_not_a_list() -> None:
    t = good()
    t["edges"][0]["routes"] = "10.0.0.0/8"
    assert error_of(t) == (
        f"edges[0].routes: '10.0.0.0/8' is not a list; allowed: a list of routes, each {ROUTE_RULE}"
    )


def test_route_listed_twice() -> None:
    t = good()
    t["edges"][0]["routes"].append("10.244.0.0/16")
    assert error_of(t) == (
        "edges[0].routes[2]: 10.244.0.0/16 is listed twice (also edges[0].routes[0]); "
        "allowed: each route once"
    )


def test_routes_of_two_edges_overlap() -> None:
    t = good()
    t["edges"][1]["routes"].append("10.96.128.0/17")
    assert error_of(t) == (
        "edges[1].routes[2]: route 10.96.128.0/17 of edge 'vpc-b' overlaps route 10.96.0.0/16 "
        "of edge 'vpc-a' (edges[0].routes[1]); allowed: routes of different edges that do not "
        "overlap"
    )


def test_overlap_named_at_the_later_edge_even_when_it_is_the_wider_route() -> None:
    t = good()
    t["edges"][1]["routes"] = ["10.0.0.0/8"]
    assert error_of(t) == (
        "edges[1].routes[0]: route 10.0.0.0/8 of edge 'vpc-b' overlaps route 10.96.0.0/16 "
        "of edge 'vpc-a' (edges[0].routes[1]); allowed: routes of different edges that do not "
        "overlap"
    )


def test_overlap_within_one_edge_is_allowed() -> None:
    t = good()
    t["edges"][0]["routes"].append("10.244.1.0/24")
    assert len(parse(t).edges[0].routes) == 3


def test_duplicate_edge_name() -> None:
    t = good()
    t["edges"][1]["name"] = "vpc-a"
    assert error_of(t) == (
        "edges[1].name: 'vpc-a' is already the name of edges[0]; allowed: a name unique among edges"
    )


def test_duplicate_public_key() -> None:
    t = good()
    t["edges"][1]["public_key"] = KA
    assert error_of(t) == (
        "edges[1].public_key: edge 'vpc-b' has the same key as edges[0] ('vpc-a'); "
        "allowed: a key unique among edges"
    )


def test_bad_edge_name() -> None:
    t = good()
    t["edges"][0]["name"] = "VPC_A"
    assert error_of(t) == (
        "edges[0].name: 'VPC_A' is not a valid edge name; allowed: 1-63 characters of a-z, "
        "0-9 and '-', starting and ending with a letter or digit"
    )


def test_bad_public_key() -> None:
    t = good()
    t["edges"][0]["public_key"] = "not-base64"
    assert error_of(t) == (
        "edges[0].public_key: 'not-base64' is not a base64 public key (44 characters, as "
        f"printed by 'isthmus keygen'); allowed: {KEY_RULE}"
    )


def test_short_public_key() -> None:
    t = good()
    t["edges"][0]["public_key"] = base64.b64encode(b"x" * 31).decode()
    assert error_of(t) == (
        f"edges[0].public_key: a public key is 32 bytes, got 31; allowed: {KEY_RULE}"
    )


def test_low_order_public_key() -> None:
    t = good()
    t["edges"][0]["public_key"] = base64.b64encode(bytes(32)).decode()
    assert error_of(t) == (
        "edges[0].public_key: the public key is a low-order Curve25519 point, which is refused; "
        f"allowed: {KEY_RULE}"
    )


def test_bad_listen() -> None:
    t = good()
    t["listen"] = "localhost:7000"
    assert error_of(t) == f"listen: 'localhost:7000' is not an endpoint; allowed: {LISTEN_RULE}"


def test_missing_listen() -> None:
    t = good()
    del t["listen"]
    assert error_of(t) == f"listen: is missing; allowed: {LISTEN_RULE}"


def test_missing_state_dir() -> None:
    t = good()
    del t["state_dir"]
    assert error_of(t) == (
        "state_dir: is missing; allowed: a directory path, e.g. /var/lib/isthmus-controller"
    )


def test_empty_state_dir() -> None:
    t = good()
    t["state_dir"] = ""
    assert error_of(t) == (
        "state_dir: '' is not a non-empty string; "
        "allowed: a directory path, e.g. /var/lib/isthmus-controller"
    )


def test_missing_edge_key() -> None:
    t = good()
    del t["edges"][1]["routes"]
    assert error_of(t) == (
        f"edges[1].routes: is missing; allowed: a list of routes, each {ROUTE_RULE}"
    )


def test_unknown_top_level_key() -> None:
    t = good()
    t["listen_addr"] = "x"
    assert error_of(t) == "listen_addr: unknown key; allowed: one of edges, listen, state_dir"


def test_unknown_edge_key() -> None:
    t = good()
    t["edges"][1]["route"] = []
    assert error_of(t) == "edges[1].route: unknown key; allowed: one of name, public_key, routes"


def test_edges_not_a_list() -> None:
    t = good()
    t["edges"] = {"name": "vpc-a"}
    assert error_of(t) == "edges: {'name': 'vpc-a'} is not a list; allowed: [[edges]] tables"


def test_edge_not_a_table() -> None:
    t = good()
    t["edges"].append("vpc-c")
    assert error_of(t) == (
        "edges[2]: 'vpc-c' is not a table; allowed: a table with name, public_key and routes "
        "([[edges]])"
    )


def test_load_names_toml_errors(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('listen = "127.0.0.1:7000"\nstate_dir = \n')
    with pytest.raises(ConfigError) as e:
        load(f)
    assert str(e.value).startswith(f"{f} is not valid TOML: ")


def test_parse_does_not_mutate_input() -> None:
    t = good()
    before = copy.deepcopy(t)
    parse(t)
    assert t == before

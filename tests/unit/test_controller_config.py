"""controller.config: the example file parses; every kind of error is pinned exactly."""

from __future__ import annotations

import base64
import copy
import ipaddress
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest

from controller.admission import Policy, RouteState
from controller.config import ControllerConfig, StoreConfig, StoreTLS, load, parse
from isthmus.configfile import ConfigError
from isthmus.endpoint import Endpoint

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "examples" / "controller.toml"

ROUTE_RULE = "an IPv4 or IPv6 network in CIDR form with no host bits set, e.g. 10.244.0.0/16"
LISTEN_RULE = (
    "'ip:port' or '[ipv6]:port' with a literal IP address and a port 0-65535 (0 = any free port)"
)
KEY_RULE = "a 32-byte Curve25519 public key in standard base64, as printed by 'isthmus keygen'"
STORE_ENDPOINT_RULE = (
    "'http://host:port' or 'https://host:port' with a host name or IP address ([ipv6] in "
    "brackets) and a port 1-65535; one scheme for every endpoint"
)
STORE_TLS_RULE = (
    "ca_file, cert_file and key_file all three (with https:// endpoints) or none (with "
    "http:// endpoints)"
)
TLS = {"ca_file": "/etc/isthmus/etcd-ca.pem", "cert_file": "/c.pem", "key_file": "/k.pem"}
STORE_ENDPOINTS_RULE = f"a list of 1-16 distinct etcd endpoints, each {STORE_ENDPOINT_RULE}"
ALLOW_RESERVED_RULE = (
    "a list of reserved routes (0.0.0.0/0, ::/0, or routes overlapping loopback, link-local, "
    "multicast or 0.0.0.0/8), each listed once"
)


def key(seed: int) -> str:
    pk, _ = nacl.bindings.crypto_box_seed_keypair(bytes([seed]) * 32)
    return base64.b64encode(pk).decode()


KA, KB = key(1), key(2)


def good() -> dict[str, Any]:
    return {
        "listen": "127.0.0.1:7000",
        "state_dir": "/var/lib/isthmus-controller",
        "signing_key_file": "/etc/isthmus/controller.key",
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
    assert config.signing_key_file == Path("/var/lib/isthmus-controller/controller.key")
    assert config.admin_socket == Path("/run/isthmus-controller/admin.sock")
    assert config.lease_ttl == 86400
    assert config.store == StoreConfig(kind="file", endpoints=(), prefix="/isthmus/")
    assert config.admission == Policy(hold_time=600)


def test_example_file_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    for key in (
        "listen",
        "state_dir",
        "signing_key_file",
        "admin_socket",
        "lease_ttl",
        "[store]",
        "kind",
        "endpoints",
        "prefix",
        "ca_file",
        "cert_file",
        "key_file",
        "[admission]",
        "more_specific",
        "less_specific",
        "allow_reserved",
        "hold_time",
        "addresses",
        "[[edges]]",
        "name",
        "public_key",
        "routes",
    ):
        assert f"\n{key} " in text or f"\n# {key} " in text or f"\n{key}\n" in text, key


def test_good_table() -> None:
    config = parse(good())
    assert isinstance(config, ControllerConfig)
    assert config.signing_key_file == Path("/etc/isthmus/controller.key")
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


def test_routes_of_two_edges_may_overlap() -> None:
    # admission decides at registration; the config no longer refuses overlaps
    t = good()
    t["edges"][1]["routes"] += ["10.96.128.0/17", "10.0.0.0/8", "10.244.0.0/16"]
    config = parse(t)
    assert ipaddress.ip_network("10.244.0.0/16") in config.edges[1].routes


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
    assert error_of(t) == (
        "listen_addr: unknown key; allowed: one of addresses, admin_socket, admission, audit, "
        "edges, lease_ttl, limits, listen, log_format, metrics, signing_key_file, state_dir, "
        "store"
    )


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


def test_defaults_of_the_new_keys() -> None:
    config = parse(good())
    assert config.admin_socket == Path("/var/lib/isthmus-controller/admin.sock")
    assert config.lease_ttl == 86400
    assert config.store == StoreConfig()
    assert config.store.kind == "file"
    assert config.admission == Policy(RouteState.PENDING, RouteState.PENDING, (), 600)


def test_missing_signing_key_file() -> None:
    t = good()
    del t["signing_key_file"]
    assert error_of(t) == (
        "signing_key_file: is missing; allowed: a file path, e.g. "
        "/var/lib/isthmus-controller/controller.key, made with 'isthmus keygen --controller'"
    )


def test_admin_socket() -> None:
    t = good()
    t["admin_socket"] = "/run/isthmus/admin.sock"
    assert parse(t).admin_socket == Path("/run/isthmus/admin.sock")
    t["admin_socket"] = 5
    assert error_of(t) == (
        "admin_socket: 5 is not a non-empty string; "
        "allowed: a unix socket path, e.g. /run/isthmus-controller/admin.sock"
    )


@pytest.mark.parametrize("value", [300, 3600, 2_592_000])
def test_lease_ttl_in_range(value: int) -> None:
    t = good()
    t["lease_ttl"] = value
    assert parse(t).lease_ttl == value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (299, "299 is out of range"),
        (2_592_001, "2592001 is out of range"),
        ("1d", "'1d' is not an integer"),
        (True, "True is not an integer"),
        (3600.0, "3600.0 is not an integer"),
    ],
)
def test_lease_ttl_refused(value: object, problem: str) -> None:
    t = good()
    t["lease_ttl"] = value
    assert error_of(t) == (
        f"lease_ttl: {problem}; allowed: an integer number of seconds 300-2592000 (5 min - 30 days)"
    )


def test_store_etcd() -> None:
    t = good()
    t["store"] = {
        "kind": "etcd",
        "endpoints": [
            "http://10.0.0.1:2379",
            "http://etcd-2.example:2379",
            "http://[fd00::3]:2379",
        ],
        "prefix": "/prod/isthmus/",
    }
    assert parse(t).store == StoreConfig(
        kind="etcd",
        endpoints=("http://10.0.0.1:2379", "http://etcd-2.example:2379", "http://[fd00::3]:2379"),
        prefix="/prod/isthmus/",
    )
    del t["store"]["prefix"]
    assert parse(t).store.prefix == "/isthmus/"


def test_store_file_explicit() -> None:
    t = good()
    t["store"] = {"kind": "file"}
    assert parse(t).store == StoreConfig()


@pytest.mark.parametrize(
    ("store", "message"),
    [
        (
            {"kind": "consul"},
            'store.kind: \'consul\' is not a store kind; allowed: "file" or "etcd"',
        ),
        (
            {"kind": "file", "endpoints": ["http://127.0.0.1:2379"]},
            'store.endpoints: is only used with kind = "etcd"; allowed: leave it out',
        ),
        (
            {"prefix": "/x/"},
            'store.prefix: is only used with kind = "etcd"; allowed: leave it out',
        ),
        ({"kind": "etcd"}, f"store.endpoints: is missing; allowed: {STORE_ENDPOINTS_RULE}"),
        (
            {"kind": "etcd", "endpoints": []},
            f"store.endpoints: has 0 entries; allowed: {STORE_ENDPOINTS_RULE}",
        ),
        (
            {"kind": "etcd", "endpoints": "http://127.0.0.1:2379"},
            "store.endpoints: 'http://127.0.0.1:2379' is not a list; "
            f"allowed: {STORE_ENDPOINTS_RULE}",
        ),
        (
            {"kind": "etcd", "endpoints": ["https://127.0.0.1:2379"]},
            f"store.ca_file: is missing (https:// endpoints need it); allowed: {STORE_TLS_RULE}",
        ),
        (
            {"kind": "etcd", "endpoints": ["https://a:1"], "ca_file": "/ca.pem"},
            f"store.cert_file: is missing (ca_file is set); allowed: {STORE_TLS_RULE}",
        ),
        (
            {"kind": "etcd", "endpoints": ["https://a:1"], **TLS, "key_file": ""},
            "store.key_file: '' is not a non-empty string; allowed: a PEM file path: ca_file "
            "the CA of the etcd members' certificates, cert_file this replica's client "
            "certificate, key_file its private key",
        ),
        (
            {"kind": "etcd", "endpoints": ["http://a:1"], "cert_file": "/c.pem"},
            f"store.cert_file: is set but store.endpoints are http://; allowed: {STORE_TLS_RULE}",
        ),
        (
            {"kind": "etcd", "endpoints": ["https://a:1", "http://b:1"], **TLS},
            "store.endpoints[1]: http://b:1 does not use the scheme of store.endpoints[0] "
            "(https://a:1); allowed: one scheme for every endpoint",
        ),
        (
            {"kind": "file", "ca_file": "/ca.pem"},
            'store.ca_file: is only used with kind = "etcd"; allowed: leave it out',
        ),
        (
            {"kind": "etcd", "endpoints": ["127.0.0.1:2379"]},
            "store.endpoints[0]: '127.0.0.1:2379' is not an http:// or https:// URL; "
            f"allowed: {STORE_ENDPOINT_RULE}",
        ),
        (
            {"kind": "etcd", "endpoints": ["http://127.0.0.1"]},
            f"store.endpoints[0]: 'http://127.0.0.1' is not http://host:port; "
            f"allowed: {STORE_ENDPOINT_RULE}",
        ),
        (
            {"kind": "etcd", "endpoints": ["http://127.0.0.1:70000"]},
            f"store.endpoints[0]: 'http://127.0.0.1:70000' is not http://host:port; "
            f"allowed: {STORE_ENDPOINT_RULE}",
        ),
        (
            {"kind": "etcd", "endpoints": ["http://etcd/x:2379"]},
            f"store.endpoints[0]: 'http://etcd/x:2379' is not http://host:port; "
            f"allowed: {STORE_ENDPOINT_RULE}",
        ),
        (
            {"kind": "etcd", "endpoints": ["http://a:1", "http://a:1"]},
            "store.endpoints[1]: http://a:1 is listed twice (also store.endpoints[0]); "
            "allowed: each endpoint once",
        ),
        (
            {"kind": "etcd", "endpoints": ["http://a:1"], "prefix": "isthmus"},
            "store.prefix: 'isthmus' is not a key prefix; allowed: a key prefix of printable "
            "ASCII without spaces, starting and ending with '/'",
        ),
        (
            {"kind": "etcd", "endpoints": ["http://a:1"], "prefix": "/is thmus/"},
            "store.prefix: '/is thmus/' is not a key prefix; allowed: a key prefix of printable "
            "ASCII without spaces, starting and ending with '/'",
        ),
        (
            {"kind": "etcd", "endpoint": ["http://a:1"]},
            "store.endpoint: unknown key; allowed: one of ca_file, cert_file, endpoints, "
            "key_file, kind, prefix",
        ),
        ("etcd", "store: 'etcd' is not a table; allowed: a [store] table"),
    ],
)
def test_store_refused(store: object, message: str) -> None:
    t = good()
    t["store"] = store
    assert error_of(t) == message


def test_store_over_tls() -> None:
    t = good()
    t["store"] = {"kind": "etcd", "endpoints": ["https://etcd-0:2379", "https://[::1]:2379"], **TLS}
    store = parse(t).store
    assert store.endpoints == ("https://etcd-0:2379", "https://[::1]:2379")
    assert store.tls == StoreTLS(Path("/etc/isthmus/etcd-ca.pem"), Path("/c.pem"), Path("/k.pem"))
    t["store"] = {"kind": "etcd", "endpoints": ["http://etcd-0:2379"]}
    assert parse(t).store.tls is None


def test_store_endpoints_at_most_sixteen() -> None:
    t = good()
    t["store"] = {"kind": "etcd", "endpoints": [f"http://10.0.0.{i}:2379" for i in range(17)]}
    assert error_of(t) == f"store.endpoints: has 17 entries; allowed: {STORE_ENDPOINTS_RULE}"
    t["store"]["endpoints"].pop()
    assert len(parse(t).store.endpoints) == 16


def test_admission_policy() -> None:
    t = good()
    t["admission"] = {
        "more_specific": "refuse",
        "less_specific": "pending",
        "allow_reserved": ["::/0", "169.254.169.254/32"],
    }
    assert parse(t).admission == Policy(
        more_specific=RouteState.REFUSED,
        less_specific=RouteState.PENDING,
        allow_reserved=(
            ipaddress.ip_network("::/0"),
            ipaddress.ip_network("169.254.169.254/32"),
        ),
        hold_time=600,
    )
    t["admission"] = {"less_specific": "refuse"}
    assert parse(t).admission == Policy(less_specific=RouteState.REFUSED, hold_time=600)


@pytest.mark.parametrize(
    ("admission", "message"),
    [
        (
            {"more_specific": "serve"},
            'admission.more_specific: \'serve\' is not a policy; allowed: "pending" or "refuse"',
        ),
        (
            {"less_specific": False},
            'admission.less_specific: False is not a policy; allowed: "pending" or "refuse"',
        ),
        (
            {"allow_reserved": "::/0"},
            f"admission.allow_reserved: '::/0' is not a list; allowed: {ALLOW_RESERVED_RULE}",
        ),
        (
            {"allow_reserved": ["10.0.0.0/8"]},
            f"admission.allow_reserved[0]: 10.0.0.0/8 is not reserved; "
            f"allowed: {ALLOW_RESERVED_RULE}",
        ),
        (
            {"allow_reserved": ["::/0", "::/0"]},
            "admission.allow_reserved[1]: ::/0 is listed twice (also admission.allow_reserved[0]); "
            "allowed: each route once",
        ),
        (
            {"allow_reserved": ["0.0.0.1/0"]},
            "admission.allow_reserved[0]: '0.0.0.1/0' is not a route (0.0.0.1/0 has host bits "
            f"set); allowed: {ROUTE_RULE}",
        ),
        (
            {"refuse": True},
            "admission.refuse: unknown key; allowed: one of allow_reserved, hold_time, "
            "less_specific, more_specific",
        ),
    ],
)
def test_admission_refused(admission: object, message: str) -> None:
    t = good()
    t["admission"] = admission
    assert error_of(t) == message

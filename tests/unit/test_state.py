"""controller.state: the JSON codec round-trips, refuses broken documents by JSON path,
and reads the previous release's state file."""

from __future__ import annotations

import base64
import copy
import ipaddress
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.bindings import crypto_box_seed_keypair

from controller.state import Advertised, EdgeRecord, Hold, State, decode, dumps, encode, loads
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.lease import Lease
from isthmus.routemap import Network


def key(seed: int) -> PublicKey:
    return PublicKey(crypto_box_seed_keypair(bytes([seed]) * 32)[0])


def net(text: str) -> Network:
    return ipaddress.ip_network(text)


SIG = bytes(range(64))


def sample() -> State:
    return State(
        version=7,
        edges=(
            EdgeRecord(
                EdgeName("vpc-a"),
                key(1),
                (Endpoint.parse("198.18.0.1:51820"), Endpoint.parse("[fd00::1]:51820")),
                (Advertised(net("10.244.0.0/16"), 3), Advertised(net("10.97.1.0/24"), 5)),
            ),
            EdgeRecord(EdgeName("vpc-b"), key(2), (), (Advertised(net("10.97.0.0/16"), 1),)),
        ),
        approvals=((EdgeName("vpc-a"), net("10.97.1.0/24")),),
        leases=(
            (EdgeName("vpc-a"), net("10.97.1.0/24"), Lease(6, 1_760_000_000, SIG)),
            (EdgeName("vpc-a"), net("10.244.0.0/16"), Lease(3, 1_760_000_000, SIG)),
            (EdgeName("vpc-b"), net("10.97.0.0/16"), Lease(7, 1_760_086_400, SIG)),
        ),
    )


def doc() -> dict[str, Any]:
    return encode(sample())


def error_of(d: object) -> str:
    with pytest.raises(ValueError) as e:
        decode(d)
    return str(e.value)


def test_encode_shape() -> None:
    d = doc()
    assert d["version"] == 7
    assert d["edges"][0] == {
        "name": "vpc-a",
        "public_key": key(1).to_base64(),
        "endpoints": ["198.18.0.1:51820", "[fd00::1]:51820"],
        "advertised": [
            {"route": "10.244.0.0/16", "since": 3},
            {"route": "10.97.1.0/24", "since": 5},
        ],
    }
    assert d["approvals"] == [{"edge": "vpc-a", "route": "10.97.1.0/24"}]
    assert d["leases"][2] == {
        "edge": "vpc-b",
        "route": "10.97.0.0/16",
        "version": 7,
        "expires": 1_760_086_400,
        "signature": base64.b64encode(SIG).decode(),
    }


def test_round_trip() -> None:
    s = sample()
    assert decode(encode(s)) == s
    assert loads(dumps(s)) == s
    assert decode(json.loads(json.dumps(encode(s)))) == s


def test_dumps_is_compact_sorted_and_stable() -> None:
    data = dumps(sample())
    assert data.endswith(b"}\n") and b"\n" not in data[:-1]
    assert data.startswith(b'{"approvals":')
    assert dumps(loads(data)) == data


def test_empty_state() -> None:
    assert loads(dumps(State())) == State()
    assert encode(State()) == {"version": 0, "edges": [], "approvals": [], "leases": []}


def test_decode_sorts_edges_approvals_and_leases() -> None:
    d = doc()
    d["edges"].reverse()
    d["leases"].reverse()
    s = decode(d)
    assert [e.name for e in s.edges] == ["vpc-a", "vpc-b"]
    assert s == sample()
    # advertised routes keep their stored order
    assert s.edges[0].routes == (net("10.244.0.0/16"), net("10.97.1.0/24"))


def test_lookups() -> None:
    s = sample()
    assert s.edge("vpc-b") is s.edges[1]
    assert s.edge("nope") is None
    assert s.lease("vpc-b", net("10.97.0.0/16")) == Lease(7, 1_760_086_400, SIG)
    assert s.lease("vpc-a", net("10.97.0.0/16")) is None


def test_previous_release_state_file() -> None:
    old = {
        "version": 4,
        "edges": [
            {
                "name": "vpc-a",
                "public_key": key(1).to_base64(),
                "endpoints": ["198.18.0.1:51820"],
                "routes": ["10.244.0.0/16", "10.96.0.0/16"],
            }
        ],
    }
    assert decode(old) == State(
        version=4,
        edges=(
            EdgeRecord(
                EdgeName("vpc-a"),
                key(1),
                (Endpoint.parse("198.18.0.1:51820"),),
                (Advertised(net("10.244.0.0/16"), 4), Advertised(net("10.96.0.0/16"), 4)),
            ),
        ),
    )


def mutate(path: str, value: object) -> dict[str, Any]:
    d = copy.deepcopy(doc())
    *parts, last = path.split(".")
    target: Any = d
    for p in parts:
        target = target[int(p)] if p.isdigit() else target[p]
    if value is DELETE:
        del target[int(last) if last.isdigit() else last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return d


DELETE = object()
SIG_RULE = "use 64 bytes in standard base64"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("version", -1, "version: -1 is not an integer 0..2**64-1"),
        ("version", True, "version: True is not an integer 0..2**64-1"),
        ("version", "7", "version: '7' is not an integer 0..2**64-1"),
        ("edges", {}, "edges: not a list"),
        (
            "approvals",
            DELETE,
            "the top level must be an object with keys approvals, edges, leases, version",
        ),
        ("edges.0.name", "VPC_A", "edges[0].name: 'VPC_A' is not a valid edge name"),
        ("edges.1.name", "vpc-a", "edges: edge 'vpc-a' appears twice"),
        (
            "edges.1.public_key",
            key(1).to_base64(),
            "edges: edges 'vpc-a' and 'vpc-b' have the same public key",
        ),
        ("edges.0.public_key", 5, "edges[0].public_key: 5 is not a base64 string"),
        ("edges.0.public_key", "x", "edges[0].public_key: 'x' is not a base64 public key"),
        ("edges.0.endpoints", "x", "edges[0].endpoints: not a list"),
        ("edges.0.endpoints.1", "localhost:51820", "edges[0].endpoints[1]: 'localhost:51820' is"),
        (
            "edges.0.extra",
            1,
            "edges[0]: not an object with keys advertised, endpoints, name, public_key",
        ),
        ("edges.0.advertised", None, "edges[0].advertised: not a list"),
        (
            "edges.0.advertised.0",
            {"route": "10.244.0.0/16"},
            "edges[0].advertised[0]: not an object with keys route, since",
        ),
        (
            "edges.0.advertised.0.route",
            "10.244.0.1/16",
            "edges[0].advertised[0].route: '10.244.0.1/16' is not a route",
        ),
        (
            "edges.0.advertised.1.route",
            "10.244.0.0/16",
            "edges[0]: route 10.244.0.0/16 is advertised twice (entry 1)",
        ),
        (
            "edges.0.advertised.1.since",
            8,
            "edges[0].advertised[1].since: 8 is above the state version 7",
        ),
        (
            "approvals.0",
            {"edge": "vpc-b", "route": "10.97.1.0/24"},
            "approvals[0]: edge 'vpc-b' does not advertise route 10.97.1.0/24",
        ),
        (
            "approvals.0",
            {"edge": "vpc-c", "route": "10.97.1.0/24"},
            "approvals[0]: edge 'vpc-c' does not advertise route 10.97.1.0/24",
        ),
        ("approvals.0", {"edge": "vpc-a"}, "approvals[0]: not an object with keys edge, route"),
        ("approvals.0.edge", 3, "approvals[0].edge: 3 is not a valid edge name"),
        ("leases.1.route", "10.97.1.0/24", "leases[1]: route 10.97.1.0/24 of edge 'vpc-a' has two"),
        ("leases.0.version", 8, "leases[0].version: 8 is above the state version 7"),
        ("leases.0.expires", 2**64, "leases[0].expires: 18446744073709551616 is not an integer"),
        ("leases.0.signature", "AAAA", f"leases[0].signature: 3 bytes; {SIG_RULE}"),
        ("leases.0.signature", "!!", f"leases[0].signature: '!!' is not base64; {SIG_RULE}"),
        ("leases.0.signature", None, f"leases[0].signature: None is not a string; {SIG_RULE}"),
        (
            "leases.0.route",
            "10.98.0.0/16",
            "leases[0]: edge 'vpc-a' does not advertise route 10.98.0.0/16",
        ),
    ],
)
def test_decode_refuses(path: str, value: object, message: str) -> None:
    assert error_of(mutate(path, value)).startswith(message)


def test_approved_twice_refused() -> None:
    d = doc()
    d["approvals"].append(dict(d["approvals"][0]))
    assert error_of(d) == "approvals[1]: route 10.97.1.0/24 of edge 'vpc-a' is approved twice"


def test_top_level_not_an_object() -> None:
    assert error_of([]) == (
        "the top level must be an object with keys approvals, edges, leases, version"
    )


def test_loads_refuses_non_json() -> None:
    with pytest.raises(ValueError, match="not a JSON document"):
        loads(b"{")
    with pytest.raises(ValueError, match="not a JSON document"):
        loads(b"\xff")


routes = st.builds(
    lambda a, p: ipaddress.ip_network(f"10.{a}.0.0/{p}", strict=False),
    st.integers(0, 255),
    st.integers(8, 24),
)


@st.composite
def states(draw: st.DrawFn) -> State:
    version = draw(st.integers(0, 2**64 - 1))
    names = sorted(draw(st.sets(st.sampled_from(["a", "b", "c", "d"]))))
    edges = []
    approvals = []
    leases = []
    for i, name in enumerate(names):
        nets = draw(st.lists(routes, unique=True, max_size=4))
        adv = tuple(Advertised(n, draw(st.integers(0, version))) for n in nets)
        edges.append(EdgeRecord(EdgeName(name), key(i + 1), (), adv))
        for n in nets:
            if draw(st.booleans()):
                approvals.append((EdgeName(name), n))
            if draw(st.booleans()):
                lease = Lease(
                    draw(st.integers(0, version)),
                    draw(st.integers(0, 2**64 - 1)),
                    draw(st.binary(min_size=64, max_size=64)),
                )
                leases.append((EdgeName(name), n, lease))
    key_ = lambda t: (t[0], t[1].version, int(t[1].network_address), t[1].prefixlen)  # noqa: E731
    return State(
        version,
        tuple(edges),
        tuple(sorted(approvals, key=key_)),
        tuple(sorted(leases, key=key_)),
    )


@given(states())
def test_round_trip_property(s: State) -> None:
    assert loads(dumps(s)) == s


def holding() -> State:
    """sample() with a refused route (no place) and two holds."""
    s = sample()
    a = s.edges[0]
    refused = EdgeRecord(
        a.name, a.public_key, a.endpoints, (*a.advertised, Advertised(net("10.0.0.0/8"), None))
    )
    holds = (
        Hold(EdgeName("vpc-a"), net("10.96.0.0/16"), 2, 1_760_000_600),
        Hold(EdgeName("vpc-c"), net("10.98.0.0/16"), 7, 1_760_000_000),
    )
    return State(s.version, (refused, s.edges[1]), s.approvals, s.leases, holds)


def test_holds_and_places_round_trip() -> None:
    s = holding()
    d = encode(s)
    assert d["edges"][0]["advertised"][2] == {"route": "10.0.0.0/8", "since": None}
    assert d["holds"] == [
        {"edge": "vpc-a", "route": "10.96.0.0/16", "since": 2, "until": 1_760_000_600},
        {"edge": "vpc-c", "route": "10.98.0.0/16", "since": 7, "until": 1_760_000_000},
    ]
    assert loads(dumps(s)) == s
    assert "holds" not in encode(sample())  # written only when there are some


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["holds"].append(dict(d["holds"][0])),
            "holds[2]: route 10.96.0.0/16 of edge 'vpc-a' is held twice",
        ),
        (
            lambda d: d["holds"][0].update(route="10.244.0.0/16"),
            "holds[0]: edge 'vpc-a' advertises route 10.244.0.0/16; no hold needed",
        ),
        (lambda d: d["holds"][1].update(since=8), "holds[1].since: 8 is above the state version 7"),
        (
            lambda d: d["holds"][1].update(until=-1),
            "holds[1].until: -1 is not an integer 0..2**64-1",
        ),
        (
            lambda d: d["holds"][1].pop("until"),
            "holds[1]: not an object with keys edge, route, since, until",
        ),
        (lambda d: d["holds"][0].update(edge="Bad"), "holds[0].edge: "),
        (
            lambda d: d["edges"][0]["advertised"][2].update(since="x"),
            "edges[0].advertised[2].since: 'x' is not an integer",
        ),
    ],
)
def test_decode_refuses_bad_holds(edit: Any, message: str) -> None:
    d = encode(holding())
    edit(d)
    assert error_of(d).startswith(message)


EPOCH = bytes(range(16))


def test_the_epoch_round_trips_and_is_kept_by_later_versions() -> None:
    from dataclasses import replace

    s = replace(sample(), epoch=EPOCH)
    doc = encode(s)
    assert doc["epoch"] == EPOCH.hex()
    assert decode(doc) == s and loads(dumps(s)) == s
    assert "epoch" not in encode(sample())  # none yet: the document of the last release
    assert decode(encode(sample())).epoch == b""


@pytest.mark.parametrize("value", ["00" * 15, "zz" * 16, 7, None, EPOCH.hex() + "00"])
def test_a_bad_epoch_is_refused(value: object) -> None:
    doc = encode(sample()) | {"epoch": value}
    with pytest.raises(ValueError, match=r"epoch: .* is not 32 hexadecimal digits"):
        decode(doc)


def test_ensure_epoch_makes_one_only_when_there_is_none() -> None:
    from dataclasses import replace

    from controller.state import ensure_epoch
    from isthmus.mapsig import epoch_created_ms

    made = ensure_epoch(sample(), 1_700_000_000.25, lambda n: b"\x09" * n)
    assert made == replace(sample(), epoch=made.epoch)
    assert epoch_created_ms(made.epoch) == 1_700_000_000_250 and made.epoch[8:] == b"\x09" * 8
    assert ensure_epoch(made, 1_800_000_000) is made

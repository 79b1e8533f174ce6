"""LpmTable against a brute-force model (wireguard-go allowedips_rand_test.go)."""

from __future__ import annotations

import ipaddress
import random

from hypothesis import given
from hypothesis import strategies as st

from isthmus.lpm import LpmTable, Network


def slow_lookup(entries: list[tuple[Network, int]], addr: ipaddress._BaseAddress) -> int | None:
    best: tuple[int, int] | None = None
    for net, value in entries:
        # A later duplicate of the same network replaces the earlier one.
        if (
            net.version == addr.version
            and addr in net
            and (best is None or net.prefixlen >= best[0])
        ):
            best = (net.prefixlen, value)
    return None if best is None else best[1]


def random_net(rng: random.Random, version: int) -> Network:
    bits = 32 if version == 4 else 128
    plen = rng.randint(0, bits)
    # Cluster addresses so that prefixes nest and collide often.
    value = rng.getrandbits(8) << (bits - 8) | rng.getrandbits(bits - 8) & rng.getrandbits(bits - 8)
    return ipaddress.ip_network((value, plen), strict=False)


def test_differential_against_brute_force() -> None:
    rng = random.Random(20261122)
    for version in (4, 6):
        bits = 32 if version == 4 else 128
        entries = [(random_net(rng, version), i) for i in range(300)]
        table = LpmTable(entries)
        for _ in range(3000):
            if rng.random() < 0.5:
                net = rng.choice(entries)[0]
                addr = net.network_address + rng.randrange(net.num_addresses)
            else:
                addr = ipaddress.ip_address(
                    rng.getrandbits(bits) if version == 4 else rng.getrandbits(128)
                )
            assert table.lookup(addr.packed) == slow_lookup(entries, addr), (addr, version)


@given(
    st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32), st.integers(0, 9)), max_size=30
    ),
    st.integers(0, 2**32 - 1),
)
def test_property_matches_model_v4(raw: list[tuple[int, int, int]], probe: int) -> None:
    entries: list[tuple[Network, int]] = [
        (ipaddress.ip_network((a, p), strict=False), v) for a, p, v in raw
    ]
    addr = ipaddress.IPv4Address(probe)
    assert LpmTable(entries).lookup(addr.packed) == slow_lookup(entries, addr)


def test_versions_do_not_mix() -> None:
    table = LpmTable([(ipaddress.ip_network("0.0.0.0/0"), "v4")])
    assert table.lookup(ipaddress.ip_address("::1").packed) is None
    assert table.lookup_ip(ipaddress.ip_address("10.1.2.3")) == "v4"


def test_longest_prefix_wins() -> None:
    table = LpmTable(
        [
            (ipaddress.ip_network("10.0.0.0/8"), "a"),
            (ipaddress.ip_network("10.96.0.0/16"), "b"),
            (ipaddress.ip_network("10.96.5.7/32"), "c"),
        ]
    )
    assert table.lookup_ip(ipaddress.ip_address("10.1.1.1")) == "a"
    assert table.lookup_ip(ipaddress.ip_address("10.96.1.1")) == "b"
    assert table.lookup_ip(ipaddress.ip_address("10.96.5.7")) == "c"
    assert table.lookup_ip(ipaddress.ip_address("11.0.0.1")) is None
    assert len(table) == 3


def test_a_none_value_is_a_hole_not_a_fall_through() -> None:
    n = ipaddress.ip_network
    table: LpmTable[str | None] = LpmTable(
        [(n("10.0.0.0/8"), "wide"), (n("10.1.0.0/16"), None), (n("10.1.2.0/24"), "narrow")]
    )
    assert table.lookup_ip(ipaddress.ip_address("10.9.0.1")) == "wide"
    assert table.lookup_ip(ipaddress.ip_address("10.1.9.1")) is None
    assert table.lookup_ip(ipaddress.ip_address("10.1.2.1")) == "narrow"

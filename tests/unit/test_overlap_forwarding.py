r"""The tunnel core with overlapping routes of different edges: longest prefix wins.

```
 a 10.97.1.0/24 (approved, more specific)      b 10.97.0.0/16 (the covering route)
   192.0.2.1:51820                  \          /   192.0.2.2:51820
                                c 10.3.0.0/16 [2001:db8::3]:51820
```

Admission (controller.admission) may now let both a and b serve: a map holds both, and
forwarding is longest prefix match in both directions. For a destination: the most specific
route of another edge. For an inner source: the sender must own the most specific route
containing it, so b may not send from a's addresses, and a packet from the TUN to the
edge's own route never leaves. Uses the in-memory underlay of tests/unit/test_tunnel.py.
"""

from __future__ import annotations

import pytest

from isthmus.routemap import RouteMap
from tests.unit.test_tunnel import A, B, C, Net, entry, ipv4, nonzero

OVERLAP = RouteMap(
    version=1,
    edges=(
        entry(A, routes=("10.97.1.0/24",)),
        entry(B, routes=("10.97.0.0/16",)),
        entry(C, routes=("10.3.0.0/16",)),
    ),
)


def mesh() -> Net:
    net = Net(route_map=OVERLAP)
    # one handshake each way between every pair, carrying a packet each
    for x, src, y, dst in (
        ("a", "10.97.1.5", "b", "10.97.2.9"),
        ("a", "10.97.1.5", "c", "10.3.0.9"),
        ("b", "10.97.2.9", "c", "10.3.0.9"),
    ):
        net.send(x, ipv4(src, dst))
        net.pump()
        net.send(y, ipv4(dst, src))
        net.pump()
        assert net.tun[y] and net.tun[x], (nonzero(net[x]), nonzero(net[y]))
    for t in net.tun.values():
        t.clear()
    return net


def delivered(net: Net, sender: str, packet: bytes) -> str | None:
    """Which edge's TUN `packet`, put into `sender`'s TUN, comes out of (None: dropped)."""
    for t in net.tun.values():
        t.clear()
    net.send(sender, packet)
    net.pump()
    found = [name for name, t in net.tun.items() if packet in t]
    assert len(found) <= 1
    return found[0] if found else None


def test_the_map_with_overlapping_routes_is_applied() -> None:
    net = mesh()
    for name in ("a", "b", "c"):
        assert net[name].map_version == 1
        assert nonzero(net[name]) == {}


@pytest.mark.parametrize(
    ("sender", "src", "dst", "receiver"),
    [
        # the more specific route wins from everywhere else
        ("c", "10.3.0.1", "10.97.1.200", "a"),
        ("b", "10.97.2.1", "10.97.1.200", "a"),
        # the rest of the covering route goes to the covering edge
        ("c", "10.3.0.1", "10.97.0.1", "b"),
        ("c", "10.3.0.1", "10.97.255.1", "b"),
        ("a", "10.97.1.1", "10.97.2.1", "b"),
        ("a", "10.97.1.1", "10.97.0.255", "b"),
        ("a", "10.97.1.1", "10.3.0.7", "c"),
    ],
)
def test_destination_longest_prefix_wins(sender: str, src: str, dst: str, receiver: str) -> None:
    net = mesh()
    assert delivered(net, sender, ipv4(src, dst)) == receiver
    assert all(nonzero(net[n]) == {} for n in ("a", "b", "c"))


@pytest.mark.parametrize(
    ("sender", "src", "receiver", "accepted"),
    [
        ("a", "10.97.1.7", "c", True),  # a owns the most specific route of its source
        ("b", "10.97.3.7", "c", True),
        ("b", "10.97.1.7", "c", False),  # inside b's /16, but a's /24 is more specific
        ("a", "10.97.3.7", "c", False),  # b's, not a's
        ("a", "10.97.3.7", "b", False),
    ],
)
def test_inner_source_is_checked_by_longest_prefix(
    sender: str, src: str, receiver: str, accepted: bool
) -> None:
    net = mesh()
    dst = {"a": "10.97.1.1", "b": "10.97.2.1", "c": "10.3.0.1"}[receiver]
    got = delivered(net, sender, ipv4(src, dst))
    assert got == (receiver if accepted else None)
    assert nonzero(net[receiver]) == ({} if accepted else {"bad_inner_source": 1})


def test_b_may_not_send_from_as_addresses_into_a() -> None:
    # The edge must treat its own routes as owned by itself when checking inner sources:
    # b's /16 covers a's /24, but b does not own a's addresses.
    net = mesh()
    assert delivered(net, "b", ipv4("10.97.1.7", "10.97.1.1")) is None
    assert nonzero(net["a"]) == {"bad_inner_source": 1}


def test_own_more_specific_route_is_no_route_not_the_covering_edge() -> None:
    # A packet from a's TUN to a's own route would come straight back: it must not be
    # sent to b just because b's /16 covers it.
    net = mesh()
    assert net["a"].inside(ipv4("10.97.1.1", "10.97.1.9"), net.now) is None
    assert net["a"].datagrams_to_send() == []
    assert nonzero(net["a"]) == {"no_route": 1}


def test_own_covering_route_still_forwards_the_more_specific_part() -> None:
    # b's own /16 is not routed by b, except the part another edge owns more specifically
    net = mesh()
    assert net["b"].inside(ipv4("10.97.2.1", "10.97.3.9"), net.now) is None
    assert nonzero(net["b"]) == {"no_route": 1}
    assert delivered(net, "b", ipv4("10.97.2.1", "10.97.1.9")) == "a"

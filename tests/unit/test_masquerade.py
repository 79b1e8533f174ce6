"""Masquerade: the pure nftables ruleset (edge.masquerade), the `masquerade` config key,
and how status and explain show it (edge.admin, edge.explain, edge.status)."""

from __future__ import annotations

import ipaddress

import pytest

from edge.config import load, parse
from edge.explain import explain, parse_address
from edge.masquerade import (
    MARK,
    MasqueradeState,
    covering,
    qualified,
    removal_batch,
    replace_batch,
    table_name,
    table_text,
)
from edge.status import problems, render, render_explain
from isthmus.configfile import ConfigError
from isthmus.routemap import parse_route
from tests.unit.test_edge_config import ROOT, error, table
from tests.unit.test_explain import tables

CLUSTER = parse_route("10.100.0.0/16")
PODS = parse_route("10.244.2.0/24")
V6 = parse_route("fd00:100::/64")

V4_TABLE = """table inet isthmus_isthmus0 {
\tset masquerade4 {
\t\ttype ipv4_addr
\t\tflags interval
\t\telements = { 10.100.0.0/16, 10.244.2.0/24 }
\t}
\tchain forward {
\t\ttype filter hook forward priority filter; policy accept;
\t\tiifname "isthmus0" ip daddr @masquerade4 meta mark set meta mark | 0x00001000
\t\tiifname "isthmus0" ct original ip daddr @masquerade4 meta mark set meta mark | 0x00001000
\t}
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tmeta mark & 0x00001000 == 0x00001000 masquerade
\t}
}"""


def test_the_table_is_named_after_the_tun() -> None:
    assert table_name("isthmus0") == "isthmus_isthmus0"
    assert qualified("wg.a-1") == "inet isthmus_wg.a-1"
    assert MARK & 0xC000 == 0 and MARK & 0xFFFF0F00 == 0  # kube-proxy's, Calico's, Cilium's


def test_ipv4_ranges_match_before_and_after_dnat() -> None:
    assert table_text("isthmus0", (CLUSTER, PODS)) == V4_TABLE


def test_ipv6_ranges_get_their_own_set_and_rules() -> None:
    text = table_text("isthmus0", (V6, CLUSTER))
    assert "\tset masquerade4 {" in text and "\tset masquerade6 {" in text
    assert "\t\ttype ipv6_addr\n\t\tflags interval\n\t\telements = { fd00:100::/64 }" in text
    assert 'iifname "isthmus0" ip6 daddr @masquerade6 meta mark set' in text
    assert 'iifname "isthmus0" ct original ip6 daddr @masquerade6 meta mark set' in text
    assert text.count(" masquerade\n") == 1  # one nat rule for both families


def test_without_ranges_there_is_no_table_to_write() -> None:
    with pytest.raises(ValueError, match="no ranges"):
        table_text("isthmus0", ())


def test_every_batch_first_deletes_what_a_previous_process_left() -> None:
    removal = "table inet isthmus_isthmus0\ndelete table inet isthmus_isthmus0\n"
    assert removal_batch("isthmus0") == removal
    assert replace_batch("isthmus0", ()) == removal
    assert replace_batch("isthmus0", (CLUSTER, PODS)) == removal + V4_TABLE + "\n"
    assert replace_batch("isthmus0", (CLUSTER,)).count("table inet isthmus_isthmus0 {") == 1


def test_covering_is_the_most_specific_range_of_the_family() -> None:
    wide = parse_route("10.0.0.0/8")
    assert covering(ipaddress.ip_address("10.244.2.7"), (wide, PODS)) == PODS
    assert covering(ipaddress.ip_address("10.1.2.3"), (wide, PODS)) == wide
    assert covering(ipaddress.ip_address("172.16.0.1"), (wide, PODS)) is None
    assert covering(ipaddress.ip_address("fd00:100::1"), (wide, V6)) == V6


def test_state_document_and_problems() -> None:
    state = MasqueradeState((CLUSTER,), "inet isthmus_isthmus0", True)
    assert state.as_dict() == {
        "ranges": ["10.100.0.0/16"],
        "table": "inet isthmus_isthmus0",
        "installed": True,
    }
    assert state.problems() == []
    assert MasqueradeState((), "inet isthmus_isthmus0", False).problems() == []
    assert MasqueradeState((CLUSTER,), "inet isthmus_isthmus0", False).problems() == [
        "the masquerade table inet isthmus_isthmus0 is not installed: tunnelled packets to "
        "10.100.0.0/16 keep their source address"
    ]
    assert MasqueradeState((CLUSTER,), "inet t", None).problems() == [
        "the masquerade table inet t could not be read"
    ]


# -- the config key ---------------------------------------------------------------------------


def test_masquerade_defaults_to_none_and_keeps_the_order() -> None:
    assert parse(table()).masquerade == ()
    cfg = parse(table(masquerade=["10.100.0.0/16", "fd00:100::/64", "10.244.2.0/24"]))
    assert cfg.masquerade == (CLUSTER, V6, PODS)


def test_masquerade_errors_name_the_key_the_problem_and_what_is_allowed() -> None:
    assert error(table(masquerade="10.0.0.0/8")) == (
        "masquerade: '10.0.0.0/8' is not a list; allowed: a list of local ranges, none "
        "overlapping another: an IPv4 or IPv6 network in CIDR form with no host bits set, "
        "e.g. 10.244.0.0/16"
    )
    assert error(table(masquerade=["10.100.0.0/16", "10.1.2.3/16"])) == (
        "masquerade[1]: '10.1.2.3/16' is not a route (10.1.2.3/16 has host bits set); "
        "allowed: an IPv4 or IPv6 network in CIDR form with no host bits set, e.g. 10.244.0.0/16"
    )
    assert error(table(masquerade=["10.100.0.0/16", "10.100.0.0/16"])) == (
        "masquerade[1]: 10.100.0.0/16 is listed twice (masquerade[0]); "
        "allowed: each range once, none overlapping"
    )
    assert error(table(masquerade=["10.0.0.0/8", "10.100.0.0/16"])) == (
        "masquerade[1]: 10.100.0.0/16 overlaps 10.0.0.0/8 (masquerade[0]); "
        "allowed: each range once, none overlapping"
    )
    with pytest.raises(ConfigError, match=r"^masquerade\[0\]: 5 is not a route"):
        parse(table(masquerade=[5]))


def test_the_example_file_documents_masquerade() -> None:
    path = ROOT / "deploy" / "examples" / "edge.toml"
    assert load(path).masquerade == ()
    assert "\nmasquerade = []\n" in path.read_text()


# -- status and explain -----------------------------------------------------------------------


def _status(masquerade: dict[str, object] | None) -> dict[str, object]:
    doc: dict[str, object] = {
        "edge": "k8s",
        "controller": {"address": "198.18.0.1:7000", "connected": True},
        "peers": [],
        "routes": [],
        "drops": {},
    }
    if masquerade is not None:
        doc["masquerade"] = masquerade
    return doc


def test_status_shows_the_ranges_and_a_missing_table_is_a_problem() -> None:
    good = _status(
        {"ranges": ["10.100.0.0/16"], "table": "inet isthmus_isthmus0", "installed": True}
    )
    assert "\nmasquerade: 10.100.0.0/16\n  table inet isthmus_isthmus0: installed\n" in render(good)
    assert problems(good) == []
    bad = _status(
        {"ranges": ["10.100.0.0/16"], "table": "inet isthmus_isthmus0", "installed": False}
    )
    assert "  table inet isthmus_isthmus0: NOT installed\n" in render(bad)
    assert problems(bad) == ["the masquerade table inet isthmus_isthmus0 is not installed"]
    none = _status({"ranges": [], "table": "inet isthmus_isthmus0", "installed": False})
    assert "\nmasquerade: (none)\n" in render(none) and problems(none) == []
    assert "masquerade" not in render(_status(None))


def test_explain_an_address_inside_a_masquerade_range() -> None:
    state = MasqueradeState((CLUSTER, PODS), "inet isthmus_isthmus0", True)
    doc = explain(parse_address("10.244.2.10"), tables(masquerade=state), ("lan0", "10.240.0.1"))
    assert doc["masquerade"] == {
        "range": "10.244.2.0/24",
        "installed": True,
        "interface": "lan0",
        "source": "10.240.0.1",
    }
    assert not any("masquerade" in p for p in doc["problems"])
    assert (
        "  masquerade: 10.244.2.0/24: from the tunnel, masqueraded to this edge's address "
        "on lan0 (10.240.0.1)\n"
    ) in render_explain(doc)
    unrouted = explain(parse_address("10.100.0.10"), tables(masquerade=state))
    assert unrouted["masquerade"]["interface"] is None
    assert "on the interface it leaves by (the kernel routes it only after a DNAT)" in (
        render_explain(unrouted)
    )


def test_explain_outside_the_ranges_says_nothing_and_a_missing_table_is_a_problem() -> None:
    state = MasqueradeState((CLUSTER,), "inet isthmus_isthmus0", False)
    assert "masquerade" not in explain(parse_address("10.245.0.7"), tables(masquerade=state))
    assert "masquerade" not in explain(parse_address("10.100.0.10"), tables())
    doc = explain(parse_address("10.100.0.10"), tables(masquerade=state))
    assert (
        "10.100.0.10 is inside masquerade range 10.100.0.0/16 but the table "
        "inet isthmus_isthmus0 is not installed: tunnelled packets to it keep their source "
        "address"
    ) in doc["problems"]

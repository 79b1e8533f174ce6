"""The attack tooling alone, without isthmus: the impairment proxy, the pcap parser and the
flood generator, on the demo topology's plumbing (no controller, no edge process).

```
  [ul] br0 198.18.0.1/24    impair proxy: P_a 198.18.0.1:40000, P_b 198.18.0.1:40001
   |                         flood sources 198.18.0.200-203/32 on br0
   +-- ul0 198.18.0.11 [vpc-a]  sender bound to :51820 (vpc-a's real address)
   +-- ul0 198.18.0.12 [vpc-b]  UDP sink :51820 (vpc-b's real address), tcpdump on ul0
   +-- ul0 198.18.0.13 [office] unused
```
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from isthmus_lab.capture import capture
from isthmus_lab.commands import IMPAIR, PROBE, wait_until
from isthmus_lab.impair import SiteSpec, parse_counters, site_arg
from isthmus_lab.netns import Lab
from isthmus_lab.topology import DEMO, EDGE_UNDERLAY_IF, UNDERLAY_BRIDGE, Namespaces, build
from tests.e2e.attack_tools import read_pcap, write_packets

pytestmark = pytest.mark.netns

TOOLS = (sys.executable, str(Path(__file__).with_name("attack_tools.py")))
A_REAL = ("198.18.0.11", 51820)
B_REAL = ("198.18.0.12", 51820)
P_A = ("198.18.0.1", 40000)
P_B = ("198.18.0.1", 40001)


@pytest.fixture(scope="module")
def plumbing(netns_host: None) -> Iterator[tuple[Lab, Namespaces]]:
    lab = Lab()
    try:
        yield lab, build(lab, DEMO)
    finally:
        lab.close()


def test_impair_proxy_forwards_between_proxy_addresses_with_loss_reorder_duplicates(
    plumbing: tuple[Lab, Namespaces],
) -> None:
    lab, ns = plumbing
    sites = [SiteSpec("a", P_A, A_REAL), SiteSpec("b", P_B, B_REAL)]
    argv = [*IMPAIR, "--seed", "7", "--loss", "10", "--reorder", "20", "--duplicate", "10"]
    for spec in sites:
        argv += ["--site", site_arg(spec)]
    proxy = lab.spawn(ns.underlay, argv, lab.dir / "impair.log")
    sink = lab.spawn(ns.edges["vpc-b"], [*PROBE, "udp-sink", "--port", "51820"], lab.dir / "s.log")
    wait_until(lambda: "listening" in proxy.log() and "listening" in sink.log(), 10.0, "ready")
    # Resolve neighbours first: a burst to an unresolved address overflows the ARP queue.
    for here, there in ((ns.underlay, B_REAL[0]), (ns.edges["vpc-a"], P_B[0])):
        lab.run(here, ["ping", "-n", "-c", "1", "-W", "2", there])
    n = 400
    packets = write_packets(lab.dir / "seq.hex", (f"seq:{i:06d}".encode() for i in range(n)))
    tool = [*TOOLS, "inject", "--target", "198.18.0.1:40001", "--packets", str(packets)]
    with capture(lab, ns.edges["vpc-b"], EDGE_UNDERLAY_IF, lab.dir / "b.pcap", snaplen=2048) as cap:
        # From a's real address, then from an address that is no edge's.
        for bind in (f"{A_REAL[0]}:{A_REAL[1]}", f"{A_REAL[0]}:5555"):
            lab.run(ns.edges["vpc-a"], [*tool, "--bind", bind, "--wait", "0.3"])
    proxy.stop()
    counters = parse_counters(proxy.log())
    assert counters is not None, proxy.log()
    # The unknown source sent all n packets too, and none of them was forwarded.
    assert counters["received"] == n and counters["unknown_source"] == n, counters
    assert 0.04 * n < counters["lost"] < 0.18 * n, counters
    assert counters["duplicated"] > 0 and counters["reordered"] > 0, counters
    expected = n - counters["lost"] + counters["duplicated"]
    assert counters["forwarded"] == expected and counters["send_errors"] == 0, counters

    seen = [d for d in read_pcap(cap.path) if d.dst == B_REAL]
    assert {d.src for d in seen} == {P_A}, "b must see a's datagrams come from a's proxy"
    assert len(seen) == counters["forwarded"]
    order = [int(d.payload.decode().split(":")[1]) for d in seen]
    assert order != sorted(order), "no reordering on the wire"
    assert len(set(order)) < len(order), "no duplicate on the wire"
    assert len(set(order)) == n - counters["lost"]
    sink_lines = [line for line in sink.log().splitlines() if line.startswith(P_A[0])]
    assert sink_lines and all(line.startswith(f"{P_A[0]}:{P_A[1]} ") for line in sink_lines)
    sink.stop()


def test_flood_generator_reaches_its_rate_from_many_sources(
    plumbing: tuple[Lab, Namespaces],
) -> None:
    lab, ns = plumbing
    target_ns = ns.edges["office"]
    lab.nft(
        target_ns,
        "table inet isthmus_flood_probe {\n"
        "  chain input { type filter hook input priority 0; udp dport 51820 counter drop; }\n"
        "}\n",
    )
    sources = [f"198.18.0.{200 + i}" for i in range(4)]
    for source in sources:
        lab.add_address(ns.underlay, UNDERLAY_BRIDGE, f"{source}/32")
    packets = write_packets(lab.dir / "flood.hex", [bytes([1, 0, 0, 0]) + bytes(144)] * 8)
    argv = [*TOOLS, "flood", "--target", "198.18.0.13:51820", "--packets", str(packets)]
    argv += ["--rate", "10000", "--duration", "2", "--max-count", "15000"]
    for source in sources:
        argv += ["--source", source]
    done = lab.run(ns.underlay, argv, timeout=30.0)
    result = json.loads(done.stdout.splitlines()[-1])
    listed = lab.run(target_ns, ["nft", "-j", "list", "table", "inet", "isthmus_flood_probe"])
    arrived = next(
        item["counter"]["packets"]
        for entry in json.loads(listed.stdout)["nftables"]
        if "rule" in entry
        for item in entry["rule"]["expr"]
        if "counter" in item
    )
    print(f"flood self-test: {result}, arrived {arrived}")
    assert result["sent"] <= 15000 and result["seconds"] < 3.0, result
    assert result["rate"] >= 5000, result
    assert result["sockets"] == 16
    assert arrived >= 0.95 * (result["sent"] - result["send_errors"]), (arrived, result)

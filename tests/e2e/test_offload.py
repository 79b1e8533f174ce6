"""End to end: a 32 MiB TCP transfer through two edges with TUN and UDP offloads on.

```
  [host-a] 10.201.1.10                                          [host-b] 10.202.1.10
      | eth0, MTU 1420                                              | eth0, MTU 1420
  [gw-a] lan0 -- edge (isthmus0 TUN, MTU 1420)      edge (isthmus0 TUN) -- lan0 [gw-b]
         ul0 198.18.0.1/24 ======= veth underlay, MTU 1500 ======= ul0 198.18.0.2/24
         + controller :7000                nftables counters on both ul0 (ingress)
```
The perf harness's two-site topology (perf.harness.topology) with its isthmus overlay. The
underlay veths get `gso_max_segs 1`, so the kernel cuts every UDP GSO run into datagrams
before the wire, as a NIC would: what the ingress counters see is what a wire would carry.

Checks: the bytes arrive intact (SHA-256 at the receiver); the sending edge sent its
datagrams in runs with UDP GSO, the receiving edge wrote coalesced TCP super-packets to its
TUN (the counters each edge logs when it stops); and the underlay saw no IP fragment and no
datagram larger than the TUN MTU + 32 + 28 bytes (1480 <= 1500). The edges run with their
defaults: TUN reads without TSO (edge.tun), so the sender's kernel cuts host a's TCP
super-packets before the edge reads them.
A second, smaller transfer lets gw-a's veth pass GSO runs whole (gso_max_segs back up), so
the receiving edge reads them with UDP GRO, splits them, and the data still arrives intact.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from isthmus_lab.netns import Lab
from perf.harness import topology
from perf.harness.overlays import Isthmus

pytestmark = pytest.mark.netns

TRANSFER_BYTES = 32 * 1024 * 1024
PORT = 5999
MAX_DATAGRAM_IP_LEN = topology.OVERLAY_MTU + 32 + 28  # TUN MTU + tunnel overhead + IP/UDP

RECEIVER = f"""
import hashlib, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {PORT}))
s.listen(1)
print("listening", flush=True)
conn, _ = s.accept()
h, n = hashlib.sha256(), 0
while chunk := conn.recv(1 << 20):
    h.update(chunk)
    n += len(chunk)
print(n, h.hexdigest(), flush=True)
"""

SENDER = """
import hashlib, random, socket, sys
data = random.Random(5).randbytes({size})
s = socket.create_connection((sys.argv[1], {port}), timeout=60)
s.sendall(data)
s.close()
print(len(data), hashlib.sha256(data).hexdigest())
"""

COUNTERS = f"""
table netdev isthmus_offload_test {{
    counter fragments {{ }}
    counter tunnel {{ }}
    counter full_size {{ }}
    counter oversize {{ }}
    chain ingress {{
        type filter hook ingress device "{topology.UNDERLAY_IF}" priority 0; policy accept;
        ip frag-off & 0x3fff != 0 counter name "fragments"
        ip6 nexthdr ipv6-frag counter name "fragments"
        udp dport {Isthmus.udp_port} counter name "tunnel"
        udp dport {Isthmus.udp_port} ip length > 1400 counter name "full_size"
        udp dport {Isthmus.udp_port} ip length > {MAX_DATAGRAM_IP_LEN} counter name "oversize"
    }}
}}
"""


def counters(lab: Lab, ns: str) -> dict[str, int]:
    out = lab.run(ns, ["nft", "-j", "list", "counters"]).stdout
    found = {}
    for item in json.loads(out)["nftables"]:
        counter = item.get("counter")
        if counter and counter["table"] == "isthmus_offload_test":
            found[counter["name"]] = counter["packets"]
    return found


def dataplane_stats(log: str) -> dict[str, int]:
    lines = [line for line in log.splitlines() if "event=dataplane_stats" in line]
    assert lines, f"the edge logged no dataplane_stats line when it stopped:\n{log[-2000:]}"
    return {k: int(v) for k, v in re.findall(r" (\w+)=(\d+)(?= |$)", lines[-1])}


def transfer(lab: Lab, sites: topology.Sites, size: int, out: Path) -> tuple[list[str], list[str]]:
    """Send `size` random bytes from host a to host b over TCP: (sent, received), each as
    [byte count, SHA-256]."""
    receiver = lab.spawn(
        sites.b.host_ns, ["python3", "-c", RECEIVER], out.with_suffix(".log"), stdout_path=out
    )
    topology.wait_until(
        lambda: "listening" in out.read_text(), 10.0, "the receiver on host b listens"
    )
    sender = SENDER.format(size=size, port=PORT)
    sent = lab.run(sites.a.host_ns, ["python3", "-c", sender, sites.b.host_ip], timeout=180.0)
    receiver.wait(60.0)
    return sent.stdout.split(), out.read_text().split()[1:]


def test_bulk_tcp_crosses_with_gso_runs_coalesced_writes_and_no_fragments(
    netns_host: None, tmp_path: Path
) -> None:
    with Lab(workdir=tmp_path / "lab") as lab:
        sites = topology.build(lab)
        for site in sites.both:
            lab.ip(site.gateway_ns, "link", "set", topology.UNDERLAY_IF, "gso_max_segs", "1")
            lab.nft(site.gateway_ns, COUNTERS)
        overlay = Isthmus()
        workdir = tmp_path / "isthmus"
        overlay.setup(lab, sites, workdir)
        try:
            sent, received = transfer(lab, sites, TRANSFER_BYTES, tmp_path / "first.out")
            at_a = counters(lab, sites.a.gateway_ns)
            at_b = counters(lab, sites.b.gateway_ns)
            # Now let the veth carry GSO runs whole, as a GRO-capable NIC would hand them up:
            # the receiving edge then reads runs of datagrams in one call (UDP GRO).
            lab.ip(sites.a.gateway_ns, "link", "set", topology.UNDERLAY_IF, "gso_max_segs", "65535")
            second = transfer(lab, sites, TRANSFER_BYTES // 4, tmp_path / "second.out")
        finally:
            overlay.teardown()  # SIGTERM: each edge logs its counters as it stops
        assert sent[0] == str(TRANSFER_BYTES)
        assert received == sent, "the receiver got other bytes than were sent"
        assert second[1] == second[0], "the second transfer arrived changed"

        assert at_b["tunnel"] > TRANSFER_BYTES // topology.OVERLAY_MTU, at_b
        assert at_b["full_size"] > TRANSFER_BYTES // 2 // topology.OVERLAY_MTU, at_b
        assert at_b["oversize"] == at_a["oversize"] == 0, (at_a, at_b)
        assert at_b["fragments"] == at_a["fragments"] == 0, (at_a, at_b)

        a = dataplane_stats((workdir / "edge-a" / "edge.log").read_text())
        b = dataplane_stats((workdir / "edge-b" / "edge.log").read_text())
        assert a["super_packets"] == a["segments"] == 0, f"TSO reads are off by default: {a}"
        assert a["gso_sends"] > 0 and a["gso_datagrams"] > 2 * a["gso_sends"], a
        assert b["coalesced_writes"] > 0, f"edge b wrote no coalesced super-packet: {b}"
        assert b["coalesced_segments"] > 2 * b["coalesced_writes"], b
        assert b["gro_reads"] > 0 and b["gro_datagrams"] > 2 * b["gro_reads"], b
        assert a["tun_write_errors"] == b["tun_write_errors"] == 0

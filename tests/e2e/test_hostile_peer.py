"""A hostile peer and hostile datagrams, end to end with real edges (the demo mesh).

```
        [ul] br0 198.18.0.1/24 -- controller :7000; attacker: inject sockets on
          |                       198.18.0.1 (the underlay namespace)
   +------+---------------+----------------------+
 ul0 198.18.0.11      ul0 198.18.0.12       ul0 198.18.0.13        edges: UDP :51820
 [vpc-a] edge         [vpc-b] edge (victim) [office] edge
   | lan0                 | lan0                 | lan0
 [vpc-a-pod]          [vpc-b-pod]            [office-host]
 10.244.1.10          10.245.1.10            172.16.0.10
                      UDP sinks
```
- S02: datagrams of 9000 B and 65,507 B (the largest UDP payload; it crosses the 1500-byte
  underlay as IP fragments) sent at vpc-b's UDP port are dropped and counted (oversize
  above the largest datagram an edge ever sends, malformed or unknown_peer below it), and
  the edge's memory stays flat; a 65,535-byte IP packet from vpc-a-pod to vpc-b-pod is
  fragmented by the kernels on its way and arrives whole, and a larger write is refused
  by the sender's kernel; nothing crashes.
Helpers come from test_tunnel_attacks (same mesh layout, same tools).
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from isthmus.lab.mesh import Mesh
from isthmus.lab.topology import DEMO
from tests.e2e.attack_tools import random_data_packet, write_packets
from tests.e2e.test_tunnel_attacks import (
    B_REAL,
    _drops,
    _grew,
    _received,
    _tcp,
    _tool,
    _udp_sink,
)

pytestmark = pytest.mark.netns

A, B = DEMO.site("vpc-a"), DEMO.site("vpc-b")
MAX_UDP_PAYLOAD = 65_507  # 65,535 - 20 (IPv4) - 8 (UDP)
RSS_GROWTH_LIMIT = 2 << 20


def _inject(
    mesh: Mesh, name: str, packets: list[bytes], repeat: int = 1, interval: float = 0.0
) -> dict[str, Any]:
    """Send `packets` to vpc-b's endpoint from the underlay, `interval` apart; wait 1 s."""
    path = write_packets(mesh.dir / f"{name}.hex", packets)
    args = ["inject", "--target", B_REAL, "--packets", str(path), "--repeat", str(repeat)]
    args += ["--interval", str(interval), "--wait", "1.0"]
    return _tool(mesh, mesh.underlay_ns, *args, timeout=60.0)


def _rss(pid: int) -> int:
    """Resident set size of `pid` in bytes, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


# -- S02 ----------------------------------------------------------------------------------


def test_oversized_datagrams_are_dropped_counted_and_memory_stays_flat(
    mesh: Mesh, figures: dict[str, Any]
) -> None:
    edge = mesh.edges["vpc-b"]
    assert b"edge" in Path(f"/proc/{edge.pid}/cmdline").read_bytes().split(b"\0")
    huge = bytes((4, 0, 0, 0)) + secrets.token_bytes(MAX_UDP_PAYLOAD - 4)  # data type
    jumbo_zero = bytes(9000)  # type 0: no tunnel message
    jumbo_data = random_data_packet(9000)  # data type, an index no session has
    batch = [huge, jumbo_zero, jumbo_data]
    # 10 ms apart: the edge's socket buffer holds only a few 64 KB datagrams at once.
    _inject(mesh, "oversize-warmup", batch, repeat=5, interval=0.01)
    time.sleep(0.5)
    rss0 = _rss(edge.pid)
    before = _drops(mesh, "vpc-b")
    rounds = 60
    result = _inject(mesh, "oversize", batch, repeat=rounds, interval=0.01)
    assert result["sent"] == 3 * rounds and result["send_errors"] == {}, result
    assert result["replies"] == [], "an oversized datagram got an answer"
    _grew(mesh, "vpc-b", before, "oversize", rounds)
    _grew(mesh, "vpc-b", before, "malformed", rounds)
    _grew(mesh, "vpc-b", before, "unknown_peer", rounds)
    rss1 = _rss(edge.pid)
    figures["oversize"] = {"rss_before": rss0, "rss_after": rss1, "datagrams": 3 * rounds}
    assert rss1 - rss0 < RSS_GROWTH_LIMIT, f"vpc-b's RSS grew from {rss0} to {rss1} bytes"
    assert edge.alive()
    _tcp(mesh, "vpc-a", "vpc-b")


def test_a_65535_byte_ip_packet_through_the_tunnel_is_fragmented_and_nothing_crashes(
    mesh: Mesh,
) -> None:
    sink = _udp_sink(mesh, "vpc-b", 9106)
    payload = secrets.token_bytes(MAX_UDP_PAYLOAD)
    too_big = secrets.token_bytes(MAX_UDP_PAYLOAD + 1)
    path = write_packets(mesh.dir / "big-inner.hex", [payload, too_big])
    target = f"{B.workload_ip}:9106"
    argv = ["inject", "--target", target, "--packets", str(path), "--wait", "0.1"]
    result = _tool(mesh, mesh.workload_ns("vpc-a"), *argv)
    assert result["sent"] == 1 and result["send_errors"] == {"EMSGSIZE": 1}, result
    try:
        deadline = time.monotonic() + 5.0
        while _received(sink, payload) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _received(sink, payload) == 1, "the 65,535-byte packet did not arrive whole"
    finally:
        sink.stop()
    for site in ("vpc-a", "vpc-b"):
        assert mesh.edges[site].alive(), f"{site}'s edge died"
    _tcp(mesh, "vpc-a", "vpc-b")
    _tcp(mesh, "vpc-b", "vpc-a")

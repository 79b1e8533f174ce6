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
- F7: vpc-a, a legitimate peer with its real key but a map of its own making
  (tests/e2e/hostile_peer.py runs the real core in vpc-a's namespace while vpc-a's edge is
  down), seals for vpc-b packets to 169.254.169.254 and 198.51.100.20 (both held by
  vpc-b-pod, and routed there by vpc-b's host, so a forwarded one would reach its sink)
  and to office-host (a third site): none arrives anywhere, vpc-b counts them
  bad_inner_destination, and a packet to vpc-b-pod among them arrives.
- F11: an initiation of vpc-a captured on the underlay and replayed from the underlay
  namespace after vpc-b restarted is answered (it is fresh to the new process), but vpc-b
  keeps sending to vpc-a's real endpoint, and traffic keeps flowing.
- S02: datagrams of 9000 B and 65,507 B (the largest UDP payload; it crosses the 1500-byte
  underlay as IP fragments) sent at vpc-b's UDP port are dropped and counted (oversize
  above the largest datagram an edge ever sends, malformed or unknown_peer below it), and
  the edge's memory stays flat; a 65,535-byte IP packet from vpc-a-pod to vpc-b-pod is
  fragmented by the kernels on its way and arrives whole, and a larger write is refused
  by the sender's kernel; nothing crashes.
Helpers come from test_tunnel_attacks (same mesh layout, same tools).
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import struct
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from isthmus_lab.commands import wait_until
from isthmus_lab.mesh import Mesh
from isthmus_lab.topology import DEMO, UNDERLAY_BRIDGE
from tests.e2e.attack_tools import (
    TYPE_INITIATION,
    TYPE_RESPONSE,
    random_data_packet,
    read_pcap,
    write_packets,
)
from tests.e2e.test_tunnel_attacks import (
    B_REAL,
    PORT,
    SNAPLEN,
    _between,
    _drops,
    _grew,
    _received,
    _tcp,
    _tool,
    _udp_sink,
)

pytestmark = pytest.mark.netns

A, B, OFFICE = DEMO.site("vpc-a"), DEMO.site("vpc-b"), DEMO.site("office")
HOSTILE_PEER = (sys.executable, str(Path(__file__).with_name("hostile_peer.py")))
METADATA, OUTSIDE = "169.254.169.254", "198.51.100.20"  # link-local; TEST-NET-2
SINK_PORT = 9107
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


def _udp4(src: str, dst: str, port: int, payload: bytes) -> bytes:
    """An IPv4/UDP packet with a valid header checksum and no UDP checksum (0)."""
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        28 + len(payload),
        0,
        0x4000,
        64,
        17,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    total = sum(struct.unpack("!10H", header))
    total = (total & 0xFFFF) + (total >> 16)
    checksum = ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + udp + payload


# -- F7 -----------------------------------------------------------------------------------


def test_a_peer_with_its_real_key_cannot_send_to_addresses_that_are_not_the_receivers(
    mesh: Mesh,
) -> None:
    edge_b, pod_b = mesh.edge_ns("vpc-b"), mesh.workload_ns("vpc-b")
    for ip in (METADATA, OUTSIDE):
        mesh.lab.add_address(pod_b, "lo", f"{ip}/32")
        mesh.lab.add_route(edge_b, f"{ip}/32", via=B.workload_ip)
    sinks = {site: _udp_sink(mesh, site, SINK_PORT) for site in ("vpc-b", "office")}
    foreign = {
        dst: f"to {dst} {secrets.token_hex(6)}".encode()
        for dst in (METADATA, OUTSIDE, OFFICE.workload_ip)
    }
    genuine = f"to vpc-b-pod {secrets.token_hex(6)}".encode()
    packets = [_udp4(A.workload_ip, dst, SINK_PORT, p) for dst, p in foreign.items()]
    packets.append(_udp4(A.workload_ip, B.workload_ip, SINK_PORT, genuine))
    path = write_packets(mesh.dir / "foreign-destinations.hex", packets)
    before = {site: _drops(mesh, site) for site in ("vpc-b", "office")}
    mesh.kill_edge("vpc-a")  # vpc-a turns hostile: its key, its endpoint, its own map
    try:
        argv = [*HOSTILE_PEER, "--key", str(mesh.edge_paths("vpc-a").private_key)]
        argv += ["--name", "vpc-a", "--own", ",".join(A.routes), "--listen", f"0.0.0.0:{PORT}"]
        argv += ["--peer", "vpc-b", "--peer-key", mesh.public_keys["vpc-b"]]
        argv += ["--peer-endpoint", B_REAL, "--packets", str(path)]
        argv += [
            "--peer-routes",
            f"{B.routes[0]},169.254.0.0/16,198.51.100.0/24,{OFFICE.routes[0]}",
        ]
        done = mesh.lab.run(mesh.edge_ns("vpc-a"), argv, check=False, timeout=30.0)
        assert done.returncode == 0, f"{done.stdout}{done.stderr}"
        assert json.loads(done.stdout.splitlines()[-1]) == {
            "handshake": True,
            "sealed": len(packets),
            "packets": len(packets),
        }
        wait_until(lambda: _received(sinks["vpc-b"], genuine) == 1, 3.0, "the genuine packet")
        time.sleep(0.5)
        for site, sink in sinks.items():
            assert not any(_received(sink, p) for p in foreign.values()), (site, sink.log())
        _grew(mesh, "vpc-b", before["vpc-b"], "bad_inner_destination", len(foreign))
        office = _drops(mesh, "office")
        assert office["bad_inner_source"] == before["office"]["bad_inner_source"], office
    finally:
        for sink in sinks.values():
            sink.stop()
        for ip in (METADATA, OUTSIDE):
            mesh.lab.ip(edge_b, "route", "del", f"{ip}/32")
            mesh.lab.ip(pod_b, "address", "del", f"{ip}/32", "dev", "lo")
        mesh.start_edge("vpc-a")
        mesh.wait_ready(["vpc-a"])
    _tcp(mesh, "vpc-a", "vpc-b")
    _tcp(mesh, "vpc-b", "vpc-a")


# -- F11 ----------------------------------------------------------------------------------


def _endpoint_at_b(mesh: Mesh) -> str | None:
    peers = {p["name"]: p for p in mesh.status("vpc-b")["peers"]}
    endpoint: str | None = peers["vpc-a"]["endpoint"]
    return endpoint


def test_a_captured_initiation_replayed_after_a_restart_does_not_move_the_endpoint(
    mesh: Mesh,
) -> None:
    with mesh.capture(mesh.underlay_ns, UNDERLAY_BRIDGE, "initiation", snaplen=SNAPLEN) as cap:
        mesh.restart_edge("vpc-a")  # it greets its peers: an initiation to vpc-b
        _tcp(mesh, "vpc-a", "vpc-b")
    captured = _between(read_pcap(cap.path), A.underlay_ip, (B.underlay_ip, PORT))
    initiations = [d.payload for d in captured if d.msg_type == TYPE_INITIATION]
    assert initiations, f"no initiation vpc-a -> vpc-b in {cap.path}"
    mesh.restart_edge("vpc-b")  # the new process knows no timestamp of vpc-a's
    _tcp(mesh, "vpc-b", "vpc-a")
    real = f"{A.underlay_ip}:{PORT}"
    assert _endpoint_at_b(mesh) == real

    result = _inject(mesh, "replayed-initiation", initiations[-1:])  # from 198.18.0.1
    # Fresh to the new process: accepted and answered at its source ...
    assert [bytes.fromhex(r)[0] for r in result["replies"]] == [TYPE_RESPONSE], result
    # ... and nothing more: vpc-b still sends to vpc-a's real endpoint.
    assert _endpoint_at_b(mesh) == real
    _tcp(mesh, "vpc-b", "vpc-a")
    _tcp(mesh, "vpc-a", "vpc-b")
    assert _endpoint_at_b(mesh) == real


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

"""A path MTU black hole on the underlay (reliability.md S20), with real edges.

```
        [ul] br0 -- controller :7000
          | u-vpc-a, u-vpc-b: mtu 1280; nft bridge: `meta length > 1280 drop`, no ICMP
   +------+---------------+----------------------+
 ul0 198.18.0.11      ul0 198.18.0.12       ul0 198.18.0.13 (mtu 1500, as the edges think)
 [vpc-a] edge         [vpc-b] edge          [office] edge (TUN 1420, not used here)
 TUN isthmus0 mtu 1220  TUN mtu 1220      = 1280 - 60 (docs/design.md "MTU safety")
 ul0: tx-udp-segmentation off (GSO runs cut before the wire, as a NIC does); netdev
 ingress counters on ul0: tunnel datagrams, fragments and frames above 1280 arriving
   | lan0 (1500)          | lan0
 [vpc-a-pod]  ------> [vpc-b-pod]
 10.244.1.10  DF pings, TCP 4 MiB   10.245.1.10
```
The edges of vpc-a and vpc-b are restarted with `[tun] mtu = 1220`. The black hole is shown
to be real first (a 1400-byte DF ping between the edges' underlay addresses gets no answer
at all). Then: DF pings from the pod above the TUN MTU get "frag needed" (mtu 1220) from
the edge, below it they pass; a 4 MiB TCP transfer completes with no IP fragment on the
underlay and no datagram above 1280 bytes.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from isthmus_lab.commands import PROBE, wait_until
from isthmus_lab.mesh import Mesh
from isthmus_lab.topology import DEMO, EDGE_UNDERLAY_IF, TUN_MTU, underlay_port
from tests.e2e.resilience_tools import nft_counters, nft_table, record, segment_on_the_wire

pytestmark = pytest.mark.netns

A, B = DEMO.site("vpc-a"), DEMO.site("vpc-b")
PORT = DEMO.udp_port
PATH_MTU = 1280
OVERHEAD_V4 = 60  # 20 IPv4 + 8 UDP + 32 isthmus (docs/protocol.md, docs/design.md)
INNER_MTU = PATH_MTU - OVERHEAD_V4
PINGED = (A, B)
HOLE = "isthmus_s20_hole"
WATCH = "isthmus_s20_watch"
TRANSFER = 4 << 20


def _watch_rules() -> str:
    """What reaches an edge's ul0 from the underlay, before reassembly: tunnel datagrams,
    fragments, and anything above the path MTU."""
    return (
        "  counter tunnel_in {}\n  counter fragments_in {}\n  counter oversize_in {}\n"
        f'  chain ingress {{ type filter hook ingress device "{EDGE_UNDERLAY_IF}" priority 0;\n'
        f'    udp sport {PORT} counter name "tunnel_in"\n'
        '    ip frag-off & 0x3fff != 0 counter name "fragments_in"\n'
        f'    meta length > {PATH_MTU} counter name "oversize_in"; }}'
    )


@pytest.fixture(scope="module")
def holed(netns_host: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(workdir=tmp_path_factory.mktemp("s20")) as mesh:
        for site in PINGED:
            config = mesh.edge_paths(site.name).config
            text = config.read_text(encoding="utf-8")
            assert f"mtu = {TUN_MTU}\n" in text
            config.write_text(text.replace(f"mtu = {TUN_MTU}\n", f"mtu = {INNER_MTU}\n"))
            mesh.restart_edge(site.name)
            segment_on_the_wire(mesh.lab, mesh.edge_ns(site.name), EDGE_UNDERLAY_IF)
        ul = mesh.underlay_ns
        for site in PINGED:
            mesh.lab.ip(ul, "link", "set", underlay_port(site), "mtu", str(PATH_MTU))
        hole = (
            "  counter blackholed {}\n"
            "  chain forward { type filter hook forward priority -10;\n"
            f'    meta length > {PATH_MTU} counter name "blackholed" drop; }}'
        )
        with nft_table(mesh.lab, ul, HOLE, hole, family="bridge"):
            yield mesh


def _ping(mesh: Mesh, ns: str, dst: str, size: int, count: int = 2) -> str:
    argv = ["ping", "-n", "-M", "do", "-s", str(size), "-c", str(count), "-i", "0.2", "-W", "1"]
    done = mesh.lab.run(ns, [*argv, dst], check=False, timeout=20.0)
    return done.stdout + done.stderr


def _received(output: str) -> int:
    found = re.search(r"(\d+) (?:packets )?received", output)
    return int(found.group(1)) if found else 0


def test_s20_the_underlay_is_a_silent_black_hole_above_1280(holed: Mesh) -> None:
    mesh = holed
    ns = mesh.edge_ns("vpc-a")
    small = _ping(mesh, ns, B.underlay_ip, PATH_MTU - 28)
    assert _received(small) == 2, small
    big = _ping(mesh, ns, B.underlay_ip, 1400)
    assert _received(big) == 0, big
    assert "frag needed" not in big.lower() and "mtu" not in big.lower(), big  # no ICMP


def test_s20_df_pings_above_the_tun_mtu_get_frag_needed_from_the_edge(holed: Mesh) -> None:
    mesh = holed
    explain = json.loads(mesh.edge_cli("vpc-a", "explain", B.workload_ip, "--json"))
    assert explain["mtu"] == {
        "tun": INNER_MTU,
        "inner": INNER_MTU,
        "overhead": 32,
        "outer": PATH_MTU,
    }, explain["mtu"]
    pod = mesh.workload_ns("vpc-a")
    fits = _ping(mesh, pod, B.workload_ip, INNER_MTU - 28, count=3)
    assert _received(fits) == 3, fits
    for size in (INNER_MTU - 27, 1300, 1472):
        out = _ping(mesh, pod, B.workload_ip, size)
        assert _received(out) == 0, out
        assert re.search(rf"mtu ?= ?{INNER_MTU}\b", out), f"no 'frag needed' for {size}:\n{out}"


def test_s20_bulk_tcp_completes_with_no_fragment_on_the_underlay(
    holed: Mesh, figures: dict[str, Any]
) -> None:
    mesh = holed
    watches = contextlib.ExitStack()
    for site in PINGED:
        ns = mesh.edge_ns(site.name)
        watches.enter_context(nft_table(mesh.lab, ns, WATCH, _watch_rules(), family="netdev"))
    sink = mesh.lab.spawn(
        mesh.workload_ns("vpc-b"), [*PROBE, "sink", "--port", "9401"], mesh.dir / "s20-sink.log"
    )
    wait_until(lambda: "listening" in sink.log() or not sink.alive(), 5.0, "TCP sink listening")
    hole_before = nft_counters(mesh.lab, mesh.underlay_ns, HOLE)["blackholed"]
    with watches:
        argv = [*PROBE, "send", B.workload_ip, "9401", "--bytes", str(TRANSFER)]
        done = mesh.lab.run(
            mesh.workload_ns("vpc-a"), [*argv, "--timeout", "30"], check=False, timeout=60.0
        )
        counters = {s.name: nft_counters(mesh.lab, mesh.edge_ns(s.name), WATCH) for s in PINGED}
    sink.stop()
    assert done.returncode == 0, f"transfer failed: {done.stderr}{done.stdout}"
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["echoed"] == f"{TRANSFER} {report['sha256']}", report
    for site, found in counters.items():
        assert found["fragments_in"] == 0 and found["oversize_in"] == 0, (site, found)
    assert counters["vpc-b"]["tunnel_in"] > TRANSFER // PATH_MTU, counters
    blackholed = nft_counters(mesh.lab, mesh.underlay_ns, HOLE)["blackholed"] - hole_before
    assert blackholed == 0, f"{blackholed} frames fell into the black hole"
    record(
        figures,
        "s20_pmtu_blackhole",
        {
            "tun_mtu": INNER_MTU,
            "path_mtu": PATH_MTU,
            "bytes": TRANSFER,
            "seconds": report["seconds"],
            "tunnel_datagrams_to_vpc_b": counters["vpc-b"]["tunnel_in"],
            "fragments": 0,
        },
    )

"""A data-plane partition between two edges (reliability.md S18), with real edges.

```
        [ul] br0 198.18.0.1/24 -- controller :7000
          |
   +------+---------------+----------------------+
 ul0 198.18.0.11      ul0 198.18.0.12       ul0 198.18.0.13        edges: UDP :51820
 [vpc-a] edge  --X--  [vpc-b] edge          [office] edge
   nft in vpc-a: drop UDP :51820 to and from 198.18.0.12 for 20 s
   | lan0                 | lan0                 | lan0
 [vpc-a-pod]          [vpc-b-pod]            [office-host]
 10.244.1.10  ping -> 10.245.1.10            172.16.0.10
```
The mesh runs with `[tunnel] rekey_after_time = 6, reject_after_time = 12`, so the session
between the two edges expires inside the partition and the loss becomes visible in the
status (no session, the last authenticated packet ageing, `no_session` drops). The
recovery time after the heal and the loss window are measured, printed (`pytest -s`) and
written to `<pytest basetemp>/e2e-figures.json` (the `figures` fixture in conftest.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from isthmus_lab.commands import wait_until
from isthmus_lab.mesh import Mesh
from isthmus_lab.topology import DEMO
from tests.e2e.resilience_tools import (
    drops,
    nft_counters,
    nft_table,
    peer,
    record,
    start_pinger,
)

pytestmark = pytest.mark.netns

A, B = DEMO.site("vpc-a"), DEMO.site("vpc-b")
PORT = DEMO.udp_port
REKEY_AFTER, REJECT_AFTER = 6, 12
# docs/protocol.md: an unanswered handshake is retried every REKEY_TIMEOUT (+ <= 0.333 s).
REKEY_TIMEOUT = 5.333
PARTITION = 20.0


@pytest.fixture(scope="module")
def short_mesh(netns_host: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tunnel = {"rekey_after_time": REKEY_AFTER, "reject_after_time": REJECT_AFTER}
    with Mesh(workdir=tmp_path_factory.mktemp("s18"), edge_tables={"tunnel": tunnel}) as mesh:
        yield mesh


def _cut_udp(peer_ip: str) -> str:
    return (
        "  counter cut {}\n"
        "  chain output { type filter hook output priority -10;\n"
        f'    ip daddr {peer_ip} udp dport {PORT} counter name "cut" drop; }}\n'
        "  chain input { type filter hook input priority -10;\n"
        f'    ip saddr {peer_ip} udp sport {PORT} counter name "cut" drop; }}'
    )


def test_s18_data_plane_partition_is_visible_and_traffic_recovers(
    short_mesh: Mesh, figures: dict[str, Any]
) -> None:
    mesh = short_mesh
    ns = mesh.edge_ns("vpc-a")
    assert mesh.ping("vpc-a", B.workload_ip, count=3).ok
    pinger = start_pinger(mesh, "vpc-a", B.workload_ip, count=400, interval=0.1, name="s18-ping")
    wait_until(lambda: bool(pinger.replies()), 5.0, "first ping reply vpc-a -> vpc-b")
    dropped_before = drops(mesh, "vpc-a")
    table = "isthmus_s18_cut"
    cut_wall = time.time()
    cut = time.monotonic()
    session_gone: float | None = None
    with nft_table(mesh.lab, ns, table, _cut_udp(B.underlay_ip)):
        while time.monotonic() - cut < PARTITION:
            view = peer(mesh, "vpc-a", "vpc-b")
            if session_gone is None and view["session_age_seconds"] is None:
                session_gone = time.monotonic() - cut
            time.sleep(0.25)
        view = peer(mesh, "vpc-a", "vpc-b")
        dropped = drops(mesh, "vpc-a")
        blocked = nft_counters(mesh.lab, ns, table)["cut"]
        text = mesh.status_text("vpc-a")
    healed_wall = time.time()
    healed = time.monotonic()
    first = None
    while first is None and time.monotonic() - healed < 15.0:
        first = pinger.first_reply_after(healed_wall)
        time.sleep(0.05)
    assert first is not None, f"no reply within 15 s of the heal:\n{pinger.process.log()[-600:]}"
    recovery = first - healed_wall
    window = pinger.largest_gap(cut_wall, first + 0.001)
    pinger.process.stop()

    assert blocked > 0, "the partition dropped nothing"
    # Unreachable is visible: the last authenticated packet ages with the partition, the
    # session is gone within REJECT_AFTER_TIME, and the status text says so.
    assert view["last_rx_seconds_ago"] is not None and view["last_rx_seconds_ago"] > 18.0, view
    assert session_gone is not None and session_gone <= REJECT_AFTER + 1.0, session_gone
    assert view["session_age_seconds"] is None, view
    assert "last authenticated packet" in text, text
    # Traffic fails visibly: packets held for a session overflow the queue as no_session.
    no_session = dropped["no_session"] - dropped_before["no_session"]
    assert no_session > 0, f"no no_session drops while cut off: {dropped}"
    # After the heal the next handshake retry gets through: within one REKEY_TIMEOUT.
    assert recovery <= REKEY_TIMEOUT + 2.0, f"traffic back {recovery:.2f} s after the heal"
    assert mesh.ping("vpc-a", B.workload_ip, count=5).ok
    assert peer(mesh, "vpc-a", "vpc-b")["session_age_seconds"] is not None
    record(
        figures,
        "s18_data_partition",
        {
            "partition_s": round(healed - cut, 2),
            "session_gone_after_s": round(session_gone, 2),
            "last_rx_age_at_heal_s": view["last_rx_seconds_ago"],
            "no_session_drops": no_session,
            "recovery_after_heal_s": round(recovery, 2),
            "bound_s": REKEY_TIMEOUT + 2.0,
            "loss_window_s": round(window, 2),
        },
    )

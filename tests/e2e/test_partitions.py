"""An edge flap and a control-plane partition (reliability.md S16, S17), with real edges.

```
        [ul] br0 198.18.0.1/24 -- controller :7000 (gRPC; pings each edge every 10 s)
          |
   +------+---------------+----------------------+
 ul0 198.18.0.11      ul0 198.18.0.12       ul0 198.18.0.13        edges: UDP :51820
 [vpc-a] edge         [vpc-b] edge          [office] edge
   |                    |  S16: kill -STOP/-CONT (its PID)
   |                    |  S17: nft in [ul] drops, then rejects, its TCP to :7000
   | lan0               | lan0                 | lan0
 [vpc-a-pod]          [vpc-b-pod]            [office-host]
 10.244.1.10          10.245.1.10            172.16.0.10
```
The demo mesh serves the module (the `mesh` fixture in conftest.py), with WireGuard's
timers, so no rekey falls inside a test. Each test heals what it broke (nftables tables of
its own, deleted on the way out; SIGCONT in `finally`) and waits until every edge is ready.
Measured figures (detection, recovery and loss windows) are printed (`pytest -s`) and go
to `<pytest basetemp>/e2e-figures.json` (the `figures` fixture in conftest.py).
"""

from __future__ import annotations

import itertools
import re
import signal
import time
from typing import Any

import pytest

from isthmus_lab.commands import wait_until
from isthmus_lab.mesh import Mesh
from isthmus_lab.topology import DEMO, EDGE_UNDERLAY_IF
from tests.e2e.resilience_tools import nft_table, record, start_pinger, syn_times

pytestmark = pytest.mark.netns

A, B, OFFICE = DEMO.site("vpc-a"), DEMO.site("vpc-b"), DEMO.site("office")
SITES = DEMO.site_names
PORT = DEMO.udp_port
CONTROLLER_PORT = DEMO.controller_port
# docs/controller.md "Health and keepalive": the controller pings every edge every 10 s
# (timeout 5 s); an edge pings the controller every 20 s (timeout 10 s).
CONTROLLER_NOTICES = 10 + 5
EDGE_NOTICES = 20 + 10
MARGIN = 3.0
# edge/control.py Backoff: 0.5 s, x1.6 per failure, +-20 %, at most 15 s.
BACKOFF_INITIAL, BACKOFF_FACTOR, BACKOFF_JITTER, BACKOFF_MAX = 0.5, 1.6, 0.2, 15.0


def _edges(mesh: Mesh) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in mesh.controller_edges()}


def _owners(mesh: Mesh, site: str) -> dict[str, str]:
    """Route -> owning edge, as `site`'s edge forwards by."""
    return {r["route"]: r["edge"] for r in mesh.status(site)["routes"]}


def _tcp_through(mesh: Mesh, site: str) -> None:
    for other in SITES:
        if other != site:
            for src, dst in ((other, site), (site, other)):
                payload = f"{src}->{dst} after the flap".encode()
                assert mesh.tcp_check(src, DEMO.site(dst).workload_ip, payload=payload) == payload


# -- S16 ------------------------------------------------------------------------------------


def test_s16_frozen_edge_is_disconnected_then_returns_with_its_identity_and_routes(
    mesh: Mesh, figures: dict[str, Any]
) -> None:
    process = mesh.edges["vpc-b"]
    before = _edges(mesh)["vpc-b"]
    assert before["state"] == "connected", before
    owners = {s: _owners(mesh, s) for s in ("vpc-a", "office")}
    served = {(r["edge"], r["route"], r["state"]) for r in mesh.routes()}
    version = mesh.status("vpc-a")["map_version"]

    frozen = time.monotonic()
    process.signal(signal.SIGSTOP)
    try:
        wait_until(
            lambda: _edges(mesh)["vpc-b"]["state"] == "disconnected",
            CONTROLLER_NOTICES + MARGIN,
            "isthmus edges shows the frozen vpc-b disconnected",
            lambda: str(_edges(mesh)["vpc-b"]),
        )
        noticed = time.monotonic() - frozen
        # While it is frozen nobody takes its routes, and the map does not change.
        assert {(r["edge"], r["route"], r["state"]) for r in mesh.routes()} == served
        for site, expected in owners.items():
            assert _owners(mesh, site) == expected, site
    finally:
        process.signal(signal.SIGCONT)
    thawed = time.monotonic()
    wait_until(
        lambda: _edges(mesh)["vpc-b"]["state"] == "connected",
        10.0,
        "vpc-b connected again after SIGCONT",
        lambda: str(_edges(mesh)["vpc-b"]),
    )
    back = time.monotonic() - thawed
    forwarding = _first_tcp(mesh, "vpc-a", B.workload_ip, thawed)

    # Five quick flaps: each shorter than the controller's ping timeout, so none is noticed.
    for _ in range(5):
        process.signal(signal.SIGSTOP)
        try:
            time.sleep(1.0)
            assert _edges(mesh)["vpc-b"]["state"] == "connected"
        finally:
            process.signal(signal.SIGCONT)
        time.sleep(1.0)
    mesh.wait_ready()

    after = _edges(mesh)["vpc-b"]
    assert (after["public_key"], after["endpoints"]) == (before["public_key"], before["endpoints"])
    assert after["state"] == "connected" and after["applied_version"] == version, after
    assert {(r["edge"], r["route"], r["state"]) for r in mesh.routes()} == served
    for site, expected in owners.items():
        assert _owners(mesh, site) == expected, site
    assert {mesh.status(s)["map_version"] for s in SITES} == {version}, "the map churned"
    assert process.alive()
    _tcp_through(mesh, "vpc-b")
    record(
        figures,
        "s16_edge_flap",
        {
            "disconnected_after_s": round(noticed, 2),
            "bound_s": CONTROLLER_NOTICES,
            "reconnected_after_cont_s": round(back, 2),
            "forwarding_after_cont_s": round(forwarding, 2),
        },
    )


def _first_tcp(mesh: Mesh, src: str, dst_ip: str, since: float, timeout: float = 15.0) -> float:
    """Seconds from `since` (monotonic) until a TCP exchange src -> dst_ip succeeds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            mesh.tcp_check(src, dst_ip, payload=b"are you back", timeout=1.0)
            return time.monotonic() - since
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# -- S17 ------------------------------------------------------------------------------------


def _block_controller(verdict: str) -> str:
    """At the controller (the underlay namespace), vpc-b's TCP to it gets `verdict`; with
    drop the way back is dropped too. vpc-b's SYNs still cross its ul0 to be captured."""
    rules = (
        "  chain input { type filter hook input priority -10;\n"
        f"    ip saddr {B.underlay_ip} tcp dport {CONTROLLER_PORT} counter {verdict}; }}"
    )
    if verdict == "drop":
        rules += (
            "\n  chain output { type filter hook output priority -10;\n"
            f"    ip daddr {B.underlay_ip} tcp sport {CONTROLLER_PORT} counter drop; }}"
        )
    return rules


def test_s17_control_plane_partition_leaves_forwarding_alone_and_the_watch_resumes(
    mesh: Mesh, figures: dict[str, Any]
) -> None:
    ns = mesh.edge_ns("vpc-b")
    ul = mesh.underlay_ns
    version = mesh.status("vpc-b")["map_version"]
    pinger = start_pinger(mesh, "vpc-b", A.workload_ip, count=600, interval=0.2, name="s17-ping")
    wait_until(lambda: bool(pinger.replies()), 5.0, "first ping reply vpc-b -> vpc-a")
    log_mark = len(mesh.controller_paths().log.read_text())

    cut = time.monotonic()
    cut_wall = time.time()
    with nft_table(mesh.lab, ul, "isthmus_s17_drop", _block_controller("drop")):
        wait_until(
            lambda: not mesh.status("vpc-b")["controller"]["connected"],
            EDGE_NOTICES + MARGIN,
            "vpc-b notices the dead watch stream",
            lambda: str(mesh.status("vpc-b")["controller"]),
        )
        edge_noticed = time.monotonic() - cut
        state = _edges(mesh)["vpc-b"]["state"]
        assert state == "disconnected", f"the controller still shows vpc-b {state}"
    # The reject variant: every attempt now fails at once, so the attempts' spacing is the
    # backoff alone (SYN times on vpc-b's underlay).
    with (
        mesh.capture(ns, EDGE_UNDERLAY_IF, "s17-syns", snaplen=128) as cap,
        nft_table(mesh.lab, ul, "isthmus_s17_reject", _block_controller("reject with tcp reset")),
    ):
        time.sleep(9.0)
    healed = time.monotonic()
    healed_wall = time.time()
    wait_until(
        lambda: mesh.status("vpc-b")["controller"]["connected"],
        BACKOFF_MAX + MARGIN,
        "vpc-b watches again after the partition",
        lambda: str(mesh.status("vpc-b")["controller"]),
    )
    resumed = time.monotonic() - healed
    attempts = syn_times(cap.path, CONTROLLER_PORT)
    time.sleep(1.5)  # a last ping or two after the watch is back; one -W 1 timeout
    pinger.process.stop()

    # The data plane never noticed: every ping answered, no gap longer than 1 s.
    seqs = [seq for _, seq in pinger.replies()]
    missing = sorted(set(range(1, max(seqs) + 1)) - set(seqs))
    assert not missing, f"pings lost: {missing}\n{pinger.process.log()[-800:]}"
    assert pinger.replies()[-1][0] > healed_wall, "no ping answered after the heal"
    gap = pinger.largest_gap(cut_wall, healed_wall)
    assert gap < 1.0, f"a {gap:.2f} s gap in forwarding during the control-plane partition"

    # Reconnect attempts follow the jittered exponential backoff.
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(gaps) >= 2, f"attempts during the reject phase at {attempts}"
    low = BACKOFF_INITIAL * (1 - BACKOFF_JITTER) - 0.05
    assert all(low <= g <= BACKOFF_MAX * (1 + BACKOFF_JITTER) + 1.0 for g in gaps), gaps
    grow_low = BACKOFF_FACTOR * (1 - BACKOFF_JITTER) / (1 + BACKOFF_JITTER)
    grow_high = BACKOFF_FACTOR * (1 + BACKOFF_JITTER) / (1 - BACKOFF_JITTER)
    for g1, g2 in itertools.pairwise(gaps):
        if g2 < BACKOFF_MAX * (1 - BACKOFF_JITTER):  # below the cap it must grow
            assert grow_low - 0.1 <= g2 / g1 <= grow_high + 0.1, gaps

    # After the heal the watch resumed from the version it had: no full snapshot needed.
    status = mesh.status("vpc-b")
    assert status["map_version"] == version and status["controller"]["applied_version"] == version
    log = mesh.controller_paths().log.read_text()[log_mark:]
    starts = re.findall(r"event=watch_started edge=vpc-b \S+ known_version=(\d+)", log)
    assert starts and int(starts[-1]) == version, f"watch_started lines: {starts}"
    mesh.wait_ready()
    record(
        figures,
        "s17_control_partition",
        {
            "edge_noticed_after_s": round(edge_noticed, 2),
            "bound_s": EDGE_NOTICES,
            "reject_phase_attempt_gaps_s": [round(g, 2) for g in gaps],
            "rewatched_after_heal_s": round(resumed, 2),
            "largest_forwarding_gap_s": round(gap, 3),
            "resumed_from_version": version,
        },
    )

"""End to end: the office edge behind a NAT router (no `endpoint` in its config), and vpc-a.

```
          [ul] br0 198.18.0.1/24 -- controller :7000
           |                           |
   ul0 198.18.0.11              ul0 198.18.0.13  [office-nat] nft masquerade on ul0
  +---------------+             lan0 192.168.13.1
  | [vpc-a] edge  |                    |
  +-------+-------+             ul0 192.168.13.2  [office] edge, default via .1
          |                            |
  [vpc-a-pod] 10.244.1.10       [office-host] 172.16.0.10
```
The office registers no endpoint; vpc-a learns its public address (198.18.0.13:port) from
its authenticated packets only. vpc-a's side starts traffic first; then the NAT forgets its
mappings (`conntrack -F`, twice: the office idle, then just after it sent) and traffic
resumes within 30 s: on the office's next persistent keepalive (25 s by default behind NAT),
or its unanswered-data handshake (15 s) when that comes first. The times are printed and
recorded in the e2e figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from isthmus_lab.commands import wait_until
from isthmus_lab.mesh import Mesh
from isthmus_lab.topology import NAT_OFFICE

pytestmark = pytest.mark.netns

OFFICE_HOST = NAT_OFFICE.site("office").workload_ip
VPC_A_POD = NAT_OFFICE.site("vpc-a").workload_ip
PUBLIC_IP = NAT_OFFICE.site("office").underlay_ip  # the NAT router's underlay address
RECOVERY_LIMIT = 30.0


@pytest.fixture(scope="module")
def nat_mesh(netns_host: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(NAT_OFFICE, workdir=tmp_path_factory.mktemp("nat")) as running:
        yield running


def _office_peer(mesh: Mesh) -> dict[str, Any]:
    return next(p for p in mesh.status("vpc-a")["peers"] if p["name"] == "office")


def test_the_far_side_starts_traffic_to_the_office_behind_nat(nat_mesh: Mesh) -> None:
    mesh = nat_mesh
    assert mesh.status("office")["endpoint"] is None
    # The office greets vpc-a at its start: vpc-a learns the NAT's public address at once
    # (a greeting vpc-a dropped before it had the office in its map is retried in 5 s).
    wait_until(lambda: bool(_office_peer(mesh)["endpoint"]), 10.0, "vpc-a learns the office")
    peer = _office_peer(mesh)
    assert peer["behind_nat"] is True
    assert peer["endpoint"].startswith(f"{PUBLIC_IP}:")  # the NAT's address, not 192.168.13.2
    text = mesh.status_text("vpc-a")
    assert "(behind NAT, learned)" in text and "problems:" not in text
    # vpc-a's pod first, the office host never sent anything: then the other way.
    first = mesh.ping("vpc-a", OFFICE_HOST, count=3)
    assert first.ok, first.output
    assert mesh.tcp_check("vpc-a", OFFICE_HOST, payload=b"vpc-a -> office") == b"vpc-a -> office"
    assert mesh.tcp_check("office", VPC_A_POD, payload=b"office -> vpc-a") == b"office -> vpc-a"


def _rebind_and_measure(mesh: Mesh, figures: dict[str, Any], name: str) -> float:
    """Flush the office NAT's mappings, ping vpc-a -> office until a reply: the seconds."""
    before = _office_peer(mesh)["endpoint"]
    flushed = time.monotonic()
    mesh.flush_nat("office")
    # vpc-a keeps sending to the old mapping: the NAT now holds those packets' flow to
    # itself, so the office's next packet out cannot have the old port back.
    recovered: float | None = None
    while time.monotonic() - flushed < RECOVERY_LIMIT + 5:
        if mesh.ping("vpc-a", OFFICE_HOST, count=1).ok:
            recovered = time.monotonic() - flushed
            break
    after = _office_peer(mesh)["endpoint"]
    figures[name] = {
        "recovery_s": None if recovered is None else round(recovered, 2),
        "endpoint_before": before,
        "endpoint_after": after,
    }
    print(f"{name}: {before} -> {after}, traffic back after {recovered} s")
    assert recovered is not None and recovered < RECOVERY_LIMIT, (before, after, recovered)
    assert after != before and after.startswith(f"{PUBLIC_IP}:")
    return recovered


def test_traffic_resumes_after_the_mapping_of_an_idle_office_changes(
    nat_mesh: Mesh, figures: dict[str, Any]
) -> None:
    """Quiet for 12 s first (every data packet answered, passive keepalives included): only
    the office's persistent keepalive can bring vpc-a to the new mapping."""
    mesh = nat_mesh
    assert mesh.ping("vpc-a", OFFICE_HOST, count=1).ok
    time.sleep(12.0)
    _rebind_and_measure(mesh, figures, "nat_rebinding_idle")
    assert mesh.tcp_check("office", VPC_A_POD, payload=b"after") == b"after"


def test_traffic_resumes_after_the_mapping_of_a_busy_office_changes(
    nat_mesh: Mesh, figures: dict[str, Any]
) -> None:
    """Right after the office answered: its own unanswered-data handshake (15 s) or its
    keepalive, whichever is first, goes out through the new mapping."""
    mesh = nat_mesh
    assert mesh.ping("vpc-a", OFFICE_HOST, count=2).ok
    _rebind_and_measure(mesh, figures, "nat_rebinding_busy")
    assert mesh.tcp_check("office", VPC_A_POD, payload=b"after") == b"after"

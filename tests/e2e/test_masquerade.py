"""End to end: the office reaches a Kubernetes ClusterIP whose pod runs on another node,
only when the edge on node-1 masquerades (the seed's failure and its fix).

```
  [office-host] 172.16.0.10 -> [office] edge ==== tunnel ==== [k8s] edge = node-1
                                                   DNAT 10.100.0.10:80 -> 10.244.2.10:7777
                                                   lan0 10.240.0.1
                                                        |
                                   [k8s-vpc] VPC router (no route to 172.16.0.0/24)
                                                        |
                                   [k8s-node2] 10.240.1.2 -- [k8s-pod2] 10.244.2.10 echo
```
(isthmus_lab.kube draws it in full.) One mesh serves the module; each test first puts the
k8s edge in the state it needs (config, how the previous process ended).
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import Iterator

import pytest

from isthmus_lab.kube import (
    CLUSTER_IP,
    CLUSTER_RANGE,
    KUBE,
    KUBE_PROXY_TABLE,
    NODE1_IP,
    POD_IP,
    POD_PORT,
    KubeSite,
    set_masquerade,
)
from isthmus_lab.mesh import Mesh
from isthmus_lab.netns import LabError

pytestmark = pytest.mark.netns

TABLE = "table inet isthmus_isthmus0"
POD_SUBNET = "10.244.2.0/24"  # node-2's pods


@pytest.fixture(scope="module")
def kube(netns_host: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(KUBE, workdir=tmp_path_factory.mktemp("masquerade")) as running:
        yield running


@pytest.fixture(scope="module")
def site(kube: Mesh) -> KubeSite:
    built = KubeSite.build(kube.lab, kube.edge_ns("k8s"), kube.workload_ns("k8s"))
    built.start_pod_echo(kube.lab, kube.dir / "pod-echo.log")
    return built


def _ruleset(mesh: Mesh) -> str:
    return mesh.lab.run(mesh.edge_ns("k8s"), ["nft", "list", "ruleset"]).stdout


def _restart(mesh: Mesh, ranges: tuple[str, ...], how: int = signal.SIGTERM) -> None:
    """End the k8s edge with `how`, give it `ranges` and start it again, ready."""
    mesh.kill_edge("k8s", how)
    set_masquerade(mesh.edge_paths("k8s").config, ranges)
    mesh.start_edge("k8s")
    mesh.wait_ready(["k8s"])


def _echo(mesh: Mesh, site: KubeSite, timeout: float = 3.0) -> bytes:
    payload = f"office->clusterip {secrets.token_hex(4)} ".encode() + bytes(range(256))
    got = site.tcp_to_cluster_ip(mesh.lab, mesh.workload_ns("office"), payload, timeout=timeout)
    assert got == payload
    return got


def test_cluster_ip_on_another_node_fails_without_masquerade(site: KubeSite, kube: Mesh) -> None:
    _restart(kube, ())
    assert "isthmus" not in _ruleset(kube)
    assert kube.status("k8s")["masquerade"] == {
        "ranges": [],
        "table": "inet isthmus_isthmus0",
        "installed": False,
    }
    with pytest.raises(LabError, match="failed"):
        _echo(kube, site, timeout=2.0)


def test_cluster_ip_on_another_node_works_with_masquerade(site: KubeSite, kube: Mesh) -> None:
    _restart(kube, (CLUSTER_RANGE,))
    _echo(kube, site)
    status = kube.status("k8s")
    assert status["masquerade"] == {
        "ranges": [CLUSTER_RANGE],
        "table": "inet isthmus_isthmus0",
        "installed": True,
    }
    text = kube.status_text("k8s")
    assert f"masquerade: {CLUSTER_RANGE}\n  table inet isthmus_isthmus0: installed" in text
    explained = kube.edge_cli("k8s", "explain", CLUSTER_IP)
    assert (
        f"masquerade: {CLUSTER_RANGE}: from the tunnel, masqueraded to this edge's address "
        "on the interface it leaves by (the kernel routes it only after a DNAT)"
    ) in explained
    assert "problems: none" in explained
    assert "masquerade" not in kube.edge_cli("k8s", "explain", POD_IP)
    # The pod answered node-1's address, not the office's: node-1's conntrack entry of the
    # connection expects the reply from the pod (DNAT) to 10.240.0.1 (masquerade).
    flows = kube.lab.run(kube.edge_ns("k8s"), ["cat", "/proc/net/nf_conntrack"]).stdout
    assert f"src={POD_IP} dst={NODE1_IP} sport={POD_PORT}" in flows, flows


def test_a_crash_and_restart_leave_one_copy_of_the_rules(site: KubeSite, kube: Mesh) -> None:
    _restart(kube, (CLUSTER_RANGE, POD_SUBNET))
    kube.kill_edge("k8s", signal.SIGKILL)
    assert _ruleset(kube).count(TABLE) == 1, "a SIGKILLed edge cannot remove its table"
    kube.start_edge("k8s")
    kube.wait_ready(["k8s"])
    ruleset = _ruleset(kube)
    assert ruleset.count(TABLE) == 1, ruleset
    assert ruleset.count(" masquerade\n") == 1, ruleset
    assert ruleset.count("meta mark set") == 2, ruleset  # before and after DNAT
    _echo(kube, site)
    explained = kube.edge_cli("k8s", "explain", POD_IP)
    assert (
        f"masquerade: {POD_SUBNET}: from the tunnel, masqueraded to this edge's address "
        f"on lan0 ({NODE1_IP})"
    ) in explained


def test_a_clean_exit_leaves_nothing_of_the_edge_in_nftables(site: KubeSite, kube: Mesh) -> None:
    _restart(kube, (CLUSTER_RANGE,))
    assert TABLE in _ruleset(kube)
    kube.kill_edge("k8s", signal.SIGTERM)
    ruleset = _ruleset(kube)
    assert "isthmus" not in ruleset, ruleset
    assert f"table {KUBE_PROXY_TABLE}" in ruleset, "the edge touched a table not its own"
    kube.start_edge("k8s")
    kube.wait_ready(["k8s"])


def test_removing_the_key_removes_the_rules_even_after_a_crash(site: KubeSite, kube: Mesh) -> None:
    _restart(kube, (CLUSTER_RANGE,))
    _restart(kube, (), how=signal.SIGKILL)
    assert "isthmus" not in _ruleset(kube)
    with pytest.raises(LabError, match="failed"):
        _echo(kube, site, timeout=2.0)

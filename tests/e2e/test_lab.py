"""The lab alone, without isthmus: the demo topology's plumbing and the lab's cleanup.

```
  [ul] br0 198.18.0.1/24
   +-- ul0 198.18.0.11 [vpc-a]  lan0 10.244.1.1 -- eth0 10.244.1.10 [vpc-a-pod]
   +-- ul0 198.18.0.12 [vpc-b]  lan0 10.245.1.1 -- eth0 10.245.1.10 [vpc-b-pod]
   +-- ul0 198.18.0.13 [office] lan0 172.16.0.1 -- eth0 172.16.0.10 [office-host]
```
No edge runs, so there is no TUN and no route between sites: each workload reaches its
edge, each edge reaches its workload's service address, and the edges reach each other
and the controller's address over the underlay.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from isthmus_lab.commands import wait_until
from isthmus_lab.netns import Lab
from isthmus_lab.topology import DEMO, build

pytestmark = pytest.mark.netns


def _netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _ping_ok(lab: Lab, ns: str, address: str) -> bool:
    return lab.run(ns, ["ping", "-n", "-c", "1", "-W", "2", address], check=False).returncode == 0


def test_demo_topology_plumbing_and_cleanup(netns_host: None) -> None:
    lab = Lab()
    try:
        ns = build(lab, DEMO)
        assert set(lab.namespaces) <= _netns_names()
        assert all(name.startswith(lab.prefix) for name in lab.namespaces)
        for site in DEMO.sites:
            edge, workload = ns.edges[site.name], ns.workloads[site.name]
            assert _ping_ok(lab, workload, site.edge_lan_ip), site.name
            assert _ping_ok(lab, edge, site.service_ip or site.workload_ip), site.name
            assert _ping_ok(lab, edge, DEMO.controller_ip), site.name
            for other in DEMO.sites:
                assert _ping_ok(lab, edge, other.underlay_ip), (site.name, other.name)
        # Nothing routes between sites before an edge runs.
        assert not _ping_ok(lab, ns.workloads["vpc-a"], DEMO.site("vpc-b").workload_ip)
        ignores_term = (
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)"
        )
        sleeper = lab.spawn(ns.underlay, [sys.executable, "-c", ignores_term], lab.dir / "s.log")
        wait_until(lambda: "ready" in sleeper.log(), 10.0, "the sleeper ignoring SIGTERM")
    finally:
        lab.close(timeout=1.0)
    # Ignoring SIGTERM earned a SIGKILL; the namespaces and the directory are gone.
    assert sleeper.returncode == -signal.SIGKILL
    assert not set(lab.namespaces) and not (_netns_names() & set(ns.edges.values()))
    assert not lab.dir.exists()
    lab.close()  # idempotent


def test_close_after_partial_setup(netns_host: None) -> None:
    lab = Lab()
    try:
        first = lab.add_netns("one")
        with pytest.raises(Exception, match="exited"):
            lab.add_veth(first, "v0", lab.prefix + "missing", "v1")
    finally:
        lab.close()
    assert first not in _netns_names()

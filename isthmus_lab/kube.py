"""A Kubernetes-like site: two nodes, a kube-proxy-style ClusterIP and a VPC router.

```
  [office-host] 172.16.0.10 -- [office] edge ==== tunnel (underlay 198.18.0.0/24) ====+
                                                                                      |
  [k8s] = node-1, the edge's host: isthmus0 TUN, a ClusterIP DNAT (kube-proxy style)  |
     10.100.0.10:80 -> pod 10.244.2.10:7777 (on node-2)  <----------------------------+
     lan0 10.240.0.1/24
         |
  [k8s-vpc] the VPC router: eth0 10.240.0.254/24, eth1 10.240.1.254/24
     routes 10.244.1.0/24 via node-1, 10.244.2.0/24 via node-2; NO route to the office
         |
  [k8s-node2] node-2: eth0 10.240.1.2/24 (default via the VPC router), pod0 10.244.2.1/24
         |
  [k8s-pod2] the pod: eth0 10.244.2.10/24 (default via node-2), a TCP echo server :7777
```
The k8s edge advertises the ClusterIP range 10.100.0.0/16 and the pod range 10.244.0.0/16.
Office -> ClusterIP: node-1 DNATs to the pod on node-2 and forwards through the VPC router;
the pod answers the office address, which the VPC router does not know, so the reply is
dropped (as in the seed: a reply that does not return through the node that did the DNAT
never reaches the client). With `masquerade = ["10.100.0.0/16"]` the edge rewrites the
source to node-1's 10.240.0.1, which the VPC router knows; conntrack on node-1 reverses
both translations on the reply.
`KubeSite.build` adds node-2, the pod and the DNAT to a running mesh of `KUBE`;
`set_masquerade` rewrites an edge config's top-level `masquerade` key.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from isthmus_lab.commands import PROBE, tail, wait_until
from isthmus_lab.netns import Lab, LabError, Process
from isthmus_lab.topology import DEMO, WORKLOAD_IF, Site, Topology

CLUSTER_RANGE = "10.100.0.0/16"
POD_RANGE = "10.244.0.0/16"
CLUSTER_IP = "10.100.0.10"
CLUSTER_PORT = 80
POD_IP = "10.244.2.10"
POD_PORT = 7777
NODE1_IP = "10.240.0.1"
VPC_NODE1_IP = "10.240.0.254"
VPC_NODE2_IP = "10.240.1.254"
NODE2_IP = "10.240.1.2"
NODE2_POD_GW = "10.244.2.1"
VPC_NODE2_IF = "eth1"
NODE2_POD_IF = "pod0"
KUBE_PROXY_TABLE = "ip kube-proxy-lab"

K8S_SITE = Site(
    name="k8s",
    routes=(CLUSTER_RANGE, POD_RANGE),
    underlay_ip="198.18.0.21",
    tun_address="10.244.255.254/32",
    edge_lan=f"{NODE1_IP}/24",
    workload="vpc",
    workload_lan=f"{VPC_NODE1_IP}/24",
)

KUBE = Topology(sites=(DEMO.site("office"), K8S_SITE))

_FORWARDING = {
    "net.ipv4.ip_forward": 1,
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 0,
}
_MASQUERADE_LINE = re.compile(r"^masquerade = .*\n", re.MULTILINE)


def kube_proxy_ruleset() -> str:
    """The ClusterIP's DNAT, as kube-proxy's nftables mode would install it on node-1."""
    return (
        f"table {KUBE_PROXY_TABLE} {{\n"
        "\tchain prerouting {\n"
        "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
        f"\t\tip daddr {CLUSTER_IP} tcp dport {CLUSTER_PORT} dnat to {POD_IP}:{POD_PORT}\n"
        "\t}\n"
        "}\n"
    )


@dataclass(frozen=True, slots=True)
class KubeSite:
    """The namespaces of the Kubernetes-like site (the edge's own is node-1)."""

    node1: str
    vpc: str
    node2: str
    pod: str

    @classmethod
    def build(cls, lab: Lab, node1: str, vpc: str) -> KubeSite:
        """Add node-2 and its pod behind the VPC router `vpc` (the k8s site's workload
        namespace, built by `topology.build`), and the ClusterIP DNAT on `node1`."""
        node2 = lab.add_netns("k8s-node2")
        pod = lab.add_netns("k8s-pod2")
        for ns in (vpc, node2, node1):
            lab.sysctl(ns, _FORWARDING)
        # The VPC router knows the VPC's subnets and nothing else (build gave it a default
        # route via node-1: the VPC has none to the office).
        lab.ip(vpc, "route", "del", "default")
        lab.add_veth(vpc, VPC_NODE2_IF, node2, WORKLOAD_IF)
        lab.add_address(vpc, VPC_NODE2_IF, f"{VPC_NODE2_IP}/24")
        lab.add_address(node2, WORKLOAD_IF, f"{NODE2_IP}/24")
        lab.add_route(node2, "default", via=VPC_NODE2_IP)
        lab.add_veth(node2, NODE2_POD_IF, pod, WORKLOAD_IF)
        lab.add_address(node2, NODE2_POD_IF, f"{NODE2_POD_GW}/24")
        lab.add_address(pod, WORKLOAD_IF, f"{POD_IP}/24")
        lab.add_route(pod, "default", via=NODE2_POD_GW)
        lab.add_route(vpc, "10.244.1.0/24", via=NODE1_IP)
        lab.add_route(vpc, "10.244.2.0/24", via=NODE2_IP)
        lab.add_route(node1, "10.244.2.0/24", via=VPC_NODE1_IP)
        lab.nft(node1, kube_proxy_ruleset())
        return cls(node1=node1, vpc=vpc, node2=node2, pod=pod)

    def start_pod_echo(self, lab: Lab, log: Path) -> Process:
        """The pod's TCP echo server on POD_PORT; waits until it listens."""
        server = lab.spawn(self.pod, [*PROBE, "server", "--port", str(POD_PORT)], log)

        def listening() -> bool:
            if not server.alive():
                raise LabError(f"the pod's echo server exited:\n{tail(server)}")
            return "listening" in server.log()

        wait_until(listening, 10.0, f"echo server on :{POD_PORT} in {self.pod}")
        return server

    def tcp_to_cluster_ip(
        self, lab: Lab, src_ns: str, payload: bytes, timeout: float = 3.0
    ) -> bytes:
        """Send `payload` from `src_ns` to CLUSTER_IP:CLUSTER_PORT; returns the echo.

        Raises:
            LabError: the connection or the exchange failed.
        """
        argv = [*PROBE, "client", CLUSTER_IP, str(CLUSTER_PORT), "--payload-hex", payload.hex()]
        argv += ["--timeout", str(timeout)]
        done = lab.run(src_ns, argv, check=False, timeout=timeout + 10)
        if done.returncode != 0:
            reason = done.stderr.strip() or f"exit {done.returncode}"
            raise LabError(f"TCP {src_ns} -> {CLUSTER_IP}:{CLUSTER_PORT} failed: {reason}")
        return bytes.fromhex(done.stdout.strip())


def set_masquerade(config: Path, ranges: tuple[str, ...]) -> None:
    """Rewrite the edge config's top-level `masquerade` key (removed when `ranges` is
    empty); every other line is kept."""
    text = _MASQUERADE_LINE.sub("", config.read_text(encoding="utf-8"))
    if ranges:
        text = f"masquerade = {json.dumps(list(ranges))}\n" + text
    config.write_text(text, encoding="utf-8")

"""`isthmus demo`: a four-site mesh in network namespaces, some traffic, then teardown.

The sites: vpc-a and vpc-b (`isthmus_lab.topology.DEMO`), the office behind a NAT router
(`isthmus_lab.nat`; its edge config has no `endpoint`, the other edges learn its public
address from its authenticated packets), and "k8s", the Kubernetes-like site of
`isthmus_lab.kube`: node-1 runs the edge and a kube-proxy-style ClusterIP DNAT whose pod runs
on node-2 behind a VPC router that has no route to the office, so the edge masquerades into
the ClusterIP range. k8s advertises only that range; its pods' 10.244.2.0/24 stays local
(node-1's /24 via the VPC router is more specific than vpc-a's 10.244.0.0/16).

It starts the controller and the four edges, waits until every edge has learned the office's
address, sends TCP and ping office -> vpc-a pod, vpc-a pod -> vpc-b service, vpc-b pod ->
office host, then a TCP echo office host -> the k8s ClusterIP (answered by the pod on node-2,
through masquerade), then shows the operator's tools on the live mesh: the controller's
`isthmus routes` and `isthmus edges`, `isthmus ping` and `isthmus explain` from vpc-a,
`isthmus explain` of the ClusterIP on k8s, and each edge's `isthmus status`; then tears
everything down, also on failure, Ctrl-C or SIGTERM.
Exit 0 ok, 1 failed (the reason on stderr) or a usage error.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from types import FrameType

from isthmus.clikit import parse, parser
from isthmus_lab.commands import wait_until
from isthmus_lab.kube import (
    CLUSTER_IP,
    CLUSTER_PORT,
    CLUSTER_RANGE,
    K8S_SITE,
    NODE1_IP,
    POD_IP,
    POD_PORT,
    KubeSite,
)
from isthmus_lab.mesh import Mesh
from isthmus_lab.netns import LabError, host_problems
from isthmus_lab.topology import DEMO, Topology

NATTED = "office"
# DEMO's three sites, the office behind a NAT router (its config has no endpoint), and the k8s
# site advertising only its ClusterIP range and masquerading into it. Its pods' 10.244.2.0/24
# is not advertised: it lies inside vpc-a's 10.244.0.0/16, and on node-1 the /24 via the VPC
# router is more specific than vpc-a's route on the TUN.
TOPOLOGY = Topology(
    sites=(
        DEMO.site("vpc-a"),
        DEMO.site("vpc-b"),
        replace(DEMO.site(NATTED), nat="masquerade"),
        replace(
            K8S_SITE,
            routes=(CLUSTER_RANGE,),
            tun_address="10.100.255.254/32",
            masquerade=(CLUSTER_RANGE,),
        ),
    )
)
LEARN_TIMEOUT = 15.0  # a greeting dropped before the peer had the office in its map: retried in 5 s

# (from site, to address, what it shows)
STEPS = (
    ("office", "10.244.1.10", "office host -> vpc-a pod"),
    ("vpc-a", "10.97.0.10", "vpc-a pod -> vpc-b service"),
    ("vpc-b", "172.16.0.10", "vpc-b pod -> office host"),
)


# (site, the edge command it runs there) after the exchanges
TOOLS = (
    ("vpc-a", ("ping", "vpc-b", "-c", "3")),
    ("vpc-a", ("explain", "10.97.0.10")),
    ("k8s", ("explain", CLUSTER_IP)),
)


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived."""


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


def main(argv: list[str]) -> int:
    p = parser("isthmus demo", "Run a four-site isthmus mesh in network namespaces (needs root).")
    p.add_argument(
        "--keep", action="store_true", help="keep the lab directory (configs, logs) afterwards"
    )
    args = parse(p, argv)
    if isinstance(args, int):
        return args
    problems = host_problems()
    if problems:
        for problem in problems:
            print(f"isthmus demo: {problem}", file=sys.stderr)
        return 1

    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:5.1f}s] {text}", flush=True)

    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    mesh: Mesh | None = None
    try:
        mesh = Mesh(TOPOLOGY, progress=say)
        mesh.lab.keep_dir = args.keep
        say(f"lab directory {mesh.dir}")
        mesh.start()
        kube = KubeSite.build(mesh.lab, mesh.edge_ns("k8s"), mesh.workload_ns("k8s"))
        kube.start_pod_echo(mesh.lab, mesh.dir / "k8s" / "pod-echo.log")
        say(f"k8s: ClusterIP {CLUSTER_IP}:{CLUSTER_PORT} -> pod {POD_IP}:{POD_PORT} on node-2")
        _learned(mesh, say)
        for src, dst, what in STEPS:
            _exchange(mesh, src, dst, what, say)
        _cluster_ip(mesh, kube, say)
        _show("isthmus routes (controller)", mesh.controller_cli("routes"))
        _show("isthmus edges (controller)", mesh.controller_cli("edges"))
        for site, tool in TOOLS:
            _show(f"isthmus {' '.join(tool)} ({site})", mesh.edge_cli(site, *tool))
        for site in mesh.topology.site_names:
            _show(f"isthmus status ({site})", mesh.status_text(site))
        say("demo ok: every exchange went through the mesh")
        return 0
    except (LabError, Interrupted, KeyboardInterrupt) as e:
        reason = str(e) or type(e).__name__
        print(f"isthmus demo: failed: {reason}", file=sys.stderr)
        if mesh is not None and not isinstance(e, (Interrupted, KeyboardInterrupt)):
            print(mesh.log_tails(), file=sys.stderr)
        return 1
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # teardown must not be interrupted halfway
        if mesh is not None:
            say("tearing down: stopping processes, deleting namespaces")
            mesh.close()
            say(f"kept {mesh.dir}" if args.keep else "done")
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _show(title: str, output: str) -> None:
    print(f"\n--- {title} ---\n{output.rstrip()}\n", flush=True)


def _office_endpoints(mesh: Mesh) -> dict[str, tuple[str | None, bool]]:
    """Per other site: the office's endpoint it uses, and whether it marks it behind NAT."""
    seen: dict[str, tuple[str | None, bool]] = {}
    for site in mesh.topology.site_names:
        if site != NATTED:
            peer = next(p for p in mesh.status(site)["peers"] if p["name"] == NATTED)
            seen[site] = (peer["endpoint"], bool(peer["behind_nat"]))
    return seen


def _learned(mesh: Mesh, say: Callable[[str], None]) -> None:
    """Wait until every other edge has learned the office's public address (the NAT's)."""
    public = mesh.topology.site(NATTED).underlay_ip
    wait_until(
        lambda: all(endpoint for endpoint, _ in _office_endpoints(mesh).values()),
        LEARN_TIMEOUT,
        "every edge learns the office's address",
        lambda: repr(_office_endpoints(mesh)),
    )
    seen = _office_endpoints(mesh)
    for site, (endpoint, behind_nat) in seen.items():
        if not (behind_nat and endpoint and endpoint.startswith(f"{public}:")):
            raise LabError(f"{site} sees the office at {endpoint} (behind NAT: {behind_nat})")
    endpoints = sorted({endpoint for endpoint, _ in seen.values() if endpoint})
    say(
        f"{NATTED} is behind NAT (no endpoint in its config): {', '.join(seen)} learned "
        f"{', '.join(endpoints)} from its packets"
    )


def _cluster_ip(mesh: Mesh, kube: KubeSite, say: Callable[[str], None]) -> None:
    """A TCP echo office host -> the ClusterIP; the pod on node-2 must have answered node-1."""
    what = "office host -> k8s ClusterIP"
    say(f"{what}: {mesh.topology.site(NATTED).workload_ip} -> {CLUSTER_IP}:{CLUSTER_PORT}")
    payload = f"hello from {NATTED} to ClusterIP {CLUSTER_IP}".encode()
    echoed = kube.tcp_to_cluster_ip(mesh.lab, mesh.workload_ns(NATTED), payload)
    if echoed != payload:
        raise LabError(f"{what}: TCP echo came back different: {echoed!r} != {payload!r}")
    # node-1's conntrack: the pod answered node-1's address (masquerade), not the office's.
    flows = mesh.lab.run(kube.node1, ["cat", "/proc/net/nf_conntrack"]).stdout
    if f"src={POD_IP} dst={NODE1_IP} sport={POD_PORT}" not in flows:
        raise LabError(f"{what}: no masqueraded flow in node-1's conntrack:\n{flows}")
    say(
        f"{what}: TCP echo ok ({len(payload)} bytes), DNAT to pod {POD_IP} on node-2, "
        f"masqueraded to node-1's {NODE1_IP}"
    )


def _exchange(mesh: Mesh, src: str, dst: str, what: str, say: Callable[[str], None]) -> None:
    """A TCP echo and three pings from `src`'s workload to `dst`; raises LabError on failure."""
    source = mesh.topology.site(src).workload_ip
    say(f"{what}: {source} -> {dst}")
    payload = f"hello from {src} ({source}) to {dst}".encode()
    echoed = mesh.tcp_check(src, dst, payload=payload)
    if echoed != payload:
        raise LabError(f"{what}: TCP echo came back different: {echoed!r} != {payload!r}")
    ping = mesh.ping(src, dst, count=3)
    if not ping.ok:
        raise LabError(f"{what}: ping lost replies:\n{ping.output.strip()}")
    say(f"{what}: TCP echo ok ({len(payload)} bytes), ping {ping.received}/{ping.transmitted}")

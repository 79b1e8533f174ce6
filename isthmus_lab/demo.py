"""`isthmus demo`: a three-site mesh in network namespaces, some traffic, then teardown.

Builds the `isthmus_lab.topology` demo topology, starts the controller and the three edges,
sends TCP and ping office -> vpc-a pod, vpc-a pod -> vpc-b service, vpc-b pod -> office
host, then shows the operator's tools on the live mesh: the controller's `isthmus routes`
and `isthmus edges`, `isthmus ping` and `isthmus explain` from vpc-a, and each edge's
`isthmus status`; then tears everything down, also on failure, Ctrl-C or SIGTERM.
Exit 0 ok, 1 failed (the reason on stderr) or a usage error.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

from isthmus.clikit import parse, parser
from isthmus_lab.mesh import Mesh
from isthmus_lab.netns import LabError, host_problems

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
)


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived."""


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


def main(argv: list[str]) -> int:
    p = parser("isthmus demo", "Run a three-site isthmus mesh in network namespaces (needs root).")
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
        mesh = Mesh(progress=say)
        mesh.lab.keep_dir = args.keep
        say(f"lab directory {mesh.dir}")
        mesh.start()
        for src, dst, what in STEPS:
            _exchange(mesh, src, dst, what, say)
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

"""The netlink and TUN adapters on a real kernel, inside a network namespace of our own.

    namespace edgetest-<pid>-<rand>:
        tun "isthtest0" (10.244.255.254/32, mtu 1400)   <- edge.tun.Tun + edge.routes.KernelRoutes
        proto-149 routes via isthtest0                    <- edge.reconcile.reconcile
        foreign routes: 10.50.0.0/16 dev isthtest0 (proto static), 10.60.0.0/16 dev lo proto 149,
        colliding: 10.247.0.0/16 dev lantest0 (connected, a veth), 10.248.0.0/16 dev lo metric 50

The checks run in a child process started with `ip netns exec` (this file run as a
script), so the test process never changes namespace. Needs root and /dev/net/tun;
where they are missing the test fails with the reason, it never skips.
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TUN = "isthtest0"


def _host_problems() -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("not running as root")
    if not os.path.exists("/dev/net/tun"):
        problems.append("/dev/net/tun is missing")
    if shutil.which("ip") is None:
        problems.append("the 'ip' command (iproute2) is missing")
    return problems


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


@pytest.mark.netns
def test_routes_adapter_on_a_real_tun() -> None:
    problems = _host_problems()
    if problems:
        pytest.fail(
            "this test needs root, /dev/net/tun and iproute2; this host has: "
            + "; ".join(problems),
            pytrace=False,
        )
    ns = f"edgetest-{os.getpid()}-{random.randrange(16**6):06x}"
    _ip("netns", "add", ns)
    try:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "proto")]))
        child = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, __file__],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert child.returncode == 0, f"in-namespace checks failed:\n{child.stdout}{child.stderr}"
        assert "ALL CHECKS PASSED" in child.stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def in_namespace() -> None:
    """The checks; runs as root inside a fresh namespace."""
    from edge.ports import RouteCollision
    from edge.reconcile import desired_routes, diff, reconcile
    from edge.routes import KernelRoutes
    from edge.tun import Tun
    from isthmus.endpoint import Endpoint
    from isthmus.ids import EdgeName
    from isthmus.keys import PublicKey
    from isthmus.routemap import ROUTE_PROTO, EdgeEntry, RouteMap, parse_route

    def entry(name: str, seed: int, *routes: str) -> EdgeEntry:
        return EdgeEntry(
            EdgeName(name),
            PublicKey(bytes([seed]) * 31 + b"\x01"),
            (Endpoint.parse(f"198.18.0.{seed}:51820"),),
            tuple(parse_route(r) for r in routes),
        )

    def ours() -> set[str]:
        out = _ip("-4", "route", "show", "proto", str(ROUTE_PROTO), "dev", TUN)
        out += _ip("-6", "route", "show", "proto", str(ROUTE_PROTO), "dev", TUN)
        return {line.split()[0] for line in out.splitlines() if line.strip()}

    tun = Tun.open(TUN)
    routes = KernelRoutes(tun.name)
    routes.configure_link(ipaddress.IPv4Interface("10.244.255.254/32"), 1400)
    routes.configure_link(ipaddress.IPv4Interface("10.244.255.254/32"), 1400)  # idempotent
    link = _ip("link", "show", TUN)
    assert "mtu 1400" in link and ",UP" in link, link
    assert "inet 10.244.255.254/32" in _ip("-4", "addr", "show", TUN)
    assert "addrgenmode none" in _ip("-d", "link", "show", TUN)
    assert "inet6" not in _ip("-6", "addr", "show", TUN)  # no link-local chatter

    # Routes isthmus must never touch: another protocol on the TUN, proto 149 elsewhere.
    _ip("route", "add", "10.50.0.0/16", "dev", TUN, "proto", "static")
    _ip("link", "set", "lo", "up")
    _ip("route", "add", "10.60.0.0/16", "dev", "lo", "proto", str(ROUTE_PROTO))
    assert routes.list_routes() == set()

    a = entry("vpc-a", 1, "10.244.0.0/16")
    b = entry("vpc-b", 2, "10.245.0.0/16", "fd00:2::/64")
    c = entry("vpc-c", 3, "10.246.0.0/16", "192.168.7.0/24")
    m1 = RouteMap(1, (a, b, c))
    changes, errors = reconcile(routes, m1, "vpc-a")
    assert errors == [] and len(changes.added) == 4 and changes.removed == ()
    want1 = set(desired_routes(m1, "vpc-a"))
    assert routes.list_routes() == want1
    assert ours() == {"10.245.0.0/16", "fd00:2::/64", "10.246.0.0/16", "192.168.7.0/24"}

    # Idempotent: nothing to do, nothing done.
    changes, errors = reconcile(routes, m1, "vpc-a")
    assert not changes and errors == []
    routes.add_route(parse_route("10.245.0.0/16"))  # adding our own route again is fine
    assert routes.list_routes() == want1

    # A new map: vpc-c leaves; its routes are removed, foreign routes stay.
    m2 = RouteMap(2, (a, b))
    changes, errors = reconcile(routes, m2, "vpc-a")
    assert errors == [] and set(changes.removed) == {
        parse_route("10.246.0.0/16"),
        parse_route("192.168.7.0/24"),
    }
    assert ours() == {"10.245.0.0/16", "fd00:2::/64"}
    assert not diff(set(desired_routes(m2, "vpc-a")), routes.list_routes())
    assert "10.50.0.0/16" in _ip("route", "show", "dev", TUN)
    assert "10.60.0.0/16" in _ip("route", "show", "dev", "lo")
    routes.delete_route(parse_route("10.246.0.0/16"))  # already gone: not an error

    # Collisions: a connected LAN route and a static route with another metric hold the
    # prefixes of remote routes. Neither is replaced, and withdrawing the remote route
    # leaves them; once the LAN route is gone, the next reconcile installs ours.
    _ip("link", "add", "lantest0", "type", "veth", "peer", "name", "lantest1")
    _ip("link", "set", "lantest1", "up")
    _ip("address", "add", "10.247.0.1/16", "dev", "lantest0")
    _ip("link", "set", "lantest0", "up")
    _ip("route", "add", "10.248.0.0/16", "dev", "lo", "metric", "50")
    d = entry("vpc-d", 4, "10.247.0.0/16", "10.248.0.0/16")
    m3 = RouteMap(3, (a, b, d))
    changes, errors = reconcile(routes, m3, "vpc-a")
    assert sorted(type(e).__name__ for e in errors) == ["RouteCollision", "RouteCollision"]
    assert {e.cidr: e.existing for e in errors if isinstance(e, RouteCollision)} == {
        "10.247.0.0/16": "10.247.0.0/16 dev lantest0 proto kernel",
        "10.248.0.0/16": "10.248.0.0/16 dev lo proto boot",
    }, errors
    assert "collides with an existing route 10.247.0.0/16 dev lantest0" in str(errors[0])
    assert ours() == {"10.245.0.0/16", "fd00:2::/64"}
    lan = _ip("route", "show", "10.247.0.0/16")
    assert "dev lantest0 proto kernel" in lan and "isthtest0" not in lan, lan
    changes, errors = reconcile(routes, m2, "vpc-a")  # vpc-d withdrawn
    assert not changes and errors == []
    assert "dev lantest0 proto kernel" in _ip("route", "show", "10.247.0.0/16")
    assert "dev lo" in _ip("route", "show", "10.248.0.0/16")
    _ip("link", "del", "lantest0")
    changes, errors = reconcile(routes, m3, "vpc-a")
    assert [e.cidr for e in errors] == ["10.248.0.0/16"]
    assert ours() == {"10.245.0.0/16", "fd00:2::/64", "10.247.0.0/16"}
    changes, errors = reconcile(routes, m2, "vpc-a")
    assert errors == [] and ours() == {"10.245.0.0/16", "fd00:2::/64"}
    assert "dev lo" in _ip("route", "show", "10.248.0.0/16")

    # Closing the TUN takes its routes with it.
    routes.close()
    tun.close()
    assert TUN not in _ip("link", "show")
    assert "proto 149" not in _ip("route", "show").replace("10.60.0.0/16 dev lo proto 149", "")
    print("ALL CHECKS PASSED")


if __name__ == "__main__":
    in_namespace()

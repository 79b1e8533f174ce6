"""Two sites joined by a veth underlay, built in a `Lab`; the overlays run on the gateways.

```
  [host-a] eth0 10.201.1.10/24            [host-b] eth0 10.202.1.10/24
      |  MTU 1420 (the overlay MTU)           |  MTU 1420
  [gw-a]  lan0 10.201.1.1/24              [gw-b]  lan0 10.202.1.1/24
          ul0 198.18.0.1/24 ---- veth ---- ul0 198.18.0.2/24  [gw-b]
                       underlay, MTU 1500
```
Site a owns 10.201.0.0/16, site b 10.202.0.0/16. Each host's default route is its
gateway; no route joins the sites until an overlay (or the plain underlay's static routes)
adds one, so every figure is measured host to host through both gateways. The LAN links
carry the overlay MTU for every overlay, the plain underlay included, so every overlay
moves the same packets. Owns no process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from isthmus_lab.netns import Lab, LabError

UNDERLAY_MTU = 1500
OVERLAY_MTU = 1420
UNDERLAY_PREFIXLEN = 24
LAN_IF = "lan0"
UNDERLAY_IF = "ul0"
HOST_IF = "eth0"
_GATEWAY_SYSCTLS = {
    "net.ipv4.ip_forward": 1,
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 0,
}


@dataclass(frozen=True, slots=True)
class Site:
    """One site's addresses and, once built, its two namespaces."""

    name: str  # "a" or "b"
    subnet: str  # the route the site owns
    underlay_ip: str
    gateway_lan: str  # with prefix length
    host_lan: str  # with prefix length
    overlay_ip: str  # the gateway's address inside an overlay's own subnet (10.99.0.0/24)
    gateway_ns: str = ""
    host_ns: str = ""

    @property
    def host_ip(self) -> str:
        return self.host_lan.split("/")[0]

    @property
    def gateway_lan_ip(self) -> str:
        return self.gateway_lan.split("/")[0]


@dataclass(frozen=True, slots=True)
class Sites:
    a: Site
    b: Site

    @property
    def both(self) -> tuple[Site, Site]:
        return (self.a, self.b)

    def other(self, site: Site) -> Site:
        return self.b if site.name == self.a.name else self.a


SITE_A = Site("a", "10.201.0.0/16", "198.18.0.1", "10.201.1.1/24", "10.201.1.10/24", "10.99.0.1")
SITE_B = Site("b", "10.202.0.0/16", "198.18.0.2", "10.202.1.1/24", "10.202.1.10/24", "10.99.0.2")


def build(lab: Lab) -> Sites:
    """Create the four namespaces, the three veth links, addresses, routes and sysctls."""
    built: list[Site] = []
    for site in (SITE_A, SITE_B):
        gateway = lab.add_netns(f"gw-{site.name}")
        host = lab.add_netns(f"host-{site.name}")
        lab.sysctl(gateway, _GATEWAY_SYSCTLS)
        lab.add_veth(gateway, LAN_IF, host, HOST_IF)
        lab.ip(gateway, "link", "set", LAN_IF, "mtu", str(OVERLAY_MTU))
        lab.ip(host, "link", "set", HOST_IF, "mtu", str(OVERLAY_MTU))
        lab.add_address(gateway, LAN_IF, site.gateway_lan)
        lab.add_address(host, HOST_IF, site.host_lan)
        lab.add_route(host, "default", via=site.gateway_lan_ip)
        built.append(
            Site(
                site.name,
                site.subnet,
                site.underlay_ip,
                site.gateway_lan,
                site.host_lan,
                site.overlay_ip,
                gateway_ns=gateway,
                host_ns=host,
            )
        )
    a, b = built
    lab.add_veth(a.gateway_ns, UNDERLAY_IF, b.gateway_ns, UNDERLAY_IF)
    for site in (a, b):
        lab.ip(site.gateway_ns, "link", "set", UNDERLAY_IF, "mtu", str(UNDERLAY_MTU))
        lab.add_address(site.gateway_ns, UNDERLAY_IF, f"{site.underlay_ip}/{UNDERLAY_PREFIXLEN}")
    return Sites(a, b)


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` every 50 ms until it holds.

    Raises:
        LabError: still false after `timeout` seconds; names `what`.
    """
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise LabError(f"{what}: not reached within {timeout:.1f} s")
        time.sleep(0.05)


def reachable(lab: Lab, sites: Sites, timeout: float = 30.0) -> None:
    """Wait until host a pings host b (the first packets also start an overlay's session).

    Raises:
        LabError: no reply within `timeout` seconds.
    """

    def ping() -> bool:
        argv = ["ping", "-n", "-q", "-c", "1", "-W", "1", sites.b.host_ip]
        return lab.run(sites.a.host_ns, argv, check=False).returncode == 0

    wait_until(ping, timeout, f"host a reaches host b ({sites.b.host_ip})")

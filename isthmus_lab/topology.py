"""The demo topology as data, the builder that makes it out of namespaces, and its configs.

```
                        underlay ns "ul": bridge br0 198.18.0.1/24, the controller :7000
             +--------------------+---------+----------+-----------------------+
             | u-vpc-a            | u-vpc-b            | u-office              |
     ul0 198.18.0.11        ul0 198.18.0.12      ul0 198.18.0.13      UDP :51820
  +------------------+   +------------------+   +------------------+
  | edge ns vpc-a    |   | edge ns vpc-b    |   | edge ns office   |
  | isthmus0 (TUN)   |   | isthmus0 (TUN)   |   | isthmus0 (TUN)   |
  | lan0 10.244.1.1  |   | lan0 10.245.1.1  |   | lan0 172.16.0.1  |
  +--------+---------+   +--------+---------+   +--------+---------+
           | eth0                 | eth0                 | eth0
  +--------+---------+   +--------+---------+   +--------+---------+
  | vpc-a-pod        |   | vpc-b-pod        |   | office-host      |
  | 10.244.1.10      |   | 10.245.1.10      |   | 172.16.0.10      |
  | lo 10.96.0.10    |   | lo 10.97.0.10    |   |                  |
  +------------------+   +------------------+   +------------------+
```
Each workload's default route is its edge; each edge routes its service range via the
workload. `ROGUE` is the demo plus a fourth site, "rogue" (ul0 198.18.0.14, lan0 10.98.1.1,
rogue-host 10.98.1.10), which owns 10.98.0.0/16 but also claims another site's route, a more
specific of one, and the default route, with broad allowed routes in the controller config.
With two controllers both listen on the underlay bridge address, on ports 7000 and 7001.

A site with `nat` sits behind a NAT router (`isthmus_lab.nat`): a namespace "<site>-nat"
holds the site's underlay address and masquerades what its edge sends; such an edge's config
has no `endpoint`. A site with `masquerade` lists those ranges in its edge config.
`NAT_OFFICE` is vpc-a and the office behind a "masquerade" router.
Owns no process; `isthmus_lab.mesh` runs the controllers and the edges.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from isthmus_lab import nat as nat_router
from isthmus_lab.nat import NatKind
from isthmus_lab.netns import Lab

UNDERLAY_BRIDGE = "br0"
EDGE_UNDERLAY_IF = "ul0"
EDGE_LAN_IF = "lan0"
WORKLOAD_IF = "eth0"
TUN_NAME = "isthmus0"
TUN_MTU = 1420

_EDGE_SYSCTLS = {
    "net.ipv4.ip_forward": 1,
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 0,
}


@dataclass(frozen=True, slots=True)
class Site:
    """One site: an edge namespace and one workload namespace behind it."""

    name: str
    routes: tuple[str, ...]  # the CIDRs the edge owns
    underlay_ip: str  # the edge's address on the underlay; its endpoint is this:udp_port
    tun_address: str  # the edge's TUN address, inside its own routes
    edge_lan: str  # the edge's LAN interface address, with prefix length
    workload: str  # short name of the workload namespace ("pod", "host")
    workload_lan: str  # the workload's address on the LAN, with prefix length
    service: str | None = None  # an extra /32 on the workload's lo
    service_route: str | None = None  # routed by the edge via the workload
    # Advertised too, though the site does not own them: admission must never let them serve.
    claims: tuple[str, ...] = ()
    # The routes the controller config allows this edge to advertise; None: `routes`.
    allowed: tuple[str, ...] | None = None
    # Behind a NAT router of this kind (its edge advertises no endpoint); None: not.
    nat: NatKind | None = None
    # The edge config's `masquerade`: local ranges its tunnelled packets are masqueraded into.
    masquerade: tuple[str, ...] = ()

    @property
    def advertised(self) -> tuple[str, ...]:
        """What the edge's config lists: the routes it owns, then its claims."""
        return self.routes + self.claims

    @property
    def allowed_routes(self) -> tuple[str, ...]:
        return self.routes if self.allowed is None else self.allowed

    @property
    def workload_ip(self) -> str:
        return str(ipaddress.IPv4Interface(self.workload_lan).ip)

    @property
    def service_ip(self) -> str | None:
        return None if self.service is None else str(ipaddress.IPv4Interface(self.service).ip)

    @property
    def edge_lan_ip(self) -> str:
        return str(ipaddress.IPv4Interface(self.edge_lan).ip)

    def owns(self, ip: str) -> bool:
        address = ipaddress.IPv4Address(ip)
        return any(address in ipaddress.IPv4Network(route) for route in self.routes)


@dataclass(frozen=True, slots=True)
class Topology:
    sites: tuple[Site, ...]
    underlay_cidr: str = "198.18.0.0/24"
    controller_ip: str = "198.18.0.1"
    controller_port: int = 7000
    udp_port: int = 51820

    @property
    def controller_address(self) -> str:
        return f"{self.controller_ip}:{self.controller_port}"

    def controller_addresses(self, count: int) -> tuple[str, ...]:
        """Where `count` controller replicas listen: one port each from `controller_port`."""
        return tuple(f"{self.controller_ip}:{self.controller_port + i}" for i in range(count))

    @property
    def site_names(self) -> tuple[str, ...]:
        return tuple(site.name for site in self.sites)

    def site(self, name: str) -> Site:
        for site in self.sites:
            if site.name == name:
                return site
        raise KeyError(f"no site {name!r}; sites: {', '.join(self.site_names)}")

    def site_of(self, ip: str) -> Site:
        """The site whose routes hold `ip`."""
        for site in self.sites:
            if site.owns(ip):
                return site
        raise KeyError(f"no site owns {ip}")

    def endpoint(self, site: Site) -> str:
        return f"{site.underlay_ip}:{self.udp_port}"

    def underlay_prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.underlay_cidr).prefixlen


DEMO = Topology(
    sites=(
        Site(
            name="vpc-a",
            routes=("10.244.0.0/16", "10.96.0.0/16"),
            underlay_ip="198.18.0.11",
            tun_address="10.244.255.254/32",
            edge_lan="10.244.1.1/24",
            workload="pod",
            workload_lan="10.244.1.10/24",
            service="10.96.0.10/32",
            service_route="10.96.0.0/16",
        ),
        Site(
            name="vpc-b",
            routes=("10.245.0.0/16", "10.97.0.0/16"),
            underlay_ip="198.18.0.12",
            tun_address="10.245.255.254/32",
            edge_lan="10.245.1.1/24",
            workload="pod",
            workload_lan="10.245.1.10/24",
            service="10.97.0.10/32",
            service_route="10.97.0.0/16",
        ),
        Site(
            name="office",
            routes=("172.16.0.0/24",),
            underlay_ip="198.18.0.13",
            tun_address="172.16.0.254/32",
            edge_lan="172.16.0.1/24",
            workload="host",
            workload_lan="172.16.0.10/24",
        ),
    )
)


ROGUE_SITE = Site(
    name="rogue",
    routes=("10.98.0.0/16",),
    underlay_ip="198.18.0.14",
    tun_address="10.98.255.254/32",
    edge_lan="10.98.1.1/24",
    workload="host",
    workload_lan="10.98.1.10/24",
    # vpc-b's service range (exact), a more specific of vpc-b's pod range, the default route
    claims=("10.97.0.0/16", "10.245.1.0/24", "0.0.0.0/0"),
    allowed=("10.0.0.0/8", "0.0.0.0/0"),
)

ROGUE = Topology(sites=(*DEMO.sites, ROGUE_SITE))

NAT_OFFICE = Topology(sites=(DEMO.site("vpc-a"), replace(DEMO.site("office"), nat="masquerade")))


@dataclass(frozen=True, slots=True)
class Namespaces:
    """The namespaces `build` made: the underlay, and per site name its edge and workload."""

    underlay: str
    edges: Mapping[str, str]
    workloads: Mapping[str, str]
    nats: Mapping[str, str] = field(default_factory=dict)  # the NAT routers, by site name


def underlay_port(site: Site) -> str:
    """The name of a site's veth end on the underlay bridge (at most 15 characters)."""
    return f"u-{site.name}"[:15]


def build(lab: Lab, topology: Topology) -> Namespaces:
    """Create the namespaces, links, addresses, routes and sysctls of `topology`."""
    underlay = lab.add_netns("ul")
    lab.add_bridge(underlay, UNDERLAY_BRIDGE)
    prefixlen = topology.underlay_prefixlen()
    lab.add_address(underlay, UNDERLAY_BRIDGE, f"{topology.controller_ip}/{prefixlen}")
    edges: dict[str, str] = {}
    workloads: dict[str, str] = {}
    nats: dict[str, str] = {}
    for site in topology.sites:
        edge = lab.add_netns(site.name)
        workload = lab.add_netns(f"{site.name}-{site.workload}")
        edges[site.name] = edge
        workloads[site.name] = workload
        lab.sysctl(edge, _EDGE_SYSCTLS)

        if site.nat is None:
            lab.add_veth(underlay, underlay_port(site), edge, EDGE_UNDERLAY_IF)
            lab.set_master(underlay, underlay_port(site), UNDERLAY_BRIDGE)
            lab.add_address(edge, EDGE_UNDERLAY_IF, f"{site.underlay_ip}/{prefixlen}")
        else:
            nats[site.name] = nat_router.add_router(
                lab,
                site.nat,
                short=f"{site.name}-nat",
                uplink_ns=underlay,
                uplink_port=underlay_port(site),
                public=f"{site.underlay_ip}/{prefixlen}",
                edge=edge,
            )
            lab.set_master(underlay, underlay_port(site), UNDERLAY_BRIDGE)

        lab.add_veth(edge, EDGE_LAN_IF, workload, WORKLOAD_IF)
        lab.add_address(edge, EDGE_LAN_IF, site.edge_lan)
        lab.add_address(workload, WORKLOAD_IF, site.workload_lan)
        lab.add_route(workload, "default", via=site.edge_lan_ip)
        if site.service is not None:
            lab.add_address(workload, "lo", site.service)
        if site.service_route is not None:
            lab.add_route(edge, site.service_route, via=site.workload_ip, dev=EDGE_LAN_IF)
    return Namespaces(underlay=underlay, edges=edges, workloads=workloads, nats=nats)


# -- config files (docs/design.md "Config files") --------------------------------------------


@dataclass(frozen=True, slots=True)
class EdgePaths:
    config: Path
    private_key: Path
    state_dir: Path
    admin_socket: Path
    log: Path


def edge_paths(root: Path, site: Site) -> EdgePaths:
    base = root / site.name
    return EdgePaths(
        config=base / "edge.toml",
        private_key=base / "private.key",
        state_dir=base / "state",
        admin_socket=base / "admin.sock",
        log=base / "edge.log",
    )


TomlValue = str | int | float | bool


def edge_config(
    topology: Topology,
    site: Site,
    paths: EdgePaths,
    *,
    controller_public_key: str,
    controllers: Sequence[str] = (),
    endpoint: str | None = None,
    extra_tables: Mapping[str, Mapping[str, TomlValue]] | None = None,
) -> str:
    """The edge's config file; it advertises `site.advertised`. `controllers` are the
    controller addresses it tries in turn (default: the topology's one controller);
    `endpoint` replaces the advertised endpoint (e.g. an impairment proxy's address); a
    site behind NAT advertises none;
    `extra_tables` are appended as `[name]` tables."""
    addresses = tuple(controllers) or (topology.controller_address,)
    controller = _s(addresses[0]) if len(addresses) == 1 else _list(addresses)
    lines = [
        f"name = {_s(site.name)}",
        f"private_key_file = {_s(str(paths.private_key))}",
        f"controller = {controller}",
        f"controller_public_key = {_s(controller_public_key)}",
        f"listen = {_s(f'0.0.0.0:{topology.udp_port}')}",
        *([] if site.nat else [f"endpoint = {_s(endpoint or topology.endpoint(site))}"]),
        f"routes = {_list(site.advertised)}",
        *([f"masquerade = {_list(site.masquerade)}"] if site.masquerade else []),
        f"state_dir = {_s(str(paths.state_dir))}",
        f"admin_socket = {_s(str(paths.admin_socket))}",
        "",
        "[tun]",
        f"name = {_s(TUN_NAME)}",
        f"address = {_s(site.tun_address)}",
        f"mtu = {TUN_MTU}",
        "",
    ]
    for table, values in (extra_tables or {}).items():
        lines += [f"[{table}]", *(f"{key} = {_value(v)}" for key, v in values.items()), ""]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class ControllerPaths:
    config: Path
    state_dir: Path
    admin_socket: Path
    log: Path


def controller_paths(root: Path, index: int) -> ControllerPaths:
    """Replica 0 lives in `<root>/controller`, replica i > 0 in `<root>/controller-<i>`."""
    base = root / ("controller" if index == 0 else f"controller-{index}")
    return ControllerPaths(
        config=base / "controller.toml",
        state_dir=base / "state",
        admin_socket=base / "admin.sock",
        log=base / "controller.log",
    )


def controller_config(
    topology: Topology,
    paths: ControllerPaths,
    *,
    listen: str,
    signing_key_file: Path,
    public_keys: Mapping[str, str],
    allowed: Mapping[str, Sequence[str]],
    etcd_endpoints: Sequence[str] = (),
    metrics: str = "off",
) -> str:
    """One controller replica's config. `allowed` maps each site name to the routes the
    controller lets it advertise; with `etcd_endpoints` the state lives in etcd (the
    replicas share it there), else in `paths.state_dir`. `metrics` is off by default, so
    replicas on one host do not contend for the default port."""
    lines = [
        f"listen = {_s(listen)}",
        f"state_dir = {_s(str(paths.state_dir))}",
        f"signing_key_file = {_s(str(signing_key_file))}",
        f"admin_socket = {_s(str(paths.admin_socket))}",
        f"metrics = {_s(metrics)}",
    ]
    if etcd_endpoints:
        lines += ["", "[store]", f"kind = {_s('etcd')}", f"endpoints = {_list(etcd_endpoints)}"]
    for site in topology.sites:
        lines += [
            "",
            "[[edges]]",
            f"name = {_s(site.name)}",
            f"public_key = {_s(public_keys[site.name])}",
            f"routes = {_list(allowed[site.name])}",
        ]
    return "\n".join(lines) + "\n"


def _s(text: str) -> str:
    # A JSON string of printable ASCII is a valid TOML basic string.
    return json.dumps(text, ensure_ascii=True)


def _value(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return _s(value)


def _list(items: Sequence[str]) -> str:
    return "[" + ", ".join(_s(item) for item in items) + "]"

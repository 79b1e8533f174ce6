"""A mesh's state and names: what it was asked for, its processes, its namespaces and paths.

`MeshLayout` is the base every part of `isthmus_lab.mesh.Mesh` shares (`controllers`,
`edges`, `traffic`); it starts nothing. Rule: the processes a mesh starts are recorded
here, so `Mesh.close` and `Mesh.log_tails` find every one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from isthmus_lab.etcd import EtcdCluster
from isthmus_lab.impair import SiteSpec
from isthmus_lab.netns import Lab, LabError, Process
from isthmus_lab.topology import (
    DEMO,
    ControllerPaths,
    EdgePaths,
    Namespaces,
    TomlValue,
    Topology,
    controller_paths,
    edge_paths,
)

MAX_CONTROLLERS = 2
StoreKind = Literal["file", "etcd"]
_SUN_PATH_MAX = 108  # bytes in sockaddr_un.sun_path, the terminating NUL included


@dataclass(frozen=True, slots=True)
class Impair:
    """Run an impairment proxy (`isthmus_lab.impair`) in the underlay: site number i gets
    the proxy address `<controller ip>:<base_port + i>` and advertises it as its endpoint."""

    loss: float = 0.0  # percent of datagrams dropped
    reorder: float = 0.0  # percent held back and released after 1-3 others or 5 ms
    duplicate: float = 0.0  # percent sent twice
    seed: int = 1
    base_port: int = 40000


class MeshLayout:
    """The state of a mesh (see `isthmus_lab.mesh.Mesh` for the arguments)."""

    def __init__(
        self,
        topology: Topology = DEMO,
        *,
        workdir: Path | None = None,
        progress: Callable[[str], None] | None = None,
        impair: Impair | None = None,
        edge_tables: Mapping[str, Mapping[str, TomlValue]] | None = None,
        store: StoreKind = "file",
        controllers: int = 1,
        etcd_members: int = 3,
    ) -> None:
        if store not in ("file", "etcd"):
            raise LabError(f"store: {store!r} is not a store kind; allowed: 'file' or 'etcd'")
        if not 1 <= controllers <= MAX_CONTROLLERS:
            raise LabError(f"controllers: {controllers} replicas; allowed: 1-{MAX_CONTROLLERS}")
        if controllers > 1 and store != "etcd":
            raise LabError(
                f"controllers: {controllers} replicas with store {store!r}; replicas share "
                "their state only through etcd: use store='etcd'"
            )
        self.topology = topology
        self.impair = impair
        self.edge_tables = dict(edge_tables or {})
        self.store: StoreKind = store
        self.etcd_members = etcd_members
        self.impair_process: Process | None = None
        self.etcd: EtcdCluster | None = None
        self.lab = Lab(workdir)
        self.dir = self.lab.dir
        self._progress = progress or (lambda _text: None)
        self._ns: Namespaces | None = None
        self.public_keys: dict[str, str] = {}
        self.allowed: dict[str, tuple[str, ...]] = {
            s.name: s.allowed_routes for s in topology.sites
        }
        self.controller_addresses = topology.controller_addresses(controllers)
        self.controllers: list[Process | None] = [None] * controllers
        self.controller_public_key = ""
        self.signing_key_path = self.dir / "controller.key"
        self.edges: dict[str, Process] = {}
        self._echo_servers: dict[tuple[str, int], Process] = {}
        sockets = [self.edge_paths(s).admin_socket for s in topology.site_names]
        sockets += [self.controller_paths(i).admin_socket for i in range(controllers)]
        longest = max(len(str(path)) for path in sockets)
        if longest >= _SUN_PATH_MAX:
            self.lab.close()
            raise LabError(
                f"the lab directory {self.dir} is too deep: an admin socket path would be "
                f"{longest} bytes; allowed: under {_SUN_PATH_MAX}"
            )

    # -- names and paths --------------------------------------------------------------------

    @property
    def namespaces(self) -> Namespaces:
        if self._ns is None:
            raise LabError("the mesh is not built yet")
        return self._ns

    @property
    def underlay_ns(self) -> str:
        return self.namespaces.underlay

    def edge_ns(self, site: str) -> str:
        return self.namespaces.edges[site]

    def workload_ns(self, site: str) -> str:
        return self.namespaces.workloads[site]

    def nat_ns(self, site: str) -> str:
        """The NAT router namespace in front of `site`'s edge (`Site.nat`)."""
        try:
            return self.namespaces.nats[site]
        except KeyError:
            raise LabError(f"site {site} is not behind NAT") from None

    def edge_paths(self, site: str) -> EdgePaths:
        return edge_paths(self.dir, self.topology.site(site))

    def controller_paths(self, index: int = 0) -> ControllerPaths:
        return controller_paths(self.dir, index)

    def remote_routes(self, site: str) -> set[str]:
        """The routes `site`'s edge should have installed: the routes the other started
        sites own and are allowed to advertise (never their claims)."""
        return {
            route
            for other in self.topology.sites
            if other.name != site and other.name in self.edges
            for route in other.routes
            if _inside_any(route, self.allowed[other.name])
        }

    def endpoint(self, site: str) -> str:
        """The endpoint `site`'s edge advertises: its proxy's address under `impair`."""
        spec = self._impair_sites().get(site)
        if spec is not None:
            return f"{spec.proxy[0]}:{spec.proxy[1]}"
        return self.topology.endpoint(self.topology.site(site))

    def real_endpoint(self, site: str) -> str:
        """Where `site`'s edge really listens: its underlay address and UDP port."""
        return self.topology.endpoint(self.topology.site(site))

    # -- the impairment proxy ---------------------------------------------------------------

    def _impair_sites(self) -> dict[str, SiteSpec]:
        if self.impair is None:
            return {}
        topo = self.topology
        return {
            site.name: SiteSpec(
                site.name,
                (topo.controller_ip, self.impair.base_port + i),
                (site.underlay_ip, topo.udp_port),
            )
            for i, site in enumerate(topo.sites)
        }

    def _replica(self, index: int) -> str:
        """How messages name replica `index`: "controller" when it is the only one."""
        return "controller" if len(self.controllers) == 1 else f"controller {index}"

    def _controller_slot(self, index: int) -> Process | None:
        if not 0 <= index < len(self.controllers):
            raise LabError(
                f"controller {index}: this mesh has replicas 0-{len(self.controllers) - 1}"
            )
        return self.controllers[index]


def _inside_any(route: str, allowed: Iterable[str]) -> bool:
    net = ipaddress.ip_network(route)
    for text in allowed:
        other = ipaddress.ip_network(text)
        if net.version == other.version and net.subnet_of(other):  # type: ignore[arg-type]
            return True
    return False

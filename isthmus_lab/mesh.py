"""A running mesh in the lab: the topology, keys, configs, the controllers and one edge per site.

The controllers and the edges run as real processes, `python -m isthmus controller|edge
--config FILE` under `ip netns exec`; this module never imports `controller` or `edge`.
It reads an edge's status from its admin socket and a controller's routes from its admin
socket (filesystem paths, so reachable from any namespace), kernel routes with
`ip -n NS route show proto 149`, and a controller's health with `isthmus_lab.health` run
in the underlay namespace.

Stores: `store="file"` runs one controller on a state file; `store="etcd"` starts an etcd
cluster (`isthmus_lab.etcd`) on the underlay namespace's loopback and `controllers` (1 or
2) replicas sharing it, listening on the controller address at ports 7000, 7001. Every
edge lists every replica. Sites with claims (`Site.claims`) start after the others are
ready, so the routes they claim already belong to the other sites (first come, first served).

`Mesh` joins its parts: `layout.MeshLayout` (state, names, paths),
`controllers.MeshControllers`, `edges.MeshEdges` and `traffic.MeshTraffic`; this module
owns the lifecycle (start everything in order, close, the log tails for failure reports).

Use it as a context manager: entering builds and starts everything and waits until every
edge has a map and has installed every remote route; leaving (also on error) tears it down.
"""

from __future__ import annotations

from types import TracebackType

from isthmus_lab.commands import READY_TIMEOUT, keygen, tail
from isthmus_lab.controllers import MeshControllers
from isthmus_lab.edges import MeshEdges
from isthmus_lab.netns import Process
from isthmus_lab.topology import build, edge_config
from isthmus_lab.traffic import MeshTraffic


class Mesh(MeshControllers, MeshEdges, MeshTraffic):
    """A topology (default: the demo) with its controllers and one edge per site, running.

    `impair` puts an impairment proxy between every pair of edges; `edge_tables` are extra
    tables written into every edge's config (e.g. {"tunnel": {"persistent_keepalive": 5}});
    `store` and `controllers` choose the controller's store and replica count (two need
    etcd), `etcd_members` the size of the etcd cluster.
    """

    def __enter__(self) -> Mesh:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Build the namespaces, write keys and configs, start everything, wait until ready."""
        sites = ", ".join(self.topology.site_names)
        self._progress(f"building namespaces {self.lab.prefix}*: underlay + {sites}")
        self._ns = build(self.lab, self.topology)
        if self.impair is not None:
            self.start_impair()
        if self.store == "etcd":
            self.start_etcd()
        self.controller_public_key = keygen(self.signing_key_path, controller=True)
        self._progress(f"controller signing key {self.controller_public_key}")
        for site in self.topology.sites:
            paths = self.edge_paths(site.name)
            paths.state_dir.mkdir(parents=True, exist_ok=True)
            self.public_keys[site.name] = keygen(paths.private_key)
            text = edge_config(
                self.topology,
                site,
                paths,
                controller_public_key=self.controller_public_key,
                controllers=self.controller_addresses,
                endpoint=self.endpoint(site.name),
                extra_tables=self.edge_tables,
            )
            paths.config.write_text(text, encoding="utf-8")
            self._progress(f"edge {site.name}: key {self.public_keys[site.name]}")
        for index in range(len(self.controllers)):
            self.controller_paths(index).state_dir.mkdir(parents=True, exist_ok=True)
        self.rewrite_controller_config({})
        for index in range(len(self.controllers)):
            self.start_controller(index)
        first = [site.name for site in self.topology.sites if not site.claims]
        late = [site.name for site in self.topology.sites if site.claims]
        for group in (first, late):
            for name in group:
                self.start_edge(name)
            if group:
                self._progress(f"waiting for {', '.join(group)} to receive the map")
                self.wait_ready(list(self.edges), timeout=timeout)
        versions = ", ".join(
            f"{name} v{self.status(name)['map_version']}" for name in self.topology.site_names
        )
        self._progress(f"mesh ready: map versions {versions}")

    def close(self) -> None:
        """Stop every process this mesh started and delete its namespaces; idempotent.
        The controllers stop before etcd, so they can still reach their store on the way out."""
        if self.etcd is not None:
            for process in self.controllers:
                if process is not None:
                    process.stop()
            self.etcd.close()
        self.lab.close()

    def log_tails(self, lines: int = 20) -> str:
        """The last lines of the controllers', the edges' and etcd's logs, for failure reports."""
        parts = []
        processes: list[tuple[str, Process | None]] = [
            (self._replica(i), process) for i, process in enumerate(self.controllers)
        ]
        processes += self.edges.items()
        processes.append(("impairment proxy", self.impair_process))
        for name, process in processes:
            if process is not None:
                parts.append(f"--- {name} ({process.log_path}) ---\n{tail(process, lines)}")
        if self.etcd is not None:
            parts.append(self.etcd.logs())
        return "\n".join(parts)

"""A running mesh in the lab: the topology, keys, configs, the controllers and one edge per site.

The controllers and the edges run as real processes, `python -m isthmus controller|edge
--config FILE` under `ip netns exec`; this module never imports `controller` or `edge`.
It reads an edge's status from its admin socket and a controller's routes from its admin
socket (filesystem paths, so reachable from any namespace), kernel routes with
`ip -n NS route show proto 149`, and a controller's health with `isthmus.lab.health` run
in the underlay namespace.

Stores: `store="file"` runs one controller on a state file; `store="etcd"` starts an etcd
cluster (`isthmus.lab.etcd`) on the underlay namespace's loopback and `controllers` (1 or
2) replicas sharing it, listening on the controller address at ports 7000, 7001. Every
edge lists every replica. Sites with claims (`Site.claims`) start after the others are
ready, so the routes they claim already belong to the other sites (first come, first served).

Use it as a context manager: entering builds and starts everything and waits until every
edge has a map and has installed every remote route; leaving (also on error) tears it down.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from isthmus.lab.capture import Capture, capture
from isthmus.lab.etcd import EtcdCluster
from isthmus.lab.impair import SiteSpec, parse_counters, site_arg
from isthmus.lab.netns import Lab, LabError, Process, host_run
from isthmus.lab.topology import (
    DEMO,
    ROUTE_PROTO,
    ControllerPaths,
    EdgePaths,
    Namespaces,
    TomlValue,
    Topology,
    build,
    controller_config,
    controller_paths,
    edge_config,
    edge_paths,
)

ISTHMUS = (sys.executable, "-m", "isthmus")
PROBE = (sys.executable, "-m", "isthmus.lab.probe")
HEALTH = (sys.executable, "-m", "isthmus.lab.health")
IMPAIR = (sys.executable, "-m", "isthmus.lab.impair")
ECHO_PORT = 7777
READY_TIMEOUT = 20.0
POLL_INTERVAL = 0.05
MAX_CONTROLLERS = 2
StoreKind = Literal["file", "etcd"]
_SUN_PATH_MAX = 108  # bytes in sockaddr_un.sun_path, the terminating NUL included

# Prints an etcd member's /v3/maintenance/status JSON (header.member_id, leader).
_ETCD_STATUS = (
    "import sys, urllib.request\n"
    "request = urllib.request.Request(sys.argv[1], data=b'{}', method='POST')\n"
    "sys.stdout.write(urllib.request.urlopen(request, timeout=2).read().decode())\n"
)
_PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")


@dataclass(frozen=True, slots=True)
class PingResult:
    transmitted: int
    received: int
    output: str

    @property
    def ok(self) -> bool:
        return self.transmitted > 0 and self.received == self.transmitted


def parse_ping(output: str) -> PingResult:
    """Read ping's summary line; (0, 0) when there is none yet."""
    found = _PING_SUMMARY.search(output)
    if found is None:
        return PingResult(0, 0, output)
    return PingResult(int(found.group(1)), int(found.group(2)), output)


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, detail: Callable[[], str] | None = None
) -> None:
    """Poll `check` until it holds.

    Raises:
        LabError: still false after `timeout` seconds; names `what` and adds `detail()`.
    """
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise LabError(f"{what}: not reached within {timeout:.1f} s{extra}")
        time.sleep(POLL_INTERVAL)


@dataclass(frozen=True, slots=True)
class Impair:
    """Run an impairment proxy (`isthmus.lab.impair`) in the underlay: site number i gets
    the proxy address `<controller ip>:<base_port + i>` and advertises it as its endpoint."""

    loss: float = 0.0  # percent of datagrams dropped
    reorder: float = 0.0  # percent held back and released after 1-3 others or 5 ms
    duplicate: float = 0.0  # percent sent twice
    seed: int = 1
    base_port: int = 40000


class Mesh:
    """A topology (default: the demo) with its controllers and one edge per site, running.

    `impair` puts an impairment proxy between every pair of edges; `edge_tables` are extra
    tables written into every edge's config (e.g. {"tunnel": {"persistent_keepalive": 5}});
    `store` and `controllers` choose the controller's store and replica count (two need
    etcd), `etcd_members` the size of the etcd cluster.
    """

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
        self.controller_public_key = _keygen(self.signing_key_path, controller=True)
        self._progress(f"controller signing key {self.controller_public_key}")
        for site in self.topology.sites:
            paths = self.edge_paths(site.name)
            paths.state_dir.mkdir(parents=True, exist_ok=True)
            self.public_keys[site.name] = _keygen(paths.private_key)
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

    def start_impair(self) -> Process:
        """Start the impairment proxy in the underlay and wait until it listens."""
        if self.impair is None:
            raise LabError("this mesh was built without an impairment proxy")
        impair = self.impair
        argv = [*IMPAIR, "--seed", str(impair.seed)]
        argv += ["--loss", str(impair.loss), "--reorder", str(impair.reorder)]
        argv += ["--duplicate", str(impair.duplicate)]
        for spec in self._impair_sites().values():
            argv += ["--site", site_arg(spec)]
        process = self.lab.spawn(self.underlay_ns, argv, self.dir / "impair.log")
        self.impair_process = process

        def listening() -> bool:
            if not process.alive():
                raise LabError(f"the impairment proxy exited:\n{_tail(process)}")
            return "listening" in process.log()

        wait_until(listening, 10.0, "impairment proxy listening")
        self._progress(f"impairment proxy {impair} running (pid {process.pid})")
        return process

    def stop_impair(self) -> dict[str, int]:
        """SIGTERM the proxy; returns the counters it printed (received, forwarded, lost, ...).

        Raises:
            LabError: no proxy runs, or it printed no counters.
        """
        process = self.impair_process
        if process is None:
            raise LabError("no impairment proxy was started")
        process.stop()
        counters = parse_counters(process.log())
        if counters is None:
            raise LabError(f"the impairment proxy printed no counters:\n{_tail(process)}")
        return counters

    # -- etcd -----------------------------------------------------------------------------

    def start_etcd(self) -> EtcdCluster:
        """Start the etcd cluster on the underlay namespace's loopback; waits for a leader."""
        if self.etcd is not None:
            raise LabError("the etcd cluster is already started")
        cluster = EtcdCluster(
            self.dir / "etcd", members=self.etcd_members, lab=self.lab, ns=self.underlay_ns
        )
        self.etcd = cluster
        cluster.start()
        self._progress(f"etcd: {self.etcd_members} members at {', '.join(cluster.client_urls)}")
        return cluster

    def etcd_leader(self) -> int:
        """The index of the etcd member that is the leader, as the running members report.

        Raises:
            LabError: no etcd runs, or no running member names a leader among them.
        """
        cluster = self.etcd
        if cluster is None:
            raise LabError("this mesh runs no etcd (store='file')")
        ids: dict[int, int] = {}
        leaders: set[int] = set()
        for member, url in enumerate(cluster.client_urls):
            process = cluster.process(member)
            if process is None or not process.alive():
                continue
            argv = [sys.executable, "-c", _ETCD_STATUS, f"{url}/v3/maintenance/status"]
            done = self.lab.run(self.underlay_ns, argv, check=False, timeout=10.0)
            try:
                status = json.loads(done.stdout)
                ids[int(status["header"]["member_id"])] = member
                leaders.add(int(status.get("leader", 0)))
            except (ValueError, KeyError, TypeError):
                continue
        if len(leaders) != 1 or next(iter(leaders)) not in ids:
            raise LabError(
                f"no etcd leader among the running members (members {ids}, leaders {leaders})"
            )
        return ids[next(iter(leaders))]

    def kill_etcd_member(self, member: int) -> None:
        """SIGKILL one etcd member."""
        if self.etcd is None:
            raise LabError("this mesh runs no etcd (store='file')")
        self.etcd.kill(member)
        self._progress(f"etcd member {member} killed")

    # -- the controllers --------------------------------------------------------------------

    @property
    def controller(self) -> Process | None:
        """The first controller replica's process (None before it is started)."""
        return self.controllers[0]

    def start_controller(self, index: int = 0) -> Process:
        """Start controller replica `index` (again) and wait until it listens."""
        current = self._controller_slot(index)
        if current is not None and current.alive():
            raise LabError(f"{self._replica(index)} is already running ({current})")
        paths = self.controller_paths(index)
        argv = [*ISTHMUS, "controller", "--config", str(paths.config)]
        process = self.lab.spawn(self.underlay_ns, argv, paths.log)
        self.controllers[index] = process
        address = self.controller_addresses[index]
        port = address.rsplit(":", 1)[1]

        def listening() -> bool:
            if not process.alive():
                raise LabError(
                    f"{self._replica(index)} exited {process.returncode}:\n{_tail(process)}"
                )
            done = self.lab.run(self.underlay_ns, ["ss", "-Hltn", f"sport = :{port}"])
            return bool(done.stdout.strip())

        wait_until(
            listening, 10.0, f"{self._replica(index)} listening on :{port}", lambda: _tail(process)
        )
        self._progress(f"{self._replica(index)} listening on {address} (pid {process.pid})")
        return process

    def kill_controller(self, index: int = 0) -> None:
        """SIGKILL controller replica `index`."""
        process = self._controller_slot(index)
        if process is not None:
            process.kill()
            self._progress(f"{self._replica(index)} killed (pid {process.pid})")

    def rewrite_controller_config(self, allowed: Mapping[str, Sequence[str]]) -> None:
        """Rewrite every replica's config (atomically); `allowed` replaces the allowed
        routes of the sites it names, the others keep theirs."""
        for name, routes in allowed.items():
            self.topology.site(name)
            self.allowed[name] = tuple(routes)
        endpoints = self.etcd.client_urls if self.etcd is not None else ()
        for index, listen in enumerate(self.controller_addresses):
            paths = self.controller_paths(index)
            text = controller_config(
                self.topology,
                paths,
                listen=listen,
                signing_key_file=self.signing_key_path,
                public_keys=self.public_keys,
                allowed=self.allowed,
                etcd_endpoints=endpoints,
            )
            paths.config.parent.mkdir(parents=True, exist_ok=True)
            scratch = paths.config.with_suffix(".toml.new")
            scratch.write_text(text, encoding="utf-8")
            scratch.replace(paths.config)

    def reload_controller(self, index: int | None = None) -> None:
        """SIGHUP controller replica `index` (None: every running one): it re-reads its config.

        Raises:
            LabError: that replica (or, with None, every replica) is not running.
        """
        if index is not None:
            process = self._controller_slot(index)
            if process is None or not process.alive():
                raise LabError(f"{self._replica(index)} is not running")
            targets = [(index, process)]
        else:
            targets = [
                (i, p) for i, p in enumerate(self.controllers) if p is not None and p.alive()
            ]
            if not targets:
                raise LabError("no controller is running")
        for i, process in targets:
            process.signal(signal.SIGHUP)
            self._progress(f"{self._replica(i)} reloading its config (SIGHUP)")

    def controller_health(self, index: int = 0, timeout: float = 2.0) -> str:
        """The grpc.health.v1 status of controller replica `index`: "SERVING",
        "NOT_SERVING", ..., or the gRPC code of a failed check (e.g. "UNAVAILABLE")."""
        argv = [*HEALTH, self.controller_addresses[index], "--timeout", str(timeout)]
        done = self.lab.run(self.underlay_ns, argv, check=False, timeout=timeout + 20)
        answer = done.stdout.strip()
        if not answer:
            raise LabError(
                f"the health check of controller {index} printed nothing (exit "
                f"{done.returncode}): {done.stderr.strip() or '(no stderr)'}"
            )
        return answer

    def routes(self, index: int = 0) -> list[dict[str, Any]]:
        """`isthmus routes --json` at controller replica `index`: every advertised route
        with its edge, state and reason.

        Raises:
            LabError: the command failed or printed no JSON list of routes.
        """
        return self._admin_json("routes", index)

    def approve_route(self, route: str, edge: str | None = None, index: int = 0) -> None:
        """`isthmus routes approve ROUTE [--edge NAME]` at controller replica `index`.

        Raises:
            LabError: the command failed (quotes its stderr).
        """
        socket_path = self.controller_paths(index).admin_socket
        argv = [*ISTHMUS, "routes", "approve", route, "--socket", str(socket_path)]
        host_run([*argv, *(["--edge", edge] if edge is not None else [])])
        self._progress(f"approved {route}" + (f" of {edge}" if edge else ""))

    def controller_edges(self, index: int = 0) -> list[dict[str, Any]]:
        """`isthmus edges --json` at controller replica `index`: per edge its connection,
        replica, applied version and last error."""
        return self._admin_json("edges", index)

    def _admin_json(self, command: str, index: int) -> list[dict[str, Any]]:
        socket_path = self.controller_paths(index).admin_socket
        argv = [*ISTHMUS, command, "--json", "--socket", str(socket_path)]
        done = host_run(argv, check=False)
        if done.returncode not in (0, 2):  # 2: degraded, the document is complete
            raise LabError(f"'{' '.join(argv)}' exited {done.returncode}: {done.stderr.strip()}")
        try:
            answer = json.loads(done.stdout)
        except ValueError:
            raise LabError(f"isthmus {command} --json printed no JSON: {done.stdout!r}") from None
        if isinstance(answer, dict):
            answer = answer.get(command)
        if not isinstance(answer, list) or not all(isinstance(i, dict) for i in answer):
            raise LabError(
                f"isthmus {command} --json printed no list of {command}: {done.stdout!r}"
            )
        return answer

    def _replica(self, index: int) -> str:
        """How messages name replica `index`: "controller" when it is the only one."""
        return "controller" if len(self.controllers) == 1 else f"controller {index}"

    def _controller_slot(self, index: int) -> Process | None:
        if not 0 <= index < len(self.controllers):
            raise LabError(
                f"controller {index}: this mesh has replicas 0-{len(self.controllers) - 1}"
            )
        return self.controllers[index]

    # -- the edges --------------------------------------------------------------------------

    def start_edge(self, site: str) -> Process:
        current = self.edges.get(site)
        if current is not None and current.alive():
            raise LabError(f"the edge of {site} is already running ({current})")
        paths = self.edge_paths(site)
        argv = [*ISTHMUS, "edge", "--config", str(paths.config)]
        process = self.lab.spawn(self.edge_ns(site), argv, paths.log)
        self.edges[site] = process
        self._progress(f"edge {site} started in {self.edge_ns(site)} (pid {process.pid})")
        return process

    def kill_edge(self, site: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the edge of `site` and reap it."""
        process = self.edges[site]
        process.signal(sig)
        process.wait(10.0)
        self._progress(f"edge {site} stopped by {signal.Signals(sig).name} (pid {process.pid})")

    def restart_edge(self, site: str, *, controller_connected: bool = True) -> None:
        """SIGKILL the edge of `site`, start it again and wait until its routes are back."""
        self.kill_edge(site)
        self.start_edge(site)
        self.wait_ready([site], controller_connected=controller_connected)

    def status(self, site: str, timeout: float = 2.0) -> dict[str, Any]:
        """The edge's status JSON, read from its admin socket.

        Raises:
            OSError: the socket is missing or does not answer.
            ValueError: the answer is not a JSON object.
        """
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(self.edge_paths(site).admin_socket))
            conn.sendall(b"status\n")
            chunks: list[bytes] = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        answer = json.loads(b"".join(chunks))
        if not isinstance(answer, dict):
            raise ValueError(f"the status of {site} is not a JSON object: {answer!r}")
        return answer

    def status_text(self, site: str) -> str:
        """`isthmus status --socket PATH` (the text form), run in the edge's namespace."""
        return self.edge_cli(site, "status")

    def edge_cli(self, site: str, *args: str) -> str:
        """`isthmus ARGS --socket PATH` against `site`'s edge, run in the edge's namespace
        (status, explain IP, ping TARGET): its text output.

        Raises:
            LabError: the command exited 1 (an error; 2, degraded, still printed it all).
        """
        argv = [*ISTHMUS, *args, "--socket", str(self.edge_paths(site).admin_socket)]
        done = self.lab.run(self.edge_ns(site), argv, timeout=20.0, check=False)
        if done.returncode not in (0, 2):  # 2: degraded, the output is complete
            raise LabError(f"'{' '.join(argv)}' exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def controller_cli(self, *args: str, index: int = 0) -> str:
        """`isthmus ARGS --socket PATH` against controller replica `index` (routes, edges):
        its text output.

        Raises:
            LabError: the command exited 1.
        """
        socket_path = self.controller_paths(index).admin_socket
        argv = [*ISTHMUS, *args, "--socket", str(socket_path)]
        done = host_run(argv, check=False)
        if done.returncode not in (0, 2):
            raise LabError(f"'{' '.join(argv)}' exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def kernel_routes(self, site: str) -> list[str]:
        """Destinations of the isthmus routes (proto 149) in the edge's main table, sorted."""
        out = self.lab.ip(self.edge_ns(site), "-j", "route", "show", "proto", str(ROUTE_PROTO))
        routes = []
        for entry in json.loads(out or "[]"):
            dst = str(entry.get("dst", ""))
            routes.append(dst if "/" in dst or dst == "default" else f"{dst}/32")
        return sorted(routes)

    def installed_routes(self, site: str) -> set[str]:
        """Routes the edge's status reports as installed."""
        return {r["route"] for r in self.status(site).get("routes", []) if r.get("installed")}

    def wait_ready(
        self,
        sites: Iterable[str] | None = None,
        *,
        controller_connected: bool = True,
        timeout: float = READY_TIMEOUT,
    ) -> None:
        """Wait until each edge has map_version > 0 and exactly its remote routes installed,
        in its status and in the kernel (and, if asked, is connected to the controller).

        Raises:
            LabError: an edge exited, or was not ready within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        for site in sites if sites is not None else self.topology.site_names:
            while True:
                ready, state = self._edge_state(site, controller_connected)
                if ready:
                    break
                if time.monotonic() > deadline:
                    raise LabError(
                        f"edge {site} not ready within {timeout:.1f} s: {state}\n"
                        f"{_tail(self.edges[site])}"
                    )
                time.sleep(POLL_INTERVAL)

    def _edge_state(self, site: str, controller_connected: bool) -> tuple[bool, str]:
        process = self.edges[site]
        if not process.alive():
            raise LabError(f"the edge of {site} exited {process.returncode}:\n{_tail(process)}")
        try:
            status = self.status(site)
        except (OSError, ValueError) as e:
            return False, f"no status: {e}"
        expected = self.remote_routes(site)
        installed = {r["route"] for r in status.get("routes", []) if r.get("installed")}
        kernel = set(self.kernel_routes(site))
        connected = bool((status.get("controller") or {}).get("connected"))
        version = int(status.get("map_version") or 0)
        state = (
            f"map_version={version} installed={sorted(installed)} kernel={sorted(kernel)} "
            f"expected={sorted(expected)} controller connected={connected}"
        )
        ready = (
            version > 0
            and installed == expected
            and kernel == expected
            and (connected or not controller_connected)
        )
        return ready, state

    # -- traffic ----------------------------------------------------------------------------

    def tcp_check(
        self,
        src_site: str,
        dst_ip: str,
        port: int = ECHO_PORT,
        payload: bytes = b"isthmus tcp check",
        timeout: float = 5.0,
    ) -> bytes:
        """Send `payload` over a new TCP connection from `src_site`'s workload to an echo
        server on `dst_ip:port` (started on first use in the workload owning `dst_ip`);
        returns what came back.

        Raises:
            LabError: the connection or the exchange failed.
        """
        self._ensure_echo_server(self.topology.site_of(dst_ip).name, port)
        argv = [*PROBE, "client", dst_ip, str(port), "--payload-hex", payload.hex()]
        argv += ["--timeout", str(timeout)]
        done = self.lab.run(self.workload_ns(src_site), argv, check=False, timeout=timeout + 10)
        if done.returncode != 0:
            reason = done.stderr.strip() or f"exit {done.returncode}"
            raise LabError(f"TCP {src_site} -> {dst_ip}:{port} failed: {reason}")
        return bytes.fromhex(done.stdout.strip())

    def _ensure_echo_server(self, site: str, port: int) -> None:
        ns = self.workload_ns(site)
        server = self._echo_servers.get((ns, port))
        if server is not None and server.alive():
            return
        log = self.dir / site / f"echo-{port}.log"
        server = self.lab.spawn(ns, [*PROBE, "server", "--port", str(port)], log)
        self._echo_servers[(ns, port)] = server

        def listening(server: Process = server) -> bool:
            if not server.alive():
                raise LabError(f"echo server in {ns} exited:\n{_tail(server)}")
            return "listening" in server.log()

        wait_until(listening, 10.0, f"echo server on :{port} in {ns}")

    def ping(self, src_site: str, dst_ip: str, count: int = 3, interval: float = 0.2) -> PingResult:
        """Ping `dst_ip` from `src_site`'s workload; a lost reply is in the result, not raised."""
        argv = _ping_argv(dst_ip, count, interval)
        done = self.lab.run(
            self.workload_ns(src_site), argv, check=False, timeout=count * interval + 10
        )
        return parse_ping(done.stdout + done.stderr)

    def start_ping(
        self, src_site: str, dst_ip: str, count: int = 20, interval: float = 0.1, name: str = "ping"
    ) -> Process:
        """Ping in the background; read the result with `parse_ping(process.log())`."""
        log = self.dir / src_site / f"{name}.log"
        log.unlink(missing_ok=True)
        return self.lab.spawn(self.workload_ns(src_site), _ping_argv(dst_ip, count, interval), log)

    @contextlib.contextmanager
    def capture(
        self, ns: str, iface: str, name: str | None = None, *, snaplen: int = 0
    ) -> Iterator[Capture]:
        """tcpdump on `iface` in `ns` into `<lab dir>/captures/<name>.pcap` during the block."""
        directory = self.dir / "captures"
        directory.mkdir(exist_ok=True)
        path = directory / f"{name or f'{ns}-{iface}'}.pcap"
        with capture(self.lab, ns, iface, path, snaplen=snaplen) as cap:
            yield cap

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
                parts.append(f"--- {name} ({process.log_path}) ---\n{_tail(process, lines)}")
        if self.etcd is not None:
            parts.append(self.etcd.logs())
        return "\n".join(parts)


def _ping_argv(dst_ip: str, count: int, interval: float) -> list[str]:
    return ["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1", dst_ip]


def _tail(process: Process, lines: int = 20) -> str:
    return "\n".join(process.log().splitlines()[-lines:]) or "(empty log)"


def _keygen(path: Path, *, controller: bool = False) -> str:
    """`isthmus keygen [--controller] --out PATH` (private key file, 0600); returns the
    base64 public key it prints."""
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = [*ISTHMUS, "keygen", *(["--controller"] if controller else []), "--out", str(path)]
    lines = host_run(argv).stdout.split()
    if not lines:
        raise LabError(f"'{' '.join(argv)}' printed no public key")
    return lines[-1]


def _inside_any(route: str, allowed: Iterable[str]) -> bool:
    net = ipaddress.ip_network(route)
    for text in allowed:
        other = ipaddress.ip_network(text)
        if net.version == other.version and net.subnet_of(other):  # type: ignore[arg-type]
            return True
    return False

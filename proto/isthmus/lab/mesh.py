"""A running mesh in the lab: the topology, keys, configs, the controller and one edge per site.

The controller and the edges run as real processes, `python -m isthmus controller|edge
--config FILE` under `ip netns exec`; this module never imports `controller` or `edge`.
It reads an edge's status from its admin socket (a filesystem path, so reachable from any
namespace) and kernel routes with `ip -n NS route show proto 149`.

Use it as a context manager: entering builds and starts everything and waits until every
edge has a map and has installed every remote route; leaving (also on error) tears it down.
"""

from __future__ import annotations

import contextlib
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
from typing import Any

from isthmus.lab.capture import Capture, capture
from isthmus.lab.impair import SiteSpec, parse_counters, site_arg
from isthmus.lab.netns import Lab, LabError, Process, host_run
from isthmus.lab.topology import (
    DEMO,
    ROUTE_PROTO,
    EdgePaths,
    Namespaces,
    TomlValue,
    Topology,
    build,
    controller_config,
    edge_config,
    edge_paths,
)

ISTHMUS = (sys.executable, "-m", "isthmus")
PROBE = (sys.executable, "-m", "isthmus.lab.probe")
IMPAIR = (sys.executable, "-m", "isthmus.lab.impair")
ECHO_PORT = 7777
READY_TIMEOUT = 20.0
POLL_INTERVAL = 0.05
_SUN_PATH_MAX = 108  # bytes in sockaddr_un.sun_path, the terminating NUL included

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
    """The demo topology with a controller and one edge per site, running.

    `impair` puts an impairment proxy between every pair of edges; `edge_tables` are extra
    tables written into every edge's config (e.g. {"tunnel": {"persistent_keepalive": 5}}).
    """

    def __init__(
        self,
        topology: Topology = DEMO,
        *,
        workdir: Path | None = None,
        progress: Callable[[str], None] | None = None,
        impair: Impair | None = None,
        edge_tables: Mapping[str, Mapping[str, TomlValue]] | None = None,
    ) -> None:
        self.topology = topology
        self.impair = impair
        self.edge_tables = dict(edge_tables or {})
        self.impair_process: Process | None = None
        self.lab = Lab(workdir)
        self.dir = self.lab.dir
        self._progress = progress or (lambda _text: None)
        self._ns: Namespaces | None = None
        self.public_keys: dict[str, str] = {}
        self.allowed: dict[str, tuple[str, ...]] = {s.name: s.routes for s in topology.sites}
        self.controller: Process | None = None
        self.edges: dict[str, Process] = {}
        self._echo_servers: dict[tuple[str, int], Process] = {}
        controller_dir = self.dir / "controller"
        self.controller_config_path = controller_dir / "controller.toml"
        self.controller_state_dir = controller_dir / "state"
        self.controller_log = controller_dir / "controller.log"
        longest = max(len(str(self.edge_paths(s).admin_socket)) for s in topology.site_names)
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
        for site in self.topology.sites:
            paths = self.edge_paths(site.name)
            paths.state_dir.mkdir(parents=True, exist_ok=True)
            self.public_keys[site.name] = _keygen(paths.private_key)
            text = edge_config(
                self.topology,
                site,
                paths,
                endpoint=self.endpoint(site.name),
                extra_tables=self.edge_tables,
            )
            paths.config.write_text(text, encoding="utf-8")
            self._progress(f"edge {site.name}: key {self.public_keys[site.name]}")
        self.controller_state_dir.mkdir(parents=True, exist_ok=True)
        self.rewrite_controller_config({})
        self.start_controller()
        for site in self.topology.sites:
            self.start_edge(site.name)
        self._progress("waiting for every edge to receive the map and install its routes")
        self.wait_ready(timeout=timeout)
        versions = ", ".join(
            f"{name} v{self.status(name)['map_version']}" for name in self.topology.site_names
        )
        self._progress(f"mesh ready: map versions {versions}")

    def close(self) -> None:
        """Stop every process this mesh started and delete its namespaces; idempotent."""
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

    def remote_routes(self, site: str) -> set[str]:
        """The routes `site`'s edge should have installed: the other sites' allowed routes."""
        return {
            route
            for other in self.topology.sites
            if other.name != site
            for route in other.routes
            if route in self.allowed[other.name]
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

    # -- the controller ---------------------------------------------------------------------

    def start_controller(self) -> Process:
        """Start the controller (again) and wait until it listens."""
        if self.controller is not None and self.controller.alive():
            raise LabError(f"the controller is already running ({self.controller})")
        argv = [*ISTHMUS, "controller", "--config", str(self.controller_config_path)]
        process = self.lab.spawn(self.underlay_ns, argv, self.controller_log)
        self.controller = process
        port = self.topology.controller_port

        def listening() -> bool:
            if not process.alive():
                raise LabError(f"the controller exited {process.returncode}:\n{_tail(process)}")
            done = self.lab.run(self.underlay_ns, ["ss", "-Hltn", f"sport = :{port}"])
            return bool(done.stdout.strip())

        wait_until(listening, 10.0, f"controller listening on :{port}", lambda: _tail(process))
        self._progress(
            f"controller listening on {self.topology.controller_address} (pid {process.pid})"
        )
        return process

    def kill_controller(self) -> None:
        """SIGKILL the controller."""
        if self.controller is not None:
            self.controller.kill()
            self._progress(f"controller killed (pid {self.controller.pid})")

    def rewrite_controller_config(self, allowed: Mapping[str, Sequence[str]]) -> None:
        """Rewrite the controller config (atomically); `allowed` replaces the allowed routes
        of the sites it names, the others keep theirs."""
        for name, routes in allowed.items():
            self.topology.site(name)
            self.allowed[name] = tuple(routes)
        text = controller_config(
            self.topology, self.controller_state_dir, self.public_keys, self.allowed
        )
        self.controller_config_path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.controller_config_path.with_suffix(".toml.new")
        scratch.write_text(text, encoding="utf-8")
        scratch.replace(self.controller_config_path)

    def reload_controller(self) -> None:
        """SIGHUP the controller: it re-reads its config."""
        if self.controller is None or not self.controller.alive():
            raise LabError("the controller is not running")
        self.controller.signal(signal.SIGHUP)
        self._progress("controller reloading its config (SIGHUP)")

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
        argv = [*ISTHMUS, "status", "--socket", str(self.edge_paths(site).admin_socket)]
        return self.lab.run(self.edge_ns(site), argv, timeout=10.0).stdout

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
        """The last lines of the controller's and every edge's log, for failure reports."""
        parts = []
        processes = [("controller", self.controller), *self.edges.items()]
        processes.append(("impairment proxy", self.impair_process))
        for name, process in processes:
            if process is not None:
                parts.append(f"--- {name} ({process.log_path}) ---\n{_tail(process, lines)}")
        return "\n".join(parts)


def _ping_argv(dst_ip: str, count: int, interval: float) -> list[str]:
    return ["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1", dst_ip]


def _tail(process: Process, lines: int = 20) -> str:
    return "\n".join(process.log().splitlines()[-lines:]) or "(empty log)"


def _keygen(path: Path) -> str:
    """`isthmus keygen --out PATH` (private key file, 0600); returns the base64 public key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return host_run([*ISTHMUS, "keygen", "--out", str(path)]).stdout.strip()

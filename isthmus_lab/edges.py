"""A mesh's edges: start, kill and restart them, read their status and kernel routes,
and wait until each has exactly its remote routes installed.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterable
from typing import Any

from isthmus.routemap import ROUTE_PROTO
from isthmus_lab import nat
from isthmus_lab.commands import ISTHMUS, POLL_INTERVAL, READY_TIMEOUT, tail
from isthmus_lab.layout import MeshLayout
from isthmus_lab.netns import LabError, Process, host_run


class MeshEdges(MeshLayout):
    """The edge processes of a mesh, one per site."""

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

    def flush_nat(self, site: str) -> None:
        """Forget every mapping of the NAT router in front of `site` (`conntrack -F` in its
        namespace), as a NAT that rebooted or timed its flows out: the edge's next packet
        out gets a new mapping, a new public port when the old one is taken by then."""
        nat.flush(self.lab, self.nat_ns(site))
        self._progress(f"NAT of {site}: conntrack flushed")

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
                        f"{tail(self.edges[site])}"
                    )
                time.sleep(POLL_INTERVAL)

    def _edge_state(self, site: str, controller_connected: bool) -> tuple[bool, str]:
        process = self.edges[site]
        if not process.alive():
            raise LabError(f"the edge of {site} exited {process.returncode}:\n{tail(process)}")
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

"""A mesh's controllers and their etcd: start, kill, reload, reconfigure, and ask them.

The replicas run as `python -m isthmus controller` in the underlay namespace; their routes,
edges and approvals go through `isthmus routes|edges` on the admin socket, their health
through `isthmus_lab.health`.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from isthmus_lab.commands import HEALTH, ISTHMUS, tail, wait_until
from isthmus_lab.etcd import EtcdCluster
from isthmus_lab.layout import MeshLayout
from isthmus_lab.netns import LabError, Process, host_run
from isthmus_lab.topology import controller_config

# Prints an etcd member's /v3/maintenance/status JSON (header.member_id, leader).
_ETCD_STATUS = (
    "import sys, urllib.request\n"
    "request = urllib.request.Request(sys.argv[1], data=b'{}', method='POST')\n"
    "sys.stdout.write(urllib.request.urlopen(request, timeout=2).read().decode())\n"
)


class MeshControllers(MeshLayout):
    """The controller replicas and etcd of a mesh."""

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

    def restart_etcd_member(self, member: int) -> None:
        """Start a killed etcd member again on its data; returns once the members agree
        on a leader."""
        if self.etcd is None:
            raise LabError("this mesh runs no etcd (store='file')")
        self.etcd.restart(member)
        self._progress(f"etcd member {member} restarted")

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
                    f"{self._replica(index)} exited {process.returncode}:\n{tail(process)}"
                )
            done = self.lab.run(self.underlay_ns, ["ss", "-Hltn", f"sport = :{port}"])
            return bool(done.stdout.strip())

        wait_until(
            listening, 10.0, f"{self._replica(index)} listening on :{port}", lambda: tail(process)
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
        argv = [
            *HEALTH,
            self.controller_addresses[index],
            "--controller-key",
            self.controller_public_key,
            "--timeout",
            str(timeout),
        ]
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

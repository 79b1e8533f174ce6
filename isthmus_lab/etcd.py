"""A real etcd cluster for tests and labs: n `etcd` members started as processes.

Owns the members it started (by PID), their data directories under `workdir`, and one log
file per member (`<workdir>/<name>.log`, warnings and errors only) quoted in failures.
On the host loopback (no `lab`) every member gets free client and peer ports; in a
namespace (`lab` and `ns`) the ports are fixed (2379 + 2 i, 2380 + 2 i), since a fresh
namespace has all ports free.

TLS (`tls`, an isthmus_lab.certs.TestCA): client URLs are https://, every member presents
the CA's server certificate and requires a client certificate the CA signed
(--client-cert-auth); peers talk plain http between themselves.

Rules: `kill(i)` SIGKILLs member i only; `restart(i)` starts it again on its data;
`close()` ends only the processes this cluster started (SIGTERM, then SIGKILL), removes
their data directories, is idempotent and never raises. Members die with the process
that started them (PR_SET_PDEATHSIG). Imports neither `controller` nor `edge`; needs
`/usr/bin/etcd` (Debian `etcd-server`, scripts/setup.sh).
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from isthmus_lab.certs import TestCA
from isthmus_lab.netns import Lab, LabError, Process, _die_with_parent

ETCD = "etcd"
_PORT_ATTEMPTS = 3
_STATUS_SCRIPT = (
    "import ssl, sys, urllib.request\n"
    "c = None\n"
    "if len(sys.argv) > 2:\n"
    "    c = ssl.create_default_context(cafile=sys.argv[2])\n"
    "    c.load_cert_chain(sys.argv[3], sys.argv[4])\n"
    "r = urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=b'{}', "
    "method='POST'), timeout=1, context=c)\n"
    "sys.stdout.write(r.read().decode())\n"
)


def free_port(host: str) -> int:
    """A TCP port nothing listens on at `host` right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EtcdCluster:
    """n etcd members forming one new cluster; a context manager that always cleans up."""

    def __init__(
        self,
        workdir: Path,
        members: int = 3,
        lab: Lab | None = None,
        ns: str | None = None,
        host: str = "127.0.0.1",
        tls: TestCA | None = None,
    ) -> None:
        if members < 1:
            raise ValueError(f"members: {members} is not a positive number")
        if (lab is None) != (ns is None):
            raise ValueError("lab and ns: give both (members in that namespace) or neither")
        self.workdir = workdir
        self.lab = lab
        self.ns = ns
        self.host = host
        self.tls = tls
        self._tls_context: ssl.SSLContext | None = None
        if tls is not None:
            lab_client = tls.client("etcd-lab")
            self._tls_context = ssl.create_default_context(cafile=str(tls.ca.cert))
            self._tls_context.load_cert_chain(str(lab_client.cert), str(lab_client.key))
        self.names = tuple(f"etcd{i}" for i in range(members))
        self.client_urls: tuple[str, ...] = ()
        self.peer_urls: tuple[str, ...] = ()
        self._pick_ports()
        self._processes: list[Process | None] = [None] * members
        self._argv: list[list[str]] = [[] for _ in range(members)]
        self._killed: set[int] = set()
        self._closed = False

    def __enter__(self) -> EtcdCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def data_dir(self, member: int) -> Path:
        return self.workdir / f"{self.names[member]}.data"

    def log_path(self, member: int) -> Path:
        return self.workdir / f"{self.names[member]}.log"

    def process(self, member: int) -> Process | None:
        return self._processes[member]

    # -- running ------------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        """Start every member and wait until each one knows the same leader.

        Raises:
            LabError: `etcd` is missing, a member exited, or no leader within `timeout`;
                quotes the members' logs.
        """
        if self._closed:
            raise LabError("the etcd cluster is closed")
        if shutil.which(ETCD) is None:
            raise LabError("'etcd' is not installed (scripts/setup.sh installs etcd-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self._start_members()
            try:
                self.wait_for_leader(timeout)
                return
            except LabError:
                if self.lab is not None or attempt == _PORT_ATTEMPTS or not self._port_taken():
                    raise
            # A free port was taken between picking it and etcd binding it: start over.
            self._stop_members(timeout=2.0)
            self._pick_ports()

    def _pick_ports(self) -> None:
        n, host = len(self.names), self.host
        url_host = f"[{host}]" if ":" in host else host
        if self.lab is None:
            ports = [(free_port(host), free_port(host)) for _ in range(n)]
        else:
            ports = [(2379 + 2 * i, 2380 + 2 * i) for i in range(n)]
        scheme = "http" if self.tls is None else "https"
        self.client_urls = tuple(f"{scheme}://{url_host}:{c}" for c, _ in ports)
        self.peer_urls = tuple(f"http://{url_host}:{p}" for _, p in ports)

    def _port_taken(self) -> bool:
        return any(
            "address already in use" in p.log()
            for p in self._processes
            if p is not None and not p.alive()
        )

    def _start_members(self) -> None:
        token = f"isthmus-{secrets.token_hex(4)}"
        initial = ",".join(f"{n}={u}" for n, u in zip(self.names, self.peer_urls, strict=True))
        for i, name in enumerate(self.names):
            argv = [
                ETCD,
                "--name", name,
                "--data-dir", str(self.data_dir(i)),
                "--listen-client-urls", self.client_urls[i],
                "--advertise-client-urls", self.client_urls[i],
                "--listen-peer-urls", self.peer_urls[i],
                "--initial-advertise-peer-urls", self.peer_urls[i],
                "--initial-cluster", initial,
                "--initial-cluster-token", token,
                "--initial-cluster-state", "new",
                "--logger", "zap",
                "--log-level", "error",
                "--log-outputs", "stderr",
            ]  # fmt: skip
            if self.tls is not None:
                argv += [
                    "--cert-file", str(self.tls.server.cert),
                    "--key-file", str(self.tls.server.key),
                    "--trusted-ca-file", str(self.tls.ca.cert),
                    "--client-cert-auth",
                ]  # fmt: skip
            self._argv[i] = argv
            self._processes[i] = self._spawn(argv, self.log_path(i))

    def _spawn(self, argv: list[str], log_path: Path) -> Process:
        if self.lab is not None and self.ns is not None:
            return self.lab.spawn(self.ns, argv, log_path)
        # setpriv sets the parent-death signal and execs etcd: no Python code runs between
        # fork and exec, so the at-fork handlers of a gRPC runtime in this process (tests
        # run controllers in-process) never run in the child, where they can abort it.
        setpriv = shutil.which("setpriv")
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=None if setpriv else _die_with_parent,
            )
        return Process("(host)", argv, log_path, popen)

    def wait_for_leader(self, timeout: float = 20.0) -> None:
        """Wait until every running member reports the same leader, itself running.

        Raises:
            LabError: a member exited or there is no common leader within `timeout`.
        """
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            running = [i for i, p in enumerate(self._processes) if p is not None and p.alive()]
            for i, p in enumerate(self._processes):
                if p is not None and not p.alive() and i not in self._killed:
                    raise LabError(
                        f"etcd member {self.names[i]} exited with {p.returncode}\n{self.logs()}"
                    )
            leaders = set()
            alive_ids = set()
            for i in running:
                try:
                    own, leader = self.status(i)
                except LabError as e:
                    last = str(e)
                    leaders.add(0)
                    continue
                alive_ids.add(own)
                leaders.add(leader)
            # survivors keep naming a killed leader until they elect a new one: require a
            # leader that is itself running
            if running and len(leaders) == 1 and leaders <= alive_ids:
                return
            if leaders:
                last = f"leaders reported: {sorted(leaders)}" if 0 not in leaders else last
            if time.monotonic() >= deadline:
                raise LabError(
                    f"etcd cluster has no leader after {timeout:.0f} s ({last})\n{self.logs()}"
                )
            time.sleep(0.1)

    def leader(self, member: int) -> int:
        """The leader id member `member` knows (0: none).

        Raises:
            LabError: the member does not answer.
        """
        return self.status(member)[1]

    def status(self, member: int) -> tuple[int, int]:
        """(its own member id, the leader id it knows (0: none)) of member `member`.

        Raises:
            LabError: the member does not answer.
        """
        url = f"{self.client_urls[member]}/v3/maintenance/status"
        try:
            if self.lab is not None and self.ns is not None:
                files = []
                if self.tls is not None:
                    lab_client = self.tls.client("etcd-lab")
                    files = [str(self.tls.ca.cert), str(lab_client.cert), str(lab_client.key)]
                text = self.lab.run(
                    self.ns, [sys.executable, "-c", _STATUS_SCRIPT, url, *files], timeout=5
                ).stdout
            else:
                request = urllib.request.Request(url, data=b"{}", method="POST")
                with urllib.request.urlopen(
                    request, timeout=1, context=self._tls_context
                ) as response:
                    text = response.read().decode()
            doc = json.loads(text)
            return int(doc.get("header", {}).get("member_id", 0)), int(doc.get("leader", 0))
        except (OSError, urllib.error.URLError, ValueError, LabError) as e:
            raise LabError(f"etcd member {self.names[member]} does not answer: {e}") from None

    def kill(self, member: int) -> None:
        """SIGKILL member `member` (only it) and reap it."""
        process = self._processes[member]
        if process is None:
            raise LabError(f"etcd member {self.names[member]} was never started")
        self._killed.add(member)
        process.kill()

    @property
    def killed(self) -> tuple[int, ...]:
        """The members `kill` stopped and `restart` has not started again."""
        return tuple(sorted(self._killed))

    def restart(self, member: int, timeout: float = 20.0) -> None:
        """Start a killed member `member` again on its data directory (it rejoins), and
        wait until every running member knows the same leader.

        Raises:
            LabError: it was never started or is running, or no common leader in time.
        """
        process = self._processes[member]
        if process is None or not self._argv[member]:
            raise LabError(f"etcd member {self.names[member]} was never started")
        if process.alive():
            raise LabError(f"etcd member {self.names[member]} is running")
        self._processes[member] = self._spawn(self._argv[member], self.log_path(member))
        self._killed.discard(member)
        self.wait_for_leader(timeout)

    def logs(self) -> str:
        """Every member's log, for failure messages."""
        parts = []
        for i, name in enumerate(self.names):
            try:
                text = self.log_path(i).read_text(encoding="utf-8", errors="replace")
            except OSError:
                text = ""
            tail = "\n".join(text.splitlines()[-20:]) or "(empty)"
            parts.append(f"--- {name} ({self.log_path(i)}):\n{tail}")
        return "\n".join(parts)

    # -- cleanup ------------------------------------------------------------------------------

    def close(self, timeout: float = 2.0) -> None:
        """Stop every member this cluster started and remove their data directories."""
        if self._closed:
            return
        self._closed = True
        self._stop_members(timeout)

    def _stop_members(self, timeout: float) -> None:
        for process in self._processes:
            if process is not None:
                process.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self._processes:
            if process is None:
                continue
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except LabError:
                process.kill()
        for i in range(len(self.names)):
            shutil.rmtree(self.data_dir(i), ignore_errors=True)

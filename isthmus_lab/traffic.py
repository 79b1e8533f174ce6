"""Traffic through a mesh: TCP echo checks, pings, packet captures, and the impairment
proxy (loss, reordering, duplication) between the edges.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from isthmus_lab.capture import Capture, capture
from isthmus_lab.commands import IMPAIR, PROBE, tail, wait_until
from isthmus_lab.impair import parse_counters, site_arg
from isthmus_lab.layout import MeshLayout
from isthmus_lab.netns import LabError, Process

ECHO_PORT = 7777
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


class MeshTraffic(MeshLayout):
    """Probes and captures in a mesh's namespaces, and its impairment proxy."""

    # -- the impairment proxy ---------------------------------------------------------------

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
                raise LabError(f"the impairment proxy exited:\n{tail(process)}")
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
            raise LabError(f"the impairment proxy printed no counters:\n{tail(process)}")
        return counters

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
                raise LabError(f"echo server in {ns} exited:\n{tail(server)}")
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


def _ping_argv(dst_ip: str, count: int, interval: float) -> list[str]:
    return ["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1", dst_ip]

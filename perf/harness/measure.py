"""The measurements of one overlay, and the parsers of what the tools print.

Parsers (pure, tested on captured output): iperf3 `--json` for TCP and UDP, ping's summary,
and /proc/PID/stat CPU times. Runners: iperf3 from host a to an iperf3 server on host b,
and ping from host a to host b, with the CPU time of the overlay's processes read before
and after each iperf3 run.

Figures (all per overlay and round): `tcp1_mbps`, `tcp4_mbps` (received Mbit/s, 1 and 4
streams), `udp64_pps`, `udp1392_pps` (packets/s received by the server, iperf3 -u -b 0
with that payload), `udp64_loss_pct`, `udp1392_loss_pct`, `rtt_ms` (ping average),
`ping_loss_pct`, `cpu_s_per_gb` (CPU seconds of the overlay's processes over both TCP
runs per GB (1e9 bytes) received; None without processes, i.e. the plain underlay).
Rule: a tool that fails or prints nothing parseable raises `MeasureError` naming the
command, never a zero figure.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from isthmus_lab.netns import Lab, LabError, Process
from perf.harness.topology import Sites, wait_until

IPERF_PORT = 5201
UDP_PAYLOADS = (64, 1392)  # 1392 + 8 (UDP) + 20 (IPv4) = 1420, the overlay MTU
PING_COUNT = 100
PING_INTERVAL = 0.01
_PING_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")
_PING_LOSS = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class MeasureError(RuntimeError):
    """A measuring tool failed or printed something unparseable; names the tool and why."""


@dataclass(frozen=True, slots=True)
class TcpResult:
    bytes_received: int
    seconds: float
    mbps: float


@dataclass(frozen=True, slots=True)
class UdpResult:
    packets_sent: int
    packets_lost: int
    seconds: float
    pps: float  # packets received per second
    loss_pct: float


@dataclass(frozen=True, slots=True)
class PingSummary:
    transmitted: int
    received: int
    rtt_min_ms: float
    rtt_avg_ms: float
    rtt_max_ms: float

    @property
    def loss_pct(self) -> float:
        return 100.0 * (self.transmitted - self.received) / self.transmitted


def _iperf_end(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise MeasureError(f"iperf3 --json: not JSON ({e.msg} at char {e.pos})") from None
    if not isinstance(doc, dict):
        raise MeasureError("iperf3 --json: not a JSON object")
    if doc.get("error"):
        raise MeasureError(f"iperf3: {doc['error']}")
    end = doc.get("end")
    if not isinstance(end, dict):
        raise MeasureError("iperf3 --json: no 'end' object")
    return end


def _section(end: dict[str, Any], *names: str) -> dict[str, Any]:
    for name in names:
        found = end.get(name)
        if isinstance(found, dict) and "seconds" in found:
            return found
    raise MeasureError(f"iperf3 --json: end has none of {', '.join(names)}")


def parse_iperf_tcp(text: str) -> TcpResult:
    """The receiver's figures of an iperf3 TCP run (`end.sum_received`)."""
    received = _section(_iperf_end(text), "sum_received")
    seconds = float(received["seconds"])
    count = int(received["bytes"])
    if seconds <= 0:
        raise MeasureError(f"iperf3 --json: sum_received.seconds is {seconds}; expected > 0")
    return TcpResult(count, seconds, count * 8 / seconds / 1e6)


def parse_iperf_udp(text: str) -> UdpResult:
    """The server's view of an iperf3 UDP run: `end.sum_received` (iperf3 >= 3.11), else
    `end.sum`; packets received = packets - lost_packets."""
    received = _section(_iperf_end(text), "sum_received", "sum")
    seconds = float(received["seconds"])
    sent = int(received["packets"])
    lost = int(received["lost_packets"])
    if seconds <= 0 or sent <= 0:
        raise MeasureError(
            f"iperf3 --json: UDP seconds {seconds}, packets {sent}; expected both > 0"
        )
    return UdpResult(sent, lost, seconds, (sent - lost) / seconds, 100.0 * lost / sent)


def parse_ping(text: str) -> PingSummary:
    """ping's summary: the packet counts and the rtt min/avg/max line (Linux iputils)."""
    counts = _PING_LOSS.search(text)
    if counts is None:
        raise MeasureError("ping: no 'N packets transmitted, M received' line")
    transmitted, received = int(counts.group(1)), int(counts.group(2))
    if transmitted <= 0:
        raise MeasureError("ping: transmitted no packet")
    rtt = _PING_RTT.search(text)
    if rtt is None:
        raise MeasureError(f"ping: no rtt line ({received} of {transmitted} replies)")
    return PingSummary(
        transmitted, received, float(rtt.group(1)), float(rtt.group(2)), float(rtt.group(3))
    )


def parse_proc_stat(text: str) -> float:
    """utime + stime in seconds from a /proc/PID/stat line (the command may hold spaces
    and parentheses, so fields are counted after the last ')')."""
    _, paren, rest = text.rpartition(")")
    fields = rest.split()
    if not paren or len(fields) < 13:
        raise MeasureError(f"/proc/PID/stat: malformed line {text[:80]!r}")
    # after ')' field 0 is state (field 3 of proc(5)); utime is field 14, stime 15
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def cpu_seconds(pids: Iterable[int]) -> float:
    """The summed CPU time (all threads, user + system) of `pids`.

    Raises:
        MeasureError: a process is gone (its CPU would silently drop out).
    """
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                total += parse_proc_stat(f.read())
        except FileNotFoundError:
            raise MeasureError(f"overlay process {pid} is gone; cannot read its CPU") from None
    return total


class Runner:
    """Runs the tools between the two hosts of `sites` for `seconds` per iperf3 run."""

    def __init__(self, lab: Lab, sites: Sites, seconds: float) -> None:
        self.lab = lab
        self.sites = sites
        self.seconds = seconds
        self._server: Process | None = None

    def start_server(self) -> None:
        """An iperf3 server on host b (one per overlay, so a wedged one cannot spread)."""
        self.stop_server()
        self._server = self.lab.spawn(
            self.sites.b.host_ns,
            ["iperf3", "-s", "-p", str(IPERF_PORT)],
            self.lab.dir / "iperf3-server.log",
        )

        def listening() -> bool:
            if self._server is not None and not self._server.alive():
                raise LabError(f"iperf3 server exited: {self._server.log()}")
            argv = ["ss", "-Hltn", f"sport = :{IPERF_PORT}"]
            return bool(self.lab.run(self.sites.b.host_ns, argv).stdout.strip())

        wait_until(listening, 10.0, f"iperf3 server listening on host b :{IPERF_PORT}")

    def stop_server(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def iperf(self, *args: str) -> str:
        argv = [
            "iperf3", "-c", self.sites.b.host_ip, "-p", str(IPERF_PORT),
            "-t", _num(self.seconds), "--json", *args,
        ]  # fmt: skip
        time.sleep(0.3)  # let the server settle after the previous run
        done = self.lab.run(self.sites.a.host_ns, argv, check=False, timeout=self.seconds + 30)
        if done.returncode != 0:
            try:
                _iperf_end(done.stdout)
            except MeasureError as e:
                raise MeasureError(f"'{' '.join(argv)}' exited {done.returncode}: {e}") from None
            raise MeasureError(f"'{' '.join(argv)}' exited {done.returncode}")
        return done.stdout

    def ping(self) -> PingSummary:
        argv = [
            "ping", "-n", "-q", "-c", str(PING_COUNT), "-i", _num(PING_INTERVAL), "-W", "1",
            self.sites.b.host_ip,
        ]  # fmt: skip
        done = self.lab.run(self.sites.a.host_ns, argv, check=False, timeout=60.0)
        return parse_ping(done.stdout)

    def measure(
        self, pids: tuple[int, ...], progress: Callable[[str], None]
    ) -> tuple[dict[str, float | None], dict[str, Any]]:
        """Every figure of one overlay; also the raw numbers behind them."""
        self.start_server()
        try:
            figures: dict[str, float | None] = {}
            raw: dict[str, Any] = {}
            cpu = 0.0
            received = 0
            for streams in (1, 4):
                progress(f"tcp {streams} stream(s)")
                before = cpu_seconds(pids)
                tcp = parse_iperf_tcp(self.iperf("-P", str(streams)))
                used = cpu_seconds(pids) - before
                cpu += used
                received += tcp.bytes_received
                figures[f"tcp{streams}_mbps"] = tcp.mbps
                raw[f"tcp{streams}"] = {
                    "bytes": tcp.bytes_received,
                    "seconds": tcp.seconds,
                    "cpu_s": used,
                }
            for payload in UDP_PAYLOADS:
                progress(f"udp {payload} B")
                before = cpu_seconds(pids)
                udp = parse_iperf_udp(self.iperf("-u", "-b", "0", "-l", str(payload)))
                figures[f"udp{payload}_pps"] = udp.pps
                figures[f"udp{payload}_loss_pct"] = udp.loss_pct
                raw[f"udp{payload}"] = {
                    "packets_sent": udp.packets_sent,
                    "packets_lost": udp.packets_lost,
                    "seconds": udp.seconds,
                    "cpu_s": cpu_seconds(pids) - before,
                }
            progress(f"ping {PING_COUNT} at {PING_INTERVAL * 1000:.0f} ms")
            ping = self.ping()
            figures["rtt_ms"] = ping.rtt_avg_ms
            figures["ping_loss_pct"] = ping.loss_pct
            raw["ping"] = {
                "transmitted": ping.transmitted,
                "received": ping.received,
                "rtt_min_ms": ping.rtt_min_ms,
                "rtt_max_ms": ping.rtt_max_ms,
            }
            figures["cpu_s_per_gb"] = cpu / (received / 1e9) if pids and received else None
            return figures, raw
        finally:
            self.stop_server()


def _num(value: float) -> str:
    return f"{value:g}"

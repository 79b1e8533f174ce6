"""Helpers of the resilience tests (reliability.md S16-S20): nftables impairments inside a
lab namespace, their counters, timestamped pings, TCP SYN timestamps from a capture, and a
numbered UDP flow.

Impairments are nftables tables of our own name in one namespace (`nft_table`); leaving the
block deletes the table, so a failing test never leaves a partition behind. Run as a script
(`python resilience_tools.py udp-flow HOST PORT --count N --interval S`) it sends N
datagrams whose payload is `seq <n>`, for a sink to check loss and duplicates.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import re
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isthmus_lab.mesh import Mesh
from isthmus_lab.netns import Lab, Process, host_run

TOOL = (sys.executable, str(Path(__file__).resolve()))
_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)")


@contextlib.contextmanager
def nft_table(lab: Lab, ns: str, name: str, body: str, family: str = "inet") -> Iterator[None]:
    """Load `table <family> <name> { body }` in `ns` for the block; deleted on the way out."""
    lab.nft(ns, f"table {family} {name} {{\n{body}\n}}\n")
    try:
        yield
    finally:
        lab.run(ns, ["nft", "delete", "table", family, name], check=False)


# Run inside a namespace: turn one offload feature of an interface off (no ethtool here).
_FEATURE_OFF = (
    "import sys\n"
    "from pyroute2.ethtool import Ethtool\n"
    "tool = Ethtool()\n"
    "found = tool.get_features(sys.argv[1])\n"
    "found.features[sys.argv[2]].enable = False\n"
    "tool.set_features(sys.argv[1], found)\n"
    "assert not tool.get_features(sys.argv[1]).features[sys.argv[2]].enable\n"
)


def segment_on_the_wire(lab: Lab, ns: str, ifname: str) -> None:
    """Make `ifname` cut UDP GSO runs into datagrams before the wire, as a NIC does.

    A veth hands a GSO super-packet to its peer whole: netfilter on the way (and the veth
    MTU check, which lets any GSO packet pass) would see one big packet where a real
    underlay sees separate datagrams. With tx-udp-segmentation off the kernel segments in
    software at this interface, so every hook beyond it sees real datagrams."""
    lab.run(ns, [sys.executable, "-c", _FEATURE_OFF, ifname, "tx-udp-segmentation"])


def nft_counters(lab: Lab, ns: str, table: str) -> dict[str, int]:
    """Packets of every named counter of `table` in `ns`."""
    out = lab.run(ns, ["nft", "-j", "list", "counters"]).stdout
    found: dict[str, int] = {}
    for item in json.loads(out)["nftables"]:
        counter = item.get("counter")
        if counter and counter["table"] == table:
            found[counter["name"]] = int(counter["packets"])
    return found


def peer(mesh: Mesh, site: str, name: str) -> dict[str, Any]:
    """`site`'s status entry of its peer `name`."""
    for entry in mesh.status(site)["peers"]:
        if entry["name"] == name:
            return dict(entry)
    raise AssertionError(f"{site} has no peer {name}: {mesh.status(site)['peers']}")


def record(figures: dict[str, Any], name: str, figure: dict[str, Any]) -> None:
    """Keep a measured figure for the run's summary and print it (`pytest -s`)."""
    figures[name] = figure
    print(f"\n{name}: {figure}")


def drops(mesh: Mesh, site: str) -> dict[str, int]:
    return {k: int(v) for k, v in mesh.status(site)["drops"].items()}


@dataclass(frozen=True, slots=True)
class Pinger:
    """A background `ping -D` from a workload; replies carry wall-clock timestamps."""

    process: Process

    def replies(self) -> list[tuple[float, int]]:
        """(unix time, icmp_seq) of every reply so far."""
        found = []
        for line in self.process.log().splitlines():
            match = _REPLY.match(line)
            if match:
                found.append((float(match.group(1)), int(match.group(2))))
        return found

    def first_reply_after(self, t: float) -> float | None:
        return next((ts for ts, _ in self.replies() if ts > t), None)

    def largest_gap(self, start: float, end: float) -> float:
        """The longest time without a reply between `start` and `end` (unix times)."""
        times = [start, *(ts for ts, _ in self.replies() if start < ts < end), end]
        return max(b - a for a, b in itertools.pairwise(times))


def start_pinger(
    mesh: Mesh, src_site: str, dst_ip: str, *, count: int, interval: float, name: str
) -> Pinger:
    log = mesh.dir / src_site / f"{name}.log"
    log.unlink(missing_ok=True)
    argv = ["ping", "-D", "-n", "-c", str(count), "-i", str(interval), "-W", "1", dst_ip]
    return Pinger(mesh.lab.spawn(mesh.workload_ns(src_site), argv, log))


def syn_times(pcap: Path, port: int) -> list[float]:
    """Unix times of the TCP SYNs (not SYN-ACKs) to `port` in `pcap`: connection attempts."""
    bpf = f"tcp dst port {port} and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn"
    out = host_run(["tcpdump", "-tt", "-nn", "-r", str(pcap), bpf]).stdout
    return [float(line.split()[0]) for line in out.splitlines() if line.strip()]


def udp_flow(host: str, port: int, count: int, interval: float) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for n in range(count):
            sock.sendto(f"seq {n:06d}".encode(), (host, port))
            if interval:
                time.sleep(interval)


def received_sequence(sink_log: str) -> list[int]:
    """The sequence numbers a `probe udp-sink` printed (one `<src> <hex>` line per datagram)."""
    seqs = []
    for line in sink_log.splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("listening"):
            with contextlib.suppress(ValueError):
                text = bytes.fromhex(parts[1]).decode()
                if text.startswith("seq "):
                    seqs.append(int(text[4:]))
    return seqs


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="resilience_tools.py")
    commands = parser.add_subparsers(dest="command", required=True)
    flow = commands.add_parser("udp-flow")
    flow.add_argument("host")
    flow.add_argument("port", type=int)
    flow.add_argument("--count", type=int, default=100)
    flow.add_argument("--interval", type=float, default=0.0)
    args = parser.parse_args(argv)
    udp_flow(args.host, args.port, args.count, args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

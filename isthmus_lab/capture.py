"""Packet captures with tcpdump inside a lab namespace, written to a pcap file in the lab dir.

`capture(lab, ns, iface, path)` is a context manager: tcpdump is listening when the block
starts and has flushed and exited when it ends. tcpdump writes the pcap to its stdout,
which the lab redirects to the file, so its privilege drop never meets the lab directory.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from isthmus_lab.netns import Lab, LabError, host_run

READY_TIMEOUT = 5.0
# tcpdump's kernel buffer in KiB. With --immediate-mode libpcap uses one ring frame per
# snaplen bytes, so a full snaplen (256 KiB) and the default 2 MiB buffer hold only eight
# packets and a burst is lost ("dropped by kernel"); pass a small snaplen for bursts.
BUFFER_KIB = 32768


@dataclass(frozen=True, slots=True)
class Capture:
    ns: str
    iface: str
    path: Path

    def data(self) -> bytes:
        """The raw pcap file (header, record headers and packet bytes)."""
        return self.path.read_bytes()

    def contains(self, needle: bytes) -> bool:
        return needle in self.data()

    def count(self, bpf_filter: str = "") -> int:
        """How many captured packets match `bpf_filter` (all when empty)."""
        argv = ["tcpdump", "-nn", "-r", str(self.path)]
        if bpf_filter:
            argv.append(bpf_filter)
        return len([line for line in host_run(argv).stdout.splitlines() if line.strip()])


@contextlib.contextmanager
def capture(lab: Lab, ns: str, iface: str, path: Path, *, snaplen: int = 0) -> Iterator[Capture]:
    """Capture every packet on `iface` in `ns` into `path` while the block runs; `snaplen`
    bytes of each (0: all; use e.g. 2048 for underlay bursts, see BUFFER_KIB).

    Raises:
        LabError: tcpdump exited or was not listening within READY_TIMEOUT seconds.
    """
    log = path.with_suffix(".tcpdump.log")
    process = lab.spawn(
        ns,
        [
            *("tcpdump", "-i", iface, "-nn", "--immediate-mode", "-U"),
            *("-B", str(BUFFER_KIB), "-s", str(snaplen), "-w", "-"),
        ],
        log,
        stdout_path=path,
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while "listening on" not in process.log():
            if not process.alive():
                raise LabError(f"tcpdump on {iface} in {ns} exited: {process.log().strip()}")
            if time.monotonic() > deadline:
                raise LabError(f"tcpdump on {iface} in {ns} not listening after {READY_TIMEOUT} s")
            time.sleep(0.02)
        yield Capture(ns, iface, path)
    finally:
        # Let packets sent just before the block ended reach the file, then stop tcpdump.
        time.sleep(0.2)
        process.signal(signal.SIGINT)
        try:
            process.wait(5.0)
        except LabError:
            process.kill()

"""A UDP impairment proxy between edges, run in the underlay as `python -m isthmus_lab.impair`.

```
  edge X (real X_ip:port) --> P_Y (proxy for Y) ==[loss, reorder, duplicate]==> edge Y
  edge Y <-- sent from P_X <---------------------------------------------------- edge X
```
One proxy socket per site. Each edge advertises its proxy address as its `endpoint`, so
every peer sends to it. A datagram arriving on P_X from the real address of edge Y is sent
from P_Y to the real address of X: X sees it come from Y's advertised endpoint, so roaming
(an endpoint follows the source of authenticated packets) never moves a peer off its proxy.
A datagram from an address that is no edge's real address is counted and dropped.

    python -m isthmus_lab.impair --site NAME=PROXY_IP:PORT=REAL_IP:PORT (one per site)
        [--loss PCT] [--reorder PCT] [--duplicate PCT] [--seed N] [--max-held N]

Reordering holds a datagram back and releases it after the next 1-3 forwarded datagrams or
after REORDER_DELAY, whichever comes first; at most `--max-held` are held (the oldest is
released early when full). Prints `listening ...` once every socket is bound, and on
SIGTERM/SIGINT one line `impair counters {json}` on stdout, then exits 0. Stdlib only;
the RNG is seeded, so a run's decisions depend only on the seed and the arrival order.
"""

from __future__ import annotations

import argparse
import json
import random
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

REORDER_DELAY = 0.005  # seconds a held datagram waits at most
MAX_DATAGRAM = 65535
COUNTER_NAMES = (
    "received",
    "forwarded",
    "lost",
    "reordered",
    "duplicated",
    "unknown_source",
    "send_errors",
)


@dataclass(frozen=True, slots=True)
class SiteSpec:
    name: str
    proxy: tuple[str, int]
    real: tuple[str, int]


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected IPv4:PORT, got {text!r}")
    socket.inet_aton(host)
    return host, int(port)


def parse_site(text: str) -> SiteSpec:
    """`NAME=PROXY_IP:PORT=REAL_IP:PORT`. Raises ValueError naming the problem."""
    parts = text.split("=")
    if len(parts) != 3 or not parts[0]:
        raise ValueError(f"expected NAME=PROXY_IP:PORT=REAL_IP:PORT, got {text!r}")
    return SiteSpec(parts[0], parse_address(parts[1]), parse_address(parts[2]))


def site_arg(spec: SiteSpec) -> str:
    """The `--site` argument that `parse_site` reads back as `spec`."""
    return f"{spec.name}={spec.proxy[0]}:{spec.proxy[1]}={spec.real[0]}:{spec.real[1]}"


@dataclass(slots=True)
class _Held:
    data: bytes
    sock: socket.socket
    dest: tuple[str, int]
    release_after: int  # forwarded datagrams still to pass before this one
    deadline: float


@dataclass(slots=True)
class Impairment:
    """The forwarding rule and the impairments; I/O is only `sendto` on the given sockets."""

    loss: float  # percent
    reorder: float
    duplicate: float
    rng: random.Random
    max_held: int
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTER_NAMES, 0))
    held: list[_Held] = field(default_factory=list)

    def handle(self, data: bytes, sock: socket.socket, dest: tuple[str, int], now: float) -> None:
        """A datagram to forward from `sock` to `dest`."""
        self.counters["received"] += 1
        if self.rng.random() * 100 < self.loss:
            self.counters["lost"] += 1
            return
        copies = 2 if self.rng.random() * 100 < self.duplicate else 1
        if copies == 2:
            self.counters["duplicated"] += 1
        for _ in range(copies):
            if self.rng.random() * 100 < self.reorder:
                self.counters["reordered"] += 1
                if len(self.held) >= self.max_held:
                    self._send(self.held.pop(0))
                after = self.rng.randint(1, 3)
                self.held.append(_Held(data, sock, dest, after, now + REORDER_DELAY))
            else:
                self._forward(data, sock, dest)
                self._count_down()

    def expire(self, now: float) -> None:
        """Release held datagrams whose deadline passed."""
        due = [h for h in self.held if h.deadline <= now]
        if due:
            self.held = [h for h in self.held if h.deadline > now]
            for held in due:
                self._send(held)

    def next_deadline(self) -> float | None:
        return min((h.deadline for h in self.held), default=None)

    def flush(self) -> None:
        held, self.held = self.held, []
        for h in held:
            self._send(h)

    def _count_down(self) -> None:
        ready = []
        for h in self.held:
            h.release_after -= 1
            if h.release_after <= 0:
                ready.append(h)
        if ready:
            self.held = [h for h in self.held if h.release_after > 0]
            for h in ready:
                self._send(h)

    def _send(self, held: _Held) -> None:
        self._forward(held.data, held.sock, held.dest)

    def _forward(self, data: bytes, sock: socket.socket, dest: tuple[str, int]) -> None:
        try:
            sock.sendto(data, dest)
        except OSError:
            self.counters["send_errors"] += 1
            return
        self.counters["forwarded"] += 1


class _Stop(Exception):
    pass


def run(sites: list[SiteSpec], impairment: Impairment) -> dict[str, int]:
    """Forward until SIGTERM/SIGINT; returns the counters."""
    by_real = {site.real: site for site in sites}
    sockets: dict[str, socket.socket] = {}
    selector = selectors.DefaultSelector()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for site in sites:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind(site.proxy)
            sock.setblocking(False)
            sockets[site.name] = sock
            selector.register(sock, selectors.EVENT_READ, site)
        listening = ", ".join(f"{s.name} {s.proxy[0]}:{s.proxy[1]}" for s in sites)
        print(f"listening {listening}", flush=True)
        while True:
            deadline = impairment.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            for key, _ in selector.select(timeout):
                site_x: SiteSpec = key.data
                sock = sockets[site_x.name]
                while True:
                    try:
                        data, source = sock.recvfrom(MAX_DATAGRAM)
                    except BlockingIOError:
                        break
                    except OSError:
                        # e.g. ICMP port unreachable reported on the socket; not a datagram
                        continue
                    site_y = by_real.get((source[0], source[1]))
                    if site_y is None:
                        impairment.counters["unknown_source"] += 1
                        continue
                    out = sockets[site_y.name]
                    impairment.handle(data, out, site_x.real, time.monotonic())
            impairment.expire(time.monotonic())
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        impairment.flush()
        for sock in sockets.values():
            sock.close()
        selector.close()
    return dict(impairment.counters)


def parse_counters(log: str) -> dict[str, int] | None:
    """The counters from the proxy's output (None when it printed none yet)."""
    for line in reversed(log.splitlines()):
        if line.startswith("impair counters "):
            parsed = json.loads(line[len("impair counters ") :])
            return {str(k): int(v) for k, v in parsed.items()}
    return None


def _percent(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 100.0:
        raise argparse.ArgumentTypeError(f"a percentage is 0-100, got {text}")
    return value


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m isthmus_lab.impair")
    parser.add_argument("--site", action="append", required=True, metavar="N=PROXY=REAL")
    parser.add_argument("--loss", type=_percent, default=0.0)
    parser.add_argument("--reorder", type=_percent, default=0.0)
    parser.add_argument("--duplicate", type=_percent, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-held", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        sites = [parse_site(text) for text in args.site]
    except (ValueError, OSError) as e:
        parser.error(str(e))
    if len({s.name for s in sites}) != len(sites) or len({s.real for s in sites}) != len(sites):
        parser.error("site names and real addresses must be unique")
    if args.max_held < 1:
        parser.error("--max-held must be at least 1")
    impairment = Impairment(
        loss=args.loss,
        reorder=args.reorder,
        duplicate=args.duplicate,
        rng=random.Random(args.seed),
        max_held=args.max_held,
    )
    try:
        counters = run(sites, impairment)
    except OSError as e:
        print(f"impair: {e}", file=sys.stderr)
        return 1
    print(f"impair counters {json.dumps(counters, sort_keys=True)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Benchmark the tunnel core on prebuilt packets, with no I/O.

Measures packets per second through `Tunnel.inside` (seal) and `Tunnel.outside`
(open + checks), through their in-place forms the data plane uses (`inside_in_place`,
`outside_in_place`: the packet copied into a preallocated buffer, then sealed or opened
there), and the route lookup alone, at 64-byte and 1400-byte packets. Every figure is also
given as a ratio to a baseline measured in the same run: the bare libsodium call the path
cannot avoid (crypto_box_easy_afternm / open_easy_afternm on the same sizes), so a noisy
machine moves both and the ratio stays meaningful.

Run: .venv/bin/python -m perf.bench_core [--seconds S] [--json]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import time
from collections.abc import Callable

from nacl.bindings import (
    crypto_box_beforenm,
    crypto_box_easy_afternm,
    crypto_box_open_easy_afternm,
    crypto_box_seed_keypair,
)

from edge.tunnel import Identity, Tunnel
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.routemap import EdgeEntry, RouteMap, parse_route

SIZES = (64, 1400)
BATCH = 256


def ipv4_packet(src: str, dst: str, size: int) -> bytes:
    """A well-formed IPv4 header padded to `size` bytes (the core checks lengths only)."""
    header = bytearray(20)
    header[0] = 0x45
    header[2:4] = size.to_bytes(2, "big")
    header[8] = 64
    header[9] = 17
    header[12:16] = ipaddress.IPv4Address(src).packed
    header[16:20] = ipaddress.IPv4Address(dst).packed
    return bytes(header) + bytes(size - 20)


def two_cores() -> tuple[Tunnel, Tunnel]:
    keys = [crypto_box_seed_keypair(bytes([i]) * 32) for i in (1, 2)]
    route_map = RouteMap(
        1,
        tuple(
            EdgeEntry(
                EdgeName(name),
                PublicKey(keys[i][0]),
                (Endpoint.parse(f"198.18.0.{11 + i}:51820"),),
                tuple(parse_route(r) for r in routes),
            )
            for i, (name, routes) in enumerate(
                [("a", ["10.244.0.0/16", "10.96.0.0/16"]), ("b", ["10.245.0.0/16"])]
            )
        ),
    )
    cores = []
    for i, name in enumerate("ab"):
        core = Tunnel(
            Identity.from_private_key(EdgeName(name), keys[i][1]),
            random=os.urandom,
            wall_clock=time.time,
        )
        core.apply_map(route_map, 0.0)
        cores.append(core)
    a, b = cores
    # Handshake: a's first packet queues and starts it; carry messages until quiet.
    assert a.inside(ipv4_packet("10.244.1.10", "10.245.1.10", 64), 0.0) is None
    addr = {"a": ("198.18.0.11", 51820), "b": ("198.18.0.12", 51820)}
    moved = True
    while moved:
        moved = False
        for src, dst in ((a, b), (b, a)):
            for datagram, _ in src.datagrams_to_send():
                dst.outside(datagram, addr[src.identity.name], 0.0)
                moved = True
    return a, b


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls of `fn` per second (each call handles BATCH packets) -> packets/s."""
    fn()  # warm up
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        fn()
        done += BATCH
    return done / (time.perf_counter() - start)


# The receiver's replay window refuses a datagram seen before, so `outside` is timed over
# distinct prebuilt datagrams, each opened once; this bounds the pool's memory.
OUTSIDE_PER_SECOND = 100_000


def sealed_pool(sender: Tunnel, packets: list[bytes], count: int) -> list[bytes]:
    """`count` datagrams sealed by `sender`, cycling through `packets` (each a new counter)."""
    pool = []
    for i in range(count):
        out = sender.inside(packets[i % len(packets)], 0.0)
        assert out is not None
        pool.append(out[0])
    return pool


def once_each(
    receiver: Tunnel, sender: Tunnel, packets: list[bytes], addr: tuple[str, int], count: int
) -> float:
    """Packets/s of `receiver.outside` over `count` distinct datagrams from `sender`."""
    pool = sealed_pool(sender, packets, count)
    start = time.perf_counter()
    delivered = sum(1 for d in pool if receiver.outside(d, addr, 0.0) is not None)
    elapsed = time.perf_counter() - start
    assert delivered == count, "every datagram must open: the benchmark measures the full path"
    return count / elapsed


def once_each_in_place(
    receiver: Tunnel, sender: Tunnel, packets: list[bytes], addr: tuple[str, int], count: int
) -> float:
    """Packets/s of `receiver.outside_in_place` over `count` distinct datagrams."""
    pool = sealed_pool(sender, packets, count)
    buf = bytearray(65536)
    opened = 0
    start = time.perf_counter()
    for d in pool:
        n = len(d)
        buf[:n] = d
        if receiver.outside_in_place(buf, 0, n, addr, 0.0) >= 0:
            opened += 1
    elapsed = time.perf_counter() - start
    assert opened == count, "every datagram must open: the benchmark measures the full path"
    return count / elapsed


def run(seconds: float) -> dict[str, dict[str, float]]:
    a, b = two_cores()
    return {f"{size}B": measure(a, b, size, seconds) for size in SIZES}


def measure(a: Tunnel, b: Tunnel, size: int, seconds: float) -> dict[str, float]:
    """Figures for one packet size, sent from core `a` to core `b`."""
    key = crypto_box_beforenm(crypto_box_seed_keypair(b"\x02" * 32)[0], os.urandom(32))
    nonce = os.urandom(24)
    packets = [ipv4_packet("10.244.1.10", "10.245.1.10", size) for _ in range(BATCH)]
    sealed = [a.inside(p, 0.0) for p in packets]
    wire = [d[0] for d in sealed if d is not None]
    assert len(wire) == BATCH and b.outside(wire[0], ("198.18.0.11", 51820), 0.0)
    boxes = [crypto_box_easy_afternm(p, nonce, key) for p in packets]
    dst = packets[0][16:20]
    table = a._context.table.routes  # the lookup structure itself (values: Route)
    addr = ("198.18.0.11", 51820)

    seal_base = rate(lambda: [crypto_box_easy_afternm(p, nonce, key) for p in packets], seconds)
    open_base = rate(lambda: [crypto_box_open_easy_afternm(x, nonce, key) for x in boxes], seconds)
    inside = rate(lambda: [a.inside(p, 0.0) for p in packets], seconds)
    buf = bytearray(65536)

    def seal_in_place() -> None:
        for p in packets:
            buf[32 : 32 + size] = p
            a.inside_in_place(buf, 0, size, 0.0)

    inside_in_place = rate(seal_in_place, seconds)
    count = max(BATCH, int(OUTSIDE_PER_SECOND * seconds))
    outside = once_each(b, a, packets, addr, count)
    outside_in_place = once_each_in_place(b, a, packets, addr, count)
    lookup = rate(lambda: [table.lookup(dst) for _ in packets], seconds)
    return {
        "inside_pps": inside,
        "outside_pps": outside,
        "inside_in_place_pps": inside_in_place,
        "outside_in_place_pps": outside_in_place,
        "lookup_per_s": lookup,
        "baseline_seal_pps": seal_base,
        "baseline_open_pps": open_base,
        "inside_vs_seal_ratio": inside / seal_base,
        "outside_vs_open_ratio": outside / open_base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = run(args.seconds)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"{'size':>6} {'inside pps':>12} {'x seal':>7} {'in place':>12} {'outside pps':>12} "
        f"{'x open':>7} {'in place':>12} {'lookups/s':>12}"
    )
    for size, r in results.items():
        print(
            f"{size:>6} {r['inside_pps']:>12,.0f} {r['inside_vs_seal_ratio']:>7.2f} "
            f"{r['inside_in_place_pps']:>12,.0f} "
            f"{r['outside_pps']:>12,.0f} {r['outside_vs_open_ratio']:>7.2f} "
            f"{r['outside_in_place_pps']:>12,.0f} {r['lookup_per_s']:>12,.0f}"
        )


if __name__ == "__main__":
    main()

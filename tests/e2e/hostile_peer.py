"""A hostile peer for the e2e suite: a legitimate edge's real key, a map of its own making.

    python tests/e2e/hostile_peer.py --key FILE --name NAME --own ROUTE[,ROUTE...]
        --listen IP:PORT --peer NAME --peer-key B64 --peer-endpoint IP:PORT
        --peer-routes ROUTE[,ROUTE...] --packets FILE [--timeout S]

Runs the real tunnel core (edge.tunnel) behind a plain UDP socket, as edge NAME (the peer
knows its key: it is in the map), with a map in which the peer owns --peer-routes, which
may hold anything (the metadata service, the internet, a third site). Puts every IP packet
of FILE (hex, one a line) into the core as if read from a TUN, so each leaves sealed for
the peer, handshakes included; answers what the peer sends until every packet left, then
half a second more. Prints JSON {"handshake": bool, "sealed": n, "packets": n}.
Exit 0, or 1 when the handshake or the sends did not complete within --timeout seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

from edge.tunnel import HandshakeCompleted, Identity, Tunnel, wire
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.routemap import EdgeEntry, Network, RouteMap, parse_route
from isthmus_io.keyfiles import read_private_key

LINGER = 0.5


def _routes(text: str) -> tuple[Network, ...]:
    return tuple(parse_route(r) for r in text.split(",") if r)


def run(args: argparse.Namespace) -> dict[str, object]:
    identity = Identity.from_private_key(EdgeName(args.name), read_private_key(Path(args.key)))
    own = EdgeEntry(EdgeName(args.name), identity.public_key, (), _routes(args.own))
    peer = EdgeEntry(
        EdgeName(args.peer),
        PublicKey.from_base64(args.peer_key),
        (Endpoint.parse(args.peer_endpoint),),
        _routes(args.peer_routes),
    )
    tunnel = Tunnel(identity, random=os.urandom, wall_clock=time.time)
    tunnel.apply_map(RouteMap(1, (own, peer)), time.monotonic())
    packets = [bytes.fromhex(line) for line in Path(args.packets).read_text().split() if line]
    host, _, port = args.listen.rpartition(":")
    sealed, handshake = 0, False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, int(port)))
        sock.settimeout(0.05)

        def send(datagram: bytes, addr: tuple[str, int]) -> None:
            nonlocal sealed
            sock.sendto(datagram, addr)
            if datagram[0] == wire.TYPE_DATA and len(datagram) > wire.OVERHEAD:
                sealed += 1

        for packet in packets:
            out = tunnel.inside(packet, time.monotonic())
            if out is not None:
                send(*out)
        deadline = time.monotonic() + args.timeout
        done_at: float | None = None
        while time.monotonic() < deadline:
            for datagram, addr in tunnel.datagrams_to_send():
                send(datagram, addr)
            while (event := tunnel.next_event()) is not None:
                handshake = handshake or isinstance(event, HandshakeCompleted)
            if sealed >= len(packets):
                done_at = done_at or time.monotonic()
                if time.monotonic() - done_at > LINGER:
                    break
            try:
                data, source = sock.recvfrom(65535)
            except TimeoutError:
                tunnel.handle_timer(time.monotonic())
                continue
            tunnel.outside(data, (source[0], source[1]), time.monotonic())
    return {"handshake": handshake, "sealed": sealed, "packets": len(packets)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hostile_peer.py")
    for name in ("--key", "--name", "--own", "--listen", "--peer", "--peer-key"):
        parser.add_argument(name, required=True)
    parser.add_argument("--peer-endpoint", required=True)
    parser.add_argument("--peer-routes", required=True)
    parser.add_argument("--packets", required=True)
    parser.add_argument("--timeout", type=float, default=10.0)
    result = run(parser.parse_args(argv))
    print(json.dumps(result), flush=True)
    return 0 if result["handshake"] and result["sealed"] == result["packets"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

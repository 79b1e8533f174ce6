"""A tiny TCP echo server and client, run inside lab namespaces as `python -m isthmus_lab.probe`.

    server --port P [--bind ADDR]   prints "listening ADDR:P" once bound, then echoes every
                                    connection: reads to EOF, sends the bytes back, closes
    client HOST PORT --payload-hex HEX [--timeout S]
                                    sends the payload, half-closes, prints the reply as hex
    sink --port P                   bulk TCP receiver: per connection reads to EOF and answers
                                    "<bytes> <sha256 hex>"
    send HOST PORT --bytes N [--seed S] [--duration S] [--timeout S]
                                    sends N seeded pseudo-random bytes (paced over --duration
                                    when given), half-closes, prints JSON {bytes, sha256,
                                    seconds, echoed}; exit 1 when the sink saw other bytes
    udp-sink --port P               prints "listening ..." then "<src ip>:<port> <hex>" per datagram
    udp-send HOST PORT --payload-hex HEX [--source ADDR]
                                    sends one datagram (from ADDR when given)

Exit codes: 0 ok, 1 network error (message on stderr), 2 usage. Stdlib only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import socket
import sys
import threading
import time

MAX_MESSAGE = 1 << 20


def _serve_one(conn: socket.socket) -> None:
    with conn:
        conn.settimeout(30.0)
        try:
            data = _read_to_eof(conn)
            conn.sendall(data)
        except OSError as e:
            print(f"probe server: {e}", file=sys.stderr, flush=True)


def _read_to_eof(conn: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_MESSAGE:
        chunk = conn.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def serve(bind: str, port: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((bind, port))
        listener.listen(64)
        print(f"listening {bind}:{port}", flush=True)
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()


def client(host: str, port: int, payload: bytes, timeout: float) -> int:
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            reply = _read_to_eof(conn)
    except OSError as e:
        print(f"probe client: {host}:{port}: {e}", file=sys.stderr)
        return 1
    print(reply.hex())
    return 0


def _sink_one(conn: socket.socket) -> None:
    with conn:
        conn.settimeout(60.0)
        digest = hashlib.sha256()
        size = 0
        try:
            while chunk := conn.recv(65536):
                digest.update(chunk)
                size += len(chunk)
            conn.sendall(f"{size} {digest.hexdigest()}".encode())
        except OSError as e:
            print(f"probe sink: {e}", file=sys.stderr, flush=True)


def sink(port: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", port))
        listener.listen(64)
        print(f"listening 0.0.0.0:{port}", flush=True)
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=_sink_one, args=(conn,), daemon=True).start()


def send(host: str, port: int, size: int, seed: int, duration: float, timeout: float) -> int:
    data = random.Random(seed).randbytes(size)
    chunk = 16384
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            for offset in range(0, size, chunk):
                if duration > 0:
                    # Pace: this chunk is due at its share of the duration.
                    due = start + duration * offset / size
                    time.sleep(max(0.0, due - time.monotonic()))
                conn.sendall(data[offset : offset + chunk])
            conn.shutdown(socket.SHUT_WR)
            echoed = _read_to_eof(conn).decode(errors="replace")
    except OSError as e:
        print(f"probe send: {host}:{port}: {e}", file=sys.stderr)
        return 1
    seconds = time.monotonic() - start
    sha = hashlib.sha256(data).hexdigest()
    report = {"bytes": size, "sha256": sha, "seconds": round(seconds, 3), "echoed": echoed}
    print(json.dumps(report))
    if echoed != f"{size} {sha}":
        print(f"probe send: the sink saw {echoed!r}, sent {size} {sha}", file=sys.stderr)
        return 1
    return 0


def udp_sink(port: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", port))
        print(f"listening 0.0.0.0:{port}", flush=True)
        while True:
            data, (ip, src_port) = sock.recvfrom(65535)
            print(f"{ip}:{src_port} {data.hex()}", flush=True)


def udp_send(host: str, port: int, payload: bytes, source: str | None) -> int:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            if source is not None:
                sock.bind((source, 0))
            sock.sendto(payload, (host, port))
    except OSError as e:
        print(f"probe udp-send: {host}:{port}: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m isthmus_lab.probe")
    commands = parser.add_subparsers(dest="command", required=True)
    server_parser = commands.add_parser("server")
    server_parser.add_argument("--port", type=int, required=True)
    server_parser.add_argument("--bind", default="0.0.0.0")
    client_parser = commands.add_parser("client")
    client_parser.add_argument("host")
    client_parser.add_argument("port", type=int)
    client_parser.add_argument("--payload-hex", required=True)
    client_parser.add_argument("--timeout", type=float, default=5.0)
    sink_parser = commands.add_parser("sink")
    sink_parser.add_argument("--port", type=int, required=True)
    send_parser = commands.add_parser("send")
    send_parser.add_argument("host")
    send_parser.add_argument("port", type=int)
    send_parser.add_argument("--bytes", type=int, required=True)
    send_parser.add_argument("--seed", type=int, default=1)
    send_parser.add_argument("--duration", type=float, default=0.0)
    send_parser.add_argument("--timeout", type=float, default=30.0)
    udp_sink_parser = commands.add_parser("udp-sink")
    udp_sink_parser.add_argument("--port", type=int, required=True)
    udp_send_parser = commands.add_parser("udp-send")
    udp_send_parser.add_argument("host")
    udp_send_parser.add_argument("port", type=int)
    udp_send_parser.add_argument("--payload-hex", required=True)
    udp_send_parser.add_argument("--source")
    args = parser.parse_args(argv)
    try:
        if args.command == "server":
            return serve(args.bind, args.port)
        if args.command == "sink":
            return sink(args.port)
        if args.command == "udp-sink":
            return udp_sink(args.port)
    except KeyboardInterrupt:
        return 0
    if args.command == "send":
        return send(args.host, args.port, args.bytes, args.seed, args.duration, args.timeout)
    if args.command == "udp-send":
        payload = bytes.fromhex(args.payload_hex)
        return udp_send(args.host, args.port, payload, args.source)
    return client(args.host, args.port, bytes.fromhex(args.payload_hex), args.timeout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

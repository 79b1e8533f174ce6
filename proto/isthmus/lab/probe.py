"""A tiny TCP echo server and client, run inside lab namespaces as `python -m isthmus.lab.probe`.

    server --port P [--bind ADDR]   prints "listening ADDR:P" once bound, then echoes every
                                    connection: reads to EOF, sends the bytes back, closes
    client HOST PORT --payload-hex HEX [--timeout S]
                                    sends the payload, half-closes, prints the reply as hex

Exit codes: 0 ok, 1 network error (message on stderr), 2 usage. Stdlib only.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading

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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m isthmus.lab.probe")
    commands = parser.add_subparsers(dest="command", required=True)
    server_parser = commands.add_parser("server")
    server_parser.add_argument("--port", type=int, required=True)
    server_parser.add_argument("--bind", default="0.0.0.0")
    client_parser = commands.add_parser("client")
    client_parser.add_argument("host")
    client_parser.add_argument("port", type=int)
    client_parser.add_argument("--payload-hex", required=True)
    client_parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.command == "server":
        try:
            return serve(args.bind, args.port)
        except KeyboardInterrupt:
            return 0
    return client(args.host, args.port, bytes.fromhex(args.payload_hex), args.timeout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Hostile text reaching the operator's terminal: `isthmus edges` against a real controller
an edge reported a terminal-steering error to, and `isthmus status` / `isthmus explain` /
`isthmus ping` text against an edge admin socket (a stand-in serving a hostile document).

    edge vpc-a --Report(error = ESC/OSC 52/CR LF + a fake line)--> ControllerServer
    python -m isthmus edges --socket ADMIN  --gRPC over unix-->  its Admin service
    python -m isthmus status --socket P  --one JSON line over unix-->  a stand-in edge

What must hold: the text output holds no control character but the colour codes the CLI
itself adds (on a terminal: SGR `ESC [ ... m` only), and the hostile value stays on its row.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.ping import describe
from edge.status import render_explain
from isthmus import clikit
from tests.integration.clirun import isthmus, isthmus_on_a_tty
from tests.integration.test_controller_service import A, Follower, config, run, running

HOSTILE = (
    "map 3 refused\x1b[2J\x1b[H"  # clear the screen, cursor home
    "\x1b]52;c;cm0gLXJmIH4=\x07"  # OSC 52: set the clipboard
    "\r\nvpc-b     connected  9  0s ago  ctl-1  198.18.0.12:51820  -"  # a fake row
    "\u202e\x9b2K"  # a bidi override, C1 CSI erase line
)
SHOWN = clikit.printable(HOSTILE)
SGR = re.compile(r"\x1b\[[0-9;]*m")


def assert_no_control(text: str) -> None:
    """Only newlines end lines; nothing else of clikit.CONTROL is in `text`."""
    bad = sorted({c for c in text if c in clikit.CONTROL and c != "\n"})
    assert not bad, f"control characters in the output: {bad!r}\n{text!r}"


def test_edges_text_shows_a_hostile_report_escaped_on_its_row(tmp_path: Path) -> None:
    async def body() -> None:
        async with running(config(tmp_path)) as (server, client):
            a = client(A)
            await a.register("10.244.0.0/16")
            watcher = Follower(await a.watch())
            await watcher.next()
            await a.report(1, error=HOSTILE, refused=3)

            code, out, err = await isthmus("edges", "--socket", str(server.admin_socket))
            assert code == 2, err  # degraded: vpc-a reports an error
            assert_no_control(out)
            lines = out.splitlines()
            assert len(lines) == 4, out  # the header and rogue, vpc-a, vpc-b: no fake row
            row = next(line for line in lines if line.startswith("vpc-a"))
            assert row.endswith(SHOWN), row
            assert sum(line.startswith("vpc-b") for line in lines) == 1

            # On a terminal the states are coloured: SGR codes are the only escapes.
            code, shown = await isthmus_on_a_tty("edges", "--socket", str(server.admin_socket))
            assert code == 2
            assert SGR.search(shown), "no colour on a terminal"
            assert_no_control(SGR.sub("", shown))
            assert SHOWN in shown

            # --json stays JSON: the value round-trips exactly.
            code, out, _ = await isthmus("edges", "--socket", str(server.admin_socket), "--json")
            assert_no_control(out)
            edges = {e["name"]: e for e in json.loads(out)["edges"]}
            assert edges["vpc-a"]["last_error"] == HOSTILE
            watcher.call.cancel()

    run(body)


def _status(last_error: str) -> dict[str, Any]:
    return {
        "edge": "vpc-a",
        "public_key": "AAAA",
        "endpoint": "198.18.0.11:51820",
        "map_version": 3,
        "controller": {
            "address": "198.18.0.1:7000",
            "connected": False,
            "controllers": ["198.18.0.1:7000", "198.18.0.1:7001\x1b[1A"],
            "applied_version": 2,
            "last_error": last_error,
        },
        "peers": [
            {
                "name": "vpc-b\x1b[8m",
                "endpoint": "198.18.0.12:51820",
                "last_handshake_seconds_ago": 1.0,
                "handshakes": 1,
                "session_age_seconds": 1.0,
                "last_rx_seconds_ago": 1.0,
                "rx_packets": 1,
                "rx_bytes": 1,
                "tx_packets": 1,
                "tx_bytes": 1,
            }
        ],
        "routes": [{"route": "10.245.0.0/16", "edge": "vpc-b\r\nfake", "installed": True}],
        "drops": {"bad\x1b]0;title\x07": 1},
    }


@pytest.fixture
def hostile_edge(tmp_path: Path) -> Iterator[Path]:
    """A unix socket answering every request line with a hostile status document."""
    path = tmp_path / "edge.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(json.dumps(_status(HOSTILE)).encode() + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        server.close()
        thread.join(5)


def test_status_text_shows_hostile_values_escaped(hostile_edge: Path) -> None:
    code, out, err = asyncio.run(isthmus("status", "--socket", str(hostile_edge)))
    assert code == 2, err  # degraded: the controller is disconnected
    assert_no_control(out)
    lines = out.splitlines()
    assert f"  last error: {SHOWN}" in lines
    assert "  10.245.0.0/16  via vpc-b\\x0d\\x0afake  installed" in lines
    assert not any(line.startswith("fake") for line in lines)
    assert "peer: vpc-b\\x1b[8m" in lines

    code, shown = asyncio.run(isthmus_on_a_tty("status", "--socket", str(hostile_edge)))
    assert SGR.search(shown)
    assert_no_control(SGR.sub("", shown))


def test_explain_and_ping_text_show_hostile_values_escaped() -> None:
    doc = {
        "address": "10.245.0.9",
        "edge_self": "vpc-a",
        "verdict": "tunnel",
        "detail": HOSTILE,
        "route": {"match": {"route": "10.245.0.0/16", "edge": "vpc-b\x1b[2J"}, "containing": []},
        "mtu": {"tun": 1420},
        "health": {"controller": {"address": "x\x07", "connected": True}, "map_version": 3},
        "notes": [HOSTILE],
        "problems": [HOSTILE],
    }
    for colour in (False, True):
        text = render_explain(doc, colour)
        assert_no_control(SGR.sub("", text) if colour else text)
        assert SHOWN in text
    assert_no_control(describe({"error": HOSTILE}, colour=False))
    reply = {"edge": "vpc-b\x1b[2J", "endpoint": "1.2.3.4:5\r\nfake", "rtt_ms": 1.5}
    line = describe(reply, colour=False)
    assert_no_control(line)
    assert line == "pong from vpc-b\\x1b[2J (1.2.3.4:5\\x0d\\x0afake) in 1.500 ms"

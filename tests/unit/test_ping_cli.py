"""`isthmus ping`: the edge's "ping TARGET" handler (edge.pinger) over real tunnel cores
joined by test_tunnel's in-memory underlay, and the CLI (edge.ping) against a unix socket
that answers with canned replies.

```
 a 10.1.0.0/16 fd00:a::/48  ---  b 10.2.0.0/16 fd00:b::/48  ---  c 10.3.0.0/16
 d 10.4.0.0/16: in the map, no endpoint
```
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge import ping
from edge.pinger import Pinger
from tests.unit.test_tunnel import MAP, Net

ENDPOINT_TEXT = {"b": "192.0.2.2:51820", "c": "[2001:db8::3]:51820"}


def pinger_for(net: Net, name: str = "a", *, deliver: bool = True) -> Pinger:
    def flush() -> None:
        if deliver:
            net.pump()
        else:
            net.collect()
            net.inflight.clear()
        for event in [e for events in net.events.values() for e in events]:
            pinger.on_event(event)
        for events in net.events.values():
            events.clear()

    pinger = Pinger(
        tunnel=net[name], route_map=lambda: MAP, flush=flush, clock=lambda: net.now, timeout=0.05
    )
    return pinger


def handle(pinger: Pinger, target: str) -> dict[str, Any]:
    return asyncio.run(pinger.handle(target))


@pytest.mark.parametrize(
    ("target", "edge", "route"),
    [
        ("b", "b", None),
        ("10.2.3.4", "b", "10.2.0.0/16"),
        ("fd00:b::1", "b", "fd00:b::/48"),
        ("10.3.0.1", "c", "10.3.0.0/16"),
    ],
)
def test_ping_an_edge_or_an_address(target: str, edge: str, route: str | None) -> None:
    net = Net()
    reply = handle(pinger_for(net), target)
    assert reply == {
        "target": target,
        "edge": edge,
        "route": route,
        "endpoint": ENDPOINT_TEXT[edge],
        "rtt_ms": 0.0,  # the manual clock stands still
        "session": "new",
    }


def test_second_ping_rides_the_existing_session() -> None:
    net = Net()
    pinger = pinger_for(net)
    assert handle(pinger, "b")["session"] == "new"
    assert handle(pinger, "b")["session"] == "existing"


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("10.1.2.3", "10.1.2.3 is local: it is in 10.1.0.0/16, a route of this edge (a)"),
        ("fd00:a::9", "fd00:a::9 is local: it is in fd00:a::/48, a route of this edge (a)"),
        ("192.0.2.77", "no route for 192.0.2.77: no edge's route in the map holds it"),
        ("a", "a is this edge; ping another edge"),
        ("zed", "no edge named 'zed' in the map (version 1); edges: b, c, d;"),
        ("10.4.0.1", "cannot probe d: edge 'd' has no endpoint: none advertised, none learned"),
        ("", "bad target ''"),
        ("x" * 300, "bad target"),
    ],
)
def test_targets_that_cannot_be_pinged_are_refused(target: str, error: str) -> None:
    net = Net()
    reply = handle(pinger_for(net), target)
    assert error in reply["error"]
    assert "lost" not in reply
    assert net["a"].datagrams_to_send() == []


def test_unanswered_probe_is_reported_lost() -> None:
    net = Net()
    reply = handle(pinger_for(net, deliver=False), "10.2.0.1")
    assert reply == {
        "target": "10.2.0.1",
        "edge": "b",
        "route": "10.2.0.0/16",
        "error": "no answer from b within 0.05 s",
        "lost": True,
    }


# -- the CLI -------------------------------------------------------------------------------


@pytest.fixture
def edge_socket(tmp_path: Path) -> Iterator[tuple[Path, list[dict[str, Any]], list[str]]]:
    """A unix socket answering each request with the next canned reply; records requests."""
    path = tmp_path / "admin.sock"
    replies: list[dict[str, Any]] = []
    seen: list[str] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                seen.append(conn.makefile("rb").readline().decode().strip())
                conn.sendall(json.dumps(replies.pop(0)).encode() + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, replies, seen
    server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept
    server.close()
    thread.join(5)
    assert not thread.is_alive()


PONG = {
    "target": "10.2.0.1",
    "edge": "b",
    "route": "10.2.0.0/16",
    "endpoint": "192.0.2.2:51820",
    "rtt_ms": 0.5,
    "session": "existing",
}
LOST = {**PONG, "error": "no answer from b within 2 s", "lost": True}
del LOST["endpoint"], LOST["rtt_ms"], LOST["session"]


def test_cli_every_probe_answered(
    edge_socket: tuple[Path, list[dict[str, Any]], list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, replies, seen = edge_socket
    replies += [{**PONG, "session": "new", "rtt_ms": 1.5}, PONG]
    code = ping.main(["10.2.0.1", "-c", "2", "-i", "0.01", "--socket", str(path)])
    out = capsys.readouterr().out
    assert code == 0
    assert seen == ["ping 10.2.0.1", "ping 10.2.0.1"]
    assert out.splitlines() == [
        "pong from b (192.0.2.2:51820) via route 10.2.0.0/16 in 1.500 ms (new session)",
        "pong from b (192.0.2.2:51820) via route 10.2.0.0/16 in 0.500 ms",
        "--- 10.2.0.1 ping statistics ---",
        "2 probes sent, 2 answered, 0% lost, rtt min/avg/max = 0.500/1.000/1.500 ms",
    ]


def test_cli_json_some_lost_is_degraded(
    edge_socket: tuple[Path, list[dict[str, Any]], list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, replies, _ = edge_socket
    replies += [PONG, LOST]
    code = ping.main(["10.2.0.1", "-c", "2", "-i", "0.01", "--json", "--socket", str(path)])
    doc = json.loads(capsys.readouterr().out)
    assert code == 2
    assert doc == {
        "target": "10.2.0.1",
        "replies": [PONG, LOST],
        "summary": {
            "sent": 2,
            "answered": 1,
            "lost": 1,
            "rtt_ms": {"min": 0.5, "avg": 0.5, "max": 0.5},
        },
    }


def test_cli_none_answered_is_an_error(
    edge_socket: tuple[Path, list[dict[str, Any]], list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, replies, _ = edge_socket
    replies += [LOST]
    assert ping.main(["b", "-c", "1", "--socket", str(path)]) == 1
    out = capsys.readouterr().out
    assert "no answer from b within 2 s" in out and "1 probes sent, 0 answered, 100% lost" in out


def test_cli_refused_target_stops_at_once(
    edge_socket: tuple[Path, list[dict[str, Any]], list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, replies, seen = edge_socket
    replies += [{"target": "192.0.2.77", "error": "no route for 192.0.2.77: no edge's route"}]
    assert ping.main(["192.0.2.77", "-c", "3", "--json", "--socket", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "isthmus ping: no route for 192.0.2.77: no edge's route\n"
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["b", "-c", "0"], "-c/--count: 0; allowed: 1 to 10000"),
        (["b", "-i", "0"], "-i/--interval: 0; allowed: 0.01 to 3600 seconds"),
        (["b c"], "TARGET 'b c'"),
        ([], "the following arguments are required: TARGET"),
    ],
)
def test_cli_usage_errors_exit_1(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ping.main([*argv, "--socket", "/nonexistent"]) == 1
    assert message in capsys.readouterr().err


def test_cli_edge_not_running(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert ping.main(["b", "--socket", str(tmp_path / "none.sock")]) == 1
    assert "the edge is not running" in capsys.readouterr().err

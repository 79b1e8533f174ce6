"""Metrics, logs and audit of a real controller: /metrics scraped over HTTP, JSON log lines
and the audit log read with `isthmus routes --history`.

    edge clients --gRPC 127.0.0.1:0--> controller --HTTP 127.0.0.1:0--> GET /metrics
    python -m isthmus routes --history --json --socket P --unix socket--> Admin.ListHistory

The in-process test uses ControllerServer; the process test runs `python -m controller`
with `log_format = "json"` and checks every stderr line, SIGHUP and SIGTERM included.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.__main__ import ControllerServer
from controller.admission import Policy
from controller.config import AllowedEdge, ControllerConfig, StoreConfig
from isthmus.endpoint import Endpoint
from isthmus.signing import ControllerKey
from isthmus_io.keyfiles import write_controller_key
from tests.integration.edgeclient import EdgeClient, controller_channel, edge_keys

REPO = Path(__file__).resolve().parents[2]
ANY_PORT = Endpoint.parse("127.0.0.1:0", allow_port_zero=True)


A = edge_keys("vpc-a", 1)
B = edge_keys("vpc-b", 2)
ROGUE = edge_keys("rogue", 3)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(address: str) -> Samples:
    """GET http://address/metrics (blocking; run it in a thread from the loop)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain; version=")
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def config(tmp: Path, *edges: AllowedEdge) -> ControllerConfig:
    key_file = tmp / "controller.key"
    if not key_file.exists():
        write_controller_key(key_file, ControllerKey.generate())
    return ControllerConfig(
        listen=ANY_PORT,
        state_dir=tmp / "state",
        edges=edges,
        signing_key_file=key_file,
        admin_socket=tmp / "admin.sock",
        store=StoreConfig(),
        admission=Policy(),
        metrics=ANY_PORT,
    )


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=60))


C = "isthmus_controller_"


def test_metrics_after_register_and_watch(tmp_path: Path) -> None:
    async def body() -> None:
        server = ControllerServer(
            config(tmp_path, A.allowed("10.244.0.0/16"), B.allowed("10.245.0.0/16"))
        )
        await server.start()
        try:
            address = server.metrics_address
            assert address is not None and not address.endswith(":0")
            before = await asyncio.to_thread(scrape, address)
            assert before[(C + "map_version", ())] == 0
            assert before[(C + "store_up", ())] == 1
            assert before[(C + "edges", (("state", "never"),))] == 2

            async with controller_channel(server.address, server.public_key) as channel:
                a = EdgeClient(channel, server.public_key, A)
                assert (await a.register("10.244.0.0/16", "10.9.0.0/16")).version == 1
                after = await asyncio.to_thread(scrape, address)
                assert after[(C + "map_version", ())] == 1
                assert after[(C + "routes", (("state", "serving"),))] == 1
                assert after[(C + "routes", (("state", "refused"),))] == 1
                assert after[(C + "map_changes_total", (("kind", "edge_joined"),))] == 1
                assert after[(C + "map_changes_total", (("kind", "route_refused"),))] == 1
                assert after[(C + "edges", (("state", "never"),))] == 2
                assert after[(C + "watch_streams", ())] == 0

                call = await a.watch()
                assert (await asyncio.wait_for(call.read(), 10)).version == 1
                watching = await asyncio.to_thread(scrape, address)
                assert watching[(C + "watch_streams", ())] == 1
                assert watching[(C + "edges", (("state", "connected"),))] == 1
                assert watching[(C + "edges", (("state", "never"),))] == 1

                stranger = EdgeClient(channel, server.public_key, ROGUE)
                with pytest.raises(grpc.aio.AioRpcError):
                    await stranger.register("10.1.0.0/16")
                refused = await asyncio.to_thread(scrape, address)
                assert refused[(C + "calls_refused_total", (("code", "UNAUTHENTICATED"),))] == 1
                call.cancel()

            with pytest.raises(urllib.error.HTTPError) as e:
                await asyncio.to_thread(urllib.request.urlopen, f"http://{address}/other", None, 10)
            assert e.value.code == 404
            entries = await server.service.history(10)
            assert [(x.actor, x.kind) for x in entries] == [
                ("vpc-a", "edge_joined"),
                ("vpc-a", "route_refused"),  # 10.9.0.0/16 sorts before 10.244.0.0/16
                ("vpc-a", "route_serving"),
            ]
        finally:
            await server.stop(grace=1)
        assert (tmp_path / "state" / "audit.log").exists()

    run(body)


def test_metrics_off_serves_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        server = ControllerServer(replace(config(tmp_path), metrics=None))
        await server.start()
        try:
            assert server.metrics_address is None
        finally:
            await server.stop(grace=1)

    run(body)


def test_a_taken_metrics_address_is_logged_and_the_controller_serves(tmp_path: Path) -> None:
    async def body() -> None:
        first = ControllerServer(config(tmp_path / "one"))
        await first.start()
        try:
            taken = first.metrics_address
            assert taken is not None
            second = ControllerServer(
                replace(config(tmp_path / "two"), metrics=Endpoint.parse(taken))
            )
            await second.start()
            try:
                assert second.metrics_address is None
                assert second.port != 0
            finally:
                await second.stop(grace=1)
        finally:
            await first.stop(grace=1)

    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    run(body)


# --- the process: JSON logs, metrics, audit through the CLI -------------------------------


def write_config(path: Path, tmp: Path, *edges: AllowedEdge) -> None:
    lines = [
        'listen = "127.0.0.1:0"',
        f'state_dir = "{tmp / "state"}"',
        f'signing_key_file = "{tmp / "controller.key"}"',
        f'admin_socket = "{tmp / "admin.sock"}"',
        'metrics = "127.0.0.1:0"',
        'log_format = "json"',
    ]
    for e in edges:
        routes = ", ".join(f'"{r}"' for r in e.routes)
        lines += ["[[edges]]", f'name = "{e.name}"', f'public_key = "{e.public_key}"']
        lines.append(f"routes = [{routes}]")
    path.write_text("\n".join(lines) + "\n")


class Lines:
    """The controller's stderr, one JSON object per line; every line is kept."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.raw: list[str] = []

    def until(self, event: str, timeout: float = 20) -> dict[str, Any]:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.raw.append(line)
            doc = json.loads(line)
            if doc["event"] == event:
                return doc  # type: ignore[no-any-return]
        raise AssertionError(f"no event {event!r} from the controller; got {self.raw}")


def isthmus(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "proto")]))
    return subprocess.run(
        [sys.executable, "-m", "isthmus", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_process_json_logs_metrics_and_history(tmp_path: Path) -> None:
    cfg = tmp_path / "controller.toml"
    key = ControllerKey.generate()
    write_controller_key(tmp_path / "controller.key", key)
    write_config(cfg, tmp_path, A.allowed("10.244.0.0/16"), ROGUE.allowed("10.244.1.0/24"))
    sock = str(tmp_path / "admin.sock")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "proto")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller", "--config", str(cfg)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    lines = Lines(proc)
    try:
        listening = lines.until("listening")
        assert list(listening)[:4] == ["ts", "level", "logger", "event"]
        assert (listening["level"], listening["logger"]) == ("info", "controller")
        address, metrics = listening["address"], listening["metrics"]
        assert metrics.startswith("127.0.0.1:") and not metrics.endswith(":0")

        async def register() -> None:
            async with controller_channel(address, key.public) as channel:
                assert (
                    await EdgeClient(channel, key.public, A).register("10.244.0.0/16")
                ).version == 1
                rogue = await EdgeClient(channel, key.public, ROGUE).register("10.244.1.0/24")
                assert [r.reason_code for r in rogue.routes] == ["more_specific"]

        asyncio.run(register())
        registered = lines.until("registered")
        assert registered["edge"] == "vpc-a" and registered["serving"] == ["10.244.0.0/16"]

        approved = isthmus("routes", "approve", "10.244.1.0/24", "--socket", sock)
        assert approved.returncode == 0, approved.stderr
        lines.until("approve_done")

        write_config(cfg, tmp_path, A.allowed("10.244.0.0/16"))
        proc.send_signal(signal.SIGHUP)
        lines.until("reloaded")

        history = isthmus("routes", "--history", "--json", "--socket", sock)
        assert history.returncode == 0, history.stderr
        doc = json.loads(history.stdout)
        assert doc["version"] == 4
        entries = doc["entries"]
        assert [(e["version"], e["actor"], e["kind"], e["edge"], e["route"]) for e in entries] == [
            (1, "vpc-a", "edge_joined", "vpc-a", None),
            (1, "vpc-a", "route_serving", "vpc-a", "10.244.0.0/16"),
            (2, "rogue", "edge_joined", "rogue", None),
            (2, "rogue", "route_pending", "rogue", "10.244.1.0/24"),
            (3, "operator", "route_approved", "rogue", "10.244.1.0/24"),
            (4, "config", "edge_removed", "rogue", None),
        ]
        assert all(e["reason"] and e["time"] > 1_700_000_000 for e in entries)
        assert "no longer configured" in entries[-1]["reason"]
        assert "10.244.0.0/16" in entries[3]["reason"]  # names the route it overlaps

        last = isthmus("routes", "--history", "--limit", "2", "--socket", sock)
        assert last.returncode == 0, last.stderr
        rows = last.stdout.splitlines()
        assert rows[0].split() == ["TIME", "VERSION", "ACTOR", "KIND", "EDGE", "ROUTE", "REASON"]
        assert [r.split()[1:5] for r in rows[1:]] == [
            ["3", "operator", "route_approved", "rogue"],
            ["4", "config", "edge_removed", "rogue"],
        ]
        # usage errors exit 1 (isthmus.clikit)
        assert isthmus("routes", "--limit", "2", "--socket", sock).returncode == 1
        assert isthmus("routes", "--history", "--limit", "0", "--socket", sock).returncode == 1

        samples = scrape(metrics)
        assert samples[(C + "map_version", ())] == 4
        assert samples[(C + "store_up", ())] == 1
        assert samples[(C + "map_changes_total", (("kind", "route_approved"),))] == 1
        assert samples[(C + "edges", (("state", "never"),))] == 1  # vpc-a, never watched

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert proc.stderr is not None
        lines.raw += proc.stderr.readlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    docs = [json.loads(line) for line in lines.raw]
    assert docs[-1]["event"] == "stopped"
    for d in docs:
        assert list(d)[:4] == ["ts", "level", "logger", "event"], d
    text = "".join(lines.raw)
    for secret in (key.seed.hex(), base64.b64encode(key.seed).decode()):
        assert secret not in text
    stored = (tmp_path / "state" / "audit.log").read_text().splitlines()
    assert len(stored) == 6

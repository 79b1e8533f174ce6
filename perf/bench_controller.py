"""Benchmark the controller at scale: N simulated edges watching one controller process.

Measures, for N edges (default 1,000) registered and watching one real controller
(`python -m isthmus controller --config F`, a subprocess on 127.0.0.1, file store):

- setup: the time for every edge to Challenge + Register, then to open its Watch and
  hold the map that includes every registration;
- fan-out: K times (default 5) one edge re-registers with a route added or taken away
  (a new map version); for every edge, the time from the moment that Register call is
  sent to the edge's receipt of a MapUpdate at that version or newer. The Register reply
  carries the version, but the controller publishes before it replies, so watchers may
  hold the version before the reply arrives: timing from the send keeps every figure
  positive and includes the decision and the store write. p50, p99 and max per change
  and pooled over all changes; the target on the development machine is p99 < 2 s.
  The table's "first" column is the earliest edge: about the controller's decision and
  store write; the rest of the spread is the fan-out;
- the controller's memory from /proc/PID/status: VmRSS when started, after setup and at
  the end, and VmHWM (the peak).

Setup's watch time is mostly this process decoding N whole maps of N edges (one per
edge), not the controller, which encodes the map once.

The simulated edges live in this process (grpc.aio, one channel per EDGES_PER_CHANNEL
edges; gRPC multiplexes the streams), away from the controller's process. Each call but
Challenge is authenticated as docs/controller.md says (`isthmus.auth.auth_value`), and
every MapUpdate is decoded with `isthmus.convert.update_from_pb`, as an edge would. Both
ends of every interval are `time.monotonic()` in this process. With `--report` every
edge also calls Report (after a fresh Challenge) after each map, as real edges do; the
reports of one change may still be in flight when the next one starts.

Baseline, measured in the same run: the same client code watching a trivial grpc.aio
server (its own process, like the controller) that holds N streams and, on a unary Push,
sends every stream one prebuilt one-edge delta. The fan-out figures are also given as
ratios to the baseline's (a noisy machine moves both), so the ratio is the cost the
controller adds over bare gRPC fan-out to the same client.

Run: .venv/bin/python -m perf.bench_controller [--edges N] [--changes K] [--report] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import ipaddress
import json
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
from nacl.bindings import crypto_box_seed_keypair

from isthmus.auth import AUTH_METADATA, auth_value
from isthmus.convert import update_from_pb
from isthmus.keys import PublicKey
from isthmus.signing import ControllerKey, ControllerPublicKey
from isthmus.v1 import isthmus_pb2 as pb
from isthmus.v1.isthmus_pb2_grpc import ControllerStub
from isthmus_io.keyfiles import write_controller_key

DEFAULT_EDGES: Final = 1_000
DEFAULT_CHANGES: Final = 5
MAX_EDGES: Final = 10_000  # isthmus.convert.MAX_EDGES: a bigger map is refused on the wire
EDGES_PER_CHANNEL: Final = 50
SETUP_CONCURRENCY: Final = 64  # calls in flight at once while edges register and watch
TARGET_P99: Final = 2.0  # seconds, on the development machine (2 cores)
START_TIMEOUT: Final = 30.0
CALL_TIMEOUT: Final = 30.0
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
CHANNEL_OPTIONS: Final = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Keep one TCP connection per channel object: without this, channels with equal
    # arguments share a subchannel, and so one connection.
    ("grpc.use_local_subchannel_pool", 1),
)

REPO: Final = Path(__file__).resolve().parents[1]
REGISTER: Final = "/isthmus.v1.Controller/Register"
WATCH: Final = "/isthmus.v1.Controller/Watch"
REPORT: Final = "/isthmus.v1.Controller/Report"
FANOUT_SERVICE: Final = "bench.Fanout"
FANOUT_WATCH: Final = f"/{FANOUT_SERVICE}/Watch"
FANOUT_PUSH: Final = f"/{FANOUT_SERVICE}/Push"


# --- simulated edges ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimEdge:
    """One simulated edge: its key pair, endpoint and its /24 (advertised as /25s)."""

    name: str
    private: bytes
    public: PublicKey
    endpoint: str
    block: ipaddress.IPv4Network

    def routes(self, extra: bool) -> list[str]:
        """The low /25 of its /24, plus the high /25 when `extra`."""
        low, high = self.block.subnets(new_prefix=25)
        return [str(low), str(high)] if extra else [str(low)]


def make_edges(n: int) -> tuple[SimEdge, ...]:
    """`n` edges with deterministic keys, endpoints in 198.18.0.0/15, routes 10.X.Y.0/24."""
    edges = []
    for i in range(n):
        seed = hashlib.blake2b(i.to_bytes(4, "big"), digest_size=32, person=b"bench-edge").digest()
        public, private = crypto_box_seed_keypair(seed)
        edges.append(
            SimEdge(
                name=f"edge-{i:05d}",
                private=bytes(private),
                public=PublicKey(bytes(public)),
                endpoint=f"{ipaddress.IPv4Address('198.18.0.1') + i}:51820",
                block=ipaddress.IPv4Network((0x0A000000 + (i << 8), 24)),
            )
        )
    return tuple(edges)


def controller_config(edges: tuple[SimEdge, ...], workdir: Path, port: int) -> str:
    """The controller's TOML: each edge allowed its /24."""
    lines = [
        f'listen = "127.0.0.1:{port}"',
        f"state_dir = {json.dumps(str(workdir / 'state'))}",
        f"signing_key_file = {json.dumps(str(workdir / 'controller.key'))}",
        f"admin_socket = {json.dumps(str(workdir / 'admin.sock'))}",
    ]
    for e in edges:
        lines += [
            "",
            "[[edges]]",
            f'name = "{e.name}"',
            f'public_key = "{e.public.to_base64()}"',
            f'routes = ["{e.block}"]',
        ]
    return "\n".join(lines) + "\n"


# --- the client side: N watches and their arrival times ----------------------------------


Opener = Callable[[int], Awaitable[AsyncIterator[pb.MapUpdate]]]


@dataclass(slots=True)
class Watchers:
    """N watch streams; records when each edge first holds each version."""

    n: int
    report: Callable[[int, int], Awaitable[None]] | None = None
    versions: list[int] = field(init=False)
    arrivals: list[list[tuple[int, float]]] = field(init=False)
    failure: BaseException | None = None
    _target: int = 0
    _reached: set[int] = field(default_factory=set)
    _done: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.versions = [-1] * self.n
        self.arrivals = [[] for _ in range(self.n)]

    async def open_all(self, opener: Opener) -> None:
        """Open every stream, SETUP_CONCURRENCY at a time, each then read in a task."""
        gate = asyncio.Semaphore(SETUP_CONCURRENCY)

        async def one(i: int) -> None:
            async with gate:
                stream = await opener(i)
            self._tasks.append(asyncio.create_task(self._read(i, stream)))

        await asyncio.gather(*(one(i) for i in range(self.n)))

    async def _read(self, i: int, stream: AsyncIterator[pb.MapUpdate]) -> None:
        try:
            async for msg in stream:
                now = time.monotonic()
                # Decode every update, as an edge does, but hold nothing: N edges in one
                # process holding N maps would make the next update free the old map,
                # which a real edge pays in its own process, not in the fan-out.
                version = update_from_pb(msg).version
                del msg
                self.arrivals[i].append((version, now))
                self.versions[i] = version
                if self._target and version >= self._target and i not in self._reached:
                    self._reached.add(i)
                    if len(self._reached) == self.n:
                        self._done.set()
                if self.report is not None:
                    await self.report(i, version)
            raise RuntimeError(f"watch stream {i} ended")
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            self.failure = e
            self._done.set()

    async def wait_all(self, version: int, timeout: float) -> None:
        """Return when every edge holds `version` or newer."""
        self._target = version
        self._reached = {i for i, v in enumerate(self.versions) if v >= version}
        self._done = asyncio.Event()
        if len(self._reached) < self.n and self.failure is None:
            try:
                await asyncio.wait_for(self._done.wait(), timeout)
            except TimeoutError:
                raise RuntimeError(
                    f"{self.n - len(self._reached)} of {self.n} edges did not get version "
                    f"{version} within {timeout:g} s"
                ) from None
        self._target = 0
        if self.failure is not None:
            raise RuntimeError(f"a watch failed: {self.failure!r}") from self.failure

    def latencies(self, version: int, since: float) -> list[float]:
        """Per edge: first arrival at `version` or newer, minus `since`."""
        return [next(t for v, t in a if v >= version) - since for a in self.arrivals]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


def channels(target: str, n: int) -> list[grpc.aio.Channel]:
    count = max(1, math.ceil(n / EDGES_PER_CHANNEL))
    return [grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(count)]


def percentiles(values: list[float]) -> dict[str, float]:
    """First (min), p50, p99 (nearest rank) and max, in seconds."""
    s = sorted(values)

    def rank(p: float) -> float:
        return s[max(0, math.ceil(p / 100 * len(s)) - 1)]

    return {"min_s": s[0], "p50_s": rank(50), "p99_s": rank(99), "max_s": s[-1]}


# --- the controller process --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of `pid` in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def _env() -> dict[str, str]:
    paths = [str(REPO), str(REPO / "proto"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


@contextlib.contextmanager
def child(args: list[str], log: Path, **kw: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A child process (stderr to `log`), stopped with SIGTERM, then SIGKILL, on exit."""
    with log.open("wb") as err:
        proc = subprocess.Popen(args, stderr=err, env=_env(), **kw)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


async def wait_ready(
    proc: subprocess.Popen[bytes], call: Callable[[], Awaitable[object]], log: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode}:\n{tail}")
        try:
            await asyncio.wait_for(call(), 1.0)
            return
        except (grpc.aio.AioRpcError, TimeoutError):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"process {proc.pid} not serving in {START_TIMEOUT:g} s"
                ) from None
            await asyncio.sleep(0.1)


@dataclass(slots=True)
class Fleet:
    """The simulated edges' calls to one controller."""

    edges: tuple[SimEdge, ...]
    controller: ControllerPublicKey
    chans: list[grpc.aio.Channel]
    stubs: list[ControllerStub] = field(init=False)
    extra: list[bool] = field(init=False)

    def __post_init__(self) -> None:
        self.stubs = [ControllerStub(c) for c in self.chans]  # type: ignore[no-untyped-call]
        self.extra = [False] * len(self.edges)

    def stub(self, i: int) -> ControllerStub:
        return self.stubs[i // EDGES_PER_CHANNEL]

    async def auth(self, i: int, method: str, request: Any) -> tuple[tuple[str, bytes], ...]:
        challenge = await self.stub(i).Challenge(pb.ChallengeRequest(), timeout=CALL_TIMEOUT)
        e = self.edges[i]
        value = auth_value(
            e.private,
            e.public,
            self.controller,
            method,
            challenge.challenge,
            request.SerializeToString(deterministic=True),
        )
        return ((AUTH_METADATA, value),)

    async def register(self, i: int) -> tuple[int, float, float]:
        """(version, sent at, replied at) of edge `i` registering its current routes."""
        e = self.edges[i]
        request = pb.RegisterRequest(
            name=e.name,
            public_key=e.public.raw,
            endpoints=[e.endpoint],
            routes=e.routes(self.extra[i]),
        )
        metadata = await self.auth(i, REGISTER, request)
        sent = time.monotonic()
        reply = await self.stub(i).Register(request, metadata=metadata, timeout=CALL_TIMEOUT)
        replied = time.monotonic()
        bad = [r.route for r in reply.routes if r.state != pb.ROUTE_STATE_SERVING]
        if bad:
            raise RuntimeError(f"edge {e.name}: routes not serving: {bad}")
        return int(reply.version), sent, replied

    async def watch(self, i: int) -> AsyncIterator[pb.MapUpdate]:
        request = pb.WatchRequest(name=self.edges[i].name, known_version=0)
        call = self.stub(i).Watch(request, metadata=await self.auth(i, WATCH, request))
        it: AsyncIterator[pb.MapUpdate] = call.__aiter__()
        return it

    async def report(self, i: int, version: int) -> None:
        request = pb.ReportRequest(name=self.edges[i].name, applied_version=version)
        metadata = await self.auth(i, REPORT, request)
        await self.stub(i).Report(request, metadata=metadata, timeout=CALL_TIMEOUT)


async def bench_controller(
    edges: tuple[SimEdge, ...], changes: int, workdir: Path, report: bool
) -> dict[str, Any]:
    key = ControllerKey.generate()
    write_controller_key(workdir / "controller.key", key)
    port = free_port()
    config = workdir / "controller.toml"
    config.write_text(controller_config(edges, workdir, port))
    args = [sys.executable, "-m", "isthmus", "controller", "--config", str(config)]
    log = workdir / "controller.log"
    with child(args, log, stdout=subprocess.DEVNULL) as proc:
        chans = channels(f"127.0.0.1:{port}", len(edges))
        fleet = Fleet(edges, key.public, chans)
        watchers = Watchers(len(edges), fleet.report if report else None)
        try:

            async def challenge() -> object:
                return await fleet.stub(0).Challenge(pb.ChallengeRequest())

            await wait_ready(proc, challenge, log)
            mem_start = memory(proc.pid)

            start = time.monotonic()
            gate = asyncio.Semaphore(SETUP_CONCURRENCY)

            async def register(i: int) -> int:
                async with gate:
                    return (await fleet.register(i))[0]

            version = max(await asyncio.gather(*(register(i) for i in range(len(edges)))))
            registered = time.monotonic()
            await watchers.open_all(fleet.watch)
            await watchers.wait_all(version, timeout=600)
            ready = time.monotonic()
            mem_setup = memory(proc.pid)

            per_change = []
            pooled: list[float] = []
            for k in range(changes):
                i = (k * 7919) % len(edges)  # spread the changing edge over the channels
                fleet.extra[i] = not fleet.extra[i]
                version, sent, replied = await fleet.register(i)
                await watchers.wait_all(version, timeout=120)
                lat = watchers.latencies(version, sent)
                pooled += lat
                per_change.append(
                    {
                        "edge": edges[i].name,
                        "version": version,
                        "register_s": replied - sent,
                        **percentiles(lat),
                    }
                )
            mem_end = memory(proc.pid)
        finally:
            await watchers.close()
            for c in chans:
                await c.close(None)
    return {
        "setup": {
            "register_s": registered - start,
            "watch_s": ready - registered,
            "total_s": ready - start,
        },
        "per_change": per_change,
        "latency": percentiles(pooled),
        "memory_kib": {
            "rss_start": mem_start["VmRSS"],
            "rss_after_setup": mem_setup["VmRSS"],
            "rss_end": mem_end["VmRSS"],
            "hwm": mem_end["VmHWM"],
        },
        "exit_code": proc.returncode,
    }


# --- the baseline: a trivial fan-out server ----------------------------------------------


def sample_delta(version: int) -> bytes:
    """A one-edge delta shaped like the controller's (two routes with 64-byte leases)."""
    edge = make_edges(1)[0]
    routes = [
        pb.Route(cidr=r, lease=pb.Lease(version=version, expires=2**32, signature=bytes(64)))
        for r in edge.routes(True)
    ]
    return pb.MapUpdate(
        version=version,
        full=False,
        base_version=version - 1,
        edges=[
            pb.Edge(
                name=edge.name,
                public_key=edge.public.raw,
                endpoints=[edge.endpoint],
                routes=routes,
            )
        ],
    ).SerializeToString(deterministic=True)


async def _serve_baseline() -> None:
    version = 1
    data = pb.MapUpdate(version=1, base_version=1).SerializeToString()
    changed = asyncio.Condition()

    async def watch(request: bytes, context: Any) -> AsyncIterator[bytes]:
        sent = 0
        while True:
            async with changed:
                while version <= sent:
                    await changed.wait()
                sent = version
                message = data
            yield message

    async def push(request: bytes, context: Any) -> bytes:
        nonlocal version, data
        async with changed:
            version += 1
            data = sample_delta(version)
            changed.notify_all()
        return version.to_bytes(8, "big")

    server = grpc.aio.server(options=list(CHANNEL_OPTIONS[:2]))
    handlers = {
        "Watch": grpc.unary_stream_rpc_method_handler(watch),
        "Push": grpc.unary_unary_rpc_method_handler(push),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(FANOUT_SERVICE, handlers),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)


def serve_baseline() -> None:
    """Entry point of the baseline server process: prints its port, serves until SIGTERM."""
    asyncio.run(_serve_baseline())


async def bench_baseline(n: int, changes: int, workdir: Path) -> dict[str, Any]:
    code = "from perf.bench_controller import serve_baseline; serve_baseline()"
    log = workdir / "baseline.log"
    with child([sys.executable, "-c", code], log, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), START_TIMEOUT)
        if not line.strip():
            raise RuntimeError(f"baseline server gave no port:\n{log.read_text()[-2000:]}")
        chans = channels(f"127.0.0.1:{int(line)}", n)
        decode = pb.MapUpdate.FromString
        watch = [c.unary_stream(FANOUT_WATCH, None, decode) for c in chans]
        push = chans[0].unary_unary(FANOUT_PUSH, None, None)
        watchers = Watchers(n)

        async def opener(i: int) -> AsyncIterator[pb.MapUpdate]:
            call = watch[i // EDGES_PER_CHANNEL](b"")
            it: AsyncIterator[pb.MapUpdate] = call.__aiter__()
            return it

        try:
            await watchers.open_all(opener)
            await watchers.wait_all(1, timeout=120)
            pushes = []
            pooled: list[float] = []
            for _ in range(changes):
                sent = time.monotonic()
                version = int.from_bytes(await push(b"", timeout=CALL_TIMEOUT), "big")
                await watchers.wait_all(version, timeout=120)
                lat = watchers.latencies(version, sent)
                pooled += lat
                pushes.append({"version": version, **percentiles(lat)})
        finally:
            await watchers.close()
            for c in chans:
                await c.close(None)
    return {"per_push": pushes, "latency": percentiles(pooled)}


# --- the run -----------------------------------------------------------------------------


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(
    edges: int = DEFAULT_EDGES, changes: int = DEFAULT_CHANGES, report: bool = False
) -> dict[str, Any]:
    """Measure the baseline, then the controller; every figure in seconds or KiB."""
    if not 1 <= edges <= MAX_EDGES:
        raise ValueError(f"edges: {edges}; allowed: 1-{MAX_EDGES}")
    if changes < 1:
        raise ValueError(f"changes: {changes}; allowed: 1 or more")
    raise_nofile()
    sim = make_edges(edges)
    workdir = Path(tempfile.mkdtemp(prefix="isthmus-bench-"))
    try:
        baseline = asyncio.run(bench_baseline(edges, changes, workdir))
        controller = asyncio.run(bench_controller(sim, changes, workdir, report))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    lat, base = controller["latency"], baseline["latency"]
    return {
        "edges": edges,
        "changes": changes,
        "report": report,
        "edges_per_channel": EDGES_PER_CHANNEL,
        "target_p99_s": TARGET_P99,
        "meets_target": lat["p99_s"] < TARGET_P99,
        **controller,
        "baseline": baseline,
        "ratio": {k.removesuffix("_s"): lat[k] / base[k] for k in lat},
    }


FIGURES: Final = ("min_s", "p50_s", "p99_s", "max_s")


def _row(label: str, edge: str, version: str, register: str, figures: list[str]) -> str:
    return f"{label:>8} {edge:>12} {version:>8} {register:>9} " + " ".join(
        f"{f:>8}" for f in figures
    )


def text(r: dict[str, Any]) -> str:
    """The human-readable table of a `run` result (times in ms)."""
    s, m = r["setup"], r["memory_kib"]

    def ms(x: float) -> str:
        return f"{x * 1000:.1f}"

    out = [
        f"controller with {r['edges']} edges ({r['edges_per_channel']} per channel), "
        f"{r['changes']} changes{', edges report' if r['report'] else ''}",
        f"setup: register {s['register_s']:.2f} s, watch {s['watch_s']:.2f} s, "
        f"total {s['total_s']:.2f} s",
        f"memory: VmRSS {m['rss_start'] / 1024:.1f} MiB at start, "
        f"{m['rss_after_setup'] / 1024:.1f} after setup, {m['rss_end'] / 1024:.1f} at end; "
        f"VmHWM {m['hwm'] / 1024:.1f} MiB",
        "",
        "ms from sending Register (baseline: Push) to each edge holding that version:",
        _row("change", "edge", "version", "register", ["first", "p50", "p99", "max"]),
    ]
    for k, c in enumerate(r["per_change"]):
        figures = [ms(c[f]) for f in FIGURES]
        out.append(_row(str(k + 1), c["edge"], str(c["version"]), ms(c["register_s"]), figures))
    lat, base, ratio = r["latency"], r["baseline"]["latency"], r["ratio"]
    out += [
        _row("pooled", "", "", "", [ms(lat[f]) for f in FIGURES]),
        _row("baseline", "bare fan-out", "", "", [ms(base[f]) for f in FIGURES]),
        _row("ratio", "", "", "", [f"{ratio[f.removesuffix('_s')]:.2f}" for f in FIGURES]),
        "",
        f"target p99 < {r['target_p99_s']:g} s: {'met' if r['meets_target'] else 'NOT met'}",
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=DEFAULT_EDGES, help="simulated edges")
    parser.add_argument("--changes", type=int, default=DEFAULT_CHANGES, help="route changes")
    parser.add_argument("--report", action="store_true", help="edges Report after each map")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = run(args.edges, args.changes, args.report)
    print(json.dumps(results, indent=2) if args.json else text(results))


if __name__ == "__main__":
    main()

"""The simulated edges of perf.bench_controller: their keys and routes, their calls to the
controller, and the watch streams that time each map version's arrival.

The edges live in the benchmark's process (grpc.aio, one channel per EDGES_PER_CHANNEL
edges; gRPC multiplexes the streams). Each call but Challenge is authenticated as
docs/controller.md says (`isthmus.auth.auth_value`), and every MapUpdate is decoded with
`isthmus.convert.update_from_pb`, as an edge would. Arrival times are `time.monotonic()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
from nacl.bindings import crypto_box_seed_keypair

from isthmus.auth import AUTH_METADATA, auth_value
from isthmus.convert import update_from_pb
from isthmus.keys import PublicKey
from isthmus.signing import ControllerPublicKey
from isthmus.tlscert import channel_credentials, channel_options
from isthmus.v1 import isthmus_pb2 as pb
from isthmus.v1.isthmus_pb2_grpc import ControllerStub

EDGES_PER_CHANNEL: Final = 50
SETUP_CONCURRENCY: Final = 64  # calls in flight at once while edges register and watch
CALL_TIMEOUT: Final = 30.0
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
CHANNEL_OPTIONS: Final = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Keep one TCP connection per channel object: without this, channels with equal
    # arguments share a subchannel, and so one connection.
    ("grpc.use_local_subchannel_pool", 1),
)
REGISTER: Final = "/isthmus.v1.Controller/Register"
WATCH: Final = "/isthmus.v1.Controller/Watch"
REPORT: Final = "/isthmus.v1.Controller/Report"


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


def channels(
    target: str, n: int, controller: ControllerPublicKey | None = None
) -> list[grpc.aio.Channel]:
    """Channels for `n` edges: TLS pinned to `controller` (the Controller service), or
    plaintext for the baseline fan-out server (no controller key)."""
    count = max(1, math.ceil(n / EDGES_PER_CHANNEL))
    if controller is None:
        return [grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(count)]
    credentials = channel_credentials(controller)
    options = CHANNEL_OPTIONS + channel_options()
    return [grpc.aio.secure_channel(target, credentials, options=options) for _ in range(count)]


def percentiles(values: list[float]) -> dict[str, float]:
    """First (min), p50, p99 (nearest rank) and max, in seconds."""
    s = sorted(values)

    def rank(p: float) -> float:
        return s[max(0, math.ceil(p / 100 * len(s)) - 1)]

    return {"min_s": s[0], "p50_s": rank(50), "p99_s": rank(99), "max_s": s[-1]}


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

"""Benchmark an exposed controller under attack: what a flood costs a legitimate edge.

One real controller process (`python -m isthmus controller --config F`, file store) on
[::]:PORT, so two sources reach it from this process: the attacker dials 127.0.0.1, the
legitimate edges dial ::1 (the controller's limits are per source address).

- baseline (`--seconds`, no attack): a legitimate edge's probe every PROBE_INTERVAL s:
  Challenge + Register, then Challenge + Watch until the first map arrives; the probe
  edges take turns (PROBE_EDGES), so none goes over its own Register limit;
- attack (`--seconds`): the same probes while JUNK_CONNECTIONS connections send 15 MiB
  Register calls with junk `isthmus-auth-bin` back to back, and Challenge calls go out at
  `--challenge-rate` (default 2,000/s) over CHALLENGE_CONNECTIONS connections;
- with `--watchers N`: N simulated edges (perf.bench_controller's fleet) register and
  watch first; every CHANGE_INTERVAL s one of them re-registers with a route added or
  taken away, and the time until every watcher holds that version is measured in both
  phases. The N edges share the source ::1 (as behind one NAT) and the controller keeps
  its default limits, so they join at the per-source Challenge rate: each call refused
  RESOURCE_EXHAUSTED is retried after the time its message gives.

Figures: the controller's VmRSS when idle (after the watchers' setup) and its VmHWM
(peak) after each phase, from
/proc; probe latency p50/p99 (and fan-out p99) per phase with the attack/baseline ratio;
the controller's CPU seconds per phase; what the attacker's calls got (status codes).
Goals, printed next to the figures: peak RSS below idle + 64 MiB; legitimate
Register+Watch p99 < 1 s; a map change reaching 1,000 watching edges p99 < 2 s.

Run: .venv/bin/python -m perf.bench_attack [--seconds S] [--watchers N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import grpc

from isthmus.auth import AUTH_METADATA
from isthmus.signing import ControllerKey, ControllerPublicKey
from isthmus.tlscert import channel_credentials, channel_options
from isthmus.v1 import isthmus_pb2 as pb
from isthmus_io.keyfiles import write_controller_key
from perf.bench_controller import controller_config
from perf.fleet import Fleet, SimEdge, Watchers, channels, make_edges, percentiles
from perf.process import child, free_port, memory, raise_nofile, wait_ready

T = TypeVar("T")

DEFAULT_SECONDS: Final = 30.0
DEFAULT_CHALLENGE_RATE: Final = 2_000
JUNK_CONNECTIONS: Final = 8
JUNK_BYTES: Final = 15 * 1024 * 1024
CHALLENGE_CONNECTIONS: Final = 4
CHALLENGE_IN_FLIGHT: Final = 80  # per connection: under its 100 streams
PROBE_EDGES: Final = 10
PROBE_INTERVAL: Final = 0.5
CHANGE_INTERVAL: Final = 3.0
CALL_TIMEOUT: Final = 10.0
GOAL_RSS_MIB: Final = 64
GOAL_PROBE_P99: Final = 1.0
GOAL_FANOUT_P99: Final = 2.0
REGISTER: Final = "/isthmus.v1.Controller/Register"
WATCH: Final = "/isthmus.v1.Controller/Watch"
ATTACK_OPTIONS: Final = (
    ("grpc.max_send_message_length", 32 * 1024 * 1024),
    ("grpc.use_local_subchannel_pool", 1),
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def config_text(edges: tuple[SimEdge, ...], workdir: Path, port: int) -> str:
    """perf.bench_controller's config on [::]:port, without metrics, with the default
    limits (bench_controller raises the Challenge limit per source; this one must not)."""
    lines = []
    for line in controller_config(edges, workdir, port).splitlines():
        if line == f'listen = "127.0.0.1:{port}"':
            line = f'listen = "[::]:{port}"\nmetrics = ""'
        elif line.startswith(("challenge_rate =", "challenge_burst =")):
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


async def retrying(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, again after the delay a RESOURCE_EXHAUSTED refusal names, until it passes."""
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            found = re.search(r"retry in ([0-9.]+) s", e.details() or "")
            await asyncio.sleep(float(found.group(1)) if found else 0.5)


@dataclass(slots=True)
class Attack:
    """The attacker's calls and what they got."""

    junk: Counter[str] = field(default_factory=Counter)
    challenges: Counter[str] = field(default_factory=Counter)


async def junk_registers(
    channel: grpc.aio.Channel, stop: asyncio.Event, seen: Counter[str]
) -> None:
    """15 MiB Register calls with a junk auth value, back to back, until `stop`."""
    call = channel.unary_unary(REGISTER, request_serializer=None, response_deserializer=None)
    body = os.urandom(JUNK_BYTES)
    while not stop.is_set():
        try:
            await call(body, metadata=((AUTH_METADATA, os.urandom(113)),), timeout=CALL_TIMEOUT)
            seen["OK"] += 1
        except grpc.aio.AioRpcError as e:
            seen[e.code().name] += 1


async def challenge_flood(
    chans: list[grpc.aio.Channel], rate: int, stop: asyncio.Event, seen: Counter[str]
) -> None:
    """Challenge calls at `rate` a second over `chans`, each at most CHALLENGE_IN_FLIGHT
    in flight (a call over the bound is skipped and counted as "skipped")."""
    calls = [c.unary_unary("/isthmus.v1.Controller/Challenge") for c in chans]
    gates = [asyncio.Semaphore(CHALLENGE_IN_FLIGHT) for _ in chans]
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int) -> None:
        try:
            await calls[i](b"", timeout=CALL_TIMEOUT)
            seen["OK"] += 1
        except grpc.aio.AioRpcError as e:
            seen[e.code().name] += 1
        finally:
            gates[i].release()

    tick, sent, start = 0.01, 0, time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - start) * rate)
        while sent < due:
            i = sent % len(calls)
            sent += 1
            if gates[i].locked():
                seen["skipped"] += 1
                continue
            await gates[i].acquire()
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.sleep(tick)
    for task in list(tasks):
        task.cancel()


async def _attack(port: int, controller: ControllerPublicKey, seconds: float, rate: int) -> Attack:
    """The whole attack from this process for `seconds`; what its calls got."""
    attack = Attack()
    target = f"127.0.0.1:{port}"
    # The attacker completes TLS like an edge: the controller's public key is no secret.
    credentials = channel_credentials(controller)
    options = (*ATTACK_OPTIONS, *channel_options())
    junk = [
        grpc.aio.secure_channel(target, credentials, options=options)
        for _ in range(JUNK_CONNECTIONS)
    ]
    flood = [
        grpc.aio.secure_channel(target, credentials, options=options)
        for _ in range(CHALLENGE_CONNECTIONS)
    ]
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    try:
        await asyncio.gather(
            *(junk_registers(c, stop, attack.junk) for c in junk),
            challenge_flood(flood, rate, stop, attack.challenges),
        )
    finally:
        for c in (*junk, *flood):
            await c.close(None)
    return attack


def attacker_main(port: int, controller: str, seconds: float, rate: int) -> None:
    """Entry point of the attacker process: attacks, then prints what its calls got.
    `controller`: the controller's public key, base64."""
    attack = asyncio.run(_attack(port, ControllerPublicKey.from_base64(controller), seconds, rate))
    print(json.dumps({"junk_register": attack.junk, "challenge": attack.challenges}))


async def attacker(
    port: int, controller: ControllerPublicKey, seconds: float, rate: int, workdir: Path
) -> dict[str, Any]:
    """Run the attack in its own process (its client work must not slow the probes)."""
    code = (
        "from perf.bench_attack import attacker_main; "
        f"attacker_main({port}, {str(controller)!r}, {seconds}, {rate})"
    )
    log = workdir / "attacker.log"
    with child([sys.executable, "-c", code], log, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        out = await asyncio.to_thread(proc.stdout.read)
        await asyncio.to_thread(proc.wait)
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"the attacker failed:\n{log.read_text(errors='replace')[-2000:]}")
    got: dict[str, Any] = json.loads(out)
    return got


async def probes(fleet: Fleet, edges: range, seconds: float) -> list[float]:
    """Register + Watch (to the first map) of a legitimate edge every PROBE_INTERVAL s."""
    out: list[float] = []
    end = time.monotonic() + seconds
    turn = 0
    while time.monotonic() < end:
        i = edges[turn % len(edges)]
        turn += 1
        start = time.monotonic()
        await fleet.register(i)
        request = pb.WatchRequest(name=fleet.edges[i].name, known_version=0)
        call = fleet.stub(i).Watch(request, metadata=await fleet.auth(i, WATCH, request))
        try:
            await asyncio.wait_for(call.read(), CALL_TIMEOUT)
        finally:
            call.cancel()  # the edge's next turn opens a new stream
        out.append(time.monotonic() - start)
        await asyncio.sleep(max(0.0, PROBE_INTERVAL - (time.monotonic() - start)))
    return out


async def changes(fleet: Fleet, watchers: Watchers, edges: range, seconds: float) -> list[float]:
    """Every CHANGE_INTERVAL s one watching edge changes its routes; per-edge latencies."""
    pooled: list[float] = []
    end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < end:
        i = edges[(k * 7919) % len(edges)]
        k += 1
        fleet.extra[i] = not fleet.extra[i]
        version, sent, _ = await fleet.register(i)
        await watchers.wait_all(version, timeout=120)
        pooled += watchers.latencies(version, sent)
        await asyncio.sleep(max(0.0, CHANGE_INTERVAL - (time.monotonic() - sent)))
    return pooled


async def phase(
    proc: subprocess.Popen[bytes],
    fleet: Fleet,
    watchers: Watchers | None,
    seconds: float,
    attack: Awaitable[dict[str, Any]] | None,
) -> dict[str, Any]:
    attacking = asyncio.ensure_future(attack) if attack is not None else None
    if attacking is not None:
        await asyncio.sleep(1.0)  # the attacker process starts and gets going
    cpu = cpu_seconds(proc.pid)
    try:
        n = len(fleet.edges)
        probe = probes(fleet, range(PROBE_EDGES), seconds)
        if watchers is not None:
            change = changes(fleet, watchers, range(PROBE_EDGES, n), seconds)
            lat, fan = await asyncio.gather(probe, change)
        else:
            lat, fan = await probe, []
    finally:
        got = await attacking if attacking is not None else None
    result: dict[str, Any] = {
        "probe": percentiles(lat),
        "probes": len(lat),
        "cpu_s": cpu_seconds(proc.pid) - cpu,
        "memory_kib": memory(proc.pid),
    }
    if fan:
        result["fanout"] = percentiles(fan)
    if got is not None:
        result["attacker"] = got
    return result


async def bench(
    seconds: float, watchers: int, challenge_rate: int, workdir: Path
) -> dict[str, Any]:
    key = ControllerKey.generate()
    write_controller_key(workdir / "controller.key", key)
    edges = make_edges(PROBE_EDGES + watchers)
    port = free_port()
    config = workdir / "controller.toml"
    config.write_text(config_text(edges, workdir, port))
    args = [sys.executable, "-m", "isthmus", "controller", "--config", str(config)]
    log = workdir / "controller.log"
    with child(args, log, stdout=subprocess.DEVNULL) as proc:
        legit = channels(f"[::1]:{port}", len(edges), key.public)
        fleet = Fleet(edges, key.public, legit)
        watching = Watchers(watchers) if watchers else None
        try:

            async def ready() -> object:
                return await fleet.stub(0).Challenge(pb.ChallengeRequest())

            await wait_ready(proc, ready, log)
            setup = 0.0
            if watching is not None:
                start = time.monotonic()
                version = 0
                for i in range(PROBE_EDGES, len(edges)):
                    reply = await retrying(functools.partial(fleet.register, i))
                    version = max(version, reply[0])

                async def opener(j: int) -> Any:
                    return await retrying(functools.partial(fleet.watch, PROBE_EDGES + j))

                await watching.open_all(opener)
                await watching.wait_all(version, timeout=600)
                setup = time.monotonic() - start
            idle = memory(proc.pid)

            baseline = await phase(proc, fleet, watching, seconds, None)

            # The attacker starts a second before the probes and ends after them.
            attacking = attacker(port, key.public, seconds + 1.5, challenge_rate, workdir)
            attacked = await phase(proc, fleet, watching, seconds, attacking)
            alive = proc.poll() is None
        finally:
            if watching is not None:
                await watching.close()
            for c in legit:
                await c.close(None)
    peak = attacked["memory_kib"]["VmHWM"]
    result: dict[str, Any] = {
        "seconds": seconds,
        "watchers": watchers,
        "challenge_rate": challenge_rate,
        "setup_s": setup,
        "idle_rss_kib": idle["VmRSS"],
        "baseline": baseline,
        "attack": attacked,
        "attacker": attacked.pop("attacker"),
        "controller_alive": alive,
        "goals": {
            "peak_rss_growth_kib": peak - idle["VmRSS"],
            "peak_rss_ok": peak - idle["VmRSS"] < GOAL_RSS_MIB * 1024,
            "probe_p99_ok": attacked["probe"]["p99_s"] < GOAL_PROBE_P99,
        },
        "ratio": {
            "probe_p50": attacked["probe"]["p50_s"] / baseline["probe"]["p50_s"],
            "probe_p99": attacked["probe"]["p99_s"] / baseline["probe"]["p99_s"],
        },
    }
    if "fanout" in attacked:
        result["goals"]["fanout_p99_ok"] = attacked["fanout"]["p99_s"] < GOAL_FANOUT_P99
        result["ratio"]["fanout_p99"] = attacked["fanout"]["p99_s"] / baseline["fanout"]["p99_s"]
    return result


def run(
    seconds: float = DEFAULT_SECONDS,
    watchers: int = 0,
    challenge_rate: int = DEFAULT_CHALLENGE_RATE,
) -> dict[str, Any]:
    if seconds <= 0 or watchers < 0 or challenge_rate < 1:
        raise ValueError("seconds > 0, watchers >= 0 and challenge_rate >= 1 are needed")
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="isthmus-attack-"))
    try:
        return asyncio.run(bench(seconds, watchers, challenge_rate, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def text(r: dict[str, Any]) -> str:
    def ms(x: float) -> str:
        return f"{x * 1000:.1f} ms"

    b, a, g, ratio = r["baseline"], r["attack"], r["goals"], r["ratio"]
    mib = 1024
    out = [
        f"controller under attack for {r['seconds']:g} s (baseline: {r['seconds']:g} s without): "
        f"{JUNK_CONNECTIONS} connections of {JUNK_BYTES // (1024 * 1024)} MiB junk Register, "
        f"{r['challenge_rate']} Challenge/s from 127.0.0.1; probes from ::1"
        + (
            f"; {r['watchers']} watching edges (setup {r['setup_s']:.1f} s)"
            if r["watchers"]
            else ""
        ),
        f"memory: idle VmRSS {r['idle_rss_kib'] / mib:.1f} MiB; VmHWM after baseline "
        f"{b['memory_kib']['VmHWM'] / mib:.1f} MiB, "
        f"after attack {a['memory_kib']['VmHWM'] / mib:.1f} MiB; "
        f"peak - idle {g['peak_rss_growth_kib'] / mib:.1f} MiB "
        f"(goal < {GOAL_RSS_MIB} MiB: {'met' if g['peak_rss_ok'] else 'NOT met'})",
        f"controller CPU: baseline {b['cpu_s']:.1f} s, attack {a['cpu_s']:.1f} s "
        f"(of {r['seconds']:g} s)",
        f"legit Register+Watch ({b['probes']} / {a['probes']} probes): "
        f"baseline p50 {ms(b['probe']['p50_s'])} p99 {ms(b['probe']['p99_s'])}; "
        f"attack p50 {ms(a['probe']['p50_s'])} p99 {ms(a['probe']['p99_s'])}; "
        f"ratio p50 {ratio['probe_p50']:.2f} p99 {ratio['probe_p99']:.2f} "
        f"(goal p99 < {GOAL_PROBE_P99:g} s: {'met' if g['probe_p99_ok'] else 'NOT met'})",
    ]
    if "fanout" in a:
        out.append(
            f"map change to {r['watchers']} edges: baseline p99 {ms(b['fanout']['p99_s'])}; "
            f"attack p99 {ms(a['fanout']['p99_s'])}; ratio {ratio['fanout_p99']:.2f} "
            f"(goal p99 < {GOAL_FANOUT_P99:g} s: {'met' if g['fanout_p99_ok'] else 'NOT met'})"
        )
    got = r["attacker"]
    out.append(f"attacker got: junk Register {got['junk_register']}, Challenge {got['challenge']}")
    out.append(f"controller alive at the end: {r['controller_alive']}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="per phase")
    parser.add_argument("--watchers", type=int, default=0, help="watching edges (fan-out)")
    parser.add_argument(
        "--challenge-rate",
        type=int,
        default=DEFAULT_CHALLENGE_RATE,
        help="Challenge calls a second",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.seconds, args.watchers, args.challenge_rate)
    print(json.dumps(result, indent=2) if args.json else text(result))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()

"""`isthmus edge --config FILE`: the edge's composition root.

Owns wiring config, adapters and core together, and the process lifecycle; nothing
else in `edge` builds an adapter. Start order makes the edge fail-static: the cached
map (its leases verified, expired routes left out) is applied (tunnel and kernel
routes) before the controller is contacted. The control loop also withdraws routes
whose lease runs out, checked every 30 s with the wall clock.
Around the data path: the admin socket (status, explain, ping: edge.pinger waits on the
core's probe answers), Prometheus metrics on `metrics` (edge.metrics,
read from the core's counters at scrape time; an address that cannot be bound is logged
and the edge runs on without), rate-limited debug lines for dropped packets
(edge.droplog), the log format (`log_format`) and the masquerade table (`masquerade`,
edge.nft: replaced at start, so a crashed edge's table is never duplicated, and deleted at
a clean exit; with no ranges a stale one is deleted at start).
SIGTERM/SIGINT stop it cleanly: closing the TUN makes the kernel drop its routes,
and the admin socket file is removed. Exit codes: 0 stopped, 1 error (usage errors too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

from edge import config as edge_config
from edge.admin import AdminError, AdminServer, EdgeStatus
from edge.applier import ROUTE_RETRY_INTERVAL, MapApplier
from edge.control import ControlLoop
from edge.dataplane import Dataplane
from edge.droplog import DropLog
from edge.explain import EdgeExplain
from edge.leases import drop_expired
from edge.mapcache import MapCache
from edge.metrics import EdgeMetrics
from edge.nft import NftError, NftMasquerade
from edge.pinger import Pinger
from edge.ports import RouteError
from edge.routes import KernelRoutes, Sysctl
from edge.tun import Tun, TunError
from edge.tunnel import Identity, Tunnel
from edge.udp import UdpSocket
from isthmus.configfile import ConfigError
from isthmus.convert import Registration
from isthmus.logfmt import configure, kv
from isthmus.mapsig import SignedMap
from isthmus.routemap import RouteMap
from isthmus_io.keyfiles import read_private_key
from isthmus_io.metricsserver import MetricsServer, start_or_log

_log = logging.getLogger(__name__)


class StartError(Exception):
    """The edge cannot start; the message names the problem."""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="isthmus edge", description="Run an isthmus edge.")
    parser.add_argument("--config", required=True, metavar="FILE", help="the edge config file")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return 0 if e.code in (0, None) else 1
    path = Path(args.config)
    try:
        cfg = edge_config.load(path)
    except ConfigError as e:
        print(f"isthmus edge: {path}: {e}", file=sys.stderr)
        return 1
    try:
        identity = Identity.from_private_key(cfg.name, read_private_key(cfg.private_key_file))
    except ValueError as e:
        print(f"isthmus edge: private_key_file: {e}", file=sys.stderr)
        return 1
    configure("edge", fmt=cfg.log_format)
    try:
        asyncio.run(run(cfg, identity))
    except StartError as e:
        _log.error(kv("start_failed", error=str(e)))
        print(f"isthmus edge: {e}", file=sys.stderr)
        return 1
    return 0


async def _retry_collisions(applier: MapApplier) -> None:
    """Retry routes that collided with a route isthmus did not install (it may go away)."""
    while True:
        await asyncio.sleep(ROUTE_RETRY_INTERVAL)
        try:
            applier.retry_collisions()
        except Exception as e:  # a bug must not stop the retries
            _log.exception(kv("route_retry_error", error=repr(e)))


def _state_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise StartError(f"cannot create state_dir {path}: {e.strerror}") from None


async def run(cfg: edge_config.EdgeConfig, identity: Identity) -> None:
    """Run the edge until SIGTERM or SIGINT.

    Raises:
        StartError: a resource could not be set up (everything set up so far is undone).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _state_dir(cfg.state_dir)
    _log.info(
        kv(
            "starting",
            edge=cfg.name,
            public_key=identity.public_key,
            endpoint=cfg.endpoint,
            routes=cfg.routes,
        )
    )
    if cfg.routes and not any(cfg.tun.address.ip in net for net in cfg.routes):
        _log.warning(
            kv(
                "tun_address_outside_routes",
                address=cfg.tun.address,
                detail="packets this edge sends itself are refused by peers",
            )
        )

    async with contextlib.AsyncExitStack() as stack:
        try:
            tun = Tun.open(cfg.tun.name)
        except TunError as e:
            raise StartError(str(e)) from None
        stack.callback(tun.close)
        try:
            routes = KernelRoutes(tun.name)
            stack.callback(routes.close)
            routes.configure_link(cfg.tun.address, cfg.tun.mtu)
        except RouteError as e:
            raise StartError(str(e)) from None
        _log.info(kv("tun_up", tun=tun.name, address=cfg.tun.address, mtu=cfg.tun.mtu))

        masquerade = NftMasquerade(tun.name, cfg.masquerade)
        try:
            masquerade.apply()
        except NftError as e:
            raise StartError(str(e)) from None
        stack.callback(masquerade.remove)

        forwarding = Sysctl()
        forwarding.enable(4)
        if any(net.version == 6 for net in (*cfg.routes, *cfg.masquerade)):
            forwarding.enable(6)

        cache = MapCache(cfg.state_dir, cfg.controller_public_key)
        cached = cache.load()
        # Greet (handshake with every peer of the first map at once) only at a restart: a
        # peer may still seal for this edge's previous process. An edge with no cached map
        # is new, its peers may not know it yet and would drop its greeting, so its first
        # traffic would wait for the REKEY_TIMEOUT retry instead of handshaking at once.
        # An edge behind NAT (no endpoint) always reaches out: no peer can start a session
        # with it, so it handshakes with every peer it gets (a dropped one is retried).
        tunnel = Tunnel(
            identity,
            random=os.urandom,
            wall_clock=time.time,
            timers=cfg.timers,
            greet=cached is not None,
            behind_nat=cfg.endpoint is None,
            addresses=(cfg.tun.address.ip,),
        )
        applier = MapApplier(
            cfg.name, tunnel, routes, cache, forwarding, controllers=cfg.controllers
        )
        cached = cached or SignedMap(RouteMap(version=0))
        applier.apply(drop_expired(cached.route_map, time.time())[0], signed=cached, save=False)

        try:
            udp = UdpSocket.bind(cfg.listen)
        except OSError as e:
            raise StartError(f"cannot bind UDP {cfg.listen}: {e.strerror}") from None
        stack.callback(udp.close)
        _log.info(kv("udp_listening", listen=udp.local_address()))

        dataplane = Dataplane(tunnel, tun, udp)
        dataplane.start(loop)
        applier.on_applied = dataplane.after_input
        stack.callback(dataplane.stop)

        registration = Registration(
            name=cfg.name,
            public_key=identity.public_key,
            endpoints=(cfg.endpoint,) if cfg.endpoint is not None else (),
            routes=cfg.routes,
        )
        control = ControlLoop(
            cfg.controllers,
            registration,
            applier,
            private_key=identity.private_key,
            controller_key=cfg.controller_public_key,
        )
        status = EdgeStatus(
            endpoint=cfg.endpoint,
            tunnel=tunnel,
            route_map=lambda: applier.route_map,
            controller=control.view,
            routes=routes,
            datapath=dataplane.stats.as_dict,
            collisions=lambda: applier.collisions,
            masquerade=masquerade.state,
        )
        explainer = EdgeExplain(
            tunnel=tunnel,
            route_map=lambda: applier.route_map,
            advertised=cfg.routes,
            controller=control.view,
            controller_key=cfg.controller_public_key,
            routes=routes,
            tun_mtu=cfg.tun.mtu,
            collisions=lambda: applier.collisions,
            masquerade=masquerade.state,
            outgoing=masquerade.outgoing,
        )
        pinger = Pinger(
            tunnel=tunnel, route_map=lambda: applier.route_map, flush=dataplane.after_input
        )
        dataplane.on_event = pinger.on_event
        admin = AdminServer(
            cfg.admin_socket,
            status.build,
            {"explain": explainer.handle, "ping": pinger.handle},
        )
        try:
            await admin.start()
        except AdminError as e:
            raise StartError(str(e)) from None
        stack.push_async_callback(admin.close)

        if cfg.metrics is not None:
            metrics = EdgeMetrics(
                tunnel=tunnel,
                route_map=lambda: applier.route_map,
                controller=control.view,
                routes=routes,
                collisions=applier,
            )
            server = await start_or_log(
                MetricsServer(
                    cfg.metrics, metrics.registry, logger=logging.getLogger("edge.metrics")
                )
            )
            if server is not None:
                stack.push_async_callback(server.close)
        drop_log = asyncio.create_task(DropLog(tunnel.drops).run(), name="drop-log")
        stack.callback(drop_log.cancel)
        retry = asyncio.create_task(_retry_collisions(applier), name="route-retry")
        stack.callback(retry.cancel)

        task = asyncio.create_task(control.run(), name="control")
        _log.info(kv("started", edge=cfg.name, controllers=cfg.controllers))
        await stop.wait()
        _log.info(kv("stopping", edge=cfg.name))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    _log.info(kv("stopped", edge=cfg.name))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

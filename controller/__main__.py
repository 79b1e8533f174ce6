"""`isthmus controller --config FILE`: the controller process and its composition root.

Owns wiring: config -> controller key -> store -> registry -> history and publisher ->
service -> health -> grpc.aio server on `listen`, plus the Admin server on the admin
socket and the metrics server on `metrics` (controller.metrics; a metrics address that
cannot be bound is logged and the controller runs on without it); the log format
(`log_format`); and the process's signals: SIGHUP re-reads the config and applies its edges,
admission policy and lease_ttl (an invalid file is logged and the old config kept),
SIGTERM/SIGINT stop gracefully (watches end, in-flight calls finish) and exit 0.
Nothing else in the package builds these objects. `ControllerServer` is the same wiring
without signals, for tests that run a controller in-process on 127.0.0.1:0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Final

import grpc

from controller import config as controller_config
from controller.admin import start_admin_server, stop_admin_server
from controller.config import ControllerConfig
from controller.errors import StoreError
from controller.health import SERVING, HealthService
from controller.history import History
from controller.metrics import ControllerMetrics
from controller.publisher import Publisher
from controller.registry import Change, Registry
from controller.service import ControllerService, add_to_server
from controller.store import EtcdStore, FileStore, Store, default_replica
from isthmus import logfmt
from isthmus.auth import Authenticator, ChallengeBook
from isthmus.configfile import ConfigError
from isthmus.keys import PublicKey
from isthmus.lease import Lease, sign_lease
from isthmus.logfmt import kv
from isthmus.metricsserver import MetricsServer, start_or_log
from isthmus.routemap import Network
from isthmus.signing import ControllerKey, ControllerPublicKey, read_controller_key
from isthmus.v1 import health_pb2_grpc

log = logging.getLogger("controller")

MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
STOP_GRACE_SECONDS: Final = 5.0
REPLICA_ID_LEN: Final = 8
KEY_FILE_RULE: Final = (
    "an Ed25519 key file written by 'isthmus keygen --controller' "
    "(base64 seed, one line, mode 0600)"
)
# The controller pings every edge too: an edge that stops answering (frozen, its host
# gone, a dropped path) ends its watch, so `isthmus edges` shows it disconnected within
# KEEPALIVE_TIME + KEEPALIVE_TIMEOUT. Without this a half-open stream stays "connected"
# for gRPC's default two hours.
KEEPALIVE_TIME_MS: Final = 10_000
KEEPALIVE_TIMEOUT_MS: Final = 5_000
SERVER_OPTIONS: Final = (
    # Edges ping every 20 s to keep NAT bindings and detect a dead controller; allow it,
    # also between calls, and never count it as abuse.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    # What gRPC (1.5x and later) really enforces: an unanswered ping ends the connection
    # after this long; keepalive_timeout_ms alone is ignored (the default is 60 s).
    ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    # A watch stream is idle between maps: keep pinging it (gRPC stops after 2 by default).
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)


class ControllerServer:
    """One controller replica: its store, a gRPC server on `config.listen` (Controller and
    Health) and the Admin server on `config.admin_socket`.

    Usage: `server = ControllerServer(config); await server.start(); ...; await server.stop()`.
    `store` replaces the one the config names; `clock` (unix seconds) drives challenges and
    leases, so tests can move time.
    """

    def __init__(
        self,
        config: ControllerConfig,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._store = store
        self._clock = clock
        self._key: ControllerKey | None = None
        self._service: ControllerService | None = None
        self._publisher: Publisher | None = None
        self._health: HealthService | None = None
        self._server: grpc.aio.Server | None = None
        self._admin: grpc.aio.Server | None = None
        self._metrics = ControllerMetrics()
        self._metrics_server: MetricsServer | None = None
        self._port = 0

    @property
    def config(self) -> ControllerConfig:
        return self._config

    @property
    def port(self) -> int:
        """The bound TCP port (the free port picked when the config says 0)."""
        return self._port

    @property
    def address(self) -> str:
        """host:port to dial, with the bound port."""
        host = self._config.listen.ip
        return f"[{host}]:{self._port}" if host.version == 6 else f"{host}:{self._port}"

    @property
    def admin_socket(self) -> Path:
        return self._config.admin_socket

    @property
    def metrics(self) -> ControllerMetrics:
        return self._metrics

    @property
    def metrics_address(self) -> str | None:
        """host:port of /metrics with the bound port; None when off or not bound."""
        return self._metrics_server.address if self._metrics_server is not None else None

    @property
    def public_key(self) -> ControllerPublicKey:
        """The controller's public key (what edges pin)."""
        if self._key is None:
            raise RuntimeError("the controller is not started")
        return self._key.public

    @property
    def service(self) -> ControllerService:
        if self._service is None:
            raise RuntimeError("the controller is not started")
        return self._service

    @property
    def health(self) -> HealthService:
        if self._health is None:
            raise RuntimeError("the controller is not started")
        return self._health

    async def start(self) -> None:
        """Read the key, load the stored state, apply the config to it, bind and serve.

        Raises:
            ConfigError: the signing key file is unusable (names signing_key_file).
            StoreError: the store is unusable.
            OSError: the listen address or the admin socket cannot be bound.
        """
        cfg = self._config
        try:
            key = await asyncio.to_thread(read_controller_key, cfg.signing_key_file)
        except ValueError as e:
            raise ConfigError("signing_key_file", str(e), KEY_FILE_RULE) from None
        self._key = key
        store = self._store or await _open_store(cfg)
        self._store = store
        state = await store.load()

        def signer(edge_key: PublicKey, route: Network, version: int, expires: int) -> Lease:
            return sign_lease(key, edge_key, route, version, expires)

        registry = Registry(state, cfg, signer, overlay=(cfg.listen.ip,))
        snapshot = registry.snapshot()
        history = History(snapshot)
        self._publisher = Publisher(snapshot)
        book = ChallengeBook(
            key.challenge_secret, os.urandom(REPLICA_ID_LEN), self._clock, os.urandom
        )
        self._service = ControllerService(
            registry,
            cfg,
            store,
            Authenticator(key, book),
            history,
            self._publisher,
            self._clock,
            self._metrics,
        )
        # The stored state may predate this config: withdraw and decide again.
        _log_reload(await self._service.apply_config(cfg))
        log.info(
            kv(
                "state_loaded",
                version=self._service.version,
                store=cfg.store.kind,
                replica=store.replica,
                public_key=key.public,
            )
        )
        self._health = HealthService(store.healthy)
        await self._health.start()
        health = self._health
        self._metrics.bind(self._service, lambda: health.status == SERVING)
        server = grpc.aio.server(options=list(SERVER_OPTIONS))
        add_to_server(self._service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)  # type: ignore[no-untyped-call]
        try:
            port = server.add_insecure_port(str(cfg.listen))
        except RuntimeError as e:  # grpc reports a failed bind this way
            raise OSError(f"cannot listen on {cfg.listen}: {e}") from None
        if port == 0:
            raise OSError(f"cannot listen on {cfg.listen}")
        self._port = port
        await server.start()
        self._server = server
        self._admin = await start_admin_server(cfg.admin_socket, self._service)
        self._service.start()
        if cfg.metrics is not None:
            self._metrics_server = await start_or_log(
                MetricsServer(
                    cfg.metrics,
                    self._metrics.registry,
                    self._metrics.refresh,
                    logging.getLogger("controller.metrics"),
                )
            )
        log.info(
            kv(
                "listening",
                address=self.address,
                admin_socket=cfg.admin_socket,
                metrics=self.metrics_address or "off",
            )
        )

    async def reload(self, config: ControllerConfig) -> tuple[Change, ...]:
        """Apply a re-read config's edges, admission policy and lease_ttl; everything else
        (listen, state_dir, store, signing key, admin socket) stays as started.

        Raises:
            StoreError: the change could not be persisted; the old config stays.
        """
        old = self._config
        kept = replace(
            old, edges=config.edges, lease_ttl=config.lease_ttl, admission=config.admission
        )
        changes = await self.service.apply_config(kept)
        self._config = kept
        _log_reload(changes)
        if kept != config:
            log.warning(
                kv(
                    "reload_partial",
                    reason="listen, state_dir, store, signing_key_file, admin_socket, "
                    "metrics and log_format change on restart only",
                )
            )
        return changes

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """End every watch, let in-flight calls finish (up to `grace` seconds), stop."""
        if self._metrics_server is not None:
            await self._metrics_server.close()
            self._metrics_server = None
        if self._publisher is not None:
            await self._publisher.close()
        if self._health is not None:
            await self._health.close()
        if self._admin is not None:
            await stop_admin_server(self._admin, self._config.admin_socket, grace)
            self._admin = None
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        # A store that lost quorum must not hold the process: bound the goodbyes.
        for what, closing in (("service", self._service), ("store", self._store)):
            if closing is None:
                continue
            try:
                await asyncio.wait_for(closing.close(), timeout=grace)
            except TimeoutError:
                log.warning(kv("stop_timeout", part=what, seconds=grace))
        log.info(kv("stopped"))

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def _open_store(cfg: ControllerConfig) -> Store:
    if cfg.store.kind == "etcd":
        return EtcdStore(cfg.store.endpoints, cfg.store.prefix, default_replica())
    return await asyncio.to_thread(FileStore.open, cfg.state_dir)


def main(argv: list[str]) -> int:
    """Run the controller until SIGTERM/SIGINT. 0 stopped, 1 error (usage errors too)."""
    parser = argparse.ArgumentParser(prog="isthmus controller", description=__doc__)
    parser.add_argument("--config", required=True, type=Path, help="controller TOML file")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return 0 if e.code in (0, None) else 1
    path: Path = args.config
    try:
        config = controller_config.load(path)
    except ConfigError as e:
        print(f"isthmus controller: {path}: {e}", file=sys.stderr)
        return 1
    logfmt.configure("controller", fmt=config.log_format)
    try:
        asyncio.run(_serve(path, config))
    except ConfigError as e:
        log.error(kv("startup_failed", reason=str(e)))
        print(f"isthmus controller: {path}: {e}", file=sys.stderr)
        return 1
    except (StoreError, OSError) as e:
        log.error(kv("startup_failed", reason=str(e)))
        print(f"isthmus controller: {e}", file=sys.stderr)
        return 1
    return 0


async def _serve(path: Path, config: ControllerConfig) -> None:
    server = ControllerServer(config)
    stop = asyncio.Event()
    reloads: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    def on_hup() -> None:
        task = loop.create_task(_reload(server, path))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        await server.start()
        await stop.wait()
        log.info(kv("stopping"))
    finally:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.stop()


async def _reload(server: ControllerServer, path: Path) -> None:
    log.info(kv("reload", config=path))
    try:
        config = await asyncio.to_thread(controller_config.load, path)
        await server.reload(config)
    except ConfigError as e:
        log.error(kv("reload_refused", config=path, reason=str(e), kept="old config"))
        return
    except StoreError as e:
        log.error(kv("reload_failed", config=path, reason=str(e), kept="old config"))
        return
    log.info(kv("reloaded", config=path, edges=len(config.edges)))


def _log_reload(changes: tuple[Change, ...]) -> None:
    """Changes are logged one per line by the service; this is the summary."""
    if changes:
        log.info(kv("config_applied", changes=len(changes)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

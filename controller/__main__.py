"""`isthmus controller --config FILE`: the controller process and its composition root.

Owns wiring: config -> controller key -> store (the state with its epoch) -> registry ->
history (signs each map) and publisher -> service -> health -> grpc.aio server on `listen`
over TLS with a fresh leaf certificate signed by the controller key (isthmus.tlscert),
plus the Admin server on the admin socket and the metrics server on `metrics`
(controller.metrics; a metrics address that cannot be bound is logged and the controller
runs on without it); the log format
(`log_format`); and the process's signals: SIGHUP re-reads the config and applies its edges,
admission policy and lease_ttl (an invalid file is logged and the old config kept),
SIGTERM/SIGINT stop gracefully (watches end, in-flight calls finish) and exit 0.
Nothing else in the package builds these objects. `ControllerServer` is the same wiring
without signals, for tests that run a controller in-process on 127.0.0.1:0.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
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
from controller.change import Change
from controller.config import STORE_TLS_FILE_RULE, ControllerConfig, overlay_addresses
from controller.errors import StoreConflict, StoreError
from controller.etcd import TLSFileError, tls_context
from controller.etcd_store import EtcdStore
from controller.file_store import FileStore
from controller.guard import max_concurrent_calls, server_options
from controller.health import SERVING, HealthService
from controller.history import History
from controller.interfaces import with_host_addresses
from controller.metrics import ControllerMetrics
from controller.publisher import Publisher
from controller.registry import Registry
from controller.service import SAVE_ATTEMPTS, ControllerService
from controller.servicer import add_to_server
from controller.state import State, ensure_epoch
from controller.store import Store, default_replica
from isthmus import logfmt
from isthmus.auth import Authenticator, ChallengeBook
from isthmus.configfile import ConfigError
from isthmus.keys import PublicKey
from isthmus.lease import Lease, sign_lease
from isthmus.logfmt import kv
from isthmus.mapsig import epoch_text
from isthmus.routemap import Network
from isthmus.signing import ControllerKey, ControllerPublicKey
from isthmus.tlscert import server_credentials
from isthmus.v1 import health_pb2_grpc
from isthmus_io.keyfiles import read_controller_key
from isthmus_io.metricsserver import MetricsServer, start_or_log

log = logging.getLogger("controller")

STOP_GRACE_SECONDS: Final = 5.0
REPLICA_ID_LEN: Final = 8
KEY_FILE_RULE: Final = (
    "an Ed25519 key file written by 'isthmus keygen --controller' "
    "(base64 seed, one line, mode 0600)"
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
        # A wildcard listen without `addresses`: the host's addresses, read once (and on reload).
        cfg = self._config = await asyncio.to_thread(with_host_addresses, self._config)
        try:
            key = await asyncio.to_thread(read_controller_key, cfg.signing_key_file)
        except ValueError as e:
            raise ConfigError("signing_key_file", str(e), KEY_FILE_RULE) from None
        self._key = key
        store = self._store or await _open_store(cfg, key)
        self._store = store
        state = await _load_with_epoch(store, self._clock)

        def signer(edge_key: PublicKey, route: Network, version: int, expires: int) -> Lease:
            return sign_lease(key, edge_key, route, version, expires)

        registry = Registry(state, cfg, signer)
        history = History(key, state.epoch, registry.snapshot())
        self._publisher = Publisher(history.current)
        book = ChallengeBook(
            key.challenge_secret,
            os.urandom(REPLICA_ID_LEN),
            self._clock,
            os.urandom,
            max_per_owner=cfg.limits.challenges_per_edge,
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
                addresses=",".join(str(ip) for ip in overlay_addresses(cfg)) or "none",
            )
        )
        self._health = HealthService(store.healthy)
        await self._health.start()
        health = self._health
        self._metrics.bind(self._service, lambda: health.status == SERVING)
        server = grpc.aio.server(
            interceptors=[self._service.guard],
            options=server_options(cfg.limits),
            maximum_concurrent_rpcs=max_concurrent_calls(cfg.limits, len(cfg.edges)),
        )
        add_to_server(self._service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)  # type: ignore[no-untyped-call]
        # TLS always (docs/controller.md, "The channel"): a fresh leaf signed by the
        # controller key, which edges pin; the admin socket stays plaintext (unix, 0600).
        now = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC)
        try:
            port = server.add_secure_port(str(cfg.listen), server_credentials(key, now))
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
        """Apply a re-read config's edges, admission policy, lease_ttl and addresses (the
        host's read again for a wildcard listen); everything else (listen, state_dir, store,
        signing key, admin socket) stays as started.

        Raises:
            StoreError: the change could not be persisted; the old config stays.
        """
        old = self._config
        fresh = await asyncio.to_thread(with_host_addresses, replace(config, listen=old.listen))
        kept = replace(
            old,
            edges=config.edges,
            lease_ttl=config.lease_ttl,
            admission=config.admission,
            addresses=fresh.addresses,
        )
        changes = await self.service.apply_config(kept)
        self._config = kept
        _log_reload(changes)
        if replace(kept, addresses=config.addresses) != config:
            log.warning(
                kv(
                    "reload_partial",
                    reason="listen, state_dir, store, signing_key_file, admin_socket, "
                    "metrics, log_format, limits and audit change on restart only",
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


async def _load_with_epoch(store: Store, clock: Callable[[], float]) -> State:
    """The stored state, with an epoch (docs/controller.md, "Epochs").

    Nothing stored yet: the new state gets an epoch, stored with its first version (the
    first change). A stored state without one (an older release) gets one now, stored at
    the next version before any map is published; when another replica wrote first, the
    stored state is used (and gets an epoch the same way)."""
    for _ in range(SAVE_ATTEMPTS):
        state = await store.load()
        if state.epoch:
            return state
        state = ensure_epoch(state, clock())
        log.info(kv("epoch_created", epoch=epoch_text(state.epoch), version=state.version))
        if state.version == 0:
            return state
        state = replace(state, version=state.version + 1)
        try:
            await store.save(state)
        except StoreConflict:
            continue
        return state
    raise StoreError("cannot store an epoch: other replicas keep writing the state")


async def _open_store(cfg: ControllerConfig, key: ControllerKey) -> Store:
    """The configured store.

    Raises:
        ConfigError: a [store] TLS file is unusable (names the key).
    """
    if cfg.store.kind == "etcd":
        tls = None
        if cfg.store.tls is not None:
            files = cfg.store.tls
            try:
                tls = await asyncio.to_thread(
                    tls_context, files.ca_file, files.cert_file, files.key_file
                )
            except TLSFileError as e:
                raise ConfigError(f"store.{e.which}", str(e), STORE_TLS_FILE_RULE) from None
        return EtcdStore(
            cfg.store.endpoints,
            cfg.store.prefix,
            default_replica(),
            audit=cfg.audit,
            key=key,
            tls=tls,
        )
    return await asyncio.to_thread(FileStore.open, cfg.state_dir, None, cfg.audit)


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

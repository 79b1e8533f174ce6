"""`isthmus controller --config FILE`: the controller process and its composition root.

Owns wiring: config -> store -> registry -> publisher -> service -> grpc.aio server, and
the process's signals: SIGHUP re-reads the config (an invalid file is logged and the old
config kept), SIGTERM/SIGINT stop gracefully (watches end, in-flight calls finish) and
exit 0. Nothing else in the package builds these objects. `ControllerServer` is the same
wiring without signals, for tests that run a controller in-process on 127.0.0.1:0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Final

import grpc

from controller import config as controller_config
from controller.config import ControllerConfig
from controller.errors import StoreError
from controller.publisher import Publisher
from controller.registry import Registry, Withdrawn
from controller.service import ControllerService
from controller.store import FileStore, Store
from isthmus import logfmt
from isthmus.configfile import ConfigError
from isthmus.logfmt import kv
from isthmus.v1 import isthmus_pb2_grpc as pb_grpc

log = logging.getLogger("controller")

MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
STOP_GRACE_SECONDS: Final = 5.0
SERVER_OPTIONS: Final = (
    # Edges ping every 20 s to keep NAT bindings and detect a dead controller; allow it,
    # also between calls, and never count it as abuse.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)


class ControllerServer:
    """One controller: the store on `config.state_dir` and a gRPC server on `config.listen`.

    Usage: `server = ControllerServer(config); await server.start(); ...; await server.stop()`.
    """

    def __init__(self, config: ControllerConfig, store: Store | None = None) -> None:
        self._config = config
        self._store = store
        self._service: ControllerService | None = None
        self._publisher: Publisher | None = None
        self._server: grpc.aio.Server | None = None
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
    def service(self) -> ControllerService:
        if self._service is None:
            raise RuntimeError("the controller is not started")
        return self._service

    async def start(self) -> None:
        """Load the stored state, apply the config to it, bind and start serving.

        Raises:
            StoreError: the state directory or state file is unusable.
            OSError: the listen address cannot be bound.
        """
        store = self._store
        if store is None:
            store = await asyncio.to_thread(FileStore.open, self._config.state_dir)
        try:
            stored = await asyncio.to_thread(store.load)
            registry = Registry(stored)
        except ValueError as e:  # MapError from a store that did not validate
            raise StoreError(f"the stored map is invalid: {e}") from None
        self._publisher = Publisher(registry.snapshot())
        self._service = ControllerService(registry, store, self._publisher)
        _log_withdrawn(await self._service.apply_config(self._config.edges))
        log.info(kv("state_loaded", version=self._service.registry.version))
        server = grpc.aio.server(options=list(SERVER_OPTIONS))
        pb_grpc.add_ControllerServicer_to_server(self._service, server)  # type: ignore[no-untyped-call]
        try:
            port = server.add_insecure_port(str(self._config.listen))
        except RuntimeError as e:  # grpc reports a failed bind this way
            raise OSError(f"cannot listen on {self._config.listen}: {e}") from None
        if port == 0:
            raise OSError(f"cannot listen on {self._config.listen}")
        self._port = port
        await server.start()
        self._server = server
        log.info(kv("listening", address=self.address))

    async def reload(self, config: ControllerConfig) -> tuple[Withdrawn, ...]:
        """Apply a re-read config's edges; the listen address and state_dir stay as started.

        Raises:
            StoreError: a withdrawal could not be persisted; the old config stays.
        """
        old = self._config
        withdrawn = await self.service.apply_config(config.edges)
        self._config = ControllerConfig(old.listen, old.state_dir, config.edges)
        _log_withdrawn(withdrawn)
        if (config.listen, config.state_dir) != (old.listen, old.state_dir):
            log.warning(kv("reload_partial", reason="listen and state_dir change on restart only"))
        return withdrawn

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """End every watch, let in-flight calls finish (up to `grace` seconds), stop."""
        if self._publisher is not None:
            await self._publisher.close()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        log.info(kv("stopped"))

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


def main(argv: list[str]) -> int:
    """Run the controller until SIGTERM/SIGINT. 0 ok, 1 error, 2 usage."""
    parser = argparse.ArgumentParser(prog="isthmus controller", description=__doc__)
    parser.add_argument("--config", required=True, type=Path, help="controller TOML file")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    path: Path = args.config
    try:
        config = controller_config.load(path)
    except ConfigError as e:
        print(f"isthmus controller: {path}: {e}", file=sys.stderr)
        return 1
    logfmt.configure("controller")
    try:
        asyncio.run(_serve(path, config))
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


def _log_withdrawn(withdrawn: tuple[Withdrawn, ...]) -> None:
    for w in withdrawn:
        log.warning(
            kv(
                "withdrawn",
                edge=w.edge,
                whole_edge=w.whole_edge,
                routes=w.routes,
                reason=w.reason,
            )
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

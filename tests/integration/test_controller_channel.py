"""The control channel on the path, and the controller's lineage, with real controllers.

    ControlLoop (vpc-a) --TCP--> Tap (records every byte) --> ControllerServer (FileStore)
    ControlLoop (vpc-a) --TCP--> Impostor (terminates TLS with its own certificate, then
                                  forwards to the controller: a man in the middle)

An on-path observer reads no edge name, key, endpoint or route (the channel is TLS pinned
to controller_public_key); a man in the middle without the controller key gets no call
through, so no map, and the edge records why. When the controller's state is lost
(state.json deleted) the new state has a new, later epoch: an edge whose version number
happens to match the new lineage still gets the whole map (F5), and `isthmus edges`
shows the epoch. A version gap (S14 of reliability.md) ends in the whole map and exact
convergence.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ssl
from dataclasses import replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from controller.__main__ import ControllerServer
from controller.bounds import Limits
from controller.ratelimit import Rate
from isthmus.ids import EdgeName
from isthmus.mapsig import epoch_text, verify_map
from isthmus.signing import ControllerKey
from isthmus.tlscert import SERVER_NAME, issue_leaf, root_name
from tests.integration.edgeclient import EdgeClient, controller_channel, edge_keys
from tests.integration.test_edge_control import (
    EDGES,
    KEY,
    Clock,
    Edge,
    controller_config,
    free_port,
    keypair,
    nets,
    run,
    until,
)

IMPOSTOR = ControllerKey.from_seed(bytes(range(100, 132)))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: bytearray) -> None:
    with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
        while data := await reader.read(65536):
            log += data
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, OSError, RuntimeError):
        writer.close()


class Tap:
    """A TCP proxy to `target` that records the bytes each way (an on-path observer).

    With `tls`, it first terminates the client's TLS with that server context and speaks
    TLS (unverified) to the target: a man in the middle with a certificate of its own.
    """

    def __init__(self, target: str, tls: ssl.SSLContext | None = None) -> None:
        self.host, port = target.rsplit(":", 1)
        self.port = int(port)
        self.tls = tls
        self.up = bytearray()  # edge -> controller
        self.down = bytearray()  # controller -> edge
        self.connections = 0
        self.handshakes = 0
        self.refused: list[str] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        upstream_tls: ssl.SSLContext | None = None
        if self.tls is not None:
            try:
                await writer.start_tls(self.tls)
            except (ssl.SSLError, ConnectionError, OSError) as e:
                self.refused.append(str(e))
                writer.close()
                return
            self.handshakes += 1
            upstream_tls = ssl.create_default_context()
            upstream_tls.check_hostname = False
            upstream_tls.verify_mode = ssl.CERT_NONE
            upstream_tls.set_alpn_protocols(["h2"])
        up_reader, up_writer = await asyncio.open_connection(
            self.host,
            self.port,
            ssl=upstream_tls,
            server_hostname=SERVER_NAME if upstream_tls else None,
        )
        for task in (
            asyncio.create_task(_pipe(reader, up_writer, self.up)),
            asyncio.create_task(_pipe(up_reader, writer, self.down)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


def impostor_tls(tmp: Path, spoof_root_name: bool) -> ssl.SSLContext:
    """A server context with the impostor's chain: a leaf for SERVER_NAME under a root
    with the impostor's key, named like the real controller's root when `spoof_root_name`
    (else a self-signed P-256 certificate)."""
    now = datetime.datetime.now(datetime.UTC)
    if spoof_root_name:
        key_pem, chain = issue_leaf(IMPOSTOR, now)
        # Re-issue under the real root's NAME (the impostor's key): the name matches, the
        # key does not.
        signer = ed25519.Ed25519PrivateKey.from_private_bytes(IMPOSTOR.seed)
        leaf = x509.load_pem_x509_certificates(chain)[0]
        forged = (
            x509.CertificateBuilder()
            .subject_name(leaf.subject)
            .issuer_name(root_name(KEY.public))
            .public_key(leaf.public_key())
            .serial_number(leaf.serial_number)
            .not_valid_before(leaf.not_valid_before_utc)
            .not_valid_after(leaf.not_valid_after_utc)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), False)
            .sign(signer, None)
        )
        chain = forged.public_bytes(serialization.Encoding.PEM)
    else:
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(leaf_key.public_key())
            .serial_number(7)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), False)
            .sign(leaf_key, hashes.SHA256())
        )
        key_pem = leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        chain = cert.public_bytes(serialization.Encoding.PEM)
    (tmp / "mitm.key").write_bytes(key_pem)
    (tmp / "mitm.pem").write_bytes(chain)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "mitm.pem", tmp / "mitm.key")
    ctx.set_alpn_protocols(["h2"])
    return ctx


def secrets_of_the_map() -> list[bytes]:
    """Every edge name, key (raw and base64), endpoint and route the map holds."""
    found: list[bytes] = []
    for name, (seed, routes) in EDGES.items():
        public = keypair(seed)[0]
        found += [name.encode(), public, base64.b64encode(public)]
        found += [f"198.18.0.{seed}:51820".encode(), bytes([198, 18, 0, seed])]
        found += [r.encode() for r in routes]
    return found


def test_an_on_path_observer_reads_no_name_key_endpoint_or_route(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = Clock()
        server = ControllerServer(controller_config(tmp_path), clock=clock)
        await server.start()
        tap = Tap(server.address)
        address = await tap.start()
        b = Edge("vpc-b", [server.address], clock).start()
        c = Edge("vpc-c", [server.address], clock).start()
        a = Edge("vpc-a", [address], clock).start()
        try:
            want = nets("10.245.0.0/16", "10.246.0.0/16", "fd00:3::/64")
            await until(lambda: a.routes.routes == want, "a has b's and c's routes")
            version = server.service.version
            deadline = asyncio.get_running_loop().time() + 20
            while (await edge_view(server, "vpc-a"))[0] != version:  # its Report got through
                assert asyncio.get_running_loop().time() < deadline, "a reports its map"
                await asyncio.sleep(0.05)
            assert tap.up and tap.down
            seen = bytes(tap.up) + bytes(tap.down)
            for secret in secrets_of_the_map():
                assert secret not in seen, f"{secret!r} is readable on the path"
            assert tap.connections >= 1
        finally:
            for edge in (a, b, c):
                await edge.stop()
            await tap.close()
            await server.stop(grace=0)

    run(scenario)


def test_a_man_in_the_middle_without_the_controller_key_gets_nothing_through(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        clock = Clock()
        server = ControllerServer(controller_config(tmp_path), clock=clock)
        await server.start()
        b = Edge("vpc-b", [server.address], clock).start()
        taps = [Tap(server.address, impostor_tls(tmp_path, spoof)) for spoof in (False, True)]
        edges = []
        try:
            await until(lambda: b.applier.version > 0, "b has a map")
            for tap in taps:
                edges.append(Edge("vpc-a", [await tap.start()], clock).start())
            await until(
                lambda: all(len(t.refused) >= 2 for t in taps), "both edges retried and refused"
            )
            for tap, edge in zip(taps, edges, strict=True):
                assert tap.connections >= 2 and tap.handshakes == 0 and not tap.up
                assert edge.applier.version == 0 and edge.routes.routes == set()
                assert not edge.control.connected and edge.control.streams == 0
                error = edge.control.last_error or ""
                assert error.startswith("UNAVAILABLE: ") and "Tls handshake failed" in error
            # A certificate of its own: not from the pinned root. The real root's name over
            # the impostor's key: its signature does not verify against the pinned key.
            assert "CERTIFICATE_VERIFY_FAILED" in (edges[0].control.last_error or "")
            assert "INVALID_SIGNATURE" in (edges[1].control.last_error or "")
            views = {v.name: v for v in await server.service.edge_statuses()}
            assert views[EdgeName("vpc-a")].state == "never"
        finally:
            for edge in (*edges, b):
                await edge.stop()
            for tap in taps:
                await tap.close()
            await server.stop(grace=0)

    run(scenario)


async def edge_view(server: ControllerServer, name: str) -> tuple[int, str]:
    views = {v.name: v for v in await server.service.edge_statuses()}
    view = views[EdgeName(name)]
    return view.applied_version, epoch_text(view.epoch)


def test_lost_controller_state_gives_a_new_epoch_and_the_whole_map(tmp_path: Path) -> None:
    """F5: after state.json is deleted, vpc-a's version number (2) matches the new lineage;
    it still gets the whole map, and drops vpc-b, which the new state does not have."""

    async def scenario() -> None:
        clock = Clock()
        cfg = controller_config(tmp_path, port=free_port())
        server = ControllerServer(cfg, clock=clock)
        await server.start()
        a = Edge("vpc-a", [server.address], clock).start()
        b = Edge("vpc-b", [server.address], clock)
        try:
            await until(lambda: a.applier.version == 1, "a registered: version 1")
            b.start()
            await until(lambda: a.routes.routes == nets("10.245.0.0/16"), "a routes to b")
            assert a.applier.version == 2
            old_epoch = a.applier.signed.epoch
            await b.stop()
            await a.stop()
            await server.stop(grace=0)

            (cfg.state_dir / "state.json").unlink()
            server = ControllerServer(cfg, clock=clock)
            await server.start()
            async with controller_channel(server.address, KEY.public) as channel:
                c = EdgeClient(channel, KEY.public, edge_keys("vpc-c", 3))
                assert (await c.register("10.246.0.0/16")).version == 1
            a.start()  # registers (version 2), then watches with known_version 2
            await until(lambda: a.applier.signed.epoch != old_epoch, "a is on the new epoch")
            assert a.applier.version == 2 and server.service.version == 2
            assert a.routes.routes == nets("10.246.0.0/16")  # vpc-b's route is gone
            assert a.peers() == ["vpc-c"]
            assert a.applier.signed.epoch == server.service.epoch
            assert a.applier.signed.epoch > old_epoch  # created later
            assert verify_map(KEY.public, a.applier.signed)
            want = (2, epoch_text(server.service.epoch))
            deadline = asyncio.get_running_loop().time() + 20
            while await edge_view(server, "vpc-a") != want:
                assert asyncio.get_running_loop().time() < deadline, "a reports the new epoch"
                await asyncio.sleep(0.05)
        finally:
            for edge in (a, b):
                await edge.stop()
            await server.stop(grace=0)

    run(scenario)


def test_s14_a_version_gap_ends_in_the_whole_map_and_exact_convergence(tmp_path: Path) -> None:
    """S14: vpc-a is away while the map changes 30 times (vpc-c's routes come and go, vpc-b
    leaves); the controller restarts with no version history; vpc-a comes back with its
    old version and converges to exactly the controller's map."""

    async def scenario() -> None:
        clock = Clock()
        # vpc-c makes the 30 changes by registering 30 times in a row: above the per-edge
        # Register limit, which is not what this scenario is about.
        cfg = replace(
            controller_config(tmp_path, port=free_port()), limits=Limits(register=Rate(0.0, 1))
        )
        server = ControllerServer(cfg, clock=clock)
        await server.start()
        a = Edge("vpc-a", [server.address], clock).start()
        try:
            async with controller_channel(server.address, KEY.public) as channel:
                b = EdgeClient(channel, KEY.public, edge_keys("vpc-b", 2))
                c = EdgeClient(channel, KEY.public, edge_keys("vpc-c", 3))
                await b.register("10.245.0.0/16")
                await c.register("10.246.0.0/16", "fd00:3::/64")
                want = nets("10.245.0.0/16", "10.246.0.0/16", "fd00:3::/64")
                await until(lambda: a.routes.routes == want, "a routes to b and c")
                before = a.applier.version
                await a.stop()
                for i in range(30):
                    routes = ("10.246.0.0/16",) if i % 2 == 0 else ("10.246.0.0/16", "fd00:3::/64")
                    await c.register(*routes, port=51820 + i)
                await b.register()  # vpc-b withdraws its route during the gap
            epoch = server.service.epoch
            await server.stop(grace=0)
            server = ControllerServer(cfg, clock=clock)  # no version history, same state
            await server.start()
            assert server.service.epoch == epoch and server.service.version > before + 30
            streams = a.control.streams
            a.start()  # registers as before (no change), watches with its old version
            await until(lambda: a.control.streams > streams, "a watches again")
            version = server.service.version
            await until(lambda: a.applier.version == version, "a converges")
            current = server.service.registry.snapshot()
            assert a.applier.route_map == current  # exactly the controller's map
            assert a.routes.routes == nets("10.246.0.0/16", "fd00:3::/64")  # b's route is gone
            assert verify_map(KEY.public, a.applier.signed) and a.applier.signed.epoch == epoch
        finally:
            await a.stop()
            await server.stop(grace=0)

    run(scenario)

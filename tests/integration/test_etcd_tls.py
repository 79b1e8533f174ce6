"""The controller on a real etcd cluster that requires TLS client certificates, and an
attacker with write access to etcd who forges the stored state.

    TestCA (openssl): ca.pem, server.pem (127.0.0.1), client certificates
    EtcdCluster(tls): etcd0 <-> etcd1 <-> etcd2 on https://127.0.0.1 (client-cert-auth)
    ControllerServer ([store] kind = "etcd", https endpoints, ca_file/cert_file/key_file)
         ^ Register/Watch/Report               ^ /v3/kv/put of <prefix>state
    edges vpc-a, rogue (EdgeClient)          attacker (EtcdClient with a client certificate)

Needs /usr/bin/etcd and /usr/bin/openssl (scripts/setup.sh); fails, never skips, without
them. Each test uses its own key prefix on the module's cluster, except the member-failure
test (S15), which starts a cluster of its own and kills members.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from controller.__main__ import ControllerServer
from controller.config import ControllerConfig, StoreConfig, StoreTLS
from controller.errors import StoreConflict, StoreError
from controller.etcd import EtcdClient, TLSFileError, tls_context
from controller.etcd_store import EtcdStore
from controller.etcd_wire import PLAINTEXT_TO_TLS_HINT, EtcdError
from controller.health import SERVING as HEALTHY
from controller.state import dumps, loads
from controller.state_signature import Refusal, Signature, sign, verify
from controller.store import Stored
from isthmus.configfile import ConfigError
from isthmus.signing import ControllerKey
from isthmus.v1 import isthmus_pb2 as pb
from isthmus.v1 import isthmus_pb2_grpc as pb_grpc
from isthmus_lab.certs import TestCA
from isthmus_lab.etcd import EtcdCluster
from tests.integration.test_controller_service import (
    PENDING,
    ROGUE,
    SERVING,
    A,
    B,
    Follower,
    config,
    run,
    running,
)
from tests.integration.test_etcd_store import eventually, state

KEY = ControllerKey.from_seed(bytes(range(32)))
OTHER_KEY = ControllerKey.from_seed(bytes(range(1, 33)))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    for tool in ("etcd", "openssl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run scripts/setup.sh")
    return TestCA(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def cluster(ca: TestCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with EtcdCluster(tmp_path_factory.mktemp("etcd-tls"), tls=ca) as c:
        c.start()
        yield c


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return f"/tls/{request.node.name}/"


def client_tls(ca: TestCA, name: str = "isthmus-controller") -> ssl.SSLContext:
    pair = ca.client(name)
    return tls_context(ca.ca.cert, pair.cert, pair.key)


def etcd_config(tmp: Path, cluster: EtcdCluster, ca: TestCA, prefix: str) -> ControllerConfig:
    pair = ca.client("isthmus-controller")
    store = StoreConfig(
        kind="etcd",
        endpoints=cluster.client_urls,
        prefix=prefix,
        tls=StoreTLS(ca.ca.cert, pair.cert, pair.key),
    )
    return dataclasses.replace(config(tmp), store=store)


def decided(server: ControllerServer) -> list[tuple[str, str, str]]:
    return [(d.edge, str(d.route), d.state.value) for d in server.service.route_statuses()]


# -- TLS ----------------------------------------------------------------------------------------


def test_the_controller_works_over_tls_with_a_client_certificate(
    cluster: EtcdCluster, ca: TestCA, prefix: str, tmp_path: Path
) -> None:
    assert all(url.startswith("https://") for url in cluster.client_urls)
    cfg = etcd_config(tmp_path, cluster, ca, prefix)

    async def body() -> None:
        async with running(cfg) as (server, client):
            assert server.health.status == HEALTHY
            resp = await client(A).register("10.244.0.0/16")
            watcher = Follower(await client(A).watch())
            await watcher.next()
            assert watcher.map is not None and watcher.map.version == resp.version
            # The state is in etcd, signed with the controller key.
            value = EtcdClient(cluster.client_urls, tls=client_tls(ca)).range(
                f"{prefix}state".encode()
            )
            document, signature = verify(value.kvs[0].value, server.public_key)
            assert signature is Signature.VALID
            assert loads(document).version == resp.version
            watcher.call.cancel()

    run(body)


def test_a_client_without_a_certificate_is_refused_by_etcd(
    cluster: EtcdCluster, ca: TestCA
) -> None:
    no_cert = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    no_cert.load_verify_locations(cafile=str(ca.ca.cert))
    client = EtcdClient(cluster.client_urls[:1], retry_for=0.0, tls=no_cert)
    with pytest.raises(EtcdError) as e:
        client.range(b"/tls/anything")
    assert cluster.client_urls[0] in str(e.value)
    assert "certificate" in str(e.value).lower(), str(e.value)
    # With a certificate the CA signed, the same member answers.
    assert EtcdClient(cluster.client_urls[:1], tls=client_tls(ca)).range(b"/tls/x").kvs == ()


def test_a_member_certificate_from_another_ca_is_refused(
    cluster: EtcdCluster, tmp_path: Path
) -> None:
    other = TestCA(tmp_path / "other")
    client = EtcdClient(cluster.client_urls[:1], retry_for=0.0, tls=client_tls(other))
    with pytest.raises(EtcdError) as e:
        client.range(b"/tls/anything")
    assert "CERTIFICATE_VERIFY_FAILED" in str(e.value), str(e.value)


def test_plaintext_http_to_a_tls_etcd_is_a_clear_store_error(
    cluster: EtcdCluster, prefix: str
) -> None:
    plain = tuple(url.replace("https://", "http://") for url in cluster.client_urls)

    async def body() -> None:
        store = EtcdStore(plain, prefix, "a", key=KEY, retry_for=0.0)
        try:
            with pytest.raises(StoreError) as e:
                await store.load()
            assert str(e.value).startswith(f"cannot read etcd key '{prefix}state': ")
            for url in plain:
                assert f"{url}: Remote end closed connection without response; " in str(e.value)
            assert str(e.value).endswith(PLAINTEXT_TO_TLS_HINT)
        finally:
            await store.close()

    run(body)


# -- forged state -------------------------------------------------------------------------------


def test_a_forged_state_in_etcd_is_not_adopted_and_the_map_stays(
    cluster: EtcdCluster, ca: TestCA, prefix: str, tmp_path: Path
) -> None:
    """The attacker can write etcd (it has a client certificate) but not the controller key."""
    cfg = etcd_config(tmp_path, cluster, ca, prefix)
    attacker = EtcdClient(cluster.client_urls, tls=client_tls(ca, "attacker"))
    state_key = f"{prefix}state".encode()

    async def body() -> None:
        async with running(cfg) as (server, client):
            await client(A).register("10.244.0.0/16")
            replay = attacker.range(state_key).kvs[0].value  # signed, version 1
            await client(ROGUE).register("10.244.1.0/24")  # more specific, later: pending
            watcher = Follower(await client(A).watch())
            await watcher.next()
            served = watcher.map
            assert served is not None
            current = server.service.registry.state
            version = current.version
            rogue = current.edge("rogue")
            assert rogue is not None
            pending = [
                (d.edge, str(d.route), d.state.value) for d in server.service.route_statuses()
            ]
            assert ("rogue", "10.244.1.0/24", "pending") in pending

            # Forgeries, each newer than the current state.
            earlier = dataclasses.replace(
                current,
                version=version + 10,
                edges=tuple(
                    dataclasses.replace(
                        e, advertised=tuple(dataclasses.replace(a, since=0) for a in e.advertised)
                    )
                    if e.name == "rogue"
                    else e
                    for e in current.edges
                ),
            )
            approved = dataclasses.replace(
                current, version=version + 20, approvals=((rogue.name, rogue.routes[0]),)
            )
            forgeries = [
                (dumps(earlier), Refusal.SINCE_LOWERED),  # unsigned
                (sign(dumps(approved), OTHER_KEY), Refusal.APPROVAL_ADDED),  # another key
                (dumps(approved) + b"ed25519 " + b"A" * 86 + b"==\n", Refusal.APPROVAL_ADDED),
                (sign(dumps(state(version + 30)), OTHER_KEY), Refusal.BAD_SIGNATURE),
                (replay, Refusal.NOT_NEWER),  # the controller's own, older: replayed
            ]
            for value, reason in forgeries:
                before = server.metrics.states_refused.get(reason.value, 0)
                attacker.put(state_key, value)

                async def counted(reason: Refusal = reason, before: int = before) -> bool:
                    return server.metrics.states_refused.get(reason.value, 0) > before

                await eventually(f"the forged state refused as {reason.value}", counted)
                assert server.service.version == version
                assert server.service.registry.state == current
                now = [
                    (d.edge, str(d.route), d.state.value) for d in server.service.route_statuses()
                ]
                assert now == pending
                assert server.health.status == HEALTHY
                # Edges keep being served the same map: a new watch gets it, nothing newer.
                fresh = Follower(await client(ROGUE).watch())
                await fresh.next()
                assert fresh.map == served
                fresh.call.cancel()

            # The next change replaces the forgery with a signed state, newer than both.
            await client(B).register("10.245.0.0/16")
            value = attacker.range(state_key).kvs[0].value
            document, signature = verify(value, server.public_key)
            assert signature is Signature.VALID
            assert loads(document).version == version + 1
            update = await watcher.next()  # the first update since the forgeries
            assert update.version == version + 1
            async with grpc.aio.insecure_channel(f"unix:{server.admin_socket}") as channel:
                routes = await pb_grpc.AdminStub(channel).ListRoutes(pb.ListRoutesRequest())
            states = {(r.edge, r.route): r.state for r in routes.routes}
            assert states[("rogue", "10.244.1.0/24")] == PENDING
            assert states[("vpc-a", "10.244.0.0/16")] == SERVING
            watcher.call.cancel()

    run(body)


def test_a_restarting_controller_refuses_a_forged_stored_state(
    cluster: EtcdCluster, ca: TestCA, prefix: str, tmp_path: Path
) -> None:
    attacker = EtcdClient(cluster.client_urls, tls=client_tls(ca, "attacker"))
    attacker.put(f"{prefix}state".encode(), dumps(state(7, "10.244.0.0/16")))

    async def body() -> None:
        store = EtcdStore(cluster.client_urls, prefix, "a", key=KEY, tls=client_tls(ca))
        try:
            with pytest.raises(StoreError) as e:
                await store.load()
            assert str(e.value).startswith(f"etcd key '{prefix}state' (mod revision ")
            assert "holds a state not signed:" in str(e.value)
            assert "delete the key to start from an empty state" in str(e.value)
        finally:
            await store.close()
        # A replica's feed says what the signature is; it never vouches for it.
        other = EtcdStore(cluster.client_urls, prefix, "b", key=KEY, tls=client_tls(ca))
        try:
            feed = other.changes()
            assert await anext(feed) == Stored(state(7, "10.244.0.0/16"), Signature.MISSING)
            await feed.aclose()
        finally:
            await other.close()

    run(body)


# -- S15: members down, quorum lost, quorum back ------------------------------------------------


def test_s15_quorum_loss_and_recovery_over_tls(ca: TestCA, tmp_path: Path) -> None:
    """3 members; kill 1: writes go on, healthy; kill 2: unhealthy, writes fail with a clear
    error, the feed keeps its last state; restart them: healthy and writing again, with the
    same store object (no restart)."""

    async def body(c: EtcdCluster) -> None:
        tls = client_tls(ca)
        a = EtcdStore(c.client_urls, "/s15/", "a", key=KEY, tls=tls)
        b = EtcdStore(c.client_urls, "/s15/", "b", key=KEY, tls=tls)
        try:
            await a.load()
            await b.load()
            feed = b.changes()
            await a.save(state(1))
            assert await anext(feed) == Stored(state(1), Signature.VALID)
            c.kill(2)
            await a.save(state(2))
            assert await anext(feed) == Stored(state(2), Signature.VALID)
            assert await a.healthy()

            c.kill(1)

            async def unhealthy() -> bool:
                return not await a.healthy()

            await eventually("unhealthy without a quorum", unhealthy)
            with pytest.raises(StoreError) as e:
                await a.save(state(3))
            assert str(e.value).startswith("cannot save to etcd key '/s15/state': ")
            assert c.client_urls[0] in str(e.value)
            pending = asyncio.ensure_future(anext(feed))
            await asyncio.sleep(1.0)
            assert not pending.done()  # nothing new: the replica keeps what it has

            c.restart(1)
            c.restart(2)

            async def healthy() -> bool:
                return await a.healthy()

            await eventually("healthy again with the quorum back", healthy)

            async def writes() -> bool:
                try:
                    await a.save(state(4))
                except StoreConflict:
                    # The write that failed without quorum was proposed, and committed
                    # when the quorum came back: what the service does, load and decide again.
                    assert await a.load() == state(3)
                    return False
                except StoreError:
                    return False
                return True

            await eventually("quorum restored: writes resume", writes)
            seen = await asyncio.wait_for(pending, 30)
            assert seen in (Stored(state(3), Signature.VALID), Stored(state(4), Signature.VALID))
            assert await b.load() == state(4)
            await feed.aclose()
        finally:
            await a.close()
            await b.close()

    with EtcdCluster(tmp_path / "etcd", tls=ca) as c:
        c.start()
        asyncio.run(asyncio.wait_for(body(c), 120))


def test_the_tls_context_trusts_ca_file_alone_and_checks_names(ca: TestCA, tmp_path: Path) -> None:
    context = client_tls(ca)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert [dict(c["subject"][0])["commonName"] for c in context.get_ca_certs()] == [
        "isthmus-test-ca"
    ]
    pair = ca.client("isthmus-controller")
    with pytest.raises(TLSFileError) as e:
        tls_context(tmp_path / "missing.pem", pair.cert, pair.key)
    missing = tmp_path / "missing.pem"
    assert (e.value.which, str(e.value)) == (
        "ca_file",
        f"{missing}: not a readable PEM CA certificate (No such file or directory)",
    )
    with pytest.raises(TLSFileError) as e:
        tls_context(ca.ca.cert, pair.cert, ca.server.key)  # a key of another certificate
    assert e.value.which == "cert_file"
    assert str(e.value).startswith(f"{pair.cert} with key_file {ca.server.key}: ")


def test_an_unusable_tls_file_is_a_startup_error_naming_its_key(
    cluster: EtcdCluster, ca: TestCA, prefix: str, tmp_path: Path
) -> None:
    cfg = etcd_config(tmp_path, cluster, ca, prefix)
    assert cfg.store.tls is not None
    bad = dataclasses.replace(cfg.store.tls, cert_file=tmp_path / "nothing.pem")
    cfg = dataclasses.replace(cfg, store=dataclasses.replace(cfg.store, tls=bad))

    async def body() -> None:
        with pytest.raises(ConfigError) as e:
            async with running(cfg):
                pass
        assert str(e.value).startswith(f"store.cert_file: {tmp_path / 'nothing.pem'} with ")

    run(body)

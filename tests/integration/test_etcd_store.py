"""controller.etcd_store.EtcdStore (and controller.etcd under it) against a real etcd cluster.

    EtcdCluster (module fixture): 3 etcd members on 127.0.0.1, free client and peer ports
        etcd0 <-> etcd1 <-> etcd2        every test uses its own key prefix
    replica A: EtcdStore ----+
    replica B: EtcdStore ----+--> all three client URLs (failover)

The member-failure test starts a cluster of its own and kills members one by one. Each test
runs its own event loop (asyncio.run). Needs /usr/bin/etcd (scripts/setup.sh installs
etcd-server); fails, never skips, without it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import nacl.bindings
import pytest

from controller.errors import StoreConflict, StoreError
from controller.etcd import EtcdClient
from controller.etcd_store import EtcdStore
from controller.etcd_wire import EtcdError, parse_endpoint, prefix_end
from controller.liveness import Liveness
from controller.state import Advertised, EdgeRecord, State, dumps
from controller.state_signature import Signature, sign
from controller.store import Store, Stored
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.signing import ControllerKey
from isthmus_lab.etcd import EtcdCluster, free_port

REPO = Path(__file__).resolve().parents[2]
KEY = ControllerKey.from_seed(bytes(range(32)))  # the controller key every replica shares
VALID = Signature.VALID
T = TypeVar("T")


def run(aw: Awaitable[T]) -> T:
    async def main() -> T:
        return await aw

    return asyncio.run(main())


def key(seed: int) -> PublicKey:
    pk, _ = nacl.bindings.crypto_box_seed_keypair(bytes([seed]) * 32)
    return PublicKey(pk)


def state(version: int, *routes: str) -> State:
    """A valid state at `version`: edge vpc-a advertising `routes`."""
    return State(
        version=version,
        edges=(
            EdgeRecord(
                EdgeName("vpc-a"),
                key(1),
                (Endpoint.parse("198.18.0.11:51820"),),
                tuple(Advertised(ipaddress.ip_network(r), 1) for r in routes),
            ),
        ),
    )


def live(edge: str, replica: str, version: int = 1) -> Liveness:
    return Liveness(EdgeName(edge), replica, True, version, "", 1_700_000_000.5)


async def eventually(what: str, check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    """Poll `check` until it holds; fail naming `what` after `within` seconds (a bound
    against hanging, not a timing assertion)."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still not the case after {within:.0f} s")
        await asyncio.sleep(0.1)


def _need_etcd() -> None:
    if shutil.which("etcd") is None:
        pytest.fail("etcd is not installed: run scripts/setup.sh (Debian package etcd-server)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    _need_etcd()
    with EtcdCluster(tmp_path_factory.mktemp("etcd")) as c:
        c.start()
        yield c


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return f"/test/{request.node.name}/"


@asynccontextmanager
async def replicas(
    endpoints: tuple[str, ...], prefix: str, *names: str, **kwargs: Any
) -> AsyncIterator[list[EtcdStore]]:
    stores = [EtcdStore(endpoints, prefix, n, key=KEY, **kwargs) for n in names]
    try:
        yield stores
    finally:
        for s in stores:
            await s.close()


# -- the client ---------------------------------------------------------------------------------


def test_endpoints_must_be_http_or_https_host_port() -> None:
    assert parse_endpoint("http://127.0.0.1:2379") == ("127.0.0.1", 2379)
    assert parse_endpoint("http://[::1]:2379/") == ("::1", 2379)
    assert parse_endpoint("https://etcd-0.example:2379") == ("etcd-0.example", 2379)
    for bad in ("127.0.0.1:2379", "ftp://a:2379", "http://a", "http://a:x", "http://a:1/v3"):
        with pytest.raises(ValueError) as e:
            parse_endpoint(bad)
        assert str(e.value) == (
            f"etcd endpoint {bad!r} is not of the form http://host:port or https://host:port"
        )
    with pytest.raises(ValueError):
        EtcdStore((), "/p/", "r", key=KEY)


def test_prefix_end() -> None:
    assert prefix_end(b"/isthmus/live/") == b"/isthmus/live0"
    assert prefix_end(b"a\xff") == b"b"


def test_unreachable_endpoints_are_a_store_error_naming_each() -> None:
    dead = (
        f"http://127.0.0.1:{free_port('127.0.0.1')}",
        f"http://127.0.0.1:{free_port('127.0.0.1')}",
    )

    async def main() -> None:
        async with replicas(dead, "/p/", "a", retry_for=0.5) as (a,):
            with pytest.raises(StoreError) as e:
                await a.load()
            assert not isinstance(e.value, StoreConflict)
            assert str(e.value) == (
                "cannot read etcd key '/p/state': no etcd endpoint answered: "
                f"{dead[0]}: Connection refused; {dead[1]}: Connection refused"
            )
            with pytest.raises(StoreError) as e:
                await a.save(state(1))
            assert dead[0] in str(e.value)
            with pytest.raises(StoreError):
                await a.liveness()
            assert not await a.healthy()
            await a.set_liveness(live("vpc-a", "a"))  # best effort: logs, never raises

    run(main())


# -- state ------------------------------------------------------------------------------------


def test_is_a_store(cluster: EtcdCluster) -> None:
    store: Store = EtcdStore(cluster.client_urls, "/p/", "replica-1", key=KEY)
    assert store.replica == "replica-1"
    run(store.close())


def test_empty_store_loads_version_0_and_is_healthy(cluster: EtcdCluster, prefix: str) -> None:
    async def main() -> None:
        async with replicas(cluster.client_urls, prefix, "a") as (a,):
            assert await a.load() == State()
            assert await a.healthy()

    run(main())


def test_save_load_round_trip(cluster: EtcdCluster, prefix: str) -> None:
    s1 = state(1, "10.96.0.0/16", "fd00:a::/48")

    async def main() -> None:
        async with replicas(cluster.client_urls, prefix, "a", "b") as (a, b):
            assert await a.load() == State()
            await a.save(s1)
            assert await b.load() == s1

    run(main())
    stored = EtcdClient(cluster.client_urls).range(f"{prefix}state".encode())
    assert [kv.value for kv in stored.kvs] == [sign(dumps(s1), KEY)]


def test_compare_and_set_between_two_replicas(cluster: EtcdCluster, prefix: str) -> None:
    async def main() -> None:
        async with replicas(cluster.client_urls, prefix, "a", "b") as (a, b):
            await a.load()
            await b.load()
            await a.save(state(1, "10.96.0.0/16"))
            with pytest.raises(StoreConflict) as e:
                await b.save(state(1, "10.97.0.0/16"))
            assert str(e.value).startswith(
                f"etcd key '{prefix}state' was written by another replica: found mod revision "
            )
            assert str(e.value).endswith(", expected no key")
            assert await b.load() == state(1, "10.96.0.0/16")
            with pytest.raises(StoreConflict) as e:
                await b.save(state(1, "10.97.0.0/16"))  # not newer than what it loaded
            assert "version 1 is stored; only a newer version may replace it" in str(e.value)
            await b.save(state(2, "10.97.0.0/16"))
            with pytest.raises(StoreConflict):
                await a.save(state(2, "10.98.0.0/16"))
            assert await a.load() == state(2, "10.97.0.0/16")
            await a.save(state(3))

    run(main())


def test_save_without_load_creates_only_if_absent(cluster: EtcdCluster, prefix: str) -> None:
    async def main() -> None:
        async with replicas(cluster.client_urls, prefix, "a", "b") as (a, b):
            await a.save(state(1))
            with pytest.raises(StoreConflict):
                await b.save(state(5))
            assert await b.load() == state(1)

    run(main())


def test_invalid_stored_state_is_an_error_naming_the_key(cluster: EtcdCluster, prefix: str) -> None:
    EtcdClient(cluster.client_urls).put(f"{prefix}state".encode(), b'{"version": "x"}')

    async def main() -> None:
        async with replicas(cluster.client_urls, prefix, "a") as (a,):
            with pytest.raises(StoreError) as e:
                await a.load()
            assert str(e.value).startswith(f"etcd key '{prefix}state' (mod revision ")
            assert "is not a valid controller state (" in str(e.value)

    run(main())


# -- changes ----------------------------------------------------------------------------------


def test_changes_yield_what_other_replicas_save(cluster: EtcdCluster, prefix: str) -> None:
    async def main() -> None:
        async with replicas(cluster.client_urls, prefix, "a", "b") as (a, b):
            await a.load()
            await b.load()
            feed = b.changes()
            await a.save(state(1, "10.96.0.0/16"))
            assert await anext(feed) == Stored(state(1, "10.96.0.0/16"), VALID)
            await a.save(state(2, "10.96.0.0/16", "10.97.0.0/16"))
            await a.save(state(3, "10.97.0.0/16"))
            assert await anext(feed) == Stored(state(2, "10.96.0.0/16", "10.97.0.0/16"), VALID)
            assert await anext(feed) == Stored(state(3, "10.97.0.0/16"), VALID)
            # What B saw counts as known: it can write on top of it, and its own write
            # does not come back to it.
            await b.save(state(4))
            await a.load()
            await a.save(state(5))
            assert await anext(feed) == Stored(state(5), VALID)
            await feed.aclose()

    run(main())


def test_changes_started_late_yield_the_newer_stored_state(
    cluster: EtcdCluster, prefix: str
) -> None:
    async def main() -> None:
        async with replicas(cluster.client_urls, prefix, "a", "b") as (a, b):
            await b.load()
            await a.save(state(1))
            feed = b.changes()
            assert await anext(feed) == Stored(state(1), VALID)
            await feed.aclose()

    run(main())


def test_changes_survive_silent_watch_streams(cluster: EtcdCluster, prefix: str) -> None:
    async def main() -> None:
        async with replicas(cluster.client_urls, prefix, "a", "b") as (a, b):
            b.watch_idle = 0.2  # reopen (reload, then watch again) five times a second
            await b.load()
            feed = b.changes()
            await a.save(state(1))
            assert await anext(feed) == Stored(state(1), VALID)
            for version in (2, 3):
                await asyncio.sleep(0.7)
                await a.save(state(version))
                assert await anext(feed) == Stored(state(version), VALID)
            await feed.aclose()

    run(main())


def test_changes_end_when_the_store_closes(cluster: EtcdCluster, prefix: str) -> None:
    async def main() -> None:
        a = EtcdStore(cluster.client_urls, prefix, "a", key=KEY)
        await a.load()

        async def collect() -> list[State]:
            return [s async for s in a.changes()]

        task = asyncio.create_task(collect())
        await asyncio.sleep(0.2)
        await a.close()
        assert await asyncio.wait_for(task, 10) == []
        assert not await a.healthy()
        with pytest.raises(StoreError):
            await a.save(state(1))

    run(main())


# -- liveness ---------------------------------------------------------------------------------


def test_liveness_appears_for_every_replica_and_vanishes_on_close(
    cluster: EtcdCluster, prefix: str
) -> None:
    async def main() -> None:
        async with replicas(cluster.client_urls, prefix, "a", "b") as (a, b):
            assert await b.liveness() == {}
            await a.set_liveness(live("vpc-a", "a"))
            await a.set_liveness(live("vpc-b", "a"))
            await a.set_liveness(live("vpc-a", "a", version=2))
            assert await b.liveness() == {
                "vpc-a": live("vpc-a", "a", version=2),
                "vpc-b": live("vpc-b", "a"),
            }
            await a.close()  # revokes its lease: its records go at once
            assert await b.liveness() == {}

    run(main())


def test_a_disconnected_record_never_hides_the_replica_the_edge_moved_to(
    cluster: EtcdCluster, prefix: str
) -> None:
    def gone(edge: str, replica: str) -> Liveness:
        return Liveness(EdgeName(edge), replica, False, 1, "stream ended", 1_700_000_001.0)

    async def main() -> None:
        async with replicas(cluster.client_urls, prefix, "a", "b") as (a, b):
            await a.set_liveness(live("vpc-a", "a"))
            await b.set_liveness(live("vpc-a", "b"))  # the edge moved to B
            await a.set_liveness(gone("vpc-a", "a"))  # A notices late
            assert await a.liveness() == {"vpc-a": live("vpc-a", "b")}
            await b.set_liveness(gone("vpc-a", "b"))  # B's own record: replaced
            await a.set_liveness(gone("vpc-b", "a"))  # nobody's record yet: written
            assert await a.liveness() == {"vpc-a": gone("vpc-a", "b"), "vpc-b": gone("vpc-b", "a")}

    run(main())


def test_liveness_of_a_killed_replica_expires_after_its_ttl(
    cluster: EtcdCluster, prefix: str
) -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        from controller.etcd_store import EtcdStore
        from controller.liveness import Liveness
        from isthmus.ids import EdgeName
        from isthmus.signing import ControllerKey

        async def main() -> None:
            key = ControllerKey.from_seed(bytes(range(32)))
            store = EtcdStore(
                sys.argv[1].split(","), sys.argv[2], "doomed", liveness_ttl=4, key=key
            )
            await store.set_liveness(Liveness(EdgeName("vpc-a"), "doomed", True, 1, "", 1.0))
            print("ready", flush=True)
            await asyncio.sleep(3600)

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'proto'}"}
    child = subprocess.Popen(
        [sys.executable, "-c", script, ",".join(cluster.client_urls), prefix],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n", "the replica process did not start"

        async def main() -> None:
            async with replicas(cluster.client_urls, prefix, "b") as (b,):
                assert set(await b.liveness()) == {"vpc-a"}
                # Alive, its keepalive holds the record past the TTL.
                await asyncio.sleep(5)
                assert set(await b.liveness()) == {"vpc-a"}
                child.kill()
                child.wait()

                async def gone() -> bool:
                    return await b.liveness() == {}

                await eventually("the killed replica's liveness record is gone", gone)

        run(main())
    finally:
        child.kill()
        child.wait()


def test_liveness_is_put_again_when_its_lease_expired(cluster: EtcdCluster, prefix: str) -> None:
    client = EtcdClient(cluster.client_urls)
    live_key = f"{prefix}live/vpc-a".encode()

    async def main() -> None:
        async with replicas(cluster.client_urls, prefix, "a", liveness_ttl=3) as (a,):
            await a.set_liveness(live("vpc-a", "a"))
            (first,) = client.range(live_key).kvs
            client.lease_revoke(first.lease)  # as etcd does when keepalives stop arriving
            assert client.range(live_key).kvs == ()

            async def back() -> bool:
                kvs = client.range(live_key).kvs
                return len(kvs) == 1 and kvs[0].lease not in (0, first.lease)

            await eventually("the liveness record is back under a new lease", back)
            assert await a.liveness() == {"vpc-a": live("vpc-a", "a")}
            await a.set_liveness(live("vpc-a", "a", version=2))
            assert await a.liveness() == {"vpc-a": live("vpc-a", "a", version=2)}

    run(main())


# -- member failures --------------------------------------------------------------------------


def test_one_member_down_is_fine_two_down_is_unhealthy(tmp_path: Path) -> None:
    _need_etcd()
    with EtcdCluster(tmp_path / "etcd") as c:
        c.start()

        async def main() -> None:
            async with replicas(c.client_urls, "/f/", "a", "b") as (a, b):
                await a.load()
                await b.load()
                await a.set_liveness(live("vpc-a", "a"))
                feed = b.changes()
                await a.save(state(1))
                assert await anext(feed) == Stored(state(1), VALID)
                await a.save(state(2))
                assert await anext(feed) == Stored(state(2), VALID)  # from the watch stream

                # Member 0 is every client's first endpoint, so B's watch stream is on it.
                c.kill(0)
                await a.save(state(3))
                # The watch moved to another member.
                assert await anext(feed) == Stored(state(3), VALID)
                assert await b.load() == state(3)
                await b.save(state(4))
                assert set(await b.liveness()) == {"vpc-a"}
                assert await a.healthy()

                c.kill(1)

                async def unhealthy() -> bool:
                    return not await a.healthy()

                await eventually("healthy() turns False without quorum", unhealthy)
                with pytest.raises(StoreError) as e:
                    await asyncio.wait_for(a.save(state(5)), 60)
                assert not isinstance(e.value, StoreConflict)
                assert str(e.value).startswith(
                    "cannot save to etcd key '/f/state': no etcd endpoint answered: "
                )
                for url in c.client_urls:
                    assert url in str(e.value)
                with pytest.raises(StoreError):
                    await asyncio.wait_for(b.load(), 60)
                with pytest.raises(StoreError):
                    await asyncio.wait_for(b.liveness(), 60)
                await feed.aclose()

        run(main())


def test_client_fails_over_and_reports_each_endpoint(cluster: EtcdCluster, prefix: str) -> None:
    dead = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    client = EtcdClient((dead, *cluster.client_urls), timeout=2.0)
    client.put(f"{prefix}k".encode(), b"v")
    assert [kv.value for kv in client.range(f"{prefix}k".encode()).kvs] == [b"v"]
    with pytest.raises(EtcdError) as e:
        client.range(f"{prefix}k".encode(), endpoint=dead)
    assert str(e.value) == f"{dead}: Connection refused"
    assert e.value.endpoint == dead

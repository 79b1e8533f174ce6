"""The etcd store keeps the newest `[audit] max_entries` audit keys and deletes the rest.

    EtcdCluster (3 members on 127.0.0.1) <-- a replica appends 150 entries, keeps 100
Needs /usr/bin/etcd (scripts/setup.sh installs it); fails, never skips, without it.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import pytest

from controller.audit import AuditEntry
from controller.bounds import AuditConfig
from controller.etcd import EtcdClient
from controller.etcd_store import EtcdStore
from controller.etcd_wire import prefix_end
from isthmus.ids import EdgeName
from isthmus.signing import ControllerKey
from isthmus_lab.etcd import EtcdCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    if shutil.which("etcd") is None:
        pytest.fail("etcd is not installed: run scripts/setup.sh (Debian package etcd-server)")
    with EtcdCluster(tmp_path_factory.mktemp("etcd")) as c:
        c.start()
        yield c


def entry(version: int) -> AuditEntry:
    return AuditEntry(
        1_767_000_000.0 + version,
        version,
        "vpc-a",
        "edge_updated",
        EdgeName("vpc-a"),
        None,
        f"change {version}",
    )


def test_audit_keys_beyond_max_entries_are_deleted(cluster: EtcdCluster) -> None:
    prefix = "/retention/"
    written = [entry(v) for v in range(1, 151)]

    async def body() -> None:
        store = EtcdStore(
            cluster.client_urls,
            prefix,
            "replica-a",
            audit=AuditConfig(max_entries=100),
            key=ControllerKey.generate(),
        )
        try:
            for i in range(0, 150, 3):  # batches of 3, as one change's entries
                await store.append_audit(written[i : i + 3])
            assert await store.audit(1000) == written[50:]
        finally:
            await store.close()

    asyncio.run(body())
    client = EtcdClient(cluster.client_urls)
    start = (prefix + "audit/").encode()
    keys = [kv.key.decode() for kv in client.range(start, prefix_end(start)).kvs]
    assert len(keys) == 100
    assert keys[0] == prefix + "audit/00000000000000000051-000000"
    assert keys[-1] == prefix + "audit/00000000000000000150-000000"

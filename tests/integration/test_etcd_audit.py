"""The audit log in etcd: keys <prefix>audit/<version>-<index>, read by any replica.

    EtcdCluster (3 members on 127.0.0.1) <-- replica A appends, replica B reads
Needs /usr/bin/etcd (scripts/setup.sh installs it); fails, never skips, without it.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import pytest

from controller.audit import AuditEntry, decode
from controller.etcd import EtcdClient
from controller.etcd_store import EtcdStore
from controller.etcd_wire import prefix_end
from isthmus.ids import EdgeName
from isthmus.routemap import parse_route
from isthmus.signing import ControllerKey
from isthmus_lab.etcd import EtcdCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    if shutil.which("etcd") is None:
        pytest.fail("etcd is not installed: run scripts/setup.sh (Debian package etcd-server)")
    with EtcdCluster(tmp_path_factory.mktemp("etcd")) as c:
        c.start()
        yield c


def entry(version: int, kind: str, route: str | None = None) -> AuditEntry:
    return AuditEntry(
        1_767_000_000.0 + version,
        version,
        "vpc-a" if version < 3 else "operator",
        kind,
        EdgeName("vpc-a"),
        parse_route(route) if route else None,
        f"{kind} at {version}",
    )


def test_audit_entries_are_keys_in_version_order(cluster: EtcdCluster) -> None:
    prefix = "/test/audit/"
    written = [
        entry(1, "edge_joined"),
        entry(1, "route_serving", "10.244.0.0/16"),
        entry(2, "route_pending", "10.245.0.0/16"),
        entry(10, "route_approved", "10.245.0.0/16"),
    ]

    async def body() -> None:
        key = ControllerKey.generate()
        a = EtcdStore(cluster.client_urls, prefix, "replica-a", key=key)
        b = EtcdStore(cluster.client_urls, prefix, "replica-b", key=key)
        try:
            assert await b.audit(10) == []
            await a.append_audit(written[:2])
            await a.append_audit(written[2:3])
            await a.append_audit([])
            await a.append_audit(written[3:])
            assert await b.audit(10) == written
            assert await b.audit(2) == written[2:]
            assert await b.audit(0) == []
        finally:
            await a.close()
            await b.close()

    asyncio.run(body())
    client = EtcdClient(cluster.client_urls)
    start = (prefix + "audit/").encode()
    kvs = client.range(start, prefix_end(start)).kvs
    assert [kv.key.decode() for kv in kvs] == [
        prefix + "audit/00000000000000000001-000000",
        prefix + "audit/00000000000000000001-000001",
        prefix + "audit/00000000000000000002-000000",
        prefix + "audit/00000000000000000010-000000",
    ]
    assert [decode(kv.value) for kv in kvs] == written

"""The audit entry codec (pure) and the file store's append-only audit.log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.audit import AuditEntry, decode, encode, entries
from controller.change import CHANGE_KINDS, Change
from controller.file_store import AUDIT_FILE, FileStore
from isthmus.ids import EdgeName
from isthmus.routemap import parse_route

ENTRY = AuditEntry(
    time=1_767_323_045.678,
    version=8,
    actor="operator",
    kind="route_approved",
    edge=EdgeName("rogue"),
    route=parse_route("10.97.1.0/24"),
    reason="route 10.97.1.0/24 of edge 'rogue' approved by an operator; it serves",
)


def test_encode_is_one_sorted_json_line() -> None:
    line = encode(ENTRY)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    doc = json.loads(line)
    assert list(doc) == ["actor", "edge", "kind", "reason", "route", "time", "version"]
    assert doc["route"] == "10.97.1.0/24" and doc["version"] == 8
    assert decode(line) == ENTRY


def test_an_edge_change_has_no_route() -> None:
    e = AuditEntry(1.0, 1, "vpc-a", "edge_joined", EdgeName("vpc-a"), None, "joined")
    assert json.loads(encode(e))["route"] is None
    assert decode(encode(e)) == e


@given(
    t=st.floats(min_value=0, max_value=4e9),
    version=st.integers(min_value=0, max_value=2**63),
    actor=st.text(max_size=40),
    kind=st.sampled_from(sorted(CHANGE_KINDS)),
    route=st.sampled_from([None, "10.0.0.0/8", "fd00::/48", "0.0.0.0/0"]),
    reason=st.text(max_size=200),
)
def test_round_trip(
    t: float, version: int, actor: str, kind: str, route: str | None, reason: str
) -> None:
    e = AuditEntry(
        t, version, actor, kind, EdgeName("vpc-a"), parse_route(route) if route else None, reason
    )
    line = encode(e)
    assert line.count(b"\n") == 1
    assert decode(line) == e


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        decode(data)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"time": "x"}, "time: 'x' is not a number"),
        ({"time": -1}, "time: -1 is not a unix time"),
        ({"version": 1.5}, "version: 1.5 is not an integer"),
        ({"version": True}, "version: True is not an integer"),
        ({"actor": None}, "actor: None is not a string"),
        ({"kind": "route_eaten"}, "kind: 'route_eaten' is not one of edge_joined"),
        ({"edge": "Not An Edge"}, "edge: "),
        ({"route": "10.0.0.1/8"}, "route: "),
        ({"route": 5}, "route: 5 is not a string or null"),
        ({"reason": 1}, "reason: 1 is not a string"),
    ],
)
def test_decode_names_the_bad_field(change: dict[str, object], error: str) -> None:
    doc = json.loads(encode(ENTRY)) | change
    with pytest.raises(ValueError) as e:
        decode(json.dumps(doc).encode())
    assert str(e.value).startswith(error)


def test_decode_names_a_missing_field_and_refuses_non_objects() -> None:
    doc = json.loads(encode(ENTRY))
    del doc["actor"]
    with pytest.raises(ValueError, match=r"^actor: missing$"):
        decode(json.dumps(doc).encode())
    for bad in (b"[]", b"1", b"{", b"\xff"):
        with pytest.raises(ValueError):
            decode(bad)


def test_entries_carry_the_version_actor_and_time() -> None:
    changes = (
        Change("edge_joined", EdgeName("vpc-a"), None, "edge 'vpc-a' joined"),
        Change("route_serving", EdgeName("vpc-a"), parse_route("10.0.0.0/8"), "serves"),
    )
    got = entries(changes, 3, "vpc-a", 12.5)
    assert [(e.kind, e.version, e.actor, e.time, e.route) for e in got] == [
        ("edge_joined", 3, "vpc-a", 12.5, None),
        ("route_serving", 3, "vpc-a", 12.5, parse_route("10.0.0.0/8")),
    ]
    assert entries(changes, 3, "x" * 500, 0.0)[0].actor == "x" * 80


def _entry(version: int, i: int = 0) -> AuditEntry:
    return AuditEntry(float(version), version, "config", "edge_joined", EdgeName("e"), None, str(i))


def test_file_store_appends_and_reads_the_tail(tmp_path: Path) -> None:
    async def body() -> None:
        store = FileStore.open(tmp_path)
        assert await store.audit(10) == []
        await store.append_audit([])
        assert not (tmp_path / AUDIT_FILE).exists()
        for v in range(1, 201):
            await store.append_audit([_entry(v, 0), _entry(v, 1)])
        path = tmp_path / AUDIT_FILE
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert len(path.read_bytes().splitlines()) == 400
        last = await store.audit(3)
        assert [(e.version, e.reason) for e in last] == [(199, "1"), (200, "0"), (200, "1")]
        assert len(await store.audit(1000)) == 400
        assert await store.audit(0) == []
        # A new store on the same directory (a restart) appends after what is there.
        again = FileStore.open(tmp_path)
        await again.append_audit([_entry(201)])
        assert [e.version for e in await again.audit(2)] == [200, 201]
        await store.close()
        await again.close()

    asyncio.run(body())


def test_file_store_skips_a_torn_or_invalid_line(tmp_path: Path) -> None:
    async def body() -> None:
        store = FileStore.open(tmp_path)
        await store.append_audit([_entry(1)])
        with open(tmp_path / AUDIT_FILE, "ab") as f:
            f.write(b'{"actor": "config", "edge"')  # a crash mid-write
        await store.append_audit([_entry(2)])  # starts a line of its own
        assert [e.version for e in await store.audit(10)] == [1, 2]

    asyncio.run(body())


def test_file_store_tail_reads_across_chunks(tmp_path: Path) -> None:
    async def body() -> None:
        store = FileStore.open(tmp_path)
        long = "r" * 2000
        batch = [
            AuditEntry(1.0, v, "config", "edge_joined", EdgeName("e"), None, long)
            for v in range(1, 101)
        ]
        await store.append_audit(batch)
        got = await store.audit(40)
        assert [e.version for e in got] == list(range(61, 101))
        assert all(e.reason == long for e in got)

    asyncio.run(body())

"""controller.file_store.FileStore: round trip, compare-and-set, atomic writes, clear errors for a
bad state file, in-memory liveness, health, and a change feed that only ends.

Each test runs its own event loop (asyncio.run) on a fresh state_dir.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import stat
from collections.abc import Awaitable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import nacl.bindings
import pytest

from controller.errors import StoreConflict, StoreError
from controller.file_store import STATE_FILE, FileStore
from controller.liveness import Liveness, liveness_from_json, liveness_to_json
from controller.state import Advertised, EdgeRecord, State, dumps, loads
from controller.store import Store
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.lease import Lease

T = TypeVar("T")


def run(aw: Awaitable[T]) -> T:
    async def main() -> T:
        return await aw

    return asyncio.run(main())


def key(seed: int) -> PublicKey:
    pk, _ = nacl.bindings.crypto_box_seed_keypair(bytes([seed]) * 32)
    return PublicKey(pk)


NET_A = ipaddress.ip_network("10.96.0.0/16")
NET_B = ipaddress.ip_network("fd00:b::/48")
STATE = State(
    version=7,
    edges=(
        EdgeRecord(
            EdgeName("vpc-a"),
            key(1),
            (Endpoint.parse("198.18.0.11:51820"), Endpoint.parse("[2001:db8::1]:51820")),
            (Advertised(NET_A, 3),),
        ),
        EdgeRecord(EdgeName("vpc-b"), key(2), (), (Advertised(NET_B, 5),)),
    ),
    approvals=((EdgeName("vpc-b"), NET_B),),
    leases=(
        (EdgeName("vpc-a"), NET_A, Lease(7, 1_800_000_000, bytes(range(64)))),
        (EdgeName("vpc-b"), NET_B, Lease(6, 1_800_000_000, bytes(64))),
    ),
)


def at(version: int) -> State:
    return State(version=version)


def test_is_a_store() -> None:
    store: Store = FileStore(Path("/nonexistent"), replica="r1")
    assert store.replica == "r1"


def test_replica_defaults_to_host_and_pid(tmp_path: Path) -> None:
    assert FileStore.open(tmp_path).replica.endswith(f"-{os.getpid()}")


def test_missing_file_is_an_empty_state(tmp_path: Path) -> None:
    assert run(FileStore.open(tmp_path).load()) == State()


def test_round_trip(tmp_path: Path) -> None:
    run(FileStore.open(tmp_path).save(STATE))
    assert run(FileStore.open(tmp_path).load()) == STATE


def test_file_holds_the_state_document(tmp_path: Path) -> None:
    run(FileStore.open(tmp_path).save(STATE))
    data = (tmp_path / STATE_FILE).read_bytes()
    assert data == dumps(STATE)
    assert json.loads(data)["version"] == 7
    assert loads(data) == STATE


def test_save_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = FileStore.open(tmp_path)

    async def main() -> State:
        await store.save(STATE)
        await store.save(at(8))
        return await store.load()

    assert run(main()) == at(8)
    assert sorted(os.listdir(tmp_path)) == [STATE_FILE]
    assert stat.S_IMODE((tmp_path / STATE_FILE).stat().st_mode) == 0o600


def test_save_of_a_version_not_newer_than_the_loaded_one_is_a_conflict(tmp_path: Path) -> None:
    run(FileStore.open(tmp_path).save(STATE))
    store = FileStore.open(tmp_path)

    async def main() -> None:
        assert await store.load() == STATE
        for version in (6, 7):
            with pytest.raises(StoreConflict) as e:
                await store.save(at(version))
            assert str(e.value) == (
                f"cannot save version {version} to {tmp_path / STATE_FILE}: "
                "version 7 is stored; only a newer version may replace it"
            )
        await store.save(at(8))
        with pytest.raises(StoreConflict):
            await store.save(at(8))  # against the version it saved last
        await store.save(at(9))

    run(main())
    assert run(FileStore.open(tmp_path).load()) == at(9)


def test_failed_write_keeps_old_state_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore.open(tmp_path)
    run(store.save(STATE))

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StoreError) as e:
        run(store.save(at(8)))
    assert str(e.value) == f"cannot write {tmp_path / STATE_FILE}: No space left on device"
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == [STATE_FILE]
    assert run(store.load()) == STATE
    run(store.save(at(8)))  # the failed save did not count as saved


def test_open_creates_state_dir_0700(tmp_path: Path) -> None:
    state_dir = tmp_path / "a" / "state"
    run(FileStore.open(state_dir).save(STATE))
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700


def test_open_refuses_a_file_as_state_dir(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(StoreError) as e:
        FileStore.open(f)
    assert str(e.value) == f"cannot create state directory {f}: File exists"


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[]",
        '{"version": -1, "edges": []}',
        '{"version": 1, "edges": [{"name": "a"}]}',
        b"\xff\xfe".decode("latin-1"),
    ],
)
def test_corrupt_file_is_an_error_naming_the_file(tmp_path: Path, text: str) -> None:
    (tmp_path / STATE_FILE).write_text(text, encoding="latin-1")
    with pytest.raises(ValueError) as detail:
        loads(text.encode("latin-1"))
    with pytest.raises(StoreError) as e:
        run(FileStore.open(tmp_path).load())
    assert str(e.value) == (
        f"{tmp_path / STATE_FILE} is not a valid controller state file ({detail.value}); "
        "restore it from a backup or remove it to start from an empty state"
    )


def test_unreadable_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).mkdir()
    with pytest.raises(StoreError) as e:
        run(FileStore.open(tmp_path).load())
    assert str(e.value) == f"cannot read {tmp_path / STATE_FILE}: Is a directory"


def test_liveness_is_kept_in_memory_per_edge(tmp_path: Path) -> None:
    store = FileStore.open(tmp_path, replica="r1")
    a1 = Liveness(EdgeName("vpc-a"), "r1", True, 3, "", 1000.0)
    a2 = Liveness(EdgeName("vpc-a"), "r1", False, 4, "lease expired", 1001.5)
    b = Liveness(EdgeName("vpc-b"), "r1", True, 4, "", 1002.0)

    async def main() -> dict[EdgeName, Liveness]:
        assert await store.liveness() == {}
        for info in (a1, b, a2):
            await store.set_liveness(info)
        return await store.liveness()

    assert run(main()) == {"vpc-a": a2, "vpc-b": b}
    assert os.listdir(tmp_path) == []


def test_healthy_while_the_state_dir_is_writable(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    store = FileStore.open(state_dir)

    async def main() -> tuple[bool, bool, bool]:
        first = await store.healthy()
        state_dir.rmdir()
        gone = await store.healthy()
        state_dir.mkdir()
        back = await store.healthy()
        return first, gone, back

    assert run(main()) == (True, False, True)


def test_changes_never_yields_and_ends_at_close(tmp_path: Path) -> None:
    store = FileStore.open(tmp_path)

    async def main() -> list[State]:
        async def collect() -> list[State]:
            return [s async for s in store.changes()]

        task = asyncio.create_task(collect())
        await store.save(STATE)
        await asyncio.sleep(0)
        assert not task.done()
        await store.close()
        got = await task
        assert not await store.healthy()
        return got

    assert run(main()) == []


def test_liveness_json_round_trip() -> None:
    info = Liveness(EdgeName("vpc-a"), "host-12", True, 9, 'refused: "x"', 1700000000.25)
    data = liveness_to_json(info)
    assert json.loads(data) == {
        "edge": "vpc-a",
        "replica": "host-12",
        "connected": True,
        "applied_version": 9,
        "last_error": 'refused: "x"',
        "reported_at": 1700000000.25,
    }
    assert liveness_from_json(data) == info
    with_epoch = replace(info, epoch="00" * 16)
    assert json.loads(liveness_to_json(with_epoch))["epoch"] == "00" * 16
    assert liveness_from_json(liveness_to_json(with_epoch)) == with_epoch
    bad = json.loads(liveness_to_json(with_epoch)) | {"epoch": "xyz"}
    with pytest.raises(ValueError, match="epoch: 'xyz' is not the hex of an epoch"):
        liveness_from_json(json.dumps(bad).encode())


@pytest.mark.parametrize(
    ("doc", "detail"),
    [
        ("[]", "not a JSON object"),
        ('{"edge": "vpc-a"}', "replica: None is not a string"),
        (
            '{"edge": "vpc-a", "replica": "r", "connected": 1, "applied_version": 1, '
            '"last_error": "", "reported_at": 1}',
            "connected: 1 is not a boolean",
        ),
        (
            '{"edge": "vpc-a", "replica": "r", "connected": true, "applied_version": true, '
            '"last_error": "", "reported_at": 1}',
            "applied_version: True is not an integer",
        ),
    ],
)
def test_liveness_json_refuses_bad_records(doc: str, detail: str) -> None:
    with pytest.raises(ValueError) as e:
        liveness_from_json(doc.encode())
    assert str(e.value) == detail

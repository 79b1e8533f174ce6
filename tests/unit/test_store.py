"""controller.store: round trip, atomic writes, and clear errors for a bad state file."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
from pathlib import Path

import nacl.bindings
import pytest

from controller.errors import StoreError
from controller.store import STATE_FILE, FileStore, Store, decode, encode
from isthmus.endpoint import Endpoint
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.routemap import EdgeEntry, RouteMap


def key(seed: int) -> PublicKey:
    pk, _ = nacl.bindings.crypto_box_seed_keypair(bytes([seed]) * 32)
    return PublicKey(pk)


MAP = RouteMap(
    version=7,
    edges=(
        EdgeEntry(
            EdgeName("vpc-a"),
            key(1),
            (Endpoint.parse("198.18.0.11:51820"), Endpoint.parse("[2001:db8::1]:51820")),
            (ipaddress.ip_network("10.96.0.0/16"), ipaddress.ip_network("10.244.0.0/16")),
        ),
        EdgeEntry(EdgeName("vpc-b"), key(2), (), (ipaddress.ip_network("fd00:b::/48"),)),
    ),
)


def test_is_a_store() -> None:
    store: Store = FileStore(Path("/nonexistent"))
    assert store is not None


def test_missing_file_is_an_empty_map(tmp_path: Path) -> None:
    assert FileStore.open(tmp_path).load() == RouteMap(version=0)


def test_round_trip(tmp_path: Path) -> None:
    store = FileStore.open(tmp_path)
    store.save(MAP)
    assert FileStore.open(tmp_path).load() == MAP
    assert decode(encode(MAP)) == MAP


def test_file_format(tmp_path: Path) -> None:
    store = FileStore.open(tmp_path)
    store.save(MAP)
    doc = json.loads((tmp_path / STATE_FILE).read_text())
    assert doc["version"] == 7
    assert doc["edges"][0] == {
        "name": "vpc-a",
        "public_key": str(key(1)),
        "endpoints": ["198.18.0.11:51820", "[2001:db8::1]:51820"],
        "routes": ["10.96.0.0/16", "10.244.0.0/16"],
    }


def test_save_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = FileStore.open(tmp_path)
    store.save(MAP)
    store.save(RouteMap(version=8))
    assert sorted(os.listdir(tmp_path)) == [STATE_FILE]
    assert store.load() == RouteMap(version=8)
    assert stat.S_IMODE((tmp_path / STATE_FILE).stat().st_mode) == 0o600


def test_failed_write_keeps_old_state_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore.open(tmp_path)
    store.save(MAP)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StoreError) as e:
        store.save(RouteMap(version=8))
    assert str(e.value) == f"cannot write {tmp_path / STATE_FILE}: No space left on device"
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == [STATE_FILE]
    assert store.load() == MAP


def test_open_creates_state_dir_0700(tmp_path: Path) -> None:
    state_dir = tmp_path / "a" / "state"
    FileStore.open(state_dir).save(MAP)
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700


def test_open_refuses_a_file_as_state_dir(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(StoreError) as e:
        FileStore.open(f)
    assert str(e.value) == f"cannot create state directory {f}: File exists"


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        (
            "{not json",
            "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        ("[]", "the top level must be an object with keys 'version' and 'edges'"),
        ('{"version": -1, "edges": []}', "version: -1 is not a non-negative integer"),
        ('{"version": true, "edges": []}', "version: True is not a non-negative integer"),
        ('{"version": 1, "edges": {}}', "edges: not a list"),
        (
            '{"version": 1, "edges": [{"name": "a"}]}',
            "edges[0]: not an object with keys endpoints, name, public_key, routes",
        ),
        (
            '{"version": 1, "edges": [{"name": "a", "public_key": "x", "endpoints": [], '
            '"routes": []}]}',
            "edges[0]: 'x' is not a base64 public key (44 characters, as printed by "
            "'isthmus keygen')",
        ),
    ],
)
def test_corrupt_file_is_an_error_naming_the_file(tmp_path: Path, text: str, detail: str) -> None:
    (tmp_path / STATE_FILE).write_text(text)
    with pytest.raises(StoreError) as e:
        FileStore.open(tmp_path).load()
    assert str(e.value) == (
        f"{tmp_path / STATE_FILE} is not a valid controller state file ({detail}); "
        "restore it from a backup or remove it to start from an empty map"
    )


def test_state_breaking_a_map_rule_is_refused(tmp_path: Path) -> None:
    doc = encode(MAP)
    doc["edges"][1]["routes"] = ["10.96.1.0/24"]
    (tmp_path / STATE_FILE).write_text(json.dumps(doc))
    with pytest.raises(StoreError) as e:
        FileStore.open(tmp_path).load()
    assert "overlaps route 10.96.0.0/16 of edge 'vpc-a'" in str(e.value)
    assert str(tmp_path / STATE_FILE) in str(e.value)

"""Key files (isthmus_io.keyfiles): the edge's private key and the controller's seed, as
`isthmus keygen` writes them: mode 0600, never overwritten, refused when others can read them,
errors without key material."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from nacl.bindings import crypto_scalarmult_base

from isthmus.keys import PublicKey
from isthmus.signing import ControllerKey
from isthmus_io.keyfiles import read_controller_key, read_private_key, write_controller_key

KEY = ControllerKey.from_seed(bytes(range(32)))


def test_keygen_writes_owner_only_file_and_prints_public_key(tmp_path: Path) -> None:
    out = tmp_path / "edge.key"
    proc = subprocess.run(
        [sys.executable, "-m", "isthmus", "keygen", "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    private = read_private_key(out)
    public = PublicKey.from_base64(proc.stdout.strip())
    assert public.raw == crypto_scalarmult_base(private)
    assert out.read_text().strip() not in proc.stdout + proc.stderr
    again = subprocess.run(
        [sys.executable, "-m", "isthmus", "keygen", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr


def test_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "k"
    out.write_text("A" * 43 + "=\n")
    os.chmod(out, 0o644)
    with pytest.raises(ValueError, match=r"accessible by group or others \(mode 644\)"):
        read_private_key(out)


def test_key_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "controller.key"
    write_controller_key(path, KEY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_controller_key(path) == KEY
    with pytest.raises(FileExistsError):
        write_controller_key(path, ControllerKey.generate())
    assert read_controller_key(path) == KEY


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "controller.key"
    write_controller_key(path, KEY)
    os.chmod(path, 0o640)
    with pytest.raises(ValueError, match=r"accessible by group or others \(mode 640\)"):
        read_controller_key(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not base64!\n", "does not hold a base64 controller key"),
        ("AAAA\n", "holds 3 bytes; a controller key seed is 32 bytes"),
    ],
)
def test_bad_key_files_are_refused_without_key_material(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "controller.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    with pytest.raises(ValueError, match=message) as info:
        read_controller_key(path)
    assert text.strip() not in str(info.value)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read .*No such file"):
        read_controller_key(tmp_path / "absent")

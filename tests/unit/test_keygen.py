"""`isthmus keygen --controller`: the controller's Ed25519 key file and public key."""

from __future__ import annotations

import base64
import stat
import subprocess
import sys
from pathlib import Path

from isthmus.signing import ControllerPublicKey
from isthmus_io.keyfiles import read_controller_key


def keygen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "isthmus", "keygen", *args], capture_output=True, text=True
    )


def test_controller_key_file_and_printed_public_key(tmp_path: Path) -> None:
    out = tmp_path / "controller.key"
    proc = keygen("--controller", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key = read_controller_key(out)
    public = ControllerPublicKey.from_base64(proc.stdout.strip())
    assert public == key.public
    assert public.verify(b"m", key.sign(b"m"))
    assert base64.b64encode(key.seed).decode() not in proc.stdout + proc.stderr
    again = keygen("--controller", "--out", str(out))
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
    assert read_controller_key(out) == key


def test_edge_key_stays_the_default(tmp_path: Path) -> None:
    out = tmp_path / "edge.key"
    proc = keygen("--out", str(out))
    assert proc.returncode == 0, proc.stderr
    # An edge key file holds a Curve25519 private key, not an Ed25519 seed: the public
    # key printed is the X25519 one, which the seed's Ed25519 public key is not.
    assert read_controller_key(out).public.to_base64() != proc.stdout.strip()


def test_unwritable_directory(tmp_path: Path) -> None:
    proc = keygen("--controller", "--out", str(tmp_path / "absent" / "k"))
    assert proc.returncode == 1 and "cannot write" in proc.stderr

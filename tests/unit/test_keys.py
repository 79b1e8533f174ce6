"""Key files and public key parsing."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from nacl.bindings import crypto_scalarmult_base

from isthmus.keys import PublicKey
from isthmus_io.keyfiles import read_private_key


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


def test_public_key_base64_errors() -> None:
    with pytest.raises(ValueError, match="is not a base64 public key"):
        PublicKey.from_base64("not base64!")
    with pytest.raises(ValueError, match="a public key is 32 bytes, got 3"):
        PublicKey.from_base64("AAAA")


def test_every_key_libsodium_refuses_is_refused_up_front() -> None:
    from nacl.bindings import crypto_box_beforenm, crypto_box_keypair
    from nacl.exceptions import CryptoError

    from isthmus.keys import _LOW_ORDER

    _, secret = crypto_box_keypair()
    assert len(_LOW_ORDER) == 14
    for raw in _LOW_ORDER:
        with pytest.raises(ValueError, match="low-order"):
            PublicKey(raw)
        with pytest.raises(CryptoError):
            crypto_box_beforenm(raw, secret)

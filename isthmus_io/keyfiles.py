"""Key files: an edge's private key and the controller's signing key (`isthmus keygen`).

Format (both): the 32 raw bytes (the Curve25519 private key; the Ed25519 seed) in standard
base64 on one line, mode 0600. Rules: a file readable by group or others is refused; a key
file is never overwritten; no error message ever contains key material.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from isthmus.keys import KEY_LEN
from isthmus.signing import ED25519_KEY_LEN, ControllerKey


def read_private_key(path: Path) -> bytes:
    """Read a private key file written by `isthmus keygen` (base64, one line).

    Raises:
        ValueError: unreadable, readable by group or others, or not a 32-byte base64 key.
            The message never contains key material.
    """
    return _read(path, KEY_LEN, "private key", "a private key")


def write_private_key(path: Path, raw: bytes) -> None:
    """Create `path` with mode 0600 holding `raw` as base64; refuse to overwrite.

    Raises:
        FileExistsError: the file exists.
    """
    _write(path, raw)


def read_controller_key(path: Path) -> ControllerKey:
    """Read a key file written by `isthmus keygen --controller` (base64 seed, one line).

    Raises:
        ValueError: unreadable, readable by group or others, or not a 32-byte base64 seed.
            The message never contains key material.
    """
    raw = _read(
        path,
        ED25519_KEY_LEN,
        "controller key (make one with 'isthmus keygen --controller --out FILE')",
        "a controller key seed",
    )
    return ControllerKey.from_seed(raw)


def write_controller_key(path: Path, key: ControllerKey) -> None:
    """Create `path` with mode 0600 holding the seed as base64; refuse to overwrite.

    Raises:
        FileExistsError: the file exists.
    """
    _write(path, key.seed)


def _read(path: Path, size: int, kind: str, what: str) -> bytes:
    """The `size` bytes a key file holds: one line of base64, readable by its owner only.
    `kind` and `what` name the key in errors, which never contain key material."""
    try:
        st = path.stat()
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(
            f"{path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            "allowed: readable only by its owner (chmod 600)"
        )
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{path} does not hold a base64 {kind}") from None
    if len(raw) != size:
        raise ValueError(f"{path} holds {len(raw)} bytes; {what} is {size} bytes")
    return raw


def _write(path: Path, raw: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(base64.b64encode(raw).decode("ascii") + "\n")

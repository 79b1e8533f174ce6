"""Public key parsing: base64, length and the low-order points refused up front."""

from __future__ import annotations

import pytest

from isthmus.keys import PublicKey


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

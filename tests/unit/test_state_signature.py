"""The signed state document (controller.state_signature): what verifies, what does not,
and that no input makes verification raise."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from controller.state import State, dumps
from controller.state_signature import CONTEXT, Signature, sign, verify
from isthmus.signing import ControllerKey

KEY = ControllerKey.from_seed(bytes(range(32)))
OTHER = ControllerKey.from_seed(bytes(range(1, 33)))
DOC = dumps(State(version=3))


def test_a_signed_document_verifies_with_the_key_only() -> None:
    data = sign(DOC, KEY)
    assert data.startswith(DOC) and data.count(b"\n") == 2
    assert verify(data, KEY.public) == (DOC, Signature.VALID)
    assert verify(data, OTHER.public) == (DOC, Signature.INVALID)
    assert verify(sign(DOC, OTHER), KEY.public) == (DOC, Signature.INVALID)
    # The signature covers the domain separator and the document, nothing else.
    signature = base64.b64decode(data[len(DOC) + len(b"ed25519 ") : -1])
    assert KEY.public.verify(CONTEXT + DOC, signature)
    assert not KEY.public.verify(DOC, signature)


def test_unsigned_tampered_and_malformed_documents() -> None:
    assert verify(DOC, KEY.public) == (DOC, Signature.MISSING)
    data = sign(DOC, KEY)
    tampered = data.replace(b'"version":3', b'"version":4')
    assert verify(tampered, KEY.public)[1] is Signature.INVALID
    for line in (b"ed25519 !!\n", b"rsa AAAA\n", b"ed25519 " + base64.b64encode(bytes(64))):
        assert verify(DOC + line, KEY.public) == (DOC, Signature.INVALID)


@given(st.binary(max_size=300))
def test_any_bytes_verify_without_raising(data: bytes) -> None:
    document, signature = verify(data, KEY.public)
    assert data.startswith(document)
    assert signature in (Signature.MISSING, Signature.INVALID)

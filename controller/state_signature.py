"""The signed state document, and which stored state a replica may adopt.

Owns the form of the state in a shared store (controller.etcd_store), two lines:

    <the document: controller.state.dumps, one JSON line ending in a newline>
    ed25519 <signature: 64 bytes, standard base64><newline>

    signature = Ed25519(controller key, b"isthmus state v1\\0" || document)

Every replica holds the controller key, so a document that verifies was written by a
replica; one that does not came from someone else with write access to the store. The
domain separation keeps a state signature from ever passing as a lease (isthmus.lease)
or anything else the key signs.

Owns the adoption rule (`refusal`, used by `Registry.adopt`): a stored state is taken
only if its version is newer than the current one and its signature verifies. A state
that is not signed by the key is refused, and named by the worst thing it would do: lower
the `since` of a route the current state has (jump the first-come order), add an approval
no operator made, or else just being unsigned. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import enum

from controller.state import State
from isthmus.lease import SIGNATURE_LEN
from isthmus.signing import ControllerKey, ControllerPublicKey

CONTEXT = b"isthmus state v1\0"
_TAG = b"ed25519 "


class Signature(enum.Enum):
    """What the signature line of a stored document says."""

    VALID = "valid"  # present and verifies against the controller key
    MISSING = "missing"  # no signature line: the previous release, or not a replica
    INVALID = "invalid"  # present but malformed or made with another key, or the document changed


class Refusal(enum.StrEnum):
    """Why a stored state is not adopted (the `reason` of logs and metrics)."""

    NOT_NEWER = "not_newer"
    SINCE_LOWERED = "since_lowered"
    APPROVAL_ADDED = "approval_added"
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"


def sign(document: bytes, key: ControllerKey) -> bytes:
    """`document` (one line ending in a newline) followed by its signature line."""
    if not document.endswith(b"\n") or b"\n" in document[:-1]:
        raise ValueError("a state document is one line ending in a newline")
    signature = key.sign(CONTEXT + document)
    return document + _TAG + base64.b64encode(signature) + b"\n"


def verify(data: bytes, public: ControllerPublicKey) -> tuple[bytes, Signature]:
    """The document in `data` (what `sign` wrote, or a bare document) and its signature."""
    first, sep, rest = data.partition(b"\n")
    document = first + sep
    if not rest:
        return document, Signature.MISSING
    if not rest.startswith(_TAG) or not rest.endswith(b"\n"):
        return document, Signature.INVALID
    try:
        signature = base64.b64decode(rest[len(_TAG) : -1], validate=True)
    except (binascii.Error, ValueError):
        return document, Signature.INVALID
    if len(signature) != SIGNATURE_LEN or not public.verify(CONTEXT + document, signature):
        return document, Signature.INVALID
    return document, Signature.VALID


def refusal(current: State, candidate: State, signature: Signature) -> Refusal | None:
    """Why `candidate` (from the store) must not replace `current`, or None to take it.

    A candidate equal to `current` is None too: there is nothing to take.
    """
    if candidate == current:
        return None
    if candidate.version <= current.version:
        return Refusal.NOT_NEWER
    if signature is Signature.VALID:
        return None
    since = {(e.name, a.route): a.since for e in current.edges for a in e.advertised}
    for e in candidate.edges:
        for a in e.advertised:
            old = since.get((e.name, a.route))
            if a.since is not None and old is not None and a.since < old:
                return Refusal.SINCE_LOWERED
    if not set(candidate.approvals) <= set(current.approvals):
        return Refusal.APPROVAL_ADDED
    return Refusal.UNSIGNED if signature is Signature.MISSING else Refusal.BAD_SIGNATURE

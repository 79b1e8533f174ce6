"""isthmus.tlscert: the root is a function of the controller key; leaves chain to it."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding

from isthmus.signing import ControllerKey
from isthmus.tlscert import SERVER_NAME, issue_leaf, root_certificate

KEY = ControllerKey.from_seed(bytes(range(32)))
OTHER = ControllerKey.from_seed(bytes(range(1, 33)))
NOW = datetime.datetime(2026, 12, 3, 12, 0, tzinfo=datetime.UTC)


def cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_the_controllers_root_is_deterministic_for_a_key() -> None:
    assert root_certificate(KEY.public, KEY) == root_certificate(KEY.public, KEY)
    assert root_certificate(OTHER.public, OTHER) != root_certificate(KEY.public, KEY)


def test_the_edges_root_equals_the_controllers_but_for_the_signature_bits() -> None:
    served, built = cert(root_certificate(KEY.public, KEY)), cert(root_certificate(KEY.public))
    assert served.tbs_certificate_bytes == built.tbs_certificate_bytes
    assert served.signature != built.signature
    assert built.public_key() == served.public_key()
    assert isinstance(served.public_key(), ed25519.Ed25519PublicKey)
    assert served.public_key().public_bytes_raw() == KEY.public.raw  # type: ignore[union-attr]
    served.verify_directly_issued_by(served)  # the controller's root is really self-signed
    basic = served.extensions.get_extension_for_class(x509.BasicConstraints)
    usage = served.extensions.get_extension_for_class(x509.KeyUsage)
    assert basic.critical and basic.value.ca and usage.critical and usage.value.key_cert_sign


def test_another_key_gives_another_root() -> None:
    ours, theirs = cert(root_certificate(KEY.public)), cert(root_certificate(OTHER.public))
    assert ours.subject != theirs.subject and ours.public_key() != theirs.public_key()


def test_a_leaf_is_fresh_p256_for_the_server_name_and_chains_to_the_root() -> None:
    key_pem, chain = issue_leaf(KEY, NOW)
    certs = x509.load_pem_x509_certificates(chain)
    assert len(certs) == 2
    leaf, root = certs
    assert root.public_bytes(Encoding.PEM) == root_certificate(KEY.public, KEY)
    leaf.verify_directly_issued_by(root)
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == [SERVER_NAME]
    assert leaf.not_valid_before_utc == NOW - datetime.timedelta(days=1)
    assert leaf.not_valid_after_utc == NOW + datetime.timedelta(days=3650)
    assert issue_leaf(KEY, NOW)[0] != key_pem  # a new key every start
    assert b"PRIVATE KEY" in key_pem

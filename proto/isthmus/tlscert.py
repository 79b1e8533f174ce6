"""TLS for the Controller service, pinned to `controller_public_key` (docs/controller.md,
"The channel").

Owns the certificates and the gRPC credentials of both ends:

- the ROOT certificate is a function of the controller's Ed25519 public key alone:
  subject = issuer = CN "isthmus controller <first 8 characters of the key in base64>",
  serial 1, valid 2000-01-01 .. 9999-12-31, BasicConstraints CA (critical), KeyUsage
  keyCertSign (critical), subject public key = the controller's key. The controller
  self-signs it with its key; an edge builds the same certificate from the pinned key,
  self-signed with a throwaway key, because a trust anchor's own signature is never
  checked (RFC 5280 6.1): only its name and key matter, and they are byte-identical.
- the LEAF is made fresh at every controller start: an ECDSA P-256 key (BoringSSL, which
  gRPC uses, refuses Ed25519 for the handshake signature but verifies Ed25519 signatures
  in a chain), SAN DNS "isthmus-controller", valid from a day before `now` for 10 years,
  signed by the controller's Ed25519 key. The server presents leaf + root.
- the edge verifies the chain against that one root and the name "isthmus-controller"
  (`grpc.ssl_target_name_override`), so only a holder of the controller key can serve.

Pure apart from randomness (key generation, the throwaway key); never logs; no key files.
"""

from __future__ import annotations

import base64
import datetime
from typing import Final

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from isthmus.signing import ControllerKey, ControllerPublicKey

__all__ = [
    "SERVER_NAME",
    "TARGET_NAME_OPTION",
    "channel_credentials",
    "channel_options",
    "issue_leaf",
    "root_certificate",
    "server_credentials",
]

# The name the leaf is issued for and the edge checks, whatever address it dials.
SERVER_NAME: Final = "isthmus-controller"
TARGET_NAME_OPTION: Final = "grpc.ssl_target_name_override"
LEAF_VALIDITY: Final = datetime.timedelta(days=3650)
LEAF_BACKDATE: Final = datetime.timedelta(days=1)

_ROOT_NOT_BEFORE: Final = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_ROOT_NOT_AFTER: Final = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
_ROOT_SERIAL: Final = 1
_PEM = serialization.Encoding.PEM


def root_name(controller: ControllerPublicKey) -> x509.Name:
    """The root's subject and issuer: fixed, derived from the key only."""
    label = base64.b64encode(controller.raw).decode("ascii")[:8]
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"isthmus controller {label}")])


def _root(controller: ControllerPublicKey, signer: ed25519.Ed25519PrivateKey) -> x509.Certificate:
    name = root_name(controller)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ed25519.Ed25519PublicKey.from_public_bytes(controller.raw))
        .serial_number(_ROOT_SERIAL)
        .not_valid_before(_ROOT_NOT_BEFORE)
        .not_valid_after(_ROOT_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(signer, None)
    )


def _private(key: ControllerKey) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(key.seed)


def root_certificate(controller: ControllerPublicKey, key: ControllerKey | None = None) -> bytes:
    """The root certificate (PEM) for `controller`.

    With the controller's `key` it is self-signed (what the controller serves, the same
    bytes every time: Ed25519 is deterministic); without, it is signed by a throwaway key
    (what an edge trusts: the same certificate apart from the signature bits).

    Raises:
        ValueError: `key` is not the key of `controller`.
    """
    if key is not None and key.public != controller:
        raise ValueError("the controller key does not match the controller public key")
    signer = _private(key) if key is not None else ed25519.Ed25519PrivateKey.generate()
    return _root(controller, signer).public_bytes(_PEM)


def issue_leaf(key: ControllerKey, now: datetime.datetime) -> tuple[bytes, bytes]:
    """A fresh ECDSA P-256 leaf signed by the controller key: (leaf key PEM, chain PEM),
    the chain being leaf then root."""
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)]))
        .issuer_name(root_name(key.public))
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - LEAF_BACKDATE)
        .not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
        .sign(_private(key), None)
    )
    key_pem = leaf_key.private_bytes(
        _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, leaf.public_bytes(_PEM) + root_certificate(key.public, key)


def server_credentials(key: ControllerKey, now: datetime.datetime) -> grpc.ServerCredentials:
    """What the controller listens with: a fresh leaf and the root, no client certificates."""
    key_pem, chain = issue_leaf(key, now)
    return grpc.ssl_server_credentials([(key_pem, chain)])


def channel_credentials(controller: ControllerPublicKey) -> grpc.ChannelCredentials:
    """What a client dials with: trust only the root built from the pinned key."""
    return grpc.ssl_channel_credentials(root_certificates=root_certificate(controller))


def channel_options() -> tuple[tuple[str, str]]:
    """The channel option that makes the client check the name the leaf is issued for."""
    return ((TARGET_NAME_OPTION, SERVER_NAME),)

"""`isthmus keygen [--controller] --out FILE`: make an edge's or the controller's key pair.

Edge (default): a Curve25519 key pair; writes the private key, base64, to FILE and
prints the public key, which goes into the controller config.
`--controller`: an Ed25519 key pair; writes the 32-byte seed, base64, to FILE and prints
the public key, which goes into every edge config as `controller_public_key`.
Either way FILE is created with mode 0600 and never overwritten, and no private key
material is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nacl.bindings import crypto_box_keypair

from isthmus.keys import PublicKey, write_private_key
from isthmus.signing import ControllerKey, write_controller_key


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="isthmus keygen", description="Make a key pair; print the public key."
    )
    parser.add_argument("--out", required=True, type=Path, help="private key file to create")
    parser.add_argument(
        "--controller",
        action="store_true",
        help="make the controller's Ed25519 signing key instead of an edge key",
    )
    args = parser.parse_args(argv)
    try:
        if args.controller:
            key = ControllerKey.generate()
            write_controller_key(args.out, key)
            public_text = key.public.to_base64()
        else:
            public, private = crypto_box_keypair()
            write_private_key(args.out, private)
            public_text = PublicKey(public).to_base64()
    except FileExistsError:
        print(f"isthmus keygen: {args.out} exists; refusing to overwrite a key", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"isthmus keygen: cannot write {args.out}: {e.strerror}", file=sys.stderr)
        return 1
    print(public_text)
    return 0

"""`isthmus keygen --out FILE`: make an edge's Curve25519 key pair.

Writes the private key, base64, to FILE with mode 0600 (refusing to overwrite) and
prints the public key, base64, on stdout: that line goes into the controller config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nacl.bindings import crypto_box_keypair

from isthmus.keys import PublicKey, write_private_key


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="isthmus keygen", description="Make an edge key pair; print the public key."
    )
    parser.add_argument("--out", required=True, type=Path, help="private key file to create")
    args = parser.parse_args(argv)
    public, private = crypto_box_keypair()
    try:
        write_private_key(args.out, private)
    except FileExistsError:
        print(f"isthmus keygen: {args.out} exists; refusing to overwrite a key", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"isthmus keygen: cannot write {args.out}: {e.strerror}", file=sys.stderr)
        return 1
    print(PublicKey(public).to_base64())
    return 0

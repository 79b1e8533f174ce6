"""`isthmus keygen [--controller] --out FILE`: make an edge's or the controller's key pair.

Edge (default): a Curve25519 key pair; writes the private key, base64, to FILE and
prints the public key, which goes into the controller config.
`--controller`: an Ed25519 key pair; writes the 32-byte seed, base64, to FILE and prints
the public key, which goes into every edge config as `controller_public_key`.
Either way FILE is created with mode 0600 and never overwritten, and no private key
material is printed. The text output is the public key alone on one line (scripts and
the Terraform cloud-init redirect it to a file); `--json` prints
{"kind": "edge"|"controller", "public_key", "private_key_file"} (the file's path, never
its content). Exit codes: 0 written, 1 error (the file exists or cannot be written, or a
usage error).
"""

from __future__ import annotations

from pathlib import Path

from nacl.bindings import crypto_box_keypair

from isthmus import clikit
from isthmus.keys import PublicKey
from isthmus.signing import ControllerKey
from isthmus_io.keyfiles import write_controller_key, write_private_key


def main(argv: list[str]) -> int:
    prog = "isthmus keygen"
    parser = clikit.parser(prog, "Make a key pair; print the public key.")
    parser.add_argument("--out", required=True, type=Path, help="private key file to create")
    parser.add_argument(
        "--controller",
        action="store_true",
        help="make the controller's Ed25519 signing key instead of an edge key",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the public key and the file path as JSON"
    )
    args = clikit.parse(parser, argv)
    if isinstance(args, int):
        return args
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
        return clikit.fail(prog, f"{args.out} exists; refusing to overwrite a key")
    except OSError as e:
        return clikit.fail(prog, f"cannot write {args.out}: {e.strerror}")
    doc = {
        "kind": "controller" if args.controller else "edge",
        "public_key": public_text,
        "private_key_file": str(args.out),
    }
    clikit.emit(doc, args.json, public_text)
    return clikit.EXIT_OK

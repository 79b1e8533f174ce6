"""Throwaway TLS material for tests and labs: a CA, a server certificate, client certificates.

Owns the files under one directory, made with the `openssl` command (Debian `openssl`,
scripts/setup.sh): P-256 keys, certificates valid for two days, never reused outside the
directory. Not for production: the CA key sits next to what it signed.

    ca.pem ca.key            the CA (CN isthmus-test-ca)
    server.pem server.key    for the etcd members: SAN = every host given (IP or DNS),
                             extended key usage server and client (etcd dials itself)
    <name>.pem <name>.key    a client certificate (`client(name)`), CN = name
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from isthmus_lab.netns import LabError

OPENSSL = "openssl"
_DAYS = "2"
_CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A certificate and its private key, PEM files."""

    cert: Path
    key: Path


class TestCA:
    """A CA in `directory` that signs a server certificate for `hosts` and client ones."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")):
        if shutil.which(OPENSSL) is None:
            raise LabError("'openssl' is not installed (scripts/setup.sh installs openssl)")
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = KeyPair(self.dir / "ca.pem", self.dir / "ca.key")
        self._run(
            "req", "-x509", *_CURVE, "-keyout", str(self.ca.key), "-out", str(self.ca.cert),
            "-days", _DAYS, "-subj", "/CN=isthmus-test-ca",
        )  # fmt: skip
        names = [f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts]
        self.server = self._sign(
            "server", f"subjectAltName={','.join(names)}\nextendedKeyUsage=serverAuth,clientAuth\n"
        )

    def client(self, name: str) -> KeyPair:
        """A client certificate with CN `name` (made once, then reused)."""
        pair = KeyPair(self.dir / f"{name}.pem", self.dir / f"{name}.key")
        if pair.cert.exists():
            return pair
        return self._sign(name, "extendedKeyUsage=clientAuth\n")

    def _sign(self, name: str, extensions: str) -> KeyPair:
        pair = KeyPair(self.dir / f"{name}.pem", self.dir / f"{name}.key")
        request = self.dir / f"{name}.csr"
        ext = self.dir / f"{name}.ext"
        ext.write_text(extensions, encoding="ascii")
        self._run(
            "req", *_CURVE, "-keyout", str(pair.key), "-out", str(request),
            "-subj", f"/CN={name}",
        )  # fmt: skip
        self._run(
            "x509", "-req", "-in", str(request), "-CA", str(self.ca.cert),
            "-CAkey", str(self.ca.key), "-CAcreateserial", "-out", str(pair.cert),
            "-days", _DAYS, "-extfile", str(ext),
        )  # fmt: skip
        return pair

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [OPENSSL, *args], capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0:
            raise LabError(f"openssl {args[0]} failed ({done.returncode}): {done.stderr.strip()}")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True

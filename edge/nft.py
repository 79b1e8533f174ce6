"""The nftables adapter: runs edge.masquerade's batches with the `nft` command.

Owns the edge's masquerade table in the kernel (`inet isthmus_<tun>`) and nothing else in
nftables: it lists only that table and deletes only that table. `apply` replaces it in one
transaction (edge.masquerade.replace_batch), so a table left by a crashed edge is
replaced, never duplicated; `remove` deletes it (a clean exit). With no ranges the edge
needs no `nft` at all: a missing command then only skips removing a stale table.
`outgoing` asks the kernel which interface and source address a destination is routed
by (`ip route get`), for `isthmus explain`.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Sequence

from edge.masquerade import (
    IPAddress,
    MasqueradeState,
    qualified,
    removal_batch,
    replace_batch,
)
from isthmus.logfmt import kv
from isthmus.routemap import Network

TIMEOUT = 10.0

_log = logging.getLogger(__name__)


class NftError(Exception):
    """An nft command failed; the message names the command and quotes its error."""


def _run(argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NftError(f"cannot run '{' '.join(argv)}': {e}") from None


class NftMasquerade:
    """The masquerade table of the TUN `tun`, kept equal to `ranges`."""

    def __init__(self, tun: str, ranges: Sequence[Network], nft: str = "nft") -> None:
        self._tun = tun
        self._ranges = tuple(ranges)
        self._nft = nft

    @property
    def ranges(self) -> tuple[Network, ...]:
        return self._ranges

    def _load(self, batch: str) -> None:
        done = _run([self._nft, "-f", "-"], stdin=batch)
        if done.returncode != 0:
            raise NftError(
                f"'nft -f -' for table {qualified(self._tun)} exited {done.returncode}: "
                f"{done.stderr.strip() or '(no stderr)'}"
            )

    def apply(self) -> None:
        """Make the kernel hold exactly the table for `ranges` (none when empty).

        Raises:
            NftError: ranges are configured and nft is missing or refused the batch.
        """
        if not self._ranges:
            self.remove()
            return
        if shutil.which(self._nft) is None:
            raise NftError(
                f"masquerade needs the '{self._nft}' command (nftables), which is not installed"
            )
        self._load(replace_batch(self._tun, self._ranges))
        _log.info(kv("masquerade_installed", table=qualified(self._tun), ranges=list(self._ranges)))

    def remove(self) -> None:
        """Delete the table if it exists; never raises (a failure is logged)."""
        if shutil.which(self._nft) is None:
            if self._ranges:
                _log.warning(kv("masquerade_not_removed", error=f"no '{self._nft}' command"))
            return
        try:
            self._load(removal_batch(self._tun))
        except NftError as e:
            _log.warning(kv("masquerade_not_removed", error=str(e)))
            return
        if self._ranges:
            _log.info(kv("masquerade_removed", table=qualified(self._tun)))

    def installed(self) -> bool | None:
        """Whether the kernel holds the table now; None when nft cannot say."""
        try:
            done = _run([self._nft, "list", "table", *qualified(self._tun).split()])
        except NftError:
            return None
        if done.returncode == 0:
            return True
        return False if "No such file or directory" in done.stderr else None

    def state(self) -> MasqueradeState:
        """The ranges, and (only when there are any) whether the table is installed."""
        installed = self.installed() if self._ranges else False
        return MasqueradeState(self._ranges, qualified(self._tun), installed)

    def outgoing(self, address: IPAddress) -> tuple[str, str] | None:
        """(interface, source address) the kernel routes `address` by now; None if none."""
        try:
            done = _run(["ip", "-j", "route", "get", str(address)])
            routes = json.loads(done.stdout) if done.returncode == 0 else []
        except (NftError, ValueError):
            return None
        if not routes or not isinstance(routes[0], dict) or "dev" not in routes[0]:
            return None
        return str(routes[0]["dev"]), str(routes[0].get("prefsrc", ""))

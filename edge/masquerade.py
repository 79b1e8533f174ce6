"""Masquerade (SNAT) of tunnelled packets into local ranges: the pure nftables ruleset.

Owns the rule (the edge config's `masquerade` key, docs/design.md "Masquerade"): a packet
that arrived through this edge's TUN for a destination inside one of the ranges leaves
the edge with the edge's own address on the outgoing interface as its source; conntrack
translates the replies back. "Destination" is either the packet's destination after any
DNAT in prerouting or its original one (`ct original ip daddr`): on a Kubernetes node
kube-proxy rewrites a ClusterIP to a pod IP, possibly on another node, before we see the
packet, and listing the ClusterIP range must still masquerade it.

How, in one table the edge owns (`inet isthmus_<tun>`, so two edges never share one):
- a `forward` filter chain sets MARK on packets from the TUN whose destination (after or
  before DNAT) is in a range. Forward runs after prerouting's DNAT and routing, and is the
  last hook where the input interface is known (`iifname` is unset in postrouting);
- a `postrouting` nat chain at srcnat priority masquerades packets carrying MARK.
The mark is set only on packets this table masquerades, so the bit is taken from no one
else's traffic; MARK avoids kube-proxy's 0x4000/0x8000, Calico's and Cilium's upper 16
bits and Cilium's 0x0f00.
Every change is one `nft -f` transaction that creates, deletes and recreates the table
(`replace_batch`): applied after a crash it replaces the old table, never duplicates it.
This module does no I/O; edge.nft runs the batches.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from isthmus.routemap import Network

FAMILY: Final = "inet"
MARK: Final = 0x00001000
TABLE_PREFIX: Final = "isthmus_"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def table_name(tun: str) -> str:
    """The table's name for the TUN `tun` (TUN names are valid nft identifiers after a
    letter: A-Z a-z 0-9 _ . -)."""
    return TABLE_PREFIX + tun


def qualified(tun: str) -> str:
    """ "inet isthmus_<tun>", as `nft list table` takes it."""
    return f"{FAMILY} {table_name(tun)}"


def _elements(ranges: Iterable[Network]) -> str:
    return ", ".join(str(net) for net in ranges)


def table_text(tun: str, ranges: Sequence[Network]) -> str:
    """The table's definition (`nft -f` syntax) for a non-empty `ranges`."""
    if not ranges:
        raise ValueError("no ranges: an edge without masquerade has no table")
    mark = f"0x{MARK:08x}"
    sets: list[str] = []
    marks: list[str] = []
    for version, family, kind in ((4, "ip", "ipv4_addr"), (6, "ip6", "ipv6_addr")):
        nets = [net for net in ranges if net.version == version]
        if not nets:
            continue
        name = f"masquerade{version}"
        sets += [
            f"\tset {name} {{",
            f"\t\ttype {kind}",
            "\t\tflags interval",
            f"\t\telements = {{ {_elements(nets)} }}",
            "\t}",
        ]
        for match in (f"{family} daddr", f"ct original {family} daddr"):
            marks.append(f'\t\tiifname "{tun}" {match} @{name} meta mark set meta mark | {mark}')
    return "\n".join(
        [
            f"table {FAMILY} {table_name(tun)} {{",
            *sets,
            "\tchain forward {",
            "\t\ttype filter hook forward priority filter; policy accept;",
            *marks,
            "\t}",
            "\tchain postrouting {",
            "\t\ttype nat hook postrouting priority srcnat; policy accept;",
            f"\t\tmeta mark & {mark} == {mark} masquerade",
            "\t}",
            "}",
        ]
    )


def removal_batch(tun: str) -> str:
    """An `nft -f` batch that removes the table if it exists (declaring an empty table
    first makes the delete succeed when there is none)."""
    name = qualified(tun)
    return f"table {name}\ndelete table {name}\n"


def replace_batch(tun: str, ranges: Sequence[Network]) -> str:
    """One `nft -f` transaction leaving exactly the table for `ranges` (none when empty):
    whatever a previous process left is deleted in the same transaction."""
    if not ranges:
        return removal_batch(tun)
    return removal_batch(tun) + table_text(tun, ranges) + "\n"


def covering(address: IPAddress, ranges: Iterable[Network]) -> Network | None:
    """The most specific range holding `address`, or None."""
    found = [net for net in ranges if net.version == address.version and address in net]
    return max(found, key=lambda net: net.prefixlen, default=None)


@dataclass(frozen=True, slots=True)
class MasqueradeState:
    """What status and explain show: the configured ranges and whether the kernel holds
    the table (read at request time; None when it could not be read)."""

    ranges: tuple[Network, ...]
    table: str  # "inet isthmus_<tun>"
    installed: bool | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ranges": [str(net) for net in self.ranges],
            "table": self.table,
            "installed": self.installed,
        }

    def problems(self) -> list[str]:
        """Empty unless ranges are configured and the table is missing or unreadable."""
        if not self.ranges or self.installed:
            return []
        if self.installed is None:
            return [f"the masquerade table {self.table} could not be read"]
        return [
            f"the masquerade table {self.table} is not installed: tunnelled packets to "
            f"{', '.join(str(n) for n in self.ranges)} keep their source address"
        ]

"""Longest-prefix match over IPv4 and IPv6 networks.

Owns the lookup structure the edge's forwarding and source checks use. Pure and
immutable once built: rebuild on every map version, swap the reference.
Lookups take the raw address bytes (4 or 16) straight from a packet header, so
the hot path never builds an `ipaddress` object.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")
_MISSING = object()
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def route_sort_key(net: Network) -> tuple[int, int, int]:
    """The one order of routes everywhere (maps, state, tables, reconcile): IPv4 before IPv6,
    then by first address, a covering route before the more specific ones it holds."""
    return (net.version, int(net.network_address), net.prefixlen)


class LpmTable(Generic[T]):
    """An immutable longest-prefix-match table from networks to values.

    Built once from (network, value) pairs; a network given twice keeps the last value.
    A value of None is a hole: an address whose longest prefix maps to None finds None,
    not a shorter prefix's value.
    """

    __slots__ = ("_size", "_v4", "_v6")

    def __init__(self, entries: Iterable[tuple[Network, T]] = ()) -> None:
        v4: dict[int, dict[int, T]] = {}
        v6: dict[int, dict[int, T]] = {}
        keys: set[tuple[int, int, int]] = set()
        for net, value in entries:
            table = v4 if net.version == 4 else v6
            table.setdefault(net.prefixlen, {})[int(net.network_address)] = value
            keys.add(route_sort_key(net))
        self._size = len(keys)
        self._v4 = _levels(v4, 32)
        self._v6 = _levels(v6, 128)

    def __len__(self) -> int:
        return self._size

    def lookup(self, address: bytes) -> T | None:
        """Return the value of the longest prefix containing `address` (4 or 16 bytes)."""
        value = int.from_bytes(address, "big")
        levels = self._v4 if len(address) == 4 else self._v6
        for mask, table in levels:
            hit = table.get(value & mask, _MISSING)
            if hit is not _MISSING:
                return hit  # type: ignore[return-value]
        return None

    def lookup_ip(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> T | None:
        """Return the value of the longest prefix containing `address`."""
        return self.lookup(address.packed)


def _levels(by_len: dict[int, dict[int, T]], bits: int) -> tuple[tuple[int, dict[int, T]], ...]:
    full = (1 << bits) - 1
    return tuple(
        (full ^ ((1 << (bits - plen)) - 1), by_len[plen]) for plen in sorted(by_len, reverse=True)
    )

"""Why the tunnel dropped a packet, and how often.

Owns the drop vocabulary shared by the core, the shell, metrics and `isthmus status`
(whose "drops" object has exactly these keys). A dropped packet is counted once,
under the first check it failed, and never logged per packet.
"""

from __future__ import annotations

import enum


class DropReason(enum.Enum):
    """Each value is the key used in status JSON and metrics."""

    MALFORMED = "malformed"  # a datagram that is not a tunnel packet
    UNKNOWN_PEER = "unknown_peer"  # a sender id of no peer in the current map
    DECRYPT_FAILED = "decrypt_failed"  # the box does not authenticate under the peer's key
    BAD_INNER_SOURCE = "bad_inner_source"  # the inner source is outside the sender's routes
    NO_ROUTE = "no_route"  # no other edge owns the destination, or it has no endpoint
    NOT_IP = "not_ip"  # the inner packet is not a well-formed IPv4/IPv6 packet
    SEND_FAILED = "send_failed"  # the shell could not send the datagram (counted by the shell)


class DropCounters:
    """A counter per DropReason, every one present from the start."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[DropReason, int] = dict.fromkeys(DropReason, 0)

    def add(self, reason: DropReason) -> None:
        self._counts[reason] += 1

    def get(self, reason: DropReason) -> int:
        return self._counts[reason]

    def snapshot(self) -> dict[str, int]:
        """Every reason's value -> count, in declaration order."""
        return {reason.value: count for reason, count in self._counts.items()}

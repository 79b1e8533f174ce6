"""Why the tunnel dropped a packet, and how often.

Owns the drop vocabulary shared by the core, the shell, metrics and `isthmus status`
(whose "drops" object has exactly these keys, docs/protocol.md "Drop reasons"). A dropped
packet or handshake message is counted once, under the first check it failed, and never
logged per packet.
"""

from __future__ import annotations

import enum


class DropReason(enum.Enum):
    """Each value is the key used in status JSON and metrics."""

    MALFORMED = "malformed"  # not a tunnel message, or a handshake message with a bad mac1
    OVERSIZE = "oversize"  # a datagram longer than any an edge sends (wire.MAX_ACCEPTED)
    UNKNOWN_PEER = "unknown_peer"  # no session/handshake with that index, or a key not in the map
    DECRYPT_FAILED = "decrypt_failed"  # a box or handshake field that does not authenticate
    REPLAY = "replay"  # a data counter already seen, or an initiation timestamp not newer
    TOO_OLD = "too_old"  # a data counter behind the replay window
    BAD_INNER_SOURCE = "bad_inner_source"  # the inner source is outside the sender's routes
    # the inner destination is in none of this edge's routes nor its own addresses
    BAD_INNER_DESTINATION = "bad_inner_destination"
    NO_ROUTE = "no_route"  # no other edge owns the destination, or it has no endpoint
    RATELIMITED = "ratelimited"  # handshake flood control (token bucket, load, 20 ms rule)
    EXPIRED_SESSION = "expired_session"  # data on a session older than REJECT_AFTER_TIME
    NO_SESSION = "no_session"  # a queued packet dropped: queue full, handshake gave up, peer gone
    NOT_IP = "not_ip"  # the inner packet is not a well-formed IPv4/IPv6 packet
    BAD_PROBE = "bad_probe"  # a malformed probe, or a reply to no probe of ours in flight
    SEND_FAILED = "send_failed"  # the shell could not send the datagram (counted by the shell)


class DropCounters:
    """A counter per DropReason, every one present from the start."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[DropReason, int] = dict.fromkeys(DropReason, 0)

    def add(self, reason: DropReason, count: int = 1) -> None:
        self._counts[reason] += count

    def get(self, reason: DropReason) -> int:
        return self._counts[reason]

    def snapshot(self) -> dict[str, int]:
        """Every reason's value -> count, in declaration order."""
        return {reason.value: count for reason, count in self._counts.items()}

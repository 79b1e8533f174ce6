"""The edge's I/O ports: what the shell needs from the kernel and the disk.

Owns the contracts the adapters (tun, routes, udp, mapcache) implement and the fakes
in `edge.testing` mirror. Each method's docstring is its contract. Nothing here does I/O.
"""

from __future__ import annotations

import errno as _errno
from typing import Protocol

from isthmus.mapsig import SignedMap
from isthmus.routemap import Network

# A socket address as the tunnel core takes and returns it: (ip text, port).
SockAddr = tuple[str, int]


class RouteError(Exception):
    """A kernel route operation failed; names the operation, the route and the errno."""

    def __init__(self, op: str, cidr: str, errno: int, reason: str = "") -> None:
        self.op = op
        self.cidr = cidr
        self.errno = errno
        detail = reason or f"errno {errno}"
        super().__init__(f"cannot {op} route {cidr}: {detail} (errno {errno})")


class RouteCollision(RouteError):
    """A route was not installed: the main table already holds a route to the same prefix
    that isthmus did not install (another protocol, device or table entry); `existing`
    describes it ("10.97.0.0/16 dev lan0 proto kernel"), `reason` is the sentence status
    and explain show. isthmus never replaces or deletes such a route."""

    def __init__(self, cidr: str, existing: str) -> None:
        self.existing = existing
        self.reason = f"collides with an existing route {existing}"
        super().__init__("add", cidr, _errno.EEXIST, self.reason)


class TunDevice(Protocol):
    """A TUN device carrying raw IP packets (no packet-information header)."""

    @property
    def name(self) -> str:
        """The interface name the kernel gave the device."""
        ...

    @property
    def vnet_hdr(self) -> bool:
        """True when every read and write starts with a virtio-net header (edge.offload):
        reads may then be TCP super-packets, and writes may be coalesced ones."""
        ...

    @property
    def udp_gso(self) -> bool:
        """True when, with `vnet_hdr`, the kernel takes UDP super-packets (GSO_UDP_L4) in
        writes; reads never hold one."""
        ...

    @property
    def mtu(self) -> int:
        """The device's MTU now: no packet the shell seals is longer (a super-packet read
        with `vnet_hdr` is cut into segments of at most this)."""
        ...

    def fileno(self) -> int:
        """The nonblocking file descriptor to watch for readability."""
        ...

    def readinto(self, buf: memoryview) -> int:
        """Read one packet (after its virtio-net header when `vnet_hdr`) into `buf`, return
        its length; BlockingIOError when none is queued."""
        ...

    def write(self, packet: bytes | bytearray | memoryview) -> int:
        """Hand one IP packet to the kernel; raises OSError when the kernel refuses it."""
        ...

    def close(self) -> None:
        """Destroy the device (the kernel drops its addresses and routes); idempotent."""
        ...


class RouteTable(Protocol):
    """The kernel routes isthmus owns: main table, dev <tun>, proto 149; never any other.

    No method ever replaces, changes or deletes a route isthmus did not install."""

    def list_routes(self) -> set[Network]:
        """Every route currently installed by isthmus on the TUN; raises RouteError."""
        ...

    def add_route(self, net: Network) -> None:
        """Install `net` via the TUN, exclusively; idempotent (our own route to `net`
        already there is success). Raises RouteCollision when the main table holds a route
        to the same prefix that is not ours (it is left as it is), RouteError otherwise."""
        ...

    def delete_route(self, net: Network) -> None:
        """Remove our route `net`; a route already gone is not an error; raises RouteError."""
        ...


class Forwarding(Protocol):
    """The kernel's IP forwarding switches."""

    def enable(self, version: int) -> None:
        """Turn on forwarding for IP `version` (4 or 6); best effort, logs what fails."""
        ...


class DatagramSocket(Protocol):
    """The one nonblocking UDP socket all tunnel packets use; never raises OSError."""

    def fileno(self) -> int:
        """The file descriptor to watch for readability."""
        ...

    def recv_into(self, buf: memoryview) -> tuple[int, SockAddr] | None:
        """Receive one datagram into `buf` as (length, sender); None when no more is ready now."""
        ...

    def send(self, datagram: bytes | memoryview, addr: SockAddr) -> bool:
        """Send one datagram to `addr`; False when the kernel refused it."""
        ...

    def recv_segments_into(self, buf: memoryview) -> tuple[int, SockAddr, int] | None:
        """Receive into `buf` as (length, sender, segment size): `length` bytes of datagrams
        from one sender, each `segment size` bytes but the last (UDP GRO coalesces a run
        of them); None when no more is ready now."""
        ...

    def send_segments(self, buf: memoryview, segment: int, addr: SockAddr) -> bool:
        """Send buf as datagrams of `segment` bytes (the last may be shorter) to `addr`, in
        one call where the kernel can (UDP GSO); False when the kernel refused them. Each
        datagram leaves as its own UDP datagram: never a larger or fragmented one."""
        ...

    def close(self) -> None:
        """Close the socket; idempotent."""
        ...


class MapStore(Protocol):
    """Where the last applied map survives a restart: the whole map as signed, with its
    epoch, version and signature (what the edge never goes back from)."""

    def load(self) -> SignedMap | None:
        """The saved map, or None when there is none or it is unreadable (logged, never raised)."""
        ...

    def save(self, signed: SignedMap) -> None:
        """Replace the saved map atomically; failures are logged, never raised."""
        ...

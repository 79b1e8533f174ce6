"""Typed fakes of the edge's ports, for tests of the shell and the core together.

Each fake keeps its state in plain public attributes so tests can set it up and
inspect it. The `_: Port = Fake()` lines make mypy check that each fake conforms.
"""

from __future__ import annotations

import errno
from collections import deque

from edge.ports import (
    DatagramSocket,
    Forwarding,
    MapStore,
    RouteCollision,
    RouteError,
    RouteTable,
    SockAddr,
    TunDevice,
)
from isthmus.mapsig import SignedMap
from isthmus.routemap import Network, RouteMap


class FakeTun:
    """A TUN device: `inbound` packets are read by the shell, `written` ones it wrote.

    With `vnet_hdr`, `inbound` and `written` hold what crosses a TUN opened with a
    virtio-net header: the 10-byte header, then the packet (edge.offload)."""

    def __init__(
        self,
        name: str = "isthmus0",
        fd: int = -1,
        vnet_hdr: bool = False,
        mtu: int = 1420,
        udp_gso: bool = False,
    ) -> None:
        self._name = name
        self._fd = fd
        self._vnet_hdr = vnet_hdr
        self._udp_gso = udp_gso
        self.mtu = mtu
        self.inbound: deque[bytes] = deque()
        self.written: list[bytes] = []
        self.refuse_writes = False
        self.closed = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def vnet_hdr(self) -> bool:
        return self._vnet_hdr

    @property
    def udp_gso(self) -> bool:
        return self._udp_gso

    def fileno(self) -> int:
        return self._fd

    def readinto(self, buf: memoryview) -> int:
        if not self.inbound:
            raise BlockingIOError(errno.EAGAIN, "no packet queued")
        packet = self.inbound.popleft()
        buf[: len(packet)] = packet
        return len(packet)

    def write(self, packet: bytes | bytearray | memoryview) -> int:
        if self.refuse_writes:
            raise OSError(errno.EINVAL, "refused")
        self.written.append(bytes(packet))
        return len(packet)

    def close(self) -> None:
        self.closed = True


class FakeRouteTable:
    """The kernel's proto-149 routes on the TUN, as a set; `fail` makes routes fail;
    `foreign` holds routes isthmus did not install (prefix -> how `ip route` shows it):
    adding one of those prefixes is a collision, and nothing ever changes them."""

    def __init__(self, routes: set[Network] | None = None) -> None:
        self.routes: set[Network] = set(routes or ())
        self.foreign: dict[Network, str] = {}
        self.fail: set[Network] = set()
        self.fail_list = False
        self.ops: list[tuple[str, Network]] = []

    def list_routes(self) -> set[Network]:
        if self.fail_list:
            raise RouteError("list", "*", errno.ENODEV, "No such device")
        return set(self.routes)

    def add_route(self, net: Network) -> None:
        if net in self.fail:
            raise RouteError("add", str(net), errno.EINVAL, "Invalid argument")
        if net in self.routes:
            return
        if net in self.foreign:
            raise RouteCollision(str(net), self.foreign[net])
        self.ops.append(("add", net))
        self.routes.add(net)

    def delete_route(self, net: Network) -> None:
        if net in self.fail:
            raise RouteError("delete", str(net), errno.EINVAL, "Invalid argument")
        self.ops.append(("delete", net))
        self.routes.discard(net)


class FakeForwarding:
    """Records which IP versions had forwarding enabled."""

    def __init__(self) -> None:
        self.enabled: set[int] = set()

    def enable(self, version: int) -> None:
        self.enabled.add(version)


class FakeDatagramSocket:
    """A UDP socket: `inbound` (datagram, sender) pairs are received, `sent` ones were sent.

    `send_segments` records each datagram of the run on its own in `sent` and counts the
    call in `segment_sends`. `recv_segments_into` receives one datagram per call, or with
    `gro` what the kernel's UDP GRO would hand over in one read: the next datagrams from
    one sender while they have the first one's size, plus one shorter one that ends the
    run, at most GRO_SEGMENTS of them."""

    GRO_SEGMENTS = 64

    def __init__(self, fd: int = -1) -> None:
        self._fd = fd
        self.inbound: deque[tuple[bytes, SockAddr]] = deque()
        self.sent: list[tuple[bytes, SockAddr]] = []
        self.segment_sends = 0
        self.gro = False
        self.refuse_sends = False
        self.closed = False

    def fileno(self) -> int:
        return self._fd

    def recv_into(self, buf: memoryview) -> tuple[int, SockAddr] | None:
        if not self.inbound:
            return None
        datagram, addr = self.inbound.popleft()
        buf[: len(datagram)] = datagram
        return len(datagram), addr

    def send(self, datagram: bytes | memoryview, addr: SockAddr) -> bool:
        if self.refuse_sends:
            return False
        self.sent.append((bytes(datagram), addr))
        return True

    def recv_segments_into(self, buf: memoryview) -> tuple[int, SockAddr, int] | None:
        got = self.recv_into(buf)
        if got is None:
            return None
        n, addr = got
        segment, count = n, 1
        while self.gro and self.inbound and count < self.GRO_SEGMENTS:
            datagram, sender = self.inbound[0]
            size = len(datagram)
            if sender != addr or size > segment or n + size > len(buf):
                break
            self.inbound.popleft()
            buf[n : n + size] = datagram
            n += size
            count += 1
            if size < segment:
                break
        return n, addr, segment

    def send_segments(self, buf: memoryview, segment: int, addr: SockAddr) -> bool:
        if self.refuse_sends:
            return False
        self.segment_sends += 1
        for start in range(0, len(buf), segment):
            self.sent.append((bytes(buf[start : start + segment]), addr))
        return True

    def close(self) -> None:
        self.closed = True


class MemoryMapStore:
    """A map store in memory; `saved` counts saves."""

    def __init__(self, signed: SignedMap | None = None) -> None:
        self.signed = signed
        self.saved = 0

    @property
    def route_map(self) -> RouteMap | None:
        """The saved map without its signature."""
        return self.signed.route_map if self.signed is not None else None

    def load(self) -> SignedMap | None:
        return self.signed

    def save(self, signed: SignedMap) -> None:
        self.signed = signed
        self.saved += 1


_tun: TunDevice = FakeTun()
_routes: RouteTable = FakeRouteTable()
_forwarding: Forwarding = FakeForwarding()
_udp: DatagramSocket = FakeDatagramSocket()
_store: MapStore = MemoryMapStore()

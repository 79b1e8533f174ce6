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
    RouteError,
    RouteTable,
    SockAddr,
    TunDevice,
)
from isthmus.routemap import Network, RouteMap


class FakeTun:
    """A TUN device: `inbound` packets are read by the shell, `written` ones it wrote."""

    def __init__(self, name: str = "isthmus0", fd: int = -1) -> None:
        self._name = name
        self._fd = fd
        self.inbound: deque[bytes] = deque()
        self.written: list[bytes] = []
        self.refuse_writes = False
        self.closed = False

    @property
    def name(self) -> str:
        return self._name

    def fileno(self) -> int:
        return self._fd

    def readinto(self, buf: memoryview) -> int:
        if not self.inbound:
            raise BlockingIOError(errno.EAGAIN, "no packet queued")
        packet = self.inbound.popleft()
        buf[: len(packet)] = packet
        return len(packet)

    def write(self, packet: bytes | memoryview) -> int:
        if self.refuse_writes:
            raise OSError(errno.EINVAL, "refused")
        self.written.append(bytes(packet))
        return len(packet)

    def close(self) -> None:
        self.closed = True


class FakeRouteTable:
    """The kernel's proto-149 routes on the TUN, as a set; `fail` makes routes fail."""

    def __init__(self, routes: set[Network] | None = None) -> None:
        self.routes: set[Network] = set(routes or ())
        self.fail: set[Network] = set()
        self.fail_list = False
        self.ops: list[tuple[str, Network]] = []

    def list_routes(self) -> set[Network]:
        if self.fail_list:
            raise RouteError("list", "*", errno.ENODEV, "No such device")
        return set(self.routes)

    def replace_route(self, net: Network) -> None:
        if net in self.fail:
            raise RouteError("replace", str(net), errno.EINVAL, "Invalid argument")
        self.ops.append(("replace", net))
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
    """A UDP socket: `inbound` (datagram, sender) pairs are received, `sent` ones were sent."""

    def __init__(self, fd: int = -1) -> None:
        self._fd = fd
        self.inbound: deque[tuple[bytes, SockAddr]] = deque()
        self.sent: list[tuple[bytes, SockAddr]] = []
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

    def send(self, datagram: bytes, addr: SockAddr) -> bool:
        if self.refuse_sends:
            return False
        self.sent.append((bytes(datagram), addr))
        return True

    def close(self) -> None:
        self.closed = True


class MemoryMapStore:
    """A map store in memory; `saved` counts saves."""

    def __init__(self, route_map: RouteMap | None = None) -> None:
        self.route_map = route_map
        self.saved = 0

    def load(self) -> RouteMap | None:
        return self.route_map

    def save(self, route_map: RouteMap) -> None:
        self.route_map = route_map
        self.saved += 1


_tun: TunDevice = FakeTun()
_routes: RouteTable = FakeRouteTable()
_forwarding: Forwarding = FakeForwarding()
_udp: DatagramSocket = FakeDatagramSocket()
_store: MapStore = MemoryMapStore()

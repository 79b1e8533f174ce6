"""The netlink adapter around pyroute2: the TUN's link settings and isthmus's routes.

Owns every kernel change but packets: the TUN's IPv4 address, MTU and link state;
the proto-149 routes in the main table via the TUN; the IP forwarding sysctls.
Never touches a route it did not install: it lists and deletes only routes with proto
149 on the TUN's ifindex in the main table, and installs only with an exclusive create
(NLM_F_CREATE | NLM_F_EXCL), never a replace. A prefix the main table already routes
otherwise (a connected LAN where address plans overlap, a static or DHCP route) is a
collision: refused with RouteCollision, the other route left exactly as it was.

pyroute2's sync IPRoute runs its own asyncio loop, which cannot run inside the edge's
loop; so every netlink call runs on one private worker thread (calls are rare and short).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from edge.ports import RouteCollision, RouteError
from isthmus.logfmt import kv
from isthmus.routemap import ROUTE_PROTO, Network

T = TypeVar("T")
MAIN_TABLE = 254

_log = logging.getLogger(__name__)

IN6_ADDR_GEN_MODE_NONE = 1
_NO_IPV6_LINK_LOCAL = {
    "attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE)]})]
}
# rtm_protocol and rtm_type names as `ip route` prints them (<linux/rtnetlink.h>).
_PROTOCOLS = {2: "kernel", 3: "boot", 4: "static", 16: "dhcp", 9: "ra", ROUTE_PROTO: "149"}
_TYPES = {1: "", 2: "local ", 3: "broadcast ", 6: "blackhole ", 7: "unreachable ", 8: "prohibit "}


def _reason(e: NetlinkError) -> tuple[int, str]:
    code = int(e.code) if isinstance(e.code, int) else 0
    return code, os.strerror(code) if code else str(e)


class KernelRoutes:
    """Netlink for one TUN device (implements edge.ports.RouteTable)."""

    def __init__(self, ifname: str) -> None:
        """Raises: RouteError when the interface does not exist."""
        self._ifname = ifname
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlink")
        self._ipr: Any = self._call(IPRoute)
        found = self._call(lambda: self._ipr.link_lookup(ifname=ifname))
        if not found:
            self.close()
            raise RouteError("find interface of", ifname, errno.ENODEV, "No such device")
        self._index = int(found[0])

    @property
    def ifindex(self) -> int:
        return self._index

    def _call(self, fn: Callable[[], T]) -> T:
        return self._pool.submit(fn).result()

    def configure_link(self, address: ipaddress.IPv4Interface, mtu: int) -> None:
        """Give the TUN `address`, set its MTU and bring it up (idempotent).

        Raises:
            RouteError: the kernel refused a change.
        """
        ipr, idx = self._ipr, self._index
        try:
            # No IPv6 link-local address: the kernel then sends no router solicitations
            # or MLD reports into the tunnel (they would only be dropped as no_route).
            # Must be set before the link goes up; IPv6 routes via the TUN still work.
            self._call(lambda: ipr.link("set", index=idx, IFLA_AF_SPEC=_NO_IPV6_LINK_LOCAL))
        except NetlinkError as e:
            _log.info(kv("tun_addrgenmode_not_set", tun=self._ifname, error=_reason(e)[1]))
        try:
            self._call(
                lambda: ipr.addr(
                    "replace",
                    index=idx,
                    address=str(address.ip),
                    prefixlen=address.network.prefixlen,
                )
            )
        except NetlinkError as e:
            raise RouteError("add address to", str(address), *_reason(e)) from None
        try:
            self._call(lambda: ipr.link("set", index=idx, mtu=mtu, state="up"))
        except NetlinkError as e:
            code, reason = _reason(e)
            raise RouteError(f"set mtu {mtu} and up on", self._ifname, code, reason) from None

    def list_routes(self) -> set[Network]:
        ipr, idx = self._ipr, self._index

        def fetch() -> set[Network]:
            out: set[Network] = set()
            for family in (socket.AF_INET, socket.AF_INET6):
                for msg in ipr.get_routes(
                    family=family, table=MAIN_TABLE, oif=idx, proto=ROUTE_PROTO
                ):
                    # Filter again: the kernel may ignore some filter attributes.
                    if (
                        msg.get("proto") != ROUTE_PROTO
                        or msg.get_attr("RTA_OIF") != idx
                        or msg.get("table") != MAIN_TABLE
                    ):
                        continue
                    dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if family == 2 else "::")
                    out.add(ipaddress.ip_network(f"{dst}/{msg['dst_len']}"))
            return out

        try:
            return self._call(fetch)
        except NetlinkError as e:
            raise RouteError("list", f"dev {self._ifname}", *_reason(e)) from None

    def add_route(self, net: Network) -> None:
        ipr, idx = self._ipr, self._index
        family = socket.AF_INET6 if net.version == 6 else socket.AF_INET

        def holders() -> tuple[bool, str | None]:
            """(ours is there, a description of the first other route to `net`)."""
            ours, other = False, None
            for msg in ipr.get_routes(family=family, table=MAIN_TABLE):
                if msg.get("table") != MAIN_TABLE or msg["dst_len"] != net.prefixlen:
                    continue
                dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if family == 2 else "::")
                if ipaddress.ip_address(dst) != net.network_address:
                    continue
                if msg.get("proto") == ROUTE_PROTO and msg.get_attr("RTA_OIF") == idx:
                    ours = True
                elif other is None:
                    other = self._describe(net, msg)
            return ours, other

        def add() -> None:
            ours, other = holders()
            if ours:
                return
            if other is not None:
                raise RouteCollision(str(net), other)
            try:
                ipr.route("add", dst=str(net), oif=idx, proto=ROUTE_PROTO, table=MAIN_TABLE)
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise
                ours, other = holders()  # created by someone else just now
                if not ours:
                    raise RouteCollision(str(net), other or f"{net} (unknown)") from None

        try:
            self._call(add)
        except NetlinkError as e:
            raise RouteError("add", str(net), *_reason(e)) from None

    def _describe(self, net: Network, msg: Any) -> str:
        """A route as `ip route` shows it, enough to find it: type, dst, via, dev, proto."""
        text = f"{_TYPES.get(msg.get('type'), '')}{net}"
        gateway = msg.get_attr("RTA_GATEWAY")
        if gateway:
            text += f" via {gateway}"
        oif = msg.get_attr("RTA_OIF")
        if oif is not None:
            names = self._ipr.get_links(oif)
            name = names[0].get_attr("IFLA_IFNAME") if names else None
            text += f" dev {name or oif}"
        elif msg.get_attr("RTA_MULTIPATH"):
            text += " (multipath)"
        proto = msg.get("proto")
        return text + f" proto {_PROTOCOLS.get(proto, proto)}"

    def delete_route(self, net: Network) -> None:
        ipr, idx = self._ipr, self._index
        try:
            self._call(
                lambda: ipr.route("del", dst=str(net), oif=idx, proto=ROUTE_PROTO, table=MAIN_TABLE)
            )
        except NetlinkError as e:
            code, reason = _reason(e)
            if code == errno.ESRCH:  # already gone
                return
            raise RouteError("delete", str(net), code, reason) from None

    def close(self) -> None:
        """Close the netlink socket and its thread; idempotent."""
        if getattr(self, "_ipr", None) is not None:
            ipr, self._ipr = self._ipr, None
            self._call(ipr.close)
        self._pool.shutdown(wait=True)


class Sysctl:
    """The IP forwarding switches under /proc/sys (implements edge.ports.Forwarding)."""

    PATHS = {
        4: Path("/proc/sys/net/ipv4/ip_forward"),
        6: Path("/proc/sys/net/ipv6/conf/all/forwarding"),
    }

    def __init__(self, root: Path = Path("/")) -> None:
        self._root = root

    def enable(self, version: int) -> None:
        path = self._root / self.PATHS[version].relative_to("/")
        try:
            if path.read_text().strip() == "1":
                return
            path.write_text("1\n")
        except OSError as e:
            level = logging.WARNING if version == 4 else logging.INFO
            _log.log(level, kv("forwarding_not_enabled", ip=version, path=path, error=e.strerror))
            return
        _log.info(kv("forwarding_enabled", ip=version))

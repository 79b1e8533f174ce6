"""UDP endpoints: an IP address and a port, written "ip:port" or "[ipv6]:port".

Owns the endpoint syntax and the unicast rule: an endpoint other edges send to
(an edge's `endpoint`, the endpoints of a registration) must be a unicast address
(`unicast_problem`), else one edge could point every other edge's handshakes at a
loopback, broadcast or multicast address, or out of a chosen interface (%zone).
A listen address is not an endpoint and may be unspecified (0.0.0.0, ::).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ENDPOINT_RULE = "'ip:port' or '[ipv6]:port' with a literal IP address and a port 1-65535"
UNICAST_RULE = (
    "a unicast address other edges can reach: not unspecified, loopback, link-local, "
    "multicast, broadcast or reserved (240.0.0.0/4), not IPv4-mapped (::ffff:0:0/96; write "
    "the IPv4 address), without a %zone"
)

# (range, what it is): addresses no edge may give as an endpoint, checked in this order.
_NOT_UNICAST: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
    (ipaddress.ip_network("0.0.0.0/32"), "the unspecified address"),
    (ipaddress.ip_network("0.0.0.0/8"), 'a "this network" address'),
    (ipaddress.ip_network("127.0.0.0/8"), "a loopback address"),
    (ipaddress.ip_network("169.254.0.0/16"), "a link-local address"),
    (ipaddress.ip_network("224.0.0.0/4"), "a multicast address"),
    (ipaddress.ip_network("255.255.255.255/32"), "the broadcast address"),
    (ipaddress.ip_network("240.0.0.0/4"), "a reserved address"),
    (ipaddress.ip_network("::/128"), "the unspecified address"),
    (ipaddress.ip_network("::1/128"), "a loopback address"),
    (ipaddress.ip_network("::ffff:0:0/96"), "an IPv4-mapped IPv6 address"),
    (ipaddress.ip_network("fe80::/10"), "a link-local address"),
    (ipaddress.ip_network("ff00::/8"), "a multicast address"),
)


def unicast_problem(ip: IPAddress) -> str | None:
    """What keeps `ip` from being an endpoint ("a loopback address (127.0.0.0/8)"), or None.

    The rule is UNICAST_RULE; an IPv4-mapped address also names its IPv4 address's problem.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        return f"a scoped address (%{ip.scope_id}), which only one host's interface can reach"
    for net, what in _NOT_UNICAST:
        if ip in net:
            mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
            inner = unicast_problem(mapped) if mapped is not None else None
            return f"{what} ({net})" + (f" of {mapped}, {inner}" if inner is not None else "")
    return None


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    """A UDP endpoint."""

    ip: IPAddress
    port: int

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range 1-65535")

    @classmethod
    def parse(cls, text: object, *, allow_port_zero: bool = False) -> Endpoint:
        """Parse "ip:port" or "[ipv6]:port".

        Raises:
            ValueError: the message quotes the text and says what is allowed.
        """
        if not isinstance(text, str):
            raise ValueError(f"{text!r} is not an endpoint: use {ENDPOINT_RULE}")
        host, sep, port_text = text.rpartition(":")
        if not sep or not port_text.isdigit():
            raise ValueError(f"{text!r} is not an endpoint: use {ENDPOINT_RULE}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{text!r} is not an endpoint: use {ENDPOINT_RULE}") from None
        port = int(port_text)
        if allow_port_zero and port == 0:
            return _zero_port(ip)
        if not 1 <= port <= 65535:
            raise ValueError(f"{text!r} is not an endpoint: use {ENDPOINT_RULE}")
        return cls(ip, port)

    def check_unicast(self) -> Endpoint:
        """This endpoint, if its address is unicast (UNICAST_RULE).

        Raises:
            ValueError: "'127.0.0.1:51820' is a loopback address (127.0.0.0/8)".
        """
        problem = unicast_problem(self.ip)
        if problem is not None:
            raise ValueError(f"{str(self)!r} is {problem}")
        return self

    def sockaddr(self) -> tuple[str, int]:
        """The (host, port) tuple sockets take."""
        return (str(self.ip), self.port)

    def __str__(self) -> str:
        return format_sockaddr(self.ip, self.port)


def format_sockaddr(host: str | IPAddress, port: int) -> str:
    """The one text form of an endpoint: "ip:port", or "[ipv6]:port" (an IPv6 host is the
    one with a colon)."""
    text = str(host)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def _zero_port(ip: IPAddress) -> Endpoint:
    # Port 0 ("pick a free port") is only meaningful for a listen address.
    ep = object.__new__(Endpoint)
    object.__setattr__(ep, "ip", ip)
    object.__setattr__(ep, "port", 0)
    return ep

"""A NAT router namespace in front of one site's edge: nftables masquerade, as home and
office routers do.

```
  underlay bridge --- [<site>-nat] ul0 <public address>    masquerade what leaves on ul0
                                   lan0 192.168.13.1/24
                                     |
                      [<site>] ul0 192.168.13.2/24, default via 192.168.13.1
```
Kinds: "masquerade" maps endpoint-independently (an inside ip:port keeps one public port
while conntrack keeps its flow, the port itself when free); "symmetric" is `masquerade
random,fully-random` (a random public port per flow), for relay tests. Inbound packets
that match no mapping are the router's own and go nowhere, as behind a real NAT.
`flush` forgets every mapping (`conntrack -F`), as a NAT that rebooted or timed its flows
out. Owns no process.
"""

from __future__ import annotations

import ipaddress
from typing import Final, Literal

from isthmus_lab.netns import Lab

NatKind = Literal["masquerade", "symmetric"]
UPLINK_IF: Final = "ul0"  # the router's side on the underlay (the edge's name for its own)
LAN_IF: Final = "lan0"  # the router's side of its private link to the edge
EDGE_IF: Final = "ul0"  # the edge's side of that link: its underlay interface, as elsewhere
ROUTER_IP: Final = "192.168.13.1"
EDGE_ADDRESS: Final = "192.168.13.2/24"
TABLE: Final = "isthmus_nat"
_MASQUERADE: Final = {"masquerade": "masquerade", "symmetric": "masquerade random,fully-random"}


def ruleset(kind: NatKind) -> str:
    """The router's nftables ruleset: masquerade what leaves on the underlay.

    Raises:
        ValueError: `kind` is not a NatKind.
    """
    if kind not in _MASQUERADE:
        raise ValueError(f"nat {kind!r}; allowed: {', '.join(_MASQUERADE)}")
    return (
        f"table ip {TABLE} {{\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f'    oifname "{UPLINK_IF}" {_MASQUERADE[kind]}\n'
        "  }\n"
        "}\n"
    )


def add_router(
    lab: Lab, kind: NatKind, *, short: str, uplink_ns: str, uplink_port: str, public: str, edge: str
) -> str:
    """Create the router namespace `short` between the veth `uplink_port` (in `uplink_ns`,
    which the caller attaches to its bridge) and the edge namespace `edge`; the router holds
    `public` (an address with prefix length) and the edge gets the private link and a
    default route through it. Returns the router's namespace."""
    rules = ruleset(kind)
    router = lab.add_netns(short)
    lab.sysctl(router, {"net.ipv4.ip_forward": 1})
    lab.add_veth(uplink_ns, uplink_port, router, UPLINK_IF)
    lab.add_address(router, UPLINK_IF, public)
    lab.add_veth(router, LAN_IF, edge, EDGE_IF)
    prefixlen = ipaddress.IPv4Interface(EDGE_ADDRESS).network.prefixlen
    lab.add_address(router, LAN_IF, f"{ROUTER_IP}/{prefixlen}")
    lab.add_address(edge, EDGE_IF, EDGE_ADDRESS)
    lab.add_route(edge, "default", via=ROUTER_IP)
    lab.nft(router, rules)
    return router


def flush(lab: Lab, router: str) -> None:
    """Forget every mapping of the router: its next packet out makes a new one (a new
    public port when the old one is held by a flow from outside by then)."""
    lab.run(router, ["conntrack", "-F"])

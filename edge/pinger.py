"""The edge's side of `isthmus ping`: the admin socket's "ping TARGET" request.

Owns resolving a target to the edge that answers for it, sending one probe through the
core (edge.tunnel.probe) and waiting for its answer. TARGET is an edge name or one IPv4/IPv6
address; an address is resolved by longest prefix match over every route of the map this
edge uses (the tunnel's own forwarding rule), and is refused when no route holds it or the
match is a route of this edge (packets to it never enter the tunnel).

Reply (one JSON object; with "error" a refusal or a lost probe):
    {"target": "10.245.1.10", "edge": "vpc-b", "route": "10.245.0.0/16",
     "endpoint": "198.18.0.12:51820", "rtt_ms": 0.412, "session": "existing"}
`route` is null for an edge-name target; `endpoint` is the UDP endpoint the answer came
from (the path); `session` is "new" when the probe waited for a handshake (the rtt then
includes it). A probe not answered within TIMEOUT seconds gives {"error": ..., "lost":
true} with the target, edge and route. Must never raise out of `handle`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable
from typing import Any, Final

from edge.tunnel import ProbeAnswered, ProbeError, Tunnel, TunnelEvent
from isthmus.endpoint import format_sockaddr
from isthmus.routemap import RouteMap

TIMEOUT: Final = 2.0
MAX_TARGET_LEN: Final = 255
TARGET_RULE: Final = "an edge name or one IPv4/IPv6 address, e.g. vpc-b or 10.245.0.7"


class Pinger:
    """Answers "ping TARGET"; `on_event` must see every core event (edge.dataplane)."""

    def __init__(
        self,
        *,
        tunnel: Tunnel,
        route_map: Callable[[], RouteMap],
        flush: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        timeout: float = TIMEOUT,
    ) -> None:
        """`flush()` sends the core's side output now and re-arms its timer
        (Dataplane.after_input); `clock` is the data path's clock."""
        self._tunnel = tunnel
        self._route_map = route_map
        self._flush = flush
        self._clock = clock
        self._timeout = timeout
        self._waiting: dict[bytes, asyncio.Future[ProbeAnswered]] = {}

    def on_event(self, event: TunnelEvent) -> None:
        """Hand a core event over; an answer to a probe someone waits for wakes them."""
        if isinstance(event, ProbeAnswered):
            waiter = self._waiting.pop(event.probe_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(event)

    async def handle(self, argument: str) -> dict[str, Any]:
        """The reply to "ping TARGET" (see the module)."""
        target = argument.strip()
        resolved = self._resolve(target)
        if isinstance(resolved, str):
            return {"target": target, "error": resolved}
        edge, route = resolved
        reply: dict[str, Any] = {"target": target, "edge": edge, "route": route}
        waiter: asyncio.Future[ProbeAnswered] = asyncio.get_running_loop().create_future()
        try:
            probe_id = self._tunnel.probe(edge, self._clock())
        except ProbeError as e:
            return {**reply, "error": f"cannot probe {edge}: {e}"}
        self._waiting[probe_id] = waiter
        try:
            self._flush()
            answer = await asyncio.wait_for(waiter, self._timeout)
        except TimeoutError:
            return {
                **reply,
                "error": f"no answer from {edge} within {self._timeout:g} s",
                "lost": True,
            }
        finally:
            self._waiting.pop(probe_id, None)
        return {
            **reply,
            "endpoint": format_sockaddr(*answer.endpoint),
            "rtt_ms": round(answer.rtt * 1000, 3),
            "session": "new" if answer.new_session else "existing",
        }

    def _resolve(self, target: str) -> tuple[str, str | None] | str:
        """(edge, route or None) for `target`, or why it cannot be pinged."""
        if not target or len(target) > MAX_TARGET_LEN or not target.isprintable():
            return f"bad target {target[:64]!r}: {TARGET_RULE}"
        route_map = self._route_map()
        self_name = self._tunnel.identity.name
        try:
            address = ipaddress.ip_address(target)
        except ValueError:
            if target == self_name:
                return f"{target} is this edge; ping another edge"
            if route_map.edge(target) is None:
                known = ", ".join(sorted(e.name for e in route_map.edges if e.name != self_name))
                return (
                    f"no edge named {target!r} in the map (version {route_map.version}); "
                    f"edges: {known or '(none)'}; or give {TARGET_RULE}"
                )
            return target, None
        route = self._tunnel.forwarding.owner(address.packed)  # the tunnel's own rule
        if route is None:
            return f"no route for {address}: no edge's route in the map holds it"
        net, owner = route.network, route.edge.name
        if owner == self_name:
            return f"{address} is local: it is in {net}, a route of this edge ({self_name})"
        return owner, str(net)

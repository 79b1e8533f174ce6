"""`isthmus ping TARGET`: an authenticated probe through the tunnel, from a running edge.

    isthmus ping TARGET [-c COUNT] [-i INTERVAL] [--json] [--config EDGE_FILE | --socket PATH]

Owns the client side of the admin socket's "ping TARGET" request (edge.pinger) and its
rendering. TARGET is an edge name or an IPv4/IPv6 address; for an address the edge says
which route and which edge answer for it. Each probe is one request; a line per probe:

    pong from vpc-b (198.18.0.12:51820) via route 10.245.0.0/16 in 0.41 ms

then a summary. `--json` prints one document: {"target", "replies": [every reply, lost
ones with "error"], "summary": {"sent", "answered", "lost", "rtt_ms": {min, avg, max} or
null}}.
Exit codes (isthmus.clikit): 0 every probe answered; 2 degraded (some answered, some
lost); 1 error (none answered, the edge is not running, a target the edge refuses: not
in the map, local, no route; a usage error). Prints no key material.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Final

from edge.status import DEFAULT_SOCKET, StatusError, request, socket_path
from isthmus import clikit
from isthmus.clikit import paint, printable, printable_doc
from isthmus.configfile import ConfigError

PROG: Final = "isthmus ping"
DEFAULT_COUNT: Final = 3
DEFAULT_INTERVAL: Final = 1.0
MAX_COUNT: Final = 10_000
MIN_INTERVAL: Final = 0.01
TIMEOUT: Final = 10.0  # per request: longer than the edge's wait for an answer


def describe(reply: dict[str, Any], colour: bool = False) -> str:
    """One line for one probe's reply (its strings shown `printable`)."""
    reply = printable_doc(reply)
    if "error" in reply:
        return paint(str(reply["error"]), "bad", colour)
    via = f" via route {reply['route']}" if reply.get("route") else ""
    new = " (new session)" if reply.get("session") == "new" else ""
    rtt = paint(f"{reply['rtt_ms']:.3f} ms", "good", colour)
    return f"pong from {reply['edge']} ({reply['endpoint']}){via} in {rtt}{new}"


def summarize(replies: list[dict[str, Any]]) -> dict[str, Any]:
    rtts = [float(r["rtt_ms"]) for r in replies if "error" not in r]
    return {
        "sent": len(replies),
        "answered": len(rtts),
        "lost": len(replies) - len(rtts),
        "rtt_ms": (
            {
                "min": round(min(rtts), 3),
                "avg": round(sum(rtts) / len(rtts), 3),
                "max": round(max(rtts), 3),
            }
            if rtts
            else None
        ),
    }


def render_summary(target: str, summary: dict[str, Any]) -> str:
    sent, answered = summary["sent"], summary["answered"]
    lost = 100 * summary["lost"] // sent if sent else 0
    target = printable(target)
    text = (
        f"--- {target} ping statistics ---\n{sent} probes sent, {answered} answered, {lost}% lost"
    )
    rtt = summary["rtt_ms"]
    if rtt is not None:
        text += f", rtt min/avg/max = {rtt['min']:.3f}/{rtt['avg']:.3f}/{rtt['max']:.3f} ms"
    return text + "\n"


def exit_code(summary: dict[str, Any]) -> int:
    if summary["answered"] == 0:
        return clikit.EXIT_ERROR
    if summary["lost"]:
        return clikit.EXIT_DEGRADED
    return clikit.EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = clikit.parser(
        PROG,
        "Send authenticated probes through the tunnel to an edge, or to the edge that "
        "answers for an address; show the path, the route and the round-trip time.",
        epilog="exit codes: 0 every probe answered, 2 some lost, 1 none answered or an error",
    )
    parser.add_argument("target", metavar="TARGET", help="an edge name or an IPv4/IPv6 address")
    parser.add_argument(
        "-c", "--count", type=int, default=DEFAULT_COUNT, help=f"probes (default {DEFAULT_COUNT})"
    )
    parser.add_argument(
        "-i",
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"between probes (default {DEFAULT_INTERVAL:g})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", metavar="EDGE_FILE", help="the edge's config file")
    where.add_argument("--socket", metavar="PATH", help=f"default {DEFAULT_SOCKET}")
    return parser


def main(argv: list[str]) -> int:
    parsed = clikit.parse(_parser(), argv)
    if isinstance(parsed, int):
        return parsed
    args = parsed
    target = str(args.target).strip()
    if not 1 <= args.count <= MAX_COUNT:
        return clikit.usage_error(PROG, f"-c/--count: {args.count}; allowed: 1 to {MAX_COUNT}")
    if not MIN_INTERVAL <= args.interval <= 3600:
        return clikit.usage_error(
            PROG, f"-i/--interval: {args.interval:g}; allowed: {MIN_INTERVAL:g} to 3600 seconds"
        )
    if not target or not target.isascii() or not target.isprintable() or " " in target:
        return clikit.usage_error(
            PROG, f"TARGET {target!r}: allowed: an edge name or one IPv4/IPv6 address"
        )
    try:
        path = socket_path(args)
    except ConfigError as e:
        return clikit.fail(PROG, f"{args.config}: {e}")
    colour = not args.json and clikit.wants_colour(sys.stdout)
    replies: list[dict[str, Any]] = []
    for n in range(args.count):
        if n:
            time.sleep(args.interval)
        try:
            reply = request(path, f"ping {target}", TIMEOUT)
        except StatusError as e:
            return clikit.fail(PROG, str(e))
        if "error" in reply and not reply.get("lost"):
            return clikit.fail(PROG, str(reply["error"]))  # refused: no probe was sent
        replies.append(reply)
        if not args.json:
            print(describe(reply, colour), flush=True)
    summary = summarize(replies)
    if args.json:
        clikit.emit({"target": target, "replies": replies, "summary": summary}, True, "")
    else:
        print(render_summary(target, summary), end="")
    return exit_code(summary)

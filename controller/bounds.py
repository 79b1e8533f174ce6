"""The config's bounds: what one caller may ask of the controller ([limits]) and how much
audit log it keeps ([audit]); controller.config reads both tables through here.

Owns the meaning and defaults of those keys (deploy/examples/controller.toml documents
each; controller.guard and the stores apply them). Every problem raises
`isthmus.configfile.ConfigError` naming the dotted key, what was wrong and what is allowed.
Pure: no I/O.

    [limits]          optional  what one source address or one edge may ask (controller.guard);
                                every rate is calls a second (a number >= 0, 0 = no limit),
                                every burst the calls allowed at once (an integer 1-100000)
      challenge_rate, challenge_burst   Challenge calls per source; default 20, 200
      refused_rate, refused_burst       refused calls per source; default 2, 50
      register_rate, register_burst     Register calls per edge; default 0.1, 10
      report_rate, report_burst         Report calls per edge; default 2, 60
      watch_rate, watch_burst           Watch calls per edge; default 0.5, 10
      challenges_per_edge   challenges one edge key may have redeemed within a challenge's
                        lifetime (60 s), 1-1000000; default 600
      health_watches    Health Watch streams open at once, 1-100000; default 1000
      health_watches_per_source         of them from one source, 1-100000; default 8
      max_concurrent_calls  calls (streams included) in progress at once, 0 or 16-1000000;
                                default 0: 2 x the configured edges + health_watches + 256
      streams_per_connection  HTTP/2 streams one connection may open, 1-10000; default 100
    [audit]           optional  how much of the audit log is kept
      max_bytes         file store: audit.log is rotated when it would grow past this many
                        bytes, 4096-1099511627776; default 16777216 (16 MiB)
      keep              file store: rotated files kept (audit.log.1 newest), 1-1000;
                        default 4
      max_entries       etcd store: audit keys kept (the oldest are deleted),
                        100-100000000; default 100000
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.ratelimit import Rate
from isthmus.auth import MAX_REDEEMED_PER_EDGE
from isthmus.configfile import ConfigError, Table, get_int

DEFAULT_RATES: dict[str, Rate] = {
    "challenge": Rate(20.0, 200),
    "refused": Rate(2.0, 50),
    "register": Rate(0.1, 10),
    "report": Rate(2.0, 60),
    "watch": Rate(0.5, 10),
}
LIMIT_KEYS = {f"{k}_{p}" for k in DEFAULT_RATES for p in ("rate", "burst")} | {
    "challenges_per_edge",
    "health_watches",
    "health_watches_per_source",
    "max_concurrent_calls",
    "streams_per_connection",
}
AUDIT_KEYS = {"max_bytes", "keep", "max_entries"}
RATE_RULE = "a number of calls a second, 0-1000000 (0: no limit)"
MAX_BURST = 100_000


@dataclass(frozen=True, slots=True)
class Limits:
    """What one source address or one edge may ask ([limits]); see controller.guard."""

    challenge: Rate = DEFAULT_RATES["challenge"]  # Challenge calls per source address
    refused: Rate = DEFAULT_RATES["refused"]  # refused calls per source address
    register: Rate = DEFAULT_RATES["register"]  # Register calls per edge
    report: Rate = DEFAULT_RATES["report"]  # Report calls per edge
    watch: Rate = DEFAULT_RATES["watch"]  # Watch calls per edge
    challenges_per_edge: int = MAX_REDEEMED_PER_EDGE
    health_watches: int = 1000
    health_watches_per_source: int = 8
    max_concurrent_calls: int = 0  # 0: 2 x edges + health_watches + 256
    streams_per_connection: int = 100


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """How much of the audit log is kept ([audit])."""

    max_bytes: int = 16 * 1024 * 1024  # file store: rotate audit.log past this size
    keep: int = 4  # file store: rotated files kept
    max_entries: int = 100_000  # etcd store: audit keys kept


def parse_limits(table: Table) -> Limits:
    """The [limits] table (its keys checked by the caller).

    Raises:
        ConfigError: naming the dotted key, the problem and what is allowed.
    """
    rates: dict[str, Rate] = {}
    for name, default in DEFAULT_RATES.items():
        r = table.get(f"{name}_rate", default.rate)
        if isinstance(r, bool) or not isinstance(r, int | float) or not 0 <= r <= 1_000_000:
            raise ConfigError(f"limits.{name}_rate", f"{r!r} is out of range", RATE_RULE)
        b = get_int(table, "limits", f"{name}_burst", 1, MAX_BURST, default.burst)
        rates[name] = Rate(float(r), b)
    concurrent = get_int(table, "limits", "max_concurrent_calls", 0, 1_000_000, 0)
    if 0 < concurrent < 16:
        raise ConfigError(
            "limits.max_concurrent_calls",
            f"{concurrent} is too small",
            "0 (2 x the configured edges + health_watches + 256) or an integer 16-1000000",
        )
    return Limits(
        **rates,
        challenges_per_edge=get_int(
            table, "limits", "challenges_per_edge", 1, 1_000_000, MAX_REDEEMED_PER_EDGE
        ),
        health_watches=get_int(table, "limits", "health_watches", 1, 100_000, 1000),
        health_watches_per_source=get_int(
            table, "limits", "health_watches_per_source", 1, 100_000, 8
        ),
        max_concurrent_calls=concurrent,
        streams_per_connection=get_int(table, "limits", "streams_per_connection", 1, 10_000, 100),
    )


def parse_audit(table: Table) -> AuditConfig:
    """The [audit] table (its keys checked by the caller).

    Raises:
        ConfigError: naming the dotted key, the problem and what is allowed.
    """
    return AuditConfig(
        max_bytes=get_int(table, "audit", "max_bytes", 4096, 2**40, 16 * 1024 * 1024),
        keep=get_int(table, "audit", "keep", 1, 1000, 4),
        max_entries=get_int(table, "audit", "max_entries", 100, 100_000_000, 100_000),
    )

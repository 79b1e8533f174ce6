"""The etcd v3 JSON gateway's wire form (etcd 3.4): encoding, records and errors.

Owns the gateway's JSON encoding: keys and values in base64, 64-bit integers as strings,
fields at their default value left out; an error body is {"error": ..., "code": N} (a
gRPC status code), nested in a stream. Owns the records a call returns (`KeyValue`,
`RangeResult`, `TxnResult`, `EtcdLease`, `MemberStatus`, `WatchEvent`, `WatchBatch`),
`EtcdError` (every failure, naming each endpoint tried and why it failed there), the
endpoint forms http://host:port and https://host:port and the headers every request
carries. Pure: no sockets.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

# gRPC status codes etcd reports in an error body ({"error": ..., "code": N}).
CODE_NOT_FOUND = 5
IDLE = "idle"  # WatchBatch.reason when a watch ended because its stream stayed silent

HEADERS = {
    "Content-Type": "application/json",
    # clientv3's WithRequireLeader: a member that loses its leader ends its watch streams
    # instead of keeping a silent one open.
    "Grpc-Metadata-Hasleader": "true",
}


class EtcdError(Exception):
    """An etcd request failed; names each endpoint tried and why it failed there."""

    def __init__(
        self,
        attempts: Sequence[tuple[str, str]],
        *,
        code: int | None = None,
        ambiguous: bool = False,
    ) -> None:
        self.attempts = tuple(attempts)
        self.code = code
        # True when a request may have been applied although no answer came back.
        self.ambiguous = ambiguous
        if len(self.attempts) == 1:
            text = f"{self.attempts[0][0]}: {self.attempts[0][1]}"
        else:
            text = "no etcd endpoint answered: " + "; ".join(f"{e}: {r}" for e, r in attempts)
        super().__init__(text)

    @property
    def endpoint(self) -> str:
        return ", ".join(e for e, _ in self.attempts)

    @property
    def reason(self) -> str:
        return "; ".join(r for _, r in self.attempts)

    @property
    def not_found(self) -> bool:
        return self.code == CODE_NOT_FOUND


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True, slots=True)
class RangeResult:
    revision: int  # the store revision the answer reflects
    kvs: tuple[KeyValue, ...]
    count: int


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int  # after the transaction: the new mod_revision of a key it wrote
    kvs: tuple[KeyValue, ...]  # what the failure branch read (empty on success)
    ambiguous: bool  # an earlier endpoint may have applied the request before this answer


@dataclass(frozen=True, slots=True)
class EtcdLease:
    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class MemberStatus:
    endpoint: str
    member_id: int
    leader: int  # 0 while the member knows no leader
    raft_term: int


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: Literal["put", "delete"]
    kv: KeyValue


@dataclass(frozen=True, slots=True)
class WatchBatch:
    revision: int
    events: tuple[WatchEvent, ...]
    canceled: bool = False
    compact_revision: int = 0  # set when the start revision was compacted away
    reason: str = ""


def parse_endpoint(url: str) -> tuple[str, int]:
    """`http://host:port` or `https://host:port` as (host, port).

    Raises:
        ValueError: naming the endpoint and the allowed forms.
    """
    problem = f"etcd endpoint {url!r} is not of the form http://host:port or https://host:port"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(problem) from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or port is None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise ValueError(problem)
    return parts.hostname, port


def uses_tls(url: str) -> bool:
    """Whether the endpoint `url` (checked by `parse_endpoint`) is https://."""
    return url.startswith("https://")


# What a Go TLS server answers a plaintext request; etcd itself closes the connection.
PLAINTEXT_TO_TLS = b"Client sent an HTTP request to an HTTPS server"
PLAINTEXT_TO_TLS_REASON = (
    "this member serves TLS only: use https:// endpoints with [store] ca_file, cert_file "
    "and key_file"
)
PLAINTEXT_TO_TLS_HINT = (
    "a member that serves TLS only does that to plaintext: use https:// endpoints with "
    "[store] ca_file, cert_file and key_file"
)
CLIENT_CERT_HINT = (
    "a member that refuses this replica's client certificate does that: check that "
    "[store] cert_file is signed by the CA the members trust"
)


def prefix_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with `prefix`."""
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] < 0xFF:
            return prefix[:i] + bytes([prefix[i] + 1])
    return b"\0"  # every key


class Unreachable(Exception):
    """One endpoint could not be reached or gave no usable answer; `ambiguous`: the
    request may have been applied there."""

    def __init__(self, reason: str, *, ambiguous: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.ambiguous = ambiguous


def error_of(doc: dict[str, Any]) -> tuple[str, int | None]:
    """The message and gRPC code of an error answer (plain or, from a stream, nested)."""
    error = doc.get("error")
    if isinstance(error, dict):
        doc, error = error, error.get("message")
    code = doc.get("code", doc.get("grpc_code"))
    message = str(error or doc.get("message") or "(no message)")
    return message, code if isinstance(code, int) else None


def json_line(raw: bytes) -> dict[str, Any]:
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError(f"not a JSON object: {raw[:100]!r}")
    return doc


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def revision_of(doc: dict[str, Any]) -> int:
    return int(doc.get("header", {}).get("revision", 0))


def key_value(doc: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=base64.b64decode(doc.get("key", "")),
        value=base64.b64decode(doc.get("value", "")),
        create_revision=int(doc.get("create_revision", 0)),
        mod_revision=int(doc.get("mod_revision", 0)),
        version=int(doc.get("version", 0)),
        lease=int(doc.get("lease", 0)),
    )


def range_result(doc: dict[str, Any]) -> RangeResult:
    kvs = tuple(key_value(kv) for kv in doc.get("kvs", []))
    return RangeResult(revision_of(doc), kvs, int(doc.get("count", 0)))


def os_reason(e: BaseException) -> str:
    return str(getattr(e, "strerror", None) or e) or type(e).__name__

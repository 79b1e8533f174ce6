"""A small client of the etcd v3 JSON gateway (etcd 3.4, Debian `etcd-server`), stdlib only.

Owns the HTTP requests to etcd members: the gateway's JSON encoding (keys and values in
base64, 64-bit integers as strings, fields at their default value left out), endpoint
failover, and one thread per watch stream.

    POST /v3/kv/range  /v3/kv/put  /v3/kv/txn  /v3/kv/deleterange
    POST /v3/lease/grant  /v3/lease/keepalive  /v3/lease/revoke
    POST /v3/watch                 (a stream: one JSON object per line)
    POST /v3/maintenance/status

Rules: every call blocks (http.client, a new connection per request, bounded by a timeout)
and is meant to run in a worker thread; none touches asyncio. A call starts at the endpoint
that answered last and moves on to the next one when an endpoint cannot be reached, does
not answer within `timeout`, or answers 5xx (etcd's "no leader", "request timed out");
when every endpoint failed it goes round again until `retry_for` seconds have passed, so
one call takes at most about retry_for + timeout x endpoints. A 4xx answer is etcd's
verdict on the request and is raised at once. A call to one given endpoint is tried once.
Every failure is an `EtcdError` naming the endpoint(s) and the reason.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

# gRPC status codes etcd reports in an error body ({"error": ..., "code": N}).
CODE_NOT_FOUND = 5
_ROUND_PAUSE = 0.2  # seconds between two rounds over every endpoint
IDLE = "idle"  # WatchBatch.reason when a watch ended because its stream stayed silent

_HEADERS = {
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
    """`http://host:port` as (host, port).

    Raises:
        ValueError: naming the endpoint and the allowed form.
    """
    problem = f"etcd endpoint {url!r} is not of the form http://host:port"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(problem) from None
    if (
        parts.scheme != "http"
        or not parts.hostname
        or port is None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise ValueError(problem)
    return parts.hostname, port


def prefix_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with `prefix`."""
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] < 0xFF:
            return prefix[:i] + bytes([prefix[i] + 1])
    return b"\0"  # every key


class _Unreachable(Exception):
    def __init__(self, reason: str, *, ambiguous: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.ambiguous = ambiguous


class EtcdClient:
    """Blocking calls to an etcd cluster through any of its members' JSON gateways."""

    def __init__(
        self, endpoints: Sequence[str], timeout: float = 2.0, retry_for: float = 5.0
    ) -> None:
        if not endpoints:
            raise ValueError("etcd endpoints: empty; give at least one http://host:port")
        if timeout <= 0:
            raise ValueError(f"etcd timeout: {timeout} is not a positive number of seconds")
        self.endpoints = tuple(endpoints)
        self._addresses = {e: parse_endpoint(e) for e in self.endpoints}
        self.timeout = timeout
        self.retry_for = retry_for
        self._preferred = 0

    # -- key-value ---------------------------------------------------------------------------

    def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        serializable: bool = False,
        count_only: bool = False,
        endpoint: str | None = None,
        timeout: float | None = None,
    ) -> RangeResult:
        """Read `key` (or [key, range_end)); linearizable unless `serializable`."""
        body: dict[str, Any] = {"key": _b64(key)}
        if range_end:
            body["range_end"] = _b64(range_end)
        if serializable:
            body["serializable"] = True
        if count_only:
            body["count_only"] = True
        doc, _ = self._call("/v3/kv/range", body, endpoint=endpoint, timeout=timeout)
        return _range_result(doc)

    def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        """Write `key`; returns the new store revision."""
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        doc, _ = self._call("/v3/kv/put", body)
        return _revision(doc)

    def put_if(
        self,
        key: bytes,
        value: bytes,
        *,
        mod_revision: int | None = None,
        owner_lease: int | None = None,
        lease: int = 0,
    ) -> TxnResult:
        """Write `key` (attached to `lease` unless 0) only if its mod revision is
        `mod_revision` (0: only if absent), or only if it is attached to `owner_lease`;
        when the compare fails, the result holds the key as it is now."""
        k = _b64(key)
        compare: dict[str, Any]
        if owner_lease is not None:
            compare = {"key": k, "target": "LEASE", "result": "EQUAL", "lease": str(owner_lease)}
        elif mod_revision:
            compare = {
                "key": k,
                "target": "MOD",
                "result": "EQUAL",
                "mod_revision": str(mod_revision),
            }
        elif mod_revision == 0:
            compare = {"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
        else:
            raise ValueError("put_if: give mod_revision or owner_lease")
        put: dict[str, Any] = {"key": k, "value": _b64(value)}
        if lease:
            put["lease"] = str(lease)
        body = {
            "compare": [compare],
            "success": [{"request_put": put}],
            "failure": [{"request_range": {"key": k}}],
        }
        doc, ambiguous = self._call("/v3/kv/txn", body)
        kvs: tuple[KeyValue, ...] = ()
        for response in doc.get("responses", []):
            if "response_range" in response:
                kvs = _range_result(response["response_range"]).kvs
        return TxnResult(bool(doc.get("succeeded", False)), _revision(doc), kvs, ambiguous)

    def delete(self, key: bytes, range_end: bytes = b"") -> int:
        """Delete `key` (or [key, range_end)); returns how many keys went."""
        body: dict[str, Any] = {"key": _b64(key)}
        if range_end:
            body["range_end"] = _b64(range_end)
        doc, _ = self._call("/v3/kv/deleterange", body)
        return int(doc.get("deleted", 0))

    # -- leases ------------------------------------------------------------------------------

    def lease_grant(self, ttl: int) -> EtcdLease:
        doc, _ = self._call("/v3/lease/grant", {"TTL": str(ttl)})
        if doc.get("error"):
            raise EtcdError([(self.endpoints[self._preferred], str(doc["error"]))])
        return EtcdLease(int(doc["ID"]), int(doc.get("TTL", 0)))

    def lease_keepalive(self, lease: int, *, retry_for: float | None = None) -> int:
        """Refresh `lease`; returns its new TTL, 0 when it has expired or never existed."""
        doc, _ = self._call("/v3/lease/keepalive", {"ID": str(lease)}, retry_for=retry_for)
        result = doc.get("result", doc)
        return int(result.get("TTL", 0))

    def lease_revoke(self, lease: int, *, retry_for: float | None = None) -> None:
        """End `lease` and delete its keys; a lease already gone is fine."""
        try:
            self._call("/v3/lease/revoke", {"ID": str(lease)}, retry_for=retry_for)
        except EtcdError as e:
            if not e.not_found:
                raise

    # -- cluster -----------------------------------------------------------------------------

    def status(self, endpoint: str, timeout: float | None = None) -> MemberStatus:
        """The status of the member at `endpoint` (no failover)."""
        doc, _ = self._call("/v3/maintenance/status", {}, endpoint=endpoint, timeout=timeout)
        header = doc.get("header", {})
        return MemberStatus(
            endpoint,
            int(header.get("member_id", 0)),
            int(doc.get("leader", 0)),
            int(doc.get("raftTerm", header.get("raft_term", 0))),
        )

    def watch(
        self,
        key: bytes,
        start_revision: int,
        deliver: Callable[[WatchBatch | EtcdError], None],
        *,
        idle_timeout: float = 30.0,
    ) -> Watch:
        """Watch `key` from `start_revision` on a thread of its own (see `Watch`)."""
        return Watch(self, key, start_revision, deliver, idle_timeout)

    # -- transport ---------------------------------------------------------------------------

    def _order(self) -> list[str]:
        first = self._preferred
        n = len(self.endpoints)
        return [self.endpoints[(first + i) % n] for i in range(n)]

    def _call(
        self,
        path: str,
        body: dict[str, Any],
        *,
        endpoint: str | None = None,
        timeout: float | None = None,
        retry_for: float | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """POST `body` to `path` with failover; returns the answer and whether an earlier
        endpoint may have applied the request without answering."""
        data = json.dumps(body).encode("ascii")
        # Without a given endpoint, go round the members until `retry_for` has passed, so
        # a leader election (about a second after the leader dies) is ridden out.
        if endpoint is not None:
            retry_for = 0.0
        deadline = time.monotonic() + (self.retry_for if retry_for is None else retry_for)
        ambiguous = False
        while True:
            attempts: list[tuple[str, str]] = []
            for ep in [endpoint] if endpoint is not None else self._order():
                try:
                    status, doc = self._post(ep, path, data, timeout or self.timeout)
                except _Unreachable as e:
                    attempts.append((ep, e.reason))
                    ambiguous = ambiguous or e.ambiguous
                    continue
                if status == 200:
                    if endpoint is None:
                        self._preferred = self.endpoints.index(ep)
                    return doc, ambiguous
                error, code = _error(doc)
                if status < 500:
                    raise EtcdError([(ep, f"HTTP {status}: {error}")], code=code) from None
                attempts.append((ep, f"HTTP {status}: {error}"))
                ambiguous = True
            if time.monotonic() + _ROUND_PAUSE >= deadline:
                raise EtcdError(attempts, ambiguous=ambiguous)
            time.sleep(_ROUND_PAUSE)

    def _connect(self, endpoint: str, timeout: float) -> http.client.HTTPConnection:
        host, port = self._addresses[endpoint]
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.connect()
        except TimeoutError:
            conn.close()
            raise _Unreachable(f"no connection within {timeout:g} s", ambiguous=False) from None
        except OSError as e:
            conn.close()
            raise _Unreachable(_os_reason(e), ambiguous=False) from None
        return conn

    def _post(
        self, endpoint: str, path: str, data: bytes, timeout: float
    ) -> tuple[int, dict[str, Any]]:
        conn = self._connect(endpoint, timeout)
        try:
            conn.request("POST", path, body=data, headers=_HEADERS)
            response = conn.getresponse()
            raw = response.read()
        except TimeoutError:
            raise _Unreachable(f"no answer within {timeout:g} s", ambiguous=True) from None
        except (OSError, http.client.HTTPException) as e:
            raise _Unreachable(_os_reason(e), ambiguous=True) from None
        finally:
            conn.close()
        try:
            doc = json.loads(raw)
        except ValueError:
            raise _Unreachable(
                f"HTTP {response.status}: not JSON: {raw[:100]!r}", ambiguous=True
            ) from None
        if not isinstance(doc, dict):
            raise _Unreachable(f"HTTP {response.status}: not a JSON object", ambiguous=True)
        return response.status, doc


class Watch:
    """One watch stream on one key, read by a daemon thread.

    The thread opens the stream at the first endpoint that accepts it and hands each
    `WatchBatch` to `deliver` (on the thread: `deliver` must only hand over, e.g. with
    `loop.call_soon_threadsafe`). The stream ends, with exactly one last delivery, when
    etcd cancels it (a batch with `canceled`, e.g. compacted), when it stays silent for
    `idle_timeout` seconds (a canceled batch with reason `IDLE`: a member cut off without
    closing the connection looks the same), or when the connection fails (an `EtcdError`).
    After `close()` nothing more is delivered. A Watch is never restarted; the caller
    reloads and opens a new one.
    """

    def __init__(
        self,
        client: EtcdClient,
        key: bytes,
        start_revision: int,
        deliver: Callable[[WatchBatch | EtcdError], None],
        idle_timeout: float,
    ) -> None:
        self._client = client
        self._body = json.dumps(
            {"create_request": {"key": _b64(key), "start_revision": str(start_revision)}}
        ).encode("ascii")
        self._deliver = deliver
        self._idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._closed = False
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="etcd-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the stream; returns without waiting for etcd."""
        with self._lock:
            self._closed = True
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _emit(self, item: WatchBatch | EtcdError) -> None:
        with self._lock:
            if self._closed:
                return
        self._deliver(item)

    def _run(self) -> None:
        attempts: list[tuple[str, str]] = []
        for ep in self._client._order():
            with self._lock:
                if self._closed:
                    return
            try:
                conn, response = self._open(ep)
            except _Unreachable as e:
                attempts.append((ep, e.reason))
                continue
            try:
                self._read(ep, response)
            finally:
                conn.close()
            return
        self._emit(EtcdError(attempts))

    def _open(self, endpoint: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        timeout = self._client.timeout
        conn = self._client._connect(endpoint, timeout)
        with self._lock:
            self._sock = conn.sock
            if self._closed:
                conn.close()
                raise _Unreachable("closed", ambiguous=False)
        try:
            conn.request("POST", "/v3/watch", body=self._body, headers=_HEADERS)
            response = conn.getresponse()
            if response.status != 200:
                raw = response.read()
                raise _Unreachable(f"HTTP {response.status}: {raw[:200]!r}", ambiguous=False)
            first = _line(response.readline())
            result = first.get("result", {})
            if "error" in first or not result.get("created"):
                raise _Unreachable(f"watch not created: {first}", ambiguous=False)
        except TimeoutError:
            conn.close()
            raise _Unreachable(f"no answer within {timeout:g} s", ambiguous=False) from None
        except (OSError, http.client.HTTPException, ValueError) as e:
            conn.close()
            raise _Unreachable(_os_reason(e), ambiguous=False) from None
        except _Unreachable:
            conn.close()
            raise
        if conn.sock is not None:
            conn.sock.settimeout(self._idle_timeout)
        return conn, response

    def _read(self, endpoint: str, response: http.client.HTTPResponse) -> None:
        while True:
            try:
                raw = response.readline()
                if not raw:
                    raise _Unreachable("the watch stream ended", ambiguous=False)
                doc = _line(raw)
            except TimeoutError:
                self._emit(WatchBatch(revision=0, events=(), canceled=True, reason=IDLE))
                return
            except (OSError, http.client.HTTPException, ValueError) as e:
                self._emit(EtcdError([(endpoint, _os_reason(e))]))
                return
            except _Unreachable as e:
                self._emit(EtcdError([(endpoint, e.reason)]))
                return
            if "error" in doc:
                error = doc["error"]
                message = error.get("message", error) if isinstance(error, dict) else error
                self._emit(EtcdError([(endpoint, f"watch failed: {message}")]))
                return
            batch = _watch_batch(doc.get("result", {}))
            self._emit(batch)
            if batch.canceled:
                return


def _error(doc: dict[str, Any]) -> tuple[str, int | None]:
    """The message and gRPC code of an error answer (plain or, from a stream, nested)."""
    error = doc.get("error")
    if isinstance(error, dict):
        doc, error = error, error.get("message")
    code = doc.get("code", doc.get("grpc_code"))
    message = str(error or doc.get("message") or "(no message)")
    return message, code if isinstance(code, int) else None


def _line(raw: bytes) -> dict[str, Any]:
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError(f"not a JSON object: {raw[:100]!r}")
    return doc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _revision(doc: dict[str, Any]) -> int:
    return int(doc.get("header", {}).get("revision", 0))


def _key_value(doc: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=base64.b64decode(doc.get("key", "")),
        value=base64.b64decode(doc.get("value", "")),
        create_revision=int(doc.get("create_revision", 0)),
        mod_revision=int(doc.get("mod_revision", 0)),
        version=int(doc.get("version", 0)),
        lease=int(doc.get("lease", 0)),
    )


def _range_result(doc: dict[str, Any]) -> RangeResult:
    kvs = tuple(_key_value(kv) for kv in doc.get("kvs", []))
    return RangeResult(_revision(doc), kvs, int(doc.get("count", 0)))


def _watch_batch(result: dict[str, Any]) -> WatchBatch:
    events = tuple(
        WatchEvent("delete" if e.get("type") == "DELETE" else "put", _key_value(e.get("kv", {})))
        for e in result.get("events", [])
    )
    return WatchBatch(
        revision=_revision(result),
        events=events,
        canceled=bool(result.get("canceled", False)),
        compact_revision=int(result.get("compact_revision", 0)),
        reason=str(result.get("cancel_reason", "")),
    )


def _os_reason(e: BaseException) -> str:
    return str(getattr(e, "strerror", None) or e) or type(e).__name__

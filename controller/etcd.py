"""A small client of the etcd v3 JSON gateway (etcd 3.4, Debian `etcd-server`), stdlib only.

Owns the HTTP requests to etcd members: the gateway's JSON encoding (keys and values in
base64, 64-bit integers as strings, fields at their default value left out), endpoint
failover, and one thread per watch stream (controller.etcd_watch). The wire form and
the records live in controller.etcd_wire.

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

TLS: https:// endpoints (all or none) need an `ssl.SSLContext` (`tls_context`: the
cluster's CA, this client's certificate and key, TLS 1.2 or newer, the certificate's
names checked against the endpoint's host). A member that serves TLS only and is asked
in plaintext fails with a reason that says so.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from controller.etcd_watch import Watch
from controller.etcd_wire import (
    CLIENT_CERT_HINT,
    HEADERS,
    PLAINTEXT_TO_TLS,
    PLAINTEXT_TO_TLS_HINT,
    PLAINTEXT_TO_TLS_REASON,
    EtcdError,
    EtcdLease,
    KeyValue,
    MemberStatus,
    RangeResult,
    TxnResult,
    Unreachable,
    WatchBatch,
    b64,
    error_of,
    os_reason,
    parse_endpoint,
    range_result,
    revision_of,
    uses_tls,
)

_ROUND_PAUSE = 0.2  # seconds between two rounds over every endpoint


class EtcdClient:
    """Blocking calls to an etcd cluster through any of its members' JSON gateways."""

    def __init__(
        self,
        endpoints: Sequence[str],
        timeout: float = 2.0,
        retry_for: float = 5.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`tls`: required with https:// endpoints, refused with http:// ones.

        Raises:
            ValueError: no endpoints, a malformed one, http and https mixed, or `tls`
                given for http:// endpoints or missing for https:// ones.
        """
        if not endpoints:
            raise ValueError("etcd endpoints: empty; give at least one http://host:port")
        if timeout <= 0:
            raise ValueError(f"etcd timeout: {timeout} is not a positive number of seconds")
        self.endpoints = tuple(endpoints)
        self._addresses = {e: parse_endpoint(e) for e in self.endpoints}
        secure = {uses_tls(e) for e in self.endpoints}
        if len(secure) > 1:
            raise ValueError("etcd endpoints: http:// and https:// mixed; use one scheme")
        if secure == {True} and tls is None:
            raise ValueError("etcd endpoints: https:// needs a TLS context (tls_context)")
        if secure == {False} and tls is not None:
            raise ValueError("etcd endpoints: a TLS context needs https:// endpoints")
        self._tls = tls
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
        keys_only: bool = False,
        limit: int = 0,
        endpoint: str | None = None,
        timeout: float | None = None,
    ) -> RangeResult:
        """Read `key` (or [key, range_end), in key order, at most `limit` keys unless 0);
        linearizable unless `serializable`."""
        body: dict[str, Any] = {"key": b64(key)}
        if range_end:
            body["range_end"] = b64(range_end)
        if serializable:
            body["serializable"] = True
        if count_only:
            body["count_only"] = True
        if keys_only:
            body["keys_only"] = True
        if limit:
            body["limit"] = str(limit)
        doc, _ = self._call("/v3/kv/range", body, endpoint=endpoint, timeout=timeout)
        return range_result(doc)

    def put(self, key: bytes, value: bytes, *, lease: int = 0) -> int:
        """Write `key`; returns the new store revision."""
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        doc, _ = self._call("/v3/kv/put", body)
        return revision_of(doc)

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
        k = b64(key)
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
        put: dict[str, Any] = {"key": k, "value": b64(value)}
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
                kvs = range_result(response["response_range"]).kvs
        return TxnResult(bool(doc.get("succeeded", False)), revision_of(doc), kvs, ambiguous)

    def delete(self, key: bytes, range_end: bytes = b"") -> int:
        """Delete `key` (or [key, range_end)); returns how many keys went."""
        body: dict[str, Any] = {"key": b64(key)}
        if range_end:
            body["range_end"] = b64(range_end)
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

    def endpoint_order(self) -> list[str]:
        """Every endpoint, starting at the one that answered last (a watch opens in it too)."""
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
            for ep in [endpoint] if endpoint is not None else self.endpoint_order():
                try:
                    status, doc = self._post(ep, path, data, timeout or self.timeout)
                except Unreachable as e:
                    attempts.append((ep, e.reason))
                    ambiguous = ambiguous or e.ambiguous
                    continue
                if status == 200:
                    if endpoint is None:
                        self._preferred = self.endpoints.index(ep)
                    return doc, ambiguous
                error, code = error_of(doc)
                if status < 500:
                    raise EtcdError([(ep, f"HTTP {status}: {error}")], code=code) from None
                attempts.append((ep, f"HTTP {status}: {error}"))
                ambiguous = True
            if time.monotonic() + _ROUND_PAUSE >= deadline:
                raise EtcdError(attempts, ambiguous=ambiguous)
            time.sleep(_ROUND_PAUSE)

    def connect(self, endpoint: str, timeout: float) -> http.client.HTTPConnection:
        """A connection to `endpoint`, or `Unreachable` (for calls and watch streams)."""
        host, port = self._addresses[endpoint]
        conn = (
            http.client.HTTPConnection(host, port, timeout=timeout)
            if self._tls is None
            else http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls)
        )
        try:
            conn.connect()
        except TimeoutError:
            conn.close()
            raise Unreachable(f"no connection within {timeout:g} s", ambiguous=False) from None
        except OSError as e:
            conn.close()
            raise Unreachable(os_reason(e), ambiguous=False) from None
        return conn

    def _post(
        self, endpoint: str, path: str, data: bytes, timeout: float
    ) -> tuple[int, dict[str, Any]]:
        conn = self.connect(endpoint, timeout)
        try:
            conn.request("POST", path, body=data, headers=HEADERS)
            response = conn.getresponse()
            raw = response.read()
        except TimeoutError:
            raise Unreachable(f"no answer within {timeout:g} s", ambiguous=True) from None
        except http.client.RemoteDisconnected as e:
            if self._tls is None:  # what etcd does to plaintext on a TLS-only port
                raise Unreachable(
                    f"{os_reason(e)}; {PLAINTEXT_TO_TLS_HINT}", ambiguous=True
                ) from None
            raise Unreachable(os_reason(e), ambiguous=True) from None
        except (ssl.SSLEOFError, ConnectionResetError) as e:
            # TLS 1.3: a member refusing this replica's client certificate may just close
            # the connection after the handshake, before or instead of its alert.
            reason = os_reason(e)
            if self._tls is not None:
                reason = f"{reason}; {CLIENT_CERT_HINT}"
            raise Unreachable(reason, ambiguous=True) from None
        except (OSError, http.client.HTTPException) as e:
            raise Unreachable(os_reason(e), ambiguous=True) from None
        finally:
            conn.close()
        if PLAINTEXT_TO_TLS in raw:
            raise Unreachable(PLAINTEXT_TO_TLS_REASON, ambiguous=False)
        try:
            doc = json.loads(raw)
        except ValueError:
            raise Unreachable(
                f"HTTP {response.status}: not JSON: {raw[:100]!r}", ambiguous=True
            ) from None
        if not isinstance(doc, dict):
            raise Unreachable(f"HTTP {response.status}: not a JSON object", ambiguous=True)
        return response.status, doc


class TLSFileError(ValueError):
    """A TLS file of [store] is unusable; `which` names its key."""

    def __init__(self, which: str, message: str) -> None:
        super().__init__(message)
        self.which = which


def tls_context(ca_file: Path, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A client context for an etcd cluster: trusts `ca_file` only, presents `cert_file`
    with `key_file`, speaks TLS 1.2 or newer and checks the member's certificate names
    against the endpoint's host.

    Raises:
        TLSFileError: a file is unreadable or not what it should be; names the file and
            the [store] key (`which`: "ca_file" or "cert_file").
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no system CAs: ca_file alone
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as e:
        raise TLSFileError(
            "ca_file", f"{ca_file}: not a readable PEM CA certificate ({_reason(e)})"
        ) from None
    try:
        context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    except (OSError, ssl.SSLError) as e:
        raise TLSFileError(
            "cert_file",
            f"{cert_file} with key_file {key_file}: not a readable PEM certificate and its "
            f"key ({_reason(e)})",
        ) from None
    return context


def _reason(e: BaseException) -> str:
    return str(getattr(e, "strerror", None) or getattr(e, "reason", None) or e)

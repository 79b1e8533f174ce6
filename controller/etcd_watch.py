"""One etcd watch stream, read by a daemon thread (for controller.etcd.EtcdClient.watch).

Owns the stream's life: open it at the first endpoint (in the client's order) that
accepts it, hand each `WatchBatch` over, and end with exactly one last delivery (see
`Watch`). Blocking; it never touches asyncio: `deliver` runs on the watch thread.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from controller.etcd_wire import (
    HEADERS,
    IDLE,
    EtcdError,
    Unreachable,
    WatchBatch,
    WatchEvent,
    b64,
    json_line,
    key_value,
    os_reason,
    revision_of,
)

if TYPE_CHECKING:
    from controller.etcd import EtcdClient


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
            {"create_request": {"key": b64(key), "start_revision": str(start_revision)}}
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
        for ep in self._client.endpoint_order():
            with self._lock:
                if self._closed:
                    return
            try:
                conn, response = self._open(ep)
            except Unreachable as e:
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
        conn = self._client.connect(endpoint, timeout)
        with self._lock:
            self._sock = conn.sock
            if self._closed:
                conn.close()
                raise Unreachable("closed", ambiguous=False)
        try:
            conn.request("POST", "/v3/watch", body=self._body, headers=HEADERS)
            response = conn.getresponse()
            if response.status != 200:
                raw = response.read()
                raise Unreachable(f"HTTP {response.status}: {raw[:200]!r}", ambiguous=False)
            first = json_line(response.readline())
            result = first.get("result", {})
            if "error" in first or not result.get("created"):
                raise Unreachable(f"watch not created: {first}", ambiguous=False)
        except TimeoutError:
            conn.close()
            raise Unreachable(f"no answer within {timeout:g} s", ambiguous=False) from None
        except (OSError, http.client.HTTPException, ValueError) as e:
            conn.close()
            raise Unreachable(os_reason(e), ambiguous=False) from None
        except Unreachable:
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
                    raise Unreachable("the watch stream ended", ambiguous=False)
                doc = json_line(raw)
            except TimeoutError:
                self._emit(WatchBatch(revision=0, events=(), canceled=True, reason=IDLE))
                return
            except (OSError, http.client.HTTPException, ValueError) as e:
                self._emit(EtcdError([(endpoint, os_reason(e))]))
                return
            except Unreachable as e:
                self._emit(EtcdError([(endpoint, e.reason)]))
                return
            if "error" in doc:
                error = doc["error"]
                message = error.get("message", error) if isinstance(error, dict) else error
                self._emit(EtcdError([(endpoint, f"watch failed: {message}")]))
                return
            batch = watch_batch(doc.get("result", {}))
            self._emit(batch)
            if batch.canceled:
                return


def watch_batch(result: dict[str, Any]) -> WatchBatch:
    events = tuple(
        WatchEvent("delete" if e.get("type") == "DELETE" else "put", key_value(e.get("kv", {})))
        for e in result.get("events", [])
    )
    return WatchBatch(
        revision=revision_of(result),
        events=events,
        canceled=bool(result.get("canceled", False)),
        compact_revision=int(result.get("compact_revision", 0)),
        reason=str(result.get("cancel_reason", "")),
    )

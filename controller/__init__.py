"""isthmus controller: keeps the map route -> edge and streams it to every edge.

Owns, in layers (each imports only those below it; an import-linter contract checks it):
- shells: the composition root (`__main__`), the edges' gRPC calls (`servicer`, with
  `authentication` and `presence`), one replica's change path (`service`), the operator's
  Admin socket (`admin`), health (`health`), and what the listener lets in (`guard`, its
  interceptor and limits, logging refusals through `refusals`);
- adapters: the versioned map fan-out (`publisher`), encoded map updates (`history`), the
  persisted state (`store`, the port; `file_store`, `etcd_store` over the `etcd` client;
  the audit files, `auditfile`);
- the registry (`registry`, pure): every transition of the state;
- the pure core: admission (`admission`), the state and its codec (`state`), the audit log
  (`audit`), what a transition changed (`change`), the liveness record (`liveness`) and
  token buckets (`ratelimit`).
Beside the layers: the config (`config`, its [limits] and [audit] tables in `bounds`),
the error contract and its one mapping to gRPC status codes (`errors`), and the metrics
(`metrics`).
Must never import `edge`; talks to edges only through `isthmus.v1` via `isthmus.convert`.
"""

"""The gRPC service, one module per job:

* ``server``  — transport and composition: port, TLS, auth, health, reflection, start and stop;
* ``runtime`` — what a running service holds: encoder + batching queue, store, signal source, pools;
* ``errors``  — the one place errors become status codes with a google.rpc.ErrorInfo;
* ``calls``   — what every method does around its work (ready check, deadline, total time);
* ``pipeline``— ECG message → Recording → segments → batching queue → record vector (the only
  place the service makes a record vector);
* ``ingest``  — one Ingest stream: backpressure, per-item errors, batched writes;
* ``core`` / ``analysis_rpcs`` — the RPCs; ``atlas`` puts them together.
"""

from .server import SERVICE_NAME, AtlasServer

__all__ = ["AtlasServer", "SERVICE_NAME"]

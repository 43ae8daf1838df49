"""The gRPC service, one module per job.

Transport — what a request meets on its way in and out:

* ``server``   — port, TLS, auth, health, reflection, start and stop; puts the rest together;
* ``handlers`` — registers the Atlas methods (lenient request parsing) and server reflection;
* ``auth``     — bearer-token roles (read / write) per method;
* ``errors``   — the one place errors become status codes with a google.rpc.ErrorInfo;
* ``calls``    — what every method does around its work (ready check, deadline, total time);
* ``core`` / ``analysis_rpcs`` — the RPCs; ``ingest`` — one Ingest stream (backpressure,
  per-item errors, batched writes); ``atlas`` puts them together;
* ``presence`` — ``<store>/server.json``, which tells CLI verbs a live server holds a store.

Serving runtime — what a running service holds and how an ECG becomes a vector:

* ``config``       — ``ServerConfig``: every setting and limit, with why it defaults to what it does;
* ``runtime``      — encoder + batching queue (``embedder/batching.py``), store, signal source, pools;
* ``pipeline``     — ECG message → Recording → segments → batching queue → record vector (the only
  place the service makes a record vector);
* ``prepare_pool`` — decoding and preprocessing on worker processes (on a GPU);
* ``allocator``    — glibc malloc settings for a long-running server.

One package, not two: the runtime modules speak the wire types too (the pipeline answers with
gRPC status codes, the prepare pool decodes ECG messages), so a wall between the halves would be
crossed both ways. Importing this package imports nothing else: the prepare pool's workers and
the CLI import single modules (``service.prepare_pool``, ``service.presence``) without the server.
"""

from __future__ import annotations

__all__ = ["AtlasServer", "SERVICE_NAME"]


def __getattr__(name: str):
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

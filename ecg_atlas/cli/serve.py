"""`ecg-atlas serve --store DIR`: run the gRPC service (embed, ingest, search, manage)."""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import threading
import time
from pathlib import Path

from ecg_atlas.config import READ_TOKEN_ENV, WRITE_TOKEN_ENV, ServerConfig

from ecg_atlas.embedder.weights import DEFAULT_ENCODER as DEFAULT_CHECKPOINT
from ecg_atlas.embedder.weights import encoder_notice


def register(sub: argparse._SubParsersAction) -> None:
    d = ServerConfig(store=Path("."))
    p = sub.add_parser("serve", help="run the gRPC server", description=__doc__)
    p.add_argument("--store", required=True, type=Path, help="store directory (created if missing)")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                   help="ECG-FM .pt file, hf:OWNER/REPO/FILE.pt, bundled, or random:PRESET (default: "
                        f"{DEFAULT_CHECKPOINT}: the small open encoder shipped in the package, not ECG-FM)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--fast", default=None, choices=["int8", "compile"],
                   help="opt-in faster CPU inference: int8 (dynamic int8 linear layers, ~1.8x fp32, "
                        "embedding cosine to fp32 >= 0.999) or compile (torch.compile); Info's dtype says which")
    p.add_argument("--index-kind", default=None, choices=["flat", "ivf", "hnsw"],
                   help="search index of a new store (default flat = exact); an existing store keeps its own")
    p.add_argument("--host", default=d.host, help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=d.port, help=f"port (default {d.port}; 0 picks a free one)")
    g = p.add_argument_group("batching and limits")
    g.add_argument("--max-batch-segments", type=int, default=d.max_batch_segments,
                   help="segments per encoder batch (default: 8 on a CPU, 64 on a GPU)")
    g.add_argument("--max-queue-delay-ms", type=float, default=d.max_queue_delay_ms)
    g.add_argument("--max-queue-segments", type=int, default=d.max_queue_segments)
    g.add_argument("--encoder-workers", type=int, default=d.encoder_workers,
                   help="threads running encoder batches side by side, sharing the CPU cores between "
                        "them (default: 2 on a CPU with 2+ cores, 1 on a GPU)")
    g.add_argument("--preprocess-workers", type=int, default=d.preprocess_workers)
    g.add_argument("--max-concurrent-rpcs", type=int, default=d.max_concurrent_rpcs)
    g.add_argument("--max-message-mb", type=float, default=d.max_receive_message_bytes / 2**20,
                   help="largest request and response message in MiB (default 64); bulk goes through ingest")
    g.add_argument("--max-ingest-in-flight", type=int, default=d.max_ingest_in_flight)
    g.add_argument("--max-k", type=int, default=d.max_k)
    g.add_argument("--min-leads", type=int, default=d.min_leads)
    g.add_argument("--grace-s", type=float, default=d.grace_s, help="shutdown grace for running calls")
    g = p.add_argument_group("stored signals (README: Security)")
    g.add_argument("--no-keep-signals", dest="keep_signals", action="store_false",
                   help="do not keep a copy of each ingested ECG's samples in the store (saves ~120 kB per "
                        "10-s ECG); stored ECGs can then only be drawn from files under --data-root")
    g.add_argument("--data-root", dest="data_roots", action="append", type=Path, default=[],
                   help="a folder of ECG files this server may read for stored ECGs whose signal the store "
                        "did not keep (repeatable); a source resolving outside every root is never opened")
    s = p.add_argument_group("security")
    s.add_argument("--token-file", type=Path, default=None,
                   help=f"file of 'read TOKEN' / 'write TOKEN' lines (also ${READ_TOKEN_ENV}, ${WRITE_TOKEN_ENV})")
    s.add_argument("--tls-cert", type=Path, default=None, help="PEM server certificate (turns TLS on)")
    s.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    s.add_argument("--tls-client-ca", type=Path, default=None,
                   help="PEM CA: require client certificates signed by it")
    s.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback bind without TLS and a token (you accept the risk)")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    message_bytes = int(args.max_message_mb * 2**20)
    config = ServerConfig(
        store=args.store, checkpoint=args.checkpoint, device=args.device, dtype=args.dtype, fast=args.fast,
        index_kind=args.index_kind, host=args.host, port=args.port,
        max_batch_segments=args.max_batch_segments, max_queue_delay_ms=args.max_queue_delay_ms,
        max_queue_segments=args.max_queue_segments, preprocess_workers=args.preprocess_workers,
        encoder_workers=args.encoder_workers,
        max_concurrent_rpcs=args.max_concurrent_rpcs, max_receive_message_bytes=message_bytes,
        max_send_message_bytes=message_bytes, max_ingest_in_flight=args.max_ingest_in_flight,
        max_k=args.max_k, min_leads=args.min_leads, grace_s=args.grace_s,
        keep_signals=args.keep_signals, data_roots=tuple(args.data_roots), token_file=args.token_file,
        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca, insecure=args.insecure)
    config.load_tokens()
    return config


#: glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
#: Blocks below this come from the arenas, not from a fresh mmap each time (glibc's ceiling).
MMAP_THRESHOLD_BYTES = 32 * 2**20
#: free() hands the top of a heap back to the kernel only beyond this; the trim thread does the rest.
TRIM_THRESHOLD_BYTES = 256 * 2**20


def tune_malloc(arenas: int = 2, trim_every_s: float = 5.0) -> dict[str, bool]:
    """Keep a long-running, many-threaded server's resident memory flat under load, without
    paying page faults for every large array (glibc only).

    * ``M_ARENA_MAX``: dozens of gRPC threads each allocating ECG-sized buffers made glibc's default
      (8 arenas per core) let resident memory climb under load (BENCHMARKS.md, Service).
    * a daemon thread calls ``malloc_trim(0)`` every ``trim_every_s``: batches of changing size leave
      free holes inside the heaps that glibc keeps resident; trimming hands those pages back. (Forcing
      large blocks to mmap instead also flattened memory, but cost 15–30 % of throughput.)
    * fixed ``M_MMAP_THRESHOLD`` (32 MiB) and ``M_TRIM_THRESHOLD`` (256 MiB): with glibc's sliding
      defaults, the encoder's activations and the ECG-sized arrays of preprocessing were mapped,
      freed and faulted in again op after op: 200–250 k page faults and ~0.7 s of kernel time per
      346-ECG ingest. Fixed, 80–95 k faults and ~0.35 s (ingest +3–4 %, BENCHMARKS.md); the
      trim thread still returns what is free every ``trim_every_s``.

    Call it before the server starts its threads. ``MALLOC_ARENA_MAX`` in the environment wins, and
    ``ECG_ATLAS_MALLOC_TUNING=0`` leaves glibc alone. Returns what was applied.
    """
    applied = {"arena_max": False, "thresholds": False, "trim_thread": False}
    if not sys.platform.startswith("linux") or os.environ.get("ECG_ATLAS_MALLOC_TUNING") == "0":
        return applied
    try:
        libc = ctypes.CDLL("libc.so.6")
        if not os.environ.get("MALLOC_ARENA_MAX"):
            applied["arena_max"] = bool(libc.mallopt(M_ARENA_MAX, arenas))
        if not any(os.environ.get(v) for v in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
            applied["thresholds"] = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and \
                bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return applied

    def trimmer() -> None:
        while True:
            time.sleep(trim_every_s)
            trim(0)

    threading.Thread(target=trimmer, name="malloc-trim", daemon=True).start()
    applied["trim_thread"] = True
    return applied


#: How often a thread holding the GIL is asked to hand it over (CPython's default is 5 ms).
GIL_SWITCH_INTERVAL_S = 0.0005


def tune_gil() -> float:
    """Shorten the GIL switch interval to 0.5 ms. An encoder worker needs the GIL between its
    many short torch ops while the preprocessing and gRPC threads hold it in Python code; at 5 ms it
    can wait up to 5 ms each time. With a single encoder thread, ingest with the bundled encoder
    measured 37.4 vs 35.1 ECGs/s (medians of 10 alternating runs, BENCHMARKS.md); with the two
    CPU workers now the default, 3 A/B pairs showed no difference either way, and it is kept for
    servers run with one worker. ``ECG_ATLAS_SWITCH_INTERVAL_S`` overrides it. Returns the
    interval set."""
    interval = float(os.environ.get("ECG_ATLAS_SWITCH_INTERVAL_S", GIL_SWITCH_INTERVAL_S))
    sys.setswitchinterval(interval)
    return interval


def run(args: argparse.Namespace) -> int:
    tune_malloc()
    tune_gil()
    from ecg_atlas.server import AtlasServer

    config = config_from_args(args)
    notice = encoder_notice(config.checkpoint)
    if notice:
        print(f"note: {notice}", file=sys.stderr, flush=True)
    server = AtlasServer(config).start()
    # One line on stdout with the bound address (tests and scripts read it; the port may be 0).
    print(f"listening on {server.address}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server.wait_ready()
    except BaseException:
        server.stop(grace=0)
        raise
    print(f"serving {server.service.encoder.model_id} on {server.service.encoder.device}", flush=True)
    while not stop.wait(1.0):
        pass
    print("shutting down: finishing running calls", file=sys.stderr, flush=True)
    server.stop()
    return 0

"""`ecg-atlas serve --store DIR`: run the gRPC service (embed, ingest, search, manage)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from ecg_atlas.embedder.weights import DEFAULT_ENCODER as DEFAULT_CHECKPOINT
from ecg_atlas.limits import MAX_K
from ecg_atlas.service.config import (
    DEFAULT_CPU_BATCH_SEGMENTS,
    DEFAULT_GPU_BATCH_SEGMENTS,
    READ_TOKEN_ENV,
    WRITE_TOKEN_ENV,
    ServerConfig,
)


def register(sub: argparse._SubParsersAction) -> None:
    d = ServerConfig(store=Path("."))
    p = sub.add_parser("serve", help="run the gRPC server", description=__doc__)
    p.add_argument("--store", required=True, type=Path, help="store directory (created if missing)")
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT,
                   help="encoder: an ECG-FM .pt, a HuBERT-ECG folder or .pt, an ECGFounder .pth (the kind is read "
                        "from the file), hf:OWNER/REPO[/FILE], bundled, or random:PRESET[:SEED] (default: "
                        f"{DEFAULT_CHECKPOINT}: the small open encoder shipped in the package, not ECG-FM)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto (default): bfloat16 on a GPU, float32 on a CPU")
    p.add_argument("--fast", default=None, choices=["int8", "compile"],
                   help="opt-in faster inference: int8 (CPU: dynamic int8 linear layers, ~1.8x fp32, "
                        "embedding cosine to fp32 >= 0.999) or compile (torch.compile; on a GPU at fixed batch "
                        "sizes); Info's dtype says which")
    p.add_argument("--index-kind", default=None, choices=["flat", "ivf", "hnsw", "ivfpq"],
                   help="search index of a new store (default flat = exact; ivfpq: compressed, for stores past "
                        "memory); an existing store keeps its own")
    p.add_argument("--index-memory", default=None,
                   help="memory an ivfpq index may take, e.g. 2GB: its code size is chosen from this and the "
                        "store's size (default: 1 byte per 8 dimensions)")
    p.add_argument("--host", default=d.host, help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=d.port, help=f"port (default {d.port}; 0 picks a free one)")
    g = p.add_argument_group("batching and limits")
    g.add_argument("--max-batch-segments", type=int, default=d.max_batch_segments,
                   help=f"segments per encoder batch (default: {DEFAULT_CPU_BATCH_SEGMENTS} on a CPU, "
                        f"{DEFAULT_GPU_BATCH_SEGMENTS} on a GPU)")
    g.add_argument("--max-queue-delay-ms", type=float, default=d.max_queue_delay_ms)
    g.add_argument("--max-queue-segments", type=int, default=d.max_queue_segments)
    g.add_argument("--encoder-workers", type=int, default=d.encoder_workers,
                   help="threads running encoder batches side by side, sharing the CPU cores between "
                        "them (default: 2 on a GPU and on a CPU with 2+ cores, else 1; 1 with --fast compile)")
    g.add_argument("--preprocess-workers", type=int, default=d.preprocess_workers,
                   help="threads that decode and preprocess ECGs when no processes do (default 2)")
    g.add_argument("--preprocess-processes", type=_processes, default=d.preprocess_processes, metavar="N|auto",
                   help="worker processes that decode and preprocess ECGs off the encoder's GIL, segments "
                        "returned through shared memory; 0 = threads (default auto: all cores but two, at "
                        "most 8, on a GPU; threads on a CPU)")
    g.add_argument("--max-concurrent-rpcs", type=int, default=d.max_concurrent_rpcs)
    g.add_argument("--max-message-mb", type=float, default=d.max_receive_message_bytes / 2**20,
                   help=f"largest request and response message in MiB (default "
                        f"{d.max_receive_message_bytes / 2**20:g}); bulk goes through ingest")
    g.add_argument("--max-ingest-in-flight", type=int, default=d.max_ingest_in_flight)
    g.add_argument("--max-k", type=int, default=d.max_k,
                   help=f"hits one Search may ask for (default {d.max_k}; the store's ceiling is {MAX_K:,})")
    g.add_argument("--max-metadata-keys", type=int, default=d.max_metadata_keys,
                   help=f"metadata keys one ECG may carry (default {d.max_metadata_keys}); more: the item is "
                        f"refused (too_many_metadata_keys)")
    g.add_argument("--max-metadata-columns", type=int, default=d.max_metadata_columns,
                   help=f"metadata columns the store may hold (default {d.max_metadata_columns}); at the limit, "
                        f"columns no stored ECG uses are dropped, else an item adding more is refused "
                        f"(too_many_columns)")
    g.add_argument("--min-leads", type=int, default=d.min_leads)
    g.add_argument("--grace-s", type=float, default=d.grace_s, help="shutdown grace for running calls")
    g = p.add_argument_group("stored signals (docs/operations.md: Reliability and security)")
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


def _processes(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes or 'auto', got {value!r}") from None


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    from ecg_atlas.index.backends.ivfpq import parse_memory

    message_bytes = int(args.max_message_mb * 2**20)
    config = ServerConfig(
        store=args.store, checkpoint=args.checkpoint, device=args.device, dtype=args.dtype, fast=args.fast,
        index_kind=args.index_kind, index_memory=parse_memory(args.index_memory), host=args.host, port=args.port,
        max_batch_segments=args.max_batch_segments, max_queue_delay_ms=args.max_queue_delay_ms,
        max_queue_segments=args.max_queue_segments, preprocess_workers=args.preprocess_workers,
        preprocess_processes=args.preprocess_processes,
        encoder_workers=args.encoder_workers,
        max_concurrent_rpcs=args.max_concurrent_rpcs, max_receive_message_bytes=message_bytes,
        max_send_message_bytes=message_bytes, max_ingest_in_flight=args.max_ingest_in_flight,
        max_k=args.max_k, max_metadata_keys=args.max_metadata_keys,
        max_metadata_columns=args.max_metadata_columns, min_leads=args.min_leads, grace_s=args.grace_s,
        keep_signals=args.keep_signals, data_roots=tuple(args.data_roots), token_file=args.token_file,
        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca, insecure=args.insecure)
    config.load_tokens()
    return config


def run(args: argparse.Namespace) -> int:
    from ecg_atlas.service import AtlasServer

    config = config_from_args(args)
    server = AtlasServer(config).start()
    # Stdout: "starting on ADDRESS" as soon as the port is bound (the port may be 0), then
    # "listening on ADDRESS" only once the encoder is loaded and the store open, so a missing
    # checkpoint or a locked store never looks like a running server. Scripts read these lines.
    print(f"starting on {server.address} (health NOT_SERVING, RPCs UNAVAILABLE until the encoder and the "
          f"store are ready)", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server.wait_ready()
    except BaseException:
        server.stop(grace=0)
        raise
    runtime = server.service.runtime
    if runtime.notice:
        print(f"note: {runtime.notice}", file=sys.stderr, flush=True)
    print(f"listening on {server.address}", flush=True)
    print(f"serving {runtime.encoder.model_id} on {runtime.encoder.device}", flush=True)
    while not stop.wait(1.0):
        pass
    print("shutting down: finishing running calls", file=sys.stderr, flush=True)
    server.stop()
    return 0

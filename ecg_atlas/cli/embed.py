"""`ecg-atlas embed PATH... --checkpoint CKPT --out FILE`: vectors for ECG files, no server needed.

Progress: a bar on a terminal; piped or logged, a line every $ECG_ATLAS_PROGRESS_EVERY_S seconds
(default 10; off: none).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ecg_atlas.embedder.weights import DEFAULT_ENCODER
from ecg_atlas.errors import AtlasError
from ecg_atlas.refusal import read_refusal


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="embed ECG files into record and segment vectors (Parquet or .npz)",
                       description=__doc__)
    p.add_argument("paths", nargs="*", type=Path, help="ECG files or directories (searched recursively)")
    p.add_argument("--checkpoint", default=DEFAULT_ENCODER,
                   help="bundled (the default: the small open encoder shipped in the package, not ECG-FM); an "
                        "ECG-FM .pt, a HuBERT-ECG hub folder or .pt, an ECGFounder .pth (the kind is read from "
                        "the file); hf:OWNER/REPO[/FILE]; or random:PRESET[:SEED] (untrained)")
    p.add_argument("--revision", default=None, help="hf: checkpoints only: the repo revision (commit) to pin")
    p.add_argument("--checkpoint-sha256", default=None,
                   help="refuse the checkpoint unless its sha256 is this (recommended for hf: downloads)")
    p.add_argument("--fast", choices=["int8", "compile"], default=None,
                   help="opt-in faster CPU inference (int8: dynamic int8 linear layers; compile: torch.compile); "
                        "see BENCHMARKS.md for speed and cosine to fp32")
    p.add_argument("--out", required=True, type=Path,
                   help="output file: .parquet or .npz (--engine ray: a folder of Parquet shards)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="inference precision: auto (default) is bfloat16 on a GPU, float32 on a CPU; "
                        "float16 is GPU-only")
    p.add_argument("--batch-size", type=int, default=32, help="segments per forward pass (default 32)")
    p.add_argument("--min-leads", type=int, default=None, help="refuse ECGs with fewer real leads than this")
    p.add_argument("--workers", type=int, default=2, help="threads reading/preprocessing ahead of the encoder")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    g = p.add_argument_group("bulk embedding on Ray (the ecg-atlas[ray] extra; ecg_atlas/bulk)")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process (default); ray: a Ray Data job writing resumable shards into --out")
    g.add_argument("--address", default=None, help="Ray cluster to join (default: start a local one)")
    g.add_argument("--manifest", type=Path, default=None,
                   help="CSV or Parquet listing the ECGs (instead of paths); other columns become metadata")
    g.add_argument("--path-column", default="path", help="manifest column of file paths (default path)")
    g.add_argument("--id-column", default=None, help="manifest column of ecg_ids (default: path without suffix)")
    g.add_argument("--patient-column", default=None, help="manifest column of patient ids (default patient_id)")
    g.add_argument("--patient-key-file", type=Path, default=None,
                   help="secret key (>= 16 bytes) that turns patient ids found in ECG files into the shards' "
                        "pseudonyms, as for `ecg-atlas ingest` (default: $ECG_ATLAS_PATIENT_KEY; without either, "
                        "ids in files are not used)")
    g.add_argument("--shard-size", type=int, default=10_000, help="ECGs per shard (default 10000)")
    g.add_argument("--concurrency", type=int, default=None,
                   help="encoder actors (default: one per GPU, else one per --cpus-per-actor CPUs)")
    g.add_argument("--cpus-per-actor", type=int, default=None,
                   help="CPUs (torch threads) per CPU encoder actor (default: all CPUs / actors)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.engine == "ray":
        from ecg_atlas.cli.embed_ray import run_from_args

        return run_from_args(args)
    if args.patient_key_file is not None:
        raise AtlasError("--patient-key-file is for --engine ray: the local engine writes no patient ids")
    from ecg_atlas.embedder.discover import find_ecgs, read_source
    from ecg_atlas.embedder.engine import EmbeddingEngine
    from ecg_atlas.embedder.prefetch import prefetch
    from ecg_atlas.embedder.resolver import load_encoder
    from ecg_atlas.progress import Progress

    suffix = args.out.suffix.lower()
    if suffix not in {".parquet", ".npz"}:
        raise AtlasError(f"--out must end in .parquet or .npz, got {args.out.name}")
    sources = list(find_ecgs(args.paths))
    if not sources:
        raise AtlasError("no ECG files found under the given paths (looked for .hea, .h5/.hdf5, .npy/.npz)")
    encoder = load_encoder(args.checkpoint, device=args.device, dtype=args.dtype, revision=args.revision,
                           expected_sha256=args.checkpoint_sha256, fast=args.fast)
    if encoder.notice and not args.json:
        print(f"note: {encoder.model_id}: {encoder.notice}", file=sys.stderr)
    engine = EmbeddingEngine(encoder, batch_size=args.batch_size)
    prep_kwargs = {} if args.min_leads is None else {"min_leads": args.min_leads}

    def load(source):
        return encoder.prepare(read_source(source), **prep_kwargs)  # the encoder's own pipeline

    refused: dict[str, tuple[str, str]] = {}  # ecg_id -> (reason code, message)
    reports: dict[str, dict] = {}

    def ready():
        for source, result in prefetch(sources, load, workers=args.workers):
            if isinstance(result, Exception):  # one bad file is one refusal, never the end of the run
                error = read_refusal(result, source.ecg_id)
                refused[source.ecg_id] = (error.reason, str(error))
                bar.update(1)
                continue
            reports[source.ecg_id] = result.report.to_dict()
            yield source.ecg_id, result.segments

    ids, record_vectors, segment_vectors = [], [], []
    started = time.perf_counter()
    n_segments = 0
    with Progress("ecg-atlas embed", len(sources), "ECGs") as bar:
        for done in engine.embed_records(ready()):
            ids.append(done.key)
            record_vectors.append(done.record_vector)
            segment_vectors.append(done.segment_vectors)
            n_segments += len(done.segment_vectors)
            bar.update(1)
    elapsed = time.perf_counter() - started
    if ids:
        _write(args.out, ids, record_vectors, segment_vectors, encoder)
    summary = {
        "out": str(args.out), "embedded": len(ids), "refused": len(refused), "segments": n_segments,
        "seconds": round(elapsed, 2), "segments_per_s": round(n_segments / elapsed, 2) if elapsed else None,
        "model_id": encoder.model_id, "checkpoint_sha256": encoder.checkpoint_sha256, "dim": encoder.dim,
        "contract": encoder.contract.to_dict(), "notice": encoder.notice,
        "refusal_reasons": dict(Counter(reason for reason, _ in refused.values())),
    }
    if args.json:
        print(json.dumps({**summary, "refused_ecgs": {k: msg for k, (_, msg) in refused.items()}}, indent=2))
    else:
        print(f"embedded {len(ids)} of {len(sources)} ECGs ({n_segments} segments, "
              f"{summary['segments_per_s']} segments/s) into {args.out}")
        for reason, count in summary["refusal_reasons"].items():
            print(f"  refused {count}: {reason.replace('_', ' ')} (--json lists each ECG and why)")
    return 0 if ids else 1


def _write(out: Path, ids, record_vectors, segment_vectors, encoder) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    identity = {"model_id": encoder.model_id, "checkpoint_sha256": encoder.checkpoint_sha256,
                "preprocessing_version": encoder.contract.preprocessing_version, "dim": str(encoder.dim),
                "contract": json.dumps(encoder.contract.to_dict())}
    records = np.stack(record_vectors).astype(np.float32)
    if out.suffix.lower() == ".npz":
        counts = np.array([len(s) for s in segment_vectors])
        np.savez(out, ecg_id=np.array(ids), record_vectors=records,
                 segment_vectors=np.concatenate(segment_vectors).astype(np.float32),
                 segment_offsets=np.concatenate([[0], np.cumsum(counts)]),
                 **{k: np.array(v) for k, v in identity.items()})
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = encoder.dim
    vec_type = pa.list_(pa.float32(), dim)
    table = pa.table({
        "ecg_id": pa.array(ids, pa.string()),
        "n_segments": pa.array([len(s) for s in segment_vectors], pa.int32()),
        "record_vector": pa.FixedSizeListArray.from_arrays(pa.array(records.ravel()), dim),
        "segment_vectors": pa.array([s.tolist() for s in segment_vectors], pa.list_(vec_type)),
    }).replace_schema_metadata({f"ecg_atlas.{k}": v for k, v in identity.items()})
    pq.write_table(table, out)

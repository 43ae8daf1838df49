"""Beyond one machine (issue 19): Ray vs single-process embed, host-side read + preprocess per
core, Parquet import, and IVF-PQ at the largest size this machine holds.

    python benchmarks/scale.py [--parts embed,readers,import,ivfpq] [--ivfpq-n 2000000]
                               [--import-rows 200000] [--import-segments 2,0] [--json runs/scale.json]

* **embed**: the whole sample corpus (../shared/data/ecg) with the bundled encoder, first through
  ``ecg-atlas embed`` (one process: its own ``seconds``, model loading excluded), then through
  ``--engine ray``'s job on a fresh local Ray cluster with every core (``seconds`` of the job:
  actor start and model loading included; cluster start reported apart), in the same run; also
  each side's wall time with its fixed costs. ``--embed-copies N``: the corpus N times over (a
  longer job, over symbolic links to the same files). ``--embed-repeats N``: N runs of each
  path, alternating, and the ratios of their medians (identical runs on this VM differ by up to 25 %).
* **readers**: every ECG of the sample corpus and of ../shared/data/formats, read and put through
  ECG-FM's pipeline in this one process (one core), grouped by reader; CPU seconds per 10 s of ECG,
  hence 10-s ECGs/s per core, hence the cores that keep one H100 fed at 6,000 ECGs/s.
* **import**: shards of `--import-rows` rows of 768-d record vectors, with 2 segment vectors each
  (as a 10-s ECG has) and without, written as ``embed --engine ray`` writes them, imported into a new store by
  ``Store.import_shards``: DuckDB insert and the index build timed apart. Vector values are random
  (the insert does not look at them). Reference, same run and shards: the read alone
  (`ShardRows`) and raw DuckDB alone (the same rows from memory into a table of the store's
  layout), each in wall and CPU seconds, and the ceiling they set together on this machine's
  cores (`insert_vs_ceiling`: the import's insert rate as a fraction of it).
* **ivfpq**: `--ivfpq-n` 768-d vectors derived from real ECG embeddings (below), the `ivfpq` index
  kind built as a store builds it (``new_index`` + ``tune``), re-ranking with the exact float
  vectors held in memory here (a store reads them from DuckDB); recall@10 on held-out queries
  against exact search, QPS against exact search over the same vectors (both batched, 2 cores,
  median of 3 runs), the same at each larger re-ranking step (`by_refine_factor`), and the
  index's memory against the raw float32 vectors.

Derived vectors: the bundled encoder (256-d, the only trained encoder available offline) embeds
`--real` augmented 5-s windows of the sample corpus's real ECGs (benchmarks/real_vectors.py); each
derived vector is a random mixture (Dirichlet(1, 1, 1) weights) of one of those embeddings and two
of its 10 nearest, lifted to 768-d by a fixed random orthonormal map, plus isotropic noise of 0.05 ×
the median distance between two real embeddings (so the set is not confined to a subspace).
Neighbours among them are neighbouring ECG windows, not noisy copies of one vector.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ECG_ATLAS_SHARED_DATA", REPO.parent / "shared" / "data"))
CORPUS = SHARED / "ecg"
H100_ECGS_PER_S = 6000
#: Derived vectors: mixtures of a real embedding and two of its NEIGHBOURS nearest, plus noise
#: of NOISE × the median distance between two real embeddings.
NEIGHBOURS = 10
NOISE = 0.05
#: The gRPC server's CPU per ECG outside inference, measured for issue 19 (BENCHMARKS.md, Service).
GRPC_SERVER_MS_PER_ECG = 2.0


def corpus_copies(workdir: Path, copies: int) -> Path:
    """The sample corpus `copies` times over (copy1/…, copy2/…: distinct ECG ids), as symbolic links
    to its files: a longer job over the same ECGs, with nothing copied."""
    if copies == 1:
        return CORPUS
    root = workdir / "corpus"
    for i in range(1, copies + 1):
        for file in CORPUS.rglob("*"):
            if file.is_file():
                link = root / f"copy{i}" / file.relative_to(CORPUS)
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(file)
    return root


def embed_part(workdir: Path, copies: int = 1, repeats: int = 1) -> dict:
    """`repeats` runs of each path, alternating (single, Ray, single, Ray, ...): the figures are
    medians, each run's figures are kept."""
    corpus = corpus_copies(workdir, copies)
    runs = []
    for run in range(repeats):
        single = single_embed(corpus, workdir / f"single-{run}.parquet")
        ray_run = ray_embed(corpus, workdir / f"shards-{run}")
        runs.append({"single_process": single, "ray": ray_run,
                     "ray_vs_single": round(ray_run["ecgs_per_s"] / single["ecgs_per_s"], 3),
                     "ray_vs_single_with_start": round(single["wall_seconds_with_start"]
                                                       / ray_run["wall_seconds_without_cluster_start"], 3)})
        print(f"embed run {run + 1}/{repeats}: Ray / single {runs[-1]['ray_vs_single']} by throughput, "
              f"{runs[-1]['ray_vs_single_with_start']} with each side's start", flush=True)

    def median(side: str, key: str) -> float:
        return float(np.median([r[side][key] for r in runs]))

    return {
        "ecgs": runs[0]["ray"]["ecgs"], "corpus_copies": copies, "encoder": runs[0]["single_process"]["encoder"],
        "repeats": repeats, "runs": runs,
        "single_process_ecgs_per_s_median": median("single_process", "ecgs_per_s"),
        "ray_ecgs_per_s_median": median("ray", "ecgs_per_s"),
        # by throughput: each path's own seconds (single: model loading excluded; Ray: the job's,
        # actor start and model load included)
        "ray_vs_single": round(median("ray", "ecgs_per_s") / median("single_process", "ecgs_per_s"), 3),
        # both with their fixed costs: the command's start, imports and model load against the
        # job's actor start and model load (the cluster already up)
        "ray_vs_single_with_start": round(median("single_process", "wall_seconds_with_start")
                                          / median("ray", "wall_seconds_without_cluster_start"), 3),
    }


def single_embed(corpus: Path, out: Path) -> dict:
    """`ecg-atlas embed` in its own process: its reported seconds (model loading excluded) and
    the command's wall time (interpreter, imports and model load included)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ecg_atlas.cli", "embed", str(corpus), "--out", str(out),
                           "--device", "cpu", "--json"], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    single = json.loads(done.stdout)
    handled = single["embedded"] + single["refused"]
    return {"encoder": single["model_id"], "seconds": single["seconds"],
            "ecgs_per_s": round(handled / single["seconds"], 2), "segments_per_s": single["segments_per_s"],
            "wall_seconds_with_start": round(wall, 2)}


def ray_embed(corpus: Path, out: Path) -> dict:
    """`--engine ray`'s job on a fresh local Ray cluster with every core: the job's seconds
    (actor start and model loading included), its wall time from the driver, the cluster's start."""
    import ray

    from ecg_atlas.bulk.ray_job import JobOptions, inputs_from_paths, run_job

    t = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    cluster_start = time.perf_counter() - t
    try:
        inputs = inputs_from_paths([corpus])
        t = time.perf_counter()
        summary = run_job(inputs, out, JobOptions(), progress=False)
        wall = time.perf_counter() - t
    finally:
        ray.shutdown()
    return {"ecgs": summary.embedded + summary.refused, "seconds": summary.seconds,
            "wall_seconds_without_cluster_start": round(wall, 2), "cluster_start_seconds": round(cluster_start, 2),
            "ecgs_per_s": summary.ecgs_per_s, "actors": summary.actors, "dtype": summary.dtype}


def readers_part() -> dict:
    import warnings

    from ecg_atlas.embedder.discover import find_ecgs, read_source
    from ecg_atlas.embedder.preprocessing import prepare
    from ecg_atlas.errors import AtlasError

    groups: dict[str, list] = {}
    for source in list(find_ecgs([CORPUS])) + list(find_ecgs([SHARED / "formats"])):
        suffix = source.path.suffix.lower()
        if suffix == ".hea":
            dat = source.path.with_suffix(".mat").exists()
            name = "WFDB (.hea + .mat, Challenge)" if dat else "WFDB (.hea + .dat)"
        else:
            name = source.path.parent.name if SHARED / "formats" in source.path.parents else suffix
        groups.setdefault(name, []).append(source)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, sources in sorted(groups.items()):
            for source in sources[:2]:  # warm-up: imports, numba's cached decoders
                try:
                    prepare(read_source(source))
                except AtlasError:
                    pass
            cpu, seconds, n, accepted = 0.0, 0.0, 0, 0
            for _ in range(3 if len(sources) < 20 else 1):
                for source in sources:
                    t = time.process_time()
                    try:
                        rec = read_source(source)
                        prepare(rec)
                        accepted += 1
                        seconds += rec.duration_s
                        cpu += time.process_time() - t
                        n += 1
                    except AtlasError:
                        continue
            if not n:
                continue
            per_10s = cpu / (seconds / 10)
            out[name] = {"files": len(sources), "mean_duration_s": round(seconds / n, 1),
                         "cpu_ms_per_ecg": round(1000 * cpu / n, 2), "cpu_ms_per_10s_ecg": round(1000 * per_10s, 2),
                         "ten_s_ecgs_per_s_per_core": round(1 / per_10s, 1),
                         "cores_for_6000_per_s": round(H100_ECGS_PER_S * per_10s, 1)}
    return out


def import_part(workdir: Path, rows: int, segments: int, dim: int = 768) -> dict:
    from ecg_atlas.bulk.shards import ShardItem, shard_table, write_shard
    from ecg_atlas.index import Store
    from ecg_atlas.index.store import EncoderIdentity

    rng = np.random.default_rng(1)
    identity = {"model_id": "bench-768", "checkpoint_sha256": "0" * 64, "preprocessing_version": "ecgfm-v1",
                "dim": str(dim), "contract": "{}"}
    folder = workdir / f"import_shards_{segments}"
    folder.mkdir()
    shard_size = 50_000
    t = time.perf_counter()
    for shard, start in enumerate(range(0, rows, shard_size)):
        n = min(shard_size, rows - start)
        segment_vectors = rng.standard_normal((n, max(segments, 1), dim), dtype=np.float32)
        items = [ShardItem(ecg_id=f"ecg-{start + i:08d}", source=f"/archive/{start + i}.hea",
                           patient_id=f"p{(start + i) // 3}",
                           metadata={"age": int(20 + (start + i) % 70), "sex": "MF"[(start + i) % 2]},
                           fs=500.0, lead_names=["I", "II"], duration_s=10.0,
                           record_vector=segment_vectors[i].mean(axis=0),
                           segment_vectors=segment_vectors[i, :segments]) for i in range(n)]
        write_shard(folder / f"shard-{shard:06d}.parquet", shard_table(items, dim, identity, shard=shard, job="bench"))
    write_seconds = time.perf_counter() - t
    size = sum(f.stat().st_size for f in folder.iterdir())
    files = sorted(folder.iterdir())
    store_identity = EncoderIdentity("bench-768", "0" * 64, "ecgfm-v1", dim)
    with Store.open(workdir / f"import_store_{segments}", identity=store_identity, device="cpu",
                    memory_limit="4GB") as store:
        t = time.perf_counter()
        store_rebuild = store._new_derived_index  # the build is timed apart from the insert
        timings = {}

        def timed_index():
            index = store_rebuild()
            timings["insert_done"] = time.perf_counter()
            return index

        store._new_derived_index = timed_index
        cpu = time.process_time()
        result = store.import_shards(files, identity=store_identity)
        total = time.perf_counter() - t
        cpu = time.process_time() - cpu
    insert_seconds = timings["insert_done"] - t
    ceiling = import_ceiling(workdir / f"ceiling_{segments}", files, dim)
    return {"rows": rows, "dim": dim, "segment_vectors_per_row": segments, "shard_files": len(files),
            "parquet_mb": round(size / 1e6, 1), "shard_write_seconds": round(write_seconds, 1),
            "inserted": result.inserted, "insert_seconds": round(insert_seconds, 2),
            "insert_rows_per_s": round(rows / insert_seconds), "with_index_build_seconds": round(total, 2),
            "with_index_build_rows_per_s": round(rows / total), "import_cpu_seconds": round(cpu, 1),
            "load_average_1m_after": round(os.getloadavg()[0], 2), **ceiling,
            "insert_vs_ceiling": round(rows / insert_seconds / ceiling["ceiling_rows_per_s"], 2)}


def import_ceiling(folder: Path, files: list[Path], dim: int) -> dict:
    """The import's two halves alone, on the same shards, and the rate they bound together.

    read: `ShardRows` decoding and checking every row (as the import does, vectors kept for the
    index build); insert: raw DuckDB appending the same rows, already in memory, to a new table of
    the store's layout and settings. Each side's wall and CPU seconds; the ceiling is the rate at
    which both could run if they overlapped perfectly on this machine's cores:
    rows / max(read wall, insert wall, (read CPU + insert CPU) / cores).
    """
    import duckdb
    import pyarrow as pa

    from ecg_atlas.index import schema
    from ecg_atlas.index.database import FLOAT_CODECS_OFF
    from ecg_atlas.index.shard_rows import ShardRows

    def rows(keep_vectors: bool) -> ShardRows:
        return ShardRows([str(f) for f in files], dim, {}, pa.array([], pa.string()), 1, keep_vectors=keep_vectors)

    read = rows(keep_vectors=True)
    wall, cpu = time.perf_counter(), time.process_time()
    n = sum(batch.num_rows for batch in read.reader())
    read_wall, read_cpu = time.perf_counter() - wall, time.process_time() - cpu
    del read
    batches = list(rows(keep_vectors=False).reader())
    folder.mkdir()
    con = duckdb.connect(str(folder / "raw.duckdb"), config={"memory_limit": "4GB"})
    try:
        con.execute("SET wal_autocheckpoint = '256MB'")
        con.execute(f"SET disabled_compression_methods = '{FLOAT_CODECS_OFF}'")
        con.execute(schema.table_ddl(dim))
        con.register("batches", pa.RecordBatchReader.from_batches(batches[0].schema, iter(batches)))
        columns = ", ".join(f'"{name}"' for name in batches[0].schema.names)
        wall, cpu = time.perf_counter(), time.process_time()
        con.execute("BEGIN")
        con.execute(f"INSERT INTO ecg ({columns}) SELECT * FROM batches")
        con.execute("COMMIT")
        insert_wall, insert_cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        con.close()
    bound = max(read_wall, insert_wall, (read_cpu + insert_cpu) / os.cpu_count())
    return {"read_alone_seconds": round(read_wall, 2), "read_alone_cpu_seconds": round(read_cpu, 2),
            "duckdb_alone_seconds": round(insert_wall, 2), "duckdb_alone_cpu_seconds": round(insert_cpu, 2),
            "ceiling_rows_per_s": round(n / bound)}


def real_embeddings(n_windows: int) -> np.ndarray:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from real_vectors import augmented_windows, standardised_records

    from ecg_atlas.embedder.resolver import load_encoder

    encoder = load_encoder("bundled", device="cpu")
    records = standardised_records()
    rng = np.random.default_rng(0)
    out = np.empty((n_windows, encoder.dim), np.float32)
    for start in range(0, n_windows, 64):
        stop = min(n_windows, start + 64)
        out[start:stop] = encoder.embed(augmented_windows(records, stop - start, rng))
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def derive(real: np.ndarray, n: int, dim: int, seed: int) -> np.ndarray:
    """`n` unit vectors of `dim` along the real embeddings (module docstring)."""
    from ecg_atlas.index.backends import exact_top_k

    rng = np.random.default_rng(seed)
    lift, _ = np.linalg.qr(np.random.default_rng(99).standard_normal((dim, real.shape[1])).astype(np.float32))
    _, neighbours = exact_top_k(real, real, np.arange(len(real)), NEIGHBOURS + 1)
    picks = rng.integers(len(real), size=2000)
    spread = float(np.median(np.linalg.norm(real[picks[:1000]] - real[picks[1000:]], axis=1)))
    sigma = NOISE * spread / np.sqrt(dim)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 200_000):
        m = min(n, start + 200_000) - start
        anchor = rng.integers(len(real), size=m)
        mates = neighbours[anchor[:, None], rng.integers(1, NEIGHBOURS + 1, size=(m, 2))]
        weights = rng.dirichlet([1.0, 1.0, 1.0], size=m).astype(np.float32)
        base = (weights[:, :1] * real[anchor] + weights[:, 1:2] * real[mates[:, 0]]
                + weights[:, 2:] * real[mates[:, 1]])
        chunk = base @ lift.T + rng.normal(0, sigma, (m, dim)).astype(np.float32)
        out[start:start + m] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def timed(search, repeats: int = 3):
    """(result, median seconds of `repeats` runs): the first run of a batch pays for fresh memory."""
    seconds = []
    for _ in range(repeats):
        t = time.perf_counter()
        result = search()
        seconds.append(time.perf_counter() - t)
    return result, float(np.median(seconds))


def exact_search(queries: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    from ecg_atlas.index.backends import exact_top_k

    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_ids = np.full((len(queries), k), -1, np.int64)
    for start in range(0, len(vectors), 250_000):
        chunk = vectors[start:start + 250_000]
        scores, ids = exact_top_k(queries, chunk, np.arange(start, start + len(chunk)), k)
        merged_s, merged_i = np.concatenate([best_scores, scores], 1), np.concatenate([best_ids, ids], 1)
        order = np.argsort(-merged_s, axis=1, kind="stable")[:, :k]
        best_scores, best_ids = np.take_along_axis(merged_s, order, 1), np.take_along_axis(merged_i, order, 1)
    return best_ids


def ivfpq_part(n: int, n_real: int, dim: int = 768, memory: str | None = None, cache: Path | None = None) -> dict:
    import faiss

    from ecg_atlas.index.backends import IVFPQ_REFINE_FACTORS, new_index, parse_memory, training_sample_size
    from ecg_atlas.index.derived_index import RECALL_QUERIES
    from ecg_atlas.index.store import IVF_MIN_TRAIN

    t = time.perf_counter()
    if cache is not None and cache.exists():  # the same embeddings, saved by an earlier run
        real = np.load(cache)
        assert len(real) == n_real, f"{cache} holds {len(real)} embeddings, not --real {n_real}"
    else:
        real = real_embeddings(n_real)
        if cache is not None:
            np.save(cache, real)
    real_seconds = time.perf_counter() - t
    vectors = derive(real, n, dim, seed=1)
    held_out = derive(real, 200, dim, seed=2)
    rng = np.random.default_rng(3)
    sample_ids = np.sort(rng.choice(n, training_sample_size(n, IVF_MIN_TRAIN), replace=False))
    sample = vectors[sample_ids]
    t = time.perf_counter()
    index = new_index("faiss-cpu", "ivfpq", dim, training_sample=sample, n_rows=n, memory_budget=parse_memory(memory))
    index.use_exact_vectors(lambda wanted: vectors[wanted])
    train_seconds = time.perf_counter() - t
    t = time.perf_counter()
    for start in range(0, n, 100_000):
        index.add(np.arange(start, min(n, start + 100_000), dtype=np.int64), vectors[start:start + 100_000])
    add_seconds = time.perf_counter() - t
    t = time.perf_counter()
    queries, query_ids = sample[:RECALL_QUERIES], sample_ids[:RECALL_QUERIES]
    index.tune(queries, query_ids, exact_search(queries, vectors, 11))  # as the store tunes it
    tune_seconds = time.perf_counter() - t

    truth, exact_seconds = timed(lambda: exact_search(held_out, vectors, 10))
    found, ivfpq_seconds = timed(lambda: index.search(held_out, 10)[1])
    recall = float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, truth)]))
    tuned_factor, steps = index.refine_factor, []
    for factor in [f for f in IVFPQ_REFINE_FACTORS if f >= tuned_factor]:  # the curve past the tuned point
        index.refine_factor = factor
        step_found, step_seconds = timed(lambda: index.search(held_out, 10)[1])
        steps.append({"refine_factor": factor, "recall_at_10_held_out": round(float(np.mean(
            [len(set(f) & set(e)) / 10 for f, e in zip(step_found, truth)])), 4),
            "qps_vs_exact": round(exact_seconds / step_seconds, 1)})
    index.refine_factor = tuned_factor
    latencies = []
    for query in held_out[:50]:
        t = time.perf_counter()
        index.search(query[None, :], 10)
        latencies.append(time.perf_counter() - t)
    serialized = faiss.serialize_index(index.index).nbytes
    raw = n * dim * 4
    return {"n": n, "dim": dim, "real_windows_embedded": n_real, "real_embedding_seconds": round(real_seconds, 1),
            "settings": {k: v for k, v in index.settings().items()},
            "train_seconds": round(train_seconds, 1), "add_seconds": round(add_seconds, 1),
            "tune_seconds": round(tune_seconds, 1), "held_out_queries": len(held_out),
            "recall_at_10_held_out": round(recall, 4),
            "exact_qps": round(len(held_out) / exact_seconds, 2), "ivfpq_qps": round(len(held_out) / ivfpq_seconds, 1),
            "qps_vs_exact": round(exact_seconds / ivfpq_seconds, 1), "by_refine_factor": steps,
            "ivfpq_single_query_ms_median": round(1000 * float(np.median(latencies)), 2),
            "index_memory_bytes": index.memory_bytes(), "serialized_index_bytes": int(serialized),
            "raw_float32_bytes": raw, "memory_vs_raw": round(index.memory_bytes() / raw, 4),
            "serialized_vs_raw": round(serialized / raw, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="embed,readers,import,ivfpq")
    ap.add_argument("--ivfpq-n", type=int, default=2_000_000)
    ap.add_argument("--real", type=int, default=8192, help="real ECG windows embedded for the derived vectors")
    ap.add_argument("--index-memory", default=None, help="ivfpq memory budget (default: the kind's default)")
    ap.add_argument("--real-cache", type=Path, default=None,
                    help="keep the real embeddings in this .npy and reuse them when it exists (they take minutes)")
    ap.add_argument("--import-rows", type=int, default=200_000)
    ap.add_argument("--import-segments", default="2,0",
                    help="segment vectors per imported row, one import per value (comma-separated)")
    ap.add_argument("--embed-copies", type=int, default=1,
                    help="embed the sample corpus this many times over (symbolic links): a longer job")
    ap.add_argument("--embed-repeats", type=int, default=1,
                    help="runs of each path, alternating; the ratios are of the medians")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    parts = args.parts.split(",")
    report = {"utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
              "processor": platform.processor() or platform.machine(), "command": " ".join(sys.argv)}
    with tempfile.TemporaryDirectory(prefix="ecg-atlas-scale-") as tmp:
        work = Path(tmp)
        steps = {"embed": lambda: embed_part(work, args.embed_copies, args.embed_repeats), "readers": readers_part,
                 "import": lambda: [import_part(work, args.import_rows, int(segments))
                                            for segments in args.import_segments.split(",")],
                 "ivfpq": lambda: ivfpq_part(args.ivfpq_n, args.real, memory=args.index_memory, cache=args.real_cache)}
        for name in parts:
            t = time.perf_counter()
            report[name] = steps[name]()
            print(f"{name} ({time.perf_counter() - t:.0f} s): {json.dumps(report[name], indent=1)}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

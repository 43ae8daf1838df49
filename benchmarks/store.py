"""Store benchmarks: every figure is printed next to a reference measured in the same run.

    python benchmarks/store.py search [--n 100000]          search latency vs bare IndexFlatIP,
                                                            filtered vs unfiltered, bulk add rate
    python benchmarks/store.py large  [--n 1000000]         reopen time (no rebuild) and resident
                                                            memory of an open store vs raw fp32 bytes
    python benchmarks/store.py ivf    [--n 1000000] [--real-vectors FILE.npy]
                                                            IVF recall@10 and QPS vs exact search

Vectors are Gaussian unless --real-vectors names an (m, dim) float32 .npy of real ECG embeddings
(benchmarks/real_vectors.py makes one: augmented real ECG windows through the bundled encoder). The
m real vectors are stored once; the rows past them up to --n are each a real vector mixed with a
random other one (weight --mix) plus a little noise, so every row is distinct. IVF recall on Gaussian vectors is NOT
the required measurement (real embeddings are clustered; Gaussian noise is IVF's worst case) and
is labelled so.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import faiss
import numpy as np

from ecg_atlas.index import EncoderIdentity, Store, Term

IDENTITY_NAME = "bench-encoder"
BLOCK = 1000


def identity(dim: int) -> EncoderIdentity:
    return EncoderIdentity(IDENTITY_NAME, "0" * 64, "bench-v1", dim)


@functools.lru_cache(maxsize=2)
def _real_base(path: str) -> np.ndarray:
    return np.load(path, mmap_mode="r")  # opened once, not once per block


def _real_block(args: argparse.Namespace, b: int) -> np.ndarray:
    """Rows b·BLOCK .. (b+1)·BLOCK of the real-vector set (deterministic per block)."""
    base = _real_base(args.real_vectors)
    m = len(base)
    idx = np.arange(b * BLOCK, (b + 1) * BLOCK)
    main = np.asarray(base[idx % m], dtype=np.float32)
    main /= np.linalg.norm(main, axis=1, keepdims=True)
    if idx[0] + BLOCK <= m:
        return main  # the real vectors themselves, once
    # Past the real ones: each row is a real vector mixed with another real one (a fixed random
    # partner per row), plus a little noise: distinct rows, real-ECG geometry, no duplicate copies.
    rng = np.random.default_rng(2000 + b)
    partner = np.asarray(base[rng.integers(0, m, BLOCK)], dtype=np.float32)
    partner /= np.linalg.norm(partner, axis=1, keepdims=True)
    noise = rng.standard_normal(main.shape, dtype=np.float32) * (args.noise / np.sqrt(main.shape[1]))
    mixed = (1 - args.mix) * main + args.mix * partner + noise
    return np.where((idx < m)[:, None], main, mixed).astype(np.float32)


def vectors(args: argparse.Namespace, start: int, stop: int) -> np.ndarray:
    """Rows start..stop of the benchmark's vectors (deterministic, generated in fixed blocks, so any
    chunking of the same rows gives the same vectors)."""
    first, last = start // BLOCK, (stop - 1) // BLOCK
    if args.real_vectors:
        blocks = [_real_block(args, b) for b in range(first, last + 1)]
    else:
        blocks = [np.random.default_rng(1000 + b).standard_normal((BLOCK, args.dim), dtype=np.float32)
                  for b in range(first, last + 1)]
    return np.concatenate(blocks)[start - first * BLOCK : stop - first * BLOCK]


def metadata(start: int, stop: int) -> list[dict]:
    # bucket = i % 100 makes "bucket = 7" a 1 %-selective filter.
    return [{"bucket": i % 100, "age": 20 + i % 70, "sex": "F" if i % 2 else "M",
             "labels": ["AF"] if i % 7 == 0 else []} for i in range(start, stop)]


def fill(store: Store, args: argparse.Namespace, n: int, batch: int) -> float:
    """Upsert n rows in batches; returns rows/s (vector generation excluded)."""
    spent = 0.0
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        x, meta = vectors(args, start, stop), metadata(start, stop)
        ids = [f"ecg-{i}" for i in range(start, stop)]
        patients = [f"patient-{i // 4}" for i in range(start, stop)]
        t = time.perf_counter()
        store.upsert(ids, x, identity=identity(args.dim), patient_ids=patients, metadata=meta,
                     sources=["bench"] * len(ids), fs=[500.0] * len(ids), duration_s=[10.0] * len(ids))
        spent += time.perf_counter() - t
    return n / spent


def timed(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def bench_search(args: argparse.Namespace) -> dict:
    out: dict = {"n": args.n, "dim": args.dim, "threads": faiss.omp_get_max_threads()}
    root = tempfile.mkdtemp(prefix="store-bench-", dir=args.tmp)
    try:
        rates = []
        for rep in range(args.add_repeats):
            path = os.path.join(root, f"add{rep}")
            with Store.open(path, device="cpu") as store:
                rates.append(fill(store, args, args.n, args.batch))
            if rep < args.add_repeats - 1:
                shutil.rmtree(path)
        out["bulk_add_rows_per_s"] = {"median": statistics.median(rates), "runs": rates, "batch": args.batch}
        store = Store.open(path, device="cpu")
        bare = faiss.IndexFlatIP(args.dim)
        for start in range(0, args.n, 50_000):
            x = vectors(args, start, min(args.n, start + 50_000))
            faiss.normalize_L2(x)
            bare.add(x)
        rng = np.random.default_rng(7)
        queries = rng.standard_normal((256, args.dim), dtype=np.float32)
        faiss.normalize_L2(queries)
        one = [queries[i : i + 1] for i in range(args.queries)]
        where = Term("bucket", "=", 7)
        sample = {"bare": [], "store": [], "store_filtered": [], "bare256": [], "store256": [], "store256_filtered": []}
        for _ in range(args.repeats):  # interleaved, so drift from other load hits all alike
            sample["bare"].append(timed(lambda: [bare.search(q, 10) for q in one], 1) / len(one))
            sample["store"].append(timed(lambda: [store.search(q, k=10) for q in one], 1) / len(one))
            sample["store_filtered"].append(
                timed(lambda: [store.search(q, k=10, filter=where) for q in one], 1) / len(one))
            sample["bare256"].append(timed(lambda: bare.search(queries, 10), 1))
            sample["store256"].append(timed(lambda: store.search(queries, k=10), 1))
            sample["store256_filtered"].append(timed(lambda: store.search(queries, k=10, filter=where), 1))
        med = {k: statistics.median(v) for k, v in sample.items()}
        out["latency_ms"] = {k: round(v * 1e3, 3) for k, v in med.items()}
        out["ratios"] = {
            "single_store_vs_bare (<=1.2)": med["store"] / med["bare"],
            "batch256_store_vs_bare (<=1.2)": med["store256"] / med["bare256"],
            "single_filtered1pct_vs_store_unfiltered (<=2)": med["store_filtered"] / med["store"],
            "batch256_filtered1pct_vs_store_unfiltered (<=2)": med["store256_filtered"] / med["store256"],
        }
        # Sanity: the store and the bare index agree on the answer.
        got = [h.ecg_id for h in store.search(queries[:1], k=10)[0]]
        _, ref = bare.search(queries[:1], 10)
        out["same_answer_as_bare"] = got == [f"ecg-{i}" for i in ref[0]]
        store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def _rss_probe(path: str) -> dict:
    """Run in a fresh process: open the store, report open time and resident memory."""
    t = time.perf_counter()
    store = Store.open(path, device="cpu")
    opened = time.perf_counter() - t
    store.search(np.ones((1, store.info().dim), dtype=np.float32), k=10)
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    rss = int(status["VmRSS"].split()[0]) * 1024
    info = store.info()
    store.close()
    return {"open_s": opened, "rss_bytes": rss, "n": info.n_ecgs, "dim": info.dim}


def bench_large(args: argparse.Namespace) -> dict:
    root = tempfile.mkdtemp(prefix="store-large-", dir=args.tmp)
    path = os.path.join(root, "store")
    try:
        with Store.open(path, device="cpu") as store:
            rate = fill(store, args, args.n, args.batch)
        probes = []
        for _ in range(args.repeats):
            res = subprocess.run([sys.executable, __file__, "_probe", path], capture_output=True, text=True, check=True)
            probes.append(json.loads(res.stdout.strip().splitlines()[-1]))
        raw = args.n * args.dim * 4
        open_s = statistics.median(p["open_s"] for p in probes)
        rss = statistics.median(p["rss_bytes"] for p in probes)
        return {"n": args.n, "dim": args.dim, "bulk_add_rows_per_s": rate, "reopen_s_median (<=10)": open_s,
                "reopen_s_runs": [p["open_s"] for p in probes], "rss_bytes": rss, "raw_fp32_bytes": raw,
                "rss_vs_raw (<=1.3)": rss / raw}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_ivf(args: argparse.Namespace) -> dict:
    root = tempfile.mkdtemp(prefix="store-ivf-", dir=args.tmp)
    path = os.path.join(root, "store")
    try:
        with Store.open(path, device="cpu") as store:
            fill(store, args, args.n, args.batch)
        t = time.perf_counter()
        store = Store.open(path, device="cpu", index_kind="ivf")
        build_s = time.perf_counter() - t
        info = store.info()
        exact = faiss.IndexFlatIP(args.dim)
        for start in range(0, args.n, 50_000):
            x = vectors(args, start, min(args.n, start + 50_000))
            faiss.normalize_L2(x)
            exact.add(x)
        if args.query_vectors:  # held-out real vectors (e.g. new ECG windows), never stored
            queries = np.ascontiguousarray(np.load(args.query_vectors)[: args.queries], dtype=np.float32)
        else:  # fresh perturbations of stored vectors (not stored themselves)
            rng = np.random.default_rng(11)
            pick = rng.choice(args.n, size=args.queries, replace=False)
            base = np.concatenate([vectors(args, int(i), int(i) + 1) for i in pick])
            queries = base + rng.standard_normal(base.shape, dtype=np.float32) * base.std() * args.noise
        faiss.normalize_L2(queries)
        _, truth = exact.search(queries, 10)
        hits = store.search(queries, k=10)
        recall = np.mean([len({int(h.ecg_id[4:]) for h in row} & set(t.tolist())) / 10 for row, t in zip(hits, truth)])
        t_exact = statistics.median(timed(lambda: exact.search(queries, 10), 1) for _ in range(args.repeats))
        t_ivf = statistics.median(timed(lambda: store.search(queries, k=10), 1) for _ in range(args.repeats))
        store.close()
        return {"n": args.n, "vectors": args.real_vectors or "GAUSSIAN (not the required measurement)",
                "queries": args.query_vectors or "perturbed stored vectors",
                "index": info.index_kind, "settings": info.index_settings, "open_with_build_s": build_s,
                "recall_at_10 (>=0.95)": float(recall), "qps_ivf_vs_exact (>=5)": t_exact / t_ivf,
                "qps_exact": len(queries) / t_exact, "qps_ivf_store": len(queries) / t_ivf}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "_probe":
        print(json.dumps(_rss_probe(sys.argv[2])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["search", "large", "ivf"])
    parser.add_argument("--n", type=int)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--batch", type=int, default=1000, help="rows per upsert call")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--add-repeats", type=int, default=3)
    parser.add_argument("--real-vectors", help="(m, dim) .npy of real ECG embeddings to augment up to --n")
    parser.add_argument("--noise", type=float, default=0.05,
                        help="augmentation noise: norm relative to a unit vector (real vectors), query perturbation")
    parser.add_argument("--mix", type=float, default=0.3,
                        help="real vectors past the originals: weight of the random real partner mixed in")
    parser.add_argument("--query-vectors",
                        help="ivf: (q, dim) .npy of held-out query vectors (default: perturbed stored ones)")
    parser.add_argument("--tmp", default=None, help="where to put the temporary stores")
    args = parser.parse_args()
    if args.real_vectors:
        args.dim = int(_real_base(args.real_vectors).shape[1])
    args.n = args.n or {"search": 100_000, "large": 1_000_000, "ivf": 1_000_000}[args.what]
    result = {"search": bench_search, "large": bench_large, "ivf": bench_ivf}[args.what](args)
    print(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()

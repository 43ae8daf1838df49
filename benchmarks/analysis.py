"""Analysis benchmark: probe training and a cohort run on 100k × 768 record vectors.

Targets (issue): probe training on 100k × 768 with 5 labels ≤ 60 s; cohort run on 100k ≤ 5 min.

The vectors derive from real ECG embeddings: ``--records`` ECGs of ../shared/data/ecg are embedded
(first 5-s segment) by ``--encoder`` (default: the ECG-FM base architecture, random init — the
only 768-d encoder available offline), then augmented to ``--n`` vectors, each a mix of two real
vectors (weight ≤ 0.3 on the second) plus Gaussian noise at 10 % of each dimension's spread. The
five labels are the first parent's manifest labels (age ≥ 60, male, CODE-15 source, any diagnosis,
RHYTHM_OTHER) with 5 % flipped; two ECGs per patient.

References measured in the same run: scikit-learn's plain ``LogisticRegression()`` fit (lbfgs,
C = 1, no C search) on the same training rows, once per label; for the cohort run, each stage's
share of the total.

    python benchmarks/analysis.py [--n 100000] [--repeats 3] [--cohort-repeats 1]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ECG_ATLAS_SHARED_DATA", REPO.parent / "shared" / "data")) / "ecg"


def real_vectors(encoder_spec: str, n_records: int, seed: int) -> tuple[np.ndarray, list[dict]]:
    from ecg_atlas.embedder import load_encoder, preprocess, read_ecg
    from ecg_atlas.errors import AtlasError

    rows = list(csv.DictReader(open(DATA / "manifest.csv")))
    rng = np.random.default_rng(seed)
    segments, kept = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in rng.permutation(len(rows)):
            if len(kept) == n_records:
                break
            try:
                segments.append(preprocess(read_ecg(DATA / rows[i]["record"]))[0])
                kept.append(rows[i])
            except AtlasError:
                continue
    encoder = load_encoder(encoder_spec, device="cpu")
    t0 = time.perf_counter()
    vectors = np.concatenate([encoder.embed(np.stack(segments[k:k + 8])) for k in range(0, len(segments), 8)])
    print(f"embedded {len(kept)} real ECGs with {encoder.model_id} ({encoder.dim}-d) "
          f"in {time.perf_counter() - t0:.1f} s")
    return vectors, kept


def augment(base: np.ndarray, rows: list[dict], n: int, seed: int):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, len(base), n)
    b = rng.integers(0, len(base), n)
    alpha = rng.uniform(0, 0.3, (n, 1)).astype(np.float32)
    spread = base.std(axis=0, keepdims=True)
    noise = rng.standard_normal((n, base.shape[1])).astype(np.float32)
    vectors = (1 - alpha) * base[a] + alpha * base[b] + 0.1 * spread * noise
    labels = np.array([[
        float(bool(r["age"]) and float(r["age"]) >= 60), float(r["sex"] == "M"), float(r["dataset"] == "code15"),
        float(bool(r["label_groups"])), float("RHYTHM_OTHER" in r["label_groups"].split(";")),
    ] for r in rows])[a]
    flip = rng.random(labels.shape) < 0.05
    labels = np.where(flip, 1 - labels, labels)
    patients = np.array([f"patient:{i // 2}" for i in range(n)], dtype=object)
    return vectors.astype(np.float32), labels, patients


def bench_probe(vectors, labels, groups, repeats: int) -> None:
    from sklearn.linear_model import LogisticRegression

    from ecg_atlas.analysis.probe import MULTILABEL, Targets, fit_probe, train_probe
    from ecg_atlas.analysis.splits import split_by_patient

    names = ["age_over_60", "male", "code15", "any_diagnosis", "rhythm_other"]
    targets = Targets(MULTILABEL, names, labels)
    split = split_by_patient(groups, labels, seed=0)
    full, fit_only, sk = [], [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        _, report = train_probe(vectors, targets, groups, split, seed=r)
        full.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        fit_probe(vectors, targets, split)
        fit_only.append(time.perf_counter() - t0)
    train = split == "train"
    x = vectors[train].astype(np.float64)
    x = (x - x.mean(0)) / x.std(0)
    for _ in range(repeats):
        t0 = time.perf_counter()
        iters = [int(LogisticRegression().fit(x, labels[train, j]).n_iter_[0]) for j in range(len(names))]
        sk.append(time.perf_counter() - t0)
    print(f"probe, {len(vectors)} × {vectors.shape[1]}, 5 labels, "
          f"split {int(train.sum())}/{int((split == 'val').sum())}/"
          f"{int((split == 'test').sum())} ECGs:")
    print(f"  train_probe (6 Cs picked on val, 1000-resample bootstrap CIs, 1/10/100 % curve): "
          f"median {statistics.median(full):.1f} s  (runs: {', '.join(f'{t:.1f}' for t in full)})  target ≤ 60 s")
    print(f"  fit_probe only (6 Cs × 5 labels + val pick): median {statistics.median(fit_only):.1f} s")
    print(f"  reference: scikit-learn LogisticRegression() C=1, one fit per label (5 fits, lbfgs iterations {iters}): "
          f"median {statistics.median(sk):.1f} s")
    print(f"  test macro AUROC {report.test.macro_auroc}")


def bench_cohort(vectors, repeats: int) -> None:
    from ecg_atlas.analysis.cohort import CohortParams, run_cohort

    totals, results = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        results.append(run_cohort(vectors, CohortParams()))
        totals.append(time.perf_counter() - t0)
    res = results[-1]
    total = statistics.median(totals)
    print(f"cohort run, {len(vectors)} vectors, PCA 50 → UMAP 10-d + 2-D → HDBSCAN (backend {res.backend}; "
          f"cuML: not measured, no GPU):")
    print(f"  total median {total:.1f} s  (runs: {', '.join(f'{t:.1f}' for t in totals)})  target ≤ 300 s")
    for stage, seconds in res.timings.items():
        print(f"    {stage:<13} {seconds:7.1f} s  {seconds / sum(res.timings.values()):6.1%}")
    print(f"  {res.n_clusters} clusters, {int((res.labels < 0).sum())} noise; 2-D trustworthiness (k=10, 2000 sampled) "
          f"{res.trustworthiness}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--records", type=int, default=48, help="real ECGs to embed (first segment each)")
    parser.add_argument("--encoder", default="random:base")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cohort-repeats", type=int, default=1)
    parser.add_argument("--skip", choices=["probe", "cohort"], action="append", default=[])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), Python {platform.python_version()}; load average "
          f"{os.getloadavg()[0]:.1f} at start")
    base, rows = real_vectors(args.encoder, args.records, args.seed)
    vectors, labels, groups = augment(base, rows, args.n, args.seed)
    if "probe" not in args.skip:
        bench_probe(vectors, labels, groups, args.repeats)
    if "cohort" not in args.skip:
        bench_cohort(vectors, args.cohort_repeats)
    print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

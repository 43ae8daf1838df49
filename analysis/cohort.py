"""Cohort exploration: (PCA) → UMAP → HDBSCAN over record vectors, with a progress callback.

Array in, result out; ``store_io`` reads the cohort and writes the result back.

Pipeline (every choice is recorded in ``CohortResult.params``):

1. **Cosine geometry.** Vectors are L2-normalised first; Euclidean distance between unit vectors
   is a monotone function of cosine distance, so every later step measures cosine similarity.
2. **PCA** to ``pca_dims`` (default 50; ``None`` skips it) — removes noise dimensions and makes the
   neighbour search ~15× cheaper. Randomised SVD, seeded.
3. **k-nearest-neighbour graph**, exact (FAISS brute force), computed once and shared by both UMAPs.
4. **UMAP to ``cluster_dims``** (5–10; ``min_dist=0``: packed clusters suit density clustering) for
   HDBSCAN, and **UMAP to 2-D** (``min_dist=0.1``) for the map. Seeded, hence single-threaded
   in umap-learn: reproducibility is worth more here than the speed-up.
5. **HDBSCAN** on the clustering embedding: label per ECG (−1 = noise), membership probability,
   GLOSH outlier score. Clusters are renumbered by size (0 = largest).
6. **Exemplars** per cluster: its members with the highest membership probability, ties broken by
   closeness to the cluster's centre; **top outliers** by GLOSH score. The 2-D map's
   trustworthiness (k = 10, on a seeded sample of at most 2 000 ECGs) says how well it keeps
   neighbourhoods.

``backend="cpu"`` is the default. ``"auto"`` (or ``"cuml"``) runs UMAP and HDBSCAN in RAPIDS cuML on
a CUDA machine that has it, with the same parameters and the same outputs: where cuML's HDBSCAN
gives no ``outlier_scores_`` (current releases), the GLOSH scores are computed on the CPU from its
condensed tree, exactly as the hdbscan package computes them. cuML's UMAP is its own
implementation: maps match umap-learn's in quality (trustworthiness, reported the same way), not
coordinate for coordinate.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ecg_atlas.errors import AtlasError
from ecg_atlas.index.vectors import normalised

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
#: (stage, share of the run's time it usually takes): the percent handed to the callback.
STAGES: tuple[tuple[str, float], ...] = (
    ("pca", 0.03), ("neighbours", 0.17), ("umap-cluster", 0.35), ("umap-map", 0.35), ("hdbscan", 0.07),
    ("summaries", 0.03),
)
MIN_ECGS = 20
TRUST_SAMPLE = 2000
TRUST_NEIGHBOURS = 10


@dataclass(frozen=True)
class CohortParams:
    pca_dims: int | None = 50
    cluster_dims: int = 10
    n_neighbors: int = 15
    cluster_min_dist: float = 0.0
    map_min_dist: float = 0.1
    n_epochs: int | None = None  # None: umap-learn's default (200 above 10 000 points, else 500)
    min_cluster_size: int | None = None  # None: max(10, 0.5 % of the cohort)
    min_samples: int | None = None  # None: min(min_cluster_size, 10)
    n_exemplars: int = 5
    n_outliers: int = 20
    seed: int = 42
    backend: str = "cpu"  # cpu | auto (cuML when present) | cuml

    def resolved(self, n: int) -> "CohortParams":
        """Defaults that depend on the cohort size filled in (what the result records)."""
        mcs = self.min_cluster_size or max(10, round(0.005 * n))
        ms = self.min_samples or min(mcs, 10)
        if not 2 <= self.cluster_dims <= 50:
            raise AtlasError(f"cluster_dims must be between 2 and 50, got {self.cluster_dims}")
        return CohortParams(**{**asdict(self), "min_cluster_size": int(mcs), "min_samples": int(ms),
                               "n_neighbors": int(min(self.n_neighbors, n - 1))})


@dataclass
class CohortResult:
    labels: np.ndarray  # (n,) int, -1 = noise
    probabilities: np.ndarray  # (n,) membership strength in [0, 1]
    outlier_scores: np.ndarray  # (n,) GLOSH, higher = more outlying
    map_2d: np.ndarray  # (n, 2)
    cluster_embedding: np.ndarray  # (n, cluster_dims)
    exemplars: dict[int, list[int]]  # cluster -> row indices, best first
    outliers: list[int]  # row indices, most outlying first
    params: dict
    timings: dict[str, float] = field(default_factory=dict)
    backend: str = "cpu"
    trustworthiness: float | None = None

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def sizes(self) -> dict[int, int]:
        values, counts = np.unique(self.labels, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts)}


def embedding_set_hash(ecg_ids: Sequence[str], vectors: np.ndarray) -> str:
    """sha256 over the ids (in order) and the float32 vectors: names the exact input of a run."""
    h = hashlib.sha256()
    for ecg_id in ecg_ids:
        h.update(ecg_id.encode())
        h.update(b"\0")
    h.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    return h.hexdigest()


def _cuml_available() -> bool:
    try:
        importlib.import_module("cuml")  # present and importable, or not available
        import torch

        return torch.cuda.is_available()
    except Exception:  # any failure to import means "not available"
        return False


def resolve_backend(backend: str) -> str:
    if backend not in ("auto", "cpu", "cuml"):
        raise AtlasError(f"backend must be auto, cpu or cuml, got {backend!r}")
    if backend == "cuml" and not _cuml_available():
        raise AtlasError("backend 'cuml' needs RAPIDS cuML and a CUDA GPU; use auto or cpu")
    if backend == "auto":
        return "cuml" if _cuml_available() else "cpu"
    return backend


class _Stages:
    """Times each stage and reports (stage, percent of the whole run) to the callback."""

    def __init__(self, progress: Progress | None):
        self.progress = progress
        self.timings: dict[str, float] = {}
        self.done = 0.0

    def run(self, stage: str, work: Callable[[], object]) -> object:
        share = dict(STAGES)[stage]
        if self.progress:
            self.progress(stage, round(100 * self.done, 1))
        t0 = time.perf_counter()
        out = work()
        self.timings[stage] = round(time.perf_counter() - t0, 3)
        self.done += share
        if self.progress:
            self.progress(stage, round(100 * self.done, 1))
        return out


def run_cohort(vectors: np.ndarray, params: CohortParams | None = None, *,
               progress: Progress | None = None) -> CohortResult:
    """Cluster `vectors` (n, D) and map them to 2-D; see the module docstring for the steps."""
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(vectors)
    if n < MIN_ECGS:
        raise AtlasError(f"a cohort run needs at least {MIN_ECGS} ECGs; this cohort has {n}")
    unit = normalised(vectors, "the cohort's vectors", error=AtlasError)  # refuses NaN, infinity, all zeros
    p = (params or CohortParams()).resolved(n)
    backend = resolve_backend(p.backend)
    stages = _Stages(progress)
    x = stages.run("pca", lambda: _reduce(unit, p))
    if backend == "cuml":
        stages.run("neighbours", lambda: None)
        emb = stages.run("umap-cluster", lambda: _cuml_umap(x, p, p.cluster_dims, p.cluster_min_dist))
        map_2d = stages.run("umap-map", lambda: _cuml_umap(x, p, 2, p.map_min_dist))
        labels, probs, outlier = stages.run("hdbscan", lambda: _cuml_hdbscan(emb, p))
    else:
        knn = stages.run("neighbours", lambda: _knn(x, p))
        emb = stages.run("umap-cluster", lambda: _umap(x, p, knn, p.cluster_dims, p.cluster_min_dist))
        map_2d = stages.run("umap-map", lambda: _umap(x, p, knn, 2, p.map_min_dist))
        labels, probs, outlier = stages.run("hdbscan", lambda: _hdbscan(emb, p))
    labels = _by_size(labels)

    def summaries():
        return _exemplars(labels, probs, emb, p.n_exemplars), _top_outliers(outlier, p.n_outliers), \
            _trustworthiness(x, map_2d, p.seed)

    exemplars, outliers, trust = stages.run("summaries", summaries)
    params_out = {**asdict(p), "metric": "cosine", "n_ecgs": n, "input_dim": int(vectors.shape[1]),
                  "umap_init": "spectral"}
    log.info("cohort run: %d ECGs, %d clusters, %.1f %% noise, backend %s", n, int(labels.max()) + 1,
             100 * float((labels < 0).mean()), backend)
    return CohortResult(labels, probs.astype(np.float32), outlier.astype(np.float32), map_2d.astype(np.float32),
                        emb.astype(np.float32), exemplars, outliers, params_out, stages.timings, backend, trust)


def _reduce(x: np.ndarray, p: CohortParams) -> np.ndarray:
    """Unit vectors reduced to `p.pca_dims` dimensions (when fewer than they have)."""
    if p.pca_dims and p.pca_dims < min(x.shape):
        from sklearn.decomposition import PCA

        x = PCA(n_components=p.pca_dims, svd_solver="randomized", random_state=p.seed).fit_transform(x)
    return np.ascontiguousarray(x, dtype=np.float32)


def _knn(x: np.ndarray, p: CohortParams) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN (each ECG's own row included, as UMAP expects) by brute force in FAISS.

    Exact on the PCA-reduced vectors is both deterministic and, at 50 dimensions, about as fast
    as NN-descent on two cores, without NN-descent's numba compile time.
    """
    import faiss

    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    dist2, idx = index.search(x, p.n_neighbors)
    return idx.astype(np.int64), np.sqrt(np.maximum(dist2, 0)).astype(np.float32)


def _umap(x: np.ndarray, p: CohortParams, knn, dims: int, min_dist: float) -> np.ndarray:
    import umap

    model = umap.UMAP(n_components=dims, n_neighbors=p.n_neighbors, min_dist=min_dist, metric="euclidean",
                      n_epochs=p.n_epochs, random_state=p.seed, precomputed_knn=knn)
    with warnings.catch_warnings():  # "n_jobs overridden by setting random_state": intended
        warnings.simplefilter("ignore", UserWarning)
        return model.fit_transform(x)


def _hdbscan(emb: np.ndarray, p: CohortParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import hdbscan

    model = hdbscan.HDBSCAN(min_cluster_size=p.min_cluster_size, min_samples=p.min_samples, core_dist_n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model.fit(emb.astype(np.float64))
    outlier = np.nan_to_num(np.asarray(model.outlier_scores_, dtype=np.float64), nan=0.0)
    return np.asarray(model.labels_), np.asarray(model.probabilities_), outlier


def _cuml_umap(x: np.ndarray, p: CohortParams, dims: int, min_dist: float) -> np.ndarray:
    from cuml.manifold import UMAP

    model = UMAP(n_components=dims, n_neighbors=p.n_neighbors, min_dist=min_dist, metric="euclidean",
                 n_epochs=p.n_epochs, random_state=p.seed, init="spectral")
    return np.asarray(model.fit_transform(x))


def _cuml_hdbscan(emb: np.ndarray, p: CohortParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from cuml.cluster.hdbscan import HDBSCAN

    model = HDBSCAN(min_cluster_size=p.min_cluster_size, min_samples=p.min_samples).fit(emb)
    scores = getattr(model, "outlier_scores_", None)
    if scores is None:  # cuML's HDBSCAN computes none: GLOSH from its condensed tree, on the CPU
        scores = glosh_scores(model.condensed_tree_)
    return (np.asarray(model.labels_), np.asarray(model.probabilities_),
            np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0))


def glosh_scores(condensed_tree) -> np.ndarray:
    """GLOSH outlier scores from an HDBSCAN condensed tree (an ``hdbscan.plots.CondensedTree``,
    which cuML's ``condensed_tree_`` is, or its structured array): hdbscan's own computation."""
    from hdbscan._hdbscan_tree import outlier_scores

    tree = condensed_tree.to_numpy() if hasattr(condensed_tree, "to_numpy") else condensed_tree
    return np.asarray(outlier_scores(tree), dtype=np.float64)


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0, 1, ... from largest to smallest (ties: by old number); noise stays -1."""
    old, counts = np.unique(labels[labels >= 0], return_counts=True)
    order = old[np.lexsort((old, -counts))]
    mapping = {int(o): i for i, o in enumerate(order)}
    return np.array([mapping.get(int(v), -1) for v in labels], dtype=np.int64)


def _exemplars(labels: np.ndarray, probs: np.ndarray, emb: np.ndarray, k: int) -> dict[int, list[int]]:
    out = {}
    for c in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == c)
        centre = emb[members].mean(axis=0)
        dist = np.linalg.norm(emb[members] - centre, axis=1)
        order = np.lexsort((members, dist, -probs[members]))
        out[c] = [int(i) for i in members[order[:k]]]
    return out


def _top_outliers(scores: np.ndarray, k: int) -> list[int]:
    order = np.lexsort((np.arange(len(scores)), -scores))
    return [int(i) for i in order[:k]]


def _trustworthiness(x: np.ndarray, map_2d: np.ndarray, seed: int) -> float | None:
    from sklearn.manifold import trustworthiness

    n = len(x)
    k = min(TRUST_NEIGHBOURS, (n - 1) // 2 - 1)
    if k < 1:
        return None
    rows = np.random.default_rng(seed).choice(n, size=min(n, TRUST_SAMPLE), replace=False)
    rows.sort()
    return round(float(trustworthiness(x[rows], map_2d[rows], n_neighbors=k)), 4)

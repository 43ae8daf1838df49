"""The ``ivfpq`` kind: IVF with compressed codes re-ranked with the stored float vectors (stores
past memory), its sizing policy for a memory budget (`ivfpq_params`) and the budget's parsing
(`parse_memory`, ``--index-memory``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from ecg_atlas.errors import StoreError

from .base import BRUTE_FORCE_MAX, empty_results, exact_top_k, top_k
from .cpu import FaissIVF, bitmap_selector, ivf_nlist
from .gpu import FAISS_GPU_MAX_K, ShardedReplica
from .tuner import TARGET_RECALL, expected_top10

log = logging.getLogger(__name__)

#: Candidates re-ranked with the exact stored vectors, per result asked for: tuning steps through
#: these where a wider probe no longer raises the recall (steps of 1.3-1.5x: each costs re-ranking
#: time in proportion; 2 M vectors needed 60 x k where 40 fell short and 80 cost a third more).
IVFPQ_REFINE_FACTORS = (10, 15, 20, 30, 40, 60, 80)
IVFPQ_REFINE_FACTOR = IVFPQ_REFINE_FACTORS[0]
#: Tuning stops widening nprobe once a doubling gains less recall@10 than this.
IVFPQ_PLATEAU = 0.005
#: Tuning aims this far above TARGET_RECALL: it measures with stored vectors as queries, which the
#: codes rank a little better than new ECGs (2 M derived vectors: 0.957 / 0.976 estimated against
#: 0.946 / 0.961 on held-out queries at 60 / 80 x k candidates; BENCHMARKS.md, Scale).
IVFPQ_RECALL_MARGIN = 0.015
#: Without --index-memory the index may take this share of the raw float32 vectors' bytes.
IVFPQ_DEFAULT_MEMORY_FRACTION = 0.15
#: Product-quantizer codes use at least this many dimensions per byte: FAISS trains shorter
#: sub-quantizers much more slowly (768-d, 10k vectors, 2 cores: 73 s vs 1.7 s at 8 vs 16).
IVFPQ_MIN_DIMS_PER_BYTE = 8
#: Code sizes (bytes per vector) that FAISS's GPU IVF-PQ also accepts: a store sized on one
#: machine can be searched on GPUs without re-encoding.
GPU_PQ_CODE_BYTES = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)
#: Dimensions per sub-quantizer FAISS's GPU IVF-PQ accepts.
GPU_PQ_SUB_DIMS = (1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 28, 32)


@dataclass(frozen=True)
class IVFPQParams:
    """IVF lists and the code each vector is kept as: `m` product-quantizer sub-vectors of
    `nbits` (m bytes at 8 bits), or, with m = 0, 4 bits per dimension (FAISS's 4-bit scalar
    quantizer: dim/2 bytes); and the memory the index needs for `n_rows` (`memory_bytes`)."""

    nlist: int
    m: int
    nbits: int = 8

    def code_bytes(self, dim: int) -> int:
        return self.m * self.nbits // 8 if self.m else dim // 2

    def memory_bytes(self, n_rows: int, dim: int) -> int:
        """Codes + int64 ids in the inverted lists, the coarse centroids, and the PQ centroids
        (or the scalar quantizer's per-dimension ranges)."""
        codebook = (1 << self.nbits) * dim * 4 if self.m else 2 * dim * 4
        return n_rows * (self.code_bytes(dim) + 8) + self.nlist * dim * 4 + codebook

    def describe(self) -> str:
        return f"PQ{self.m}x{self.nbits}" if self.m else "SQ4"


def ivfpq_params(n_rows: int, dim: int, memory_budget: int | None = None) -> IVFPQParams:
    """Parameters for `n_rows` vectors of `dim`: √n lists, and the most exact code that keeps the
    index within `memory_budget` bytes (default IVFPQ_DEFAULT_MEMORY_FRACTION of the raw vectors).

    Codes, most exact first: 4 bits per dimension (dim/2 bytes), then product-quantizer codes of
    dim/8 bytes down to 1 byte (IVFPQ_MIN_DIMS_PER_BYTE; sizes FAISS's GPU IVF-PQ also takes).
    On 2 M 768-d vectors derived from real ECG embeddings the 4-bit codes reached recall@10 0.97
    after re-ranking where 48-byte PQ codes stopped at 0.69 and 96-byte ones at 0.83 (BENCHMARKS.md,
    Scale): the product quantizer is kept for budgets the 4-bit codes do not fit."""
    nlist = ivf_nlist(n_rows)
    pq = [m for m in GPU_PQ_CODE_BYTES if dim % m == 0 and dim // m in GPU_PQ_SUB_DIMS
          and m <= max(1, dim // IVFPQ_MIN_DIMS_PER_BYTE)]
    uncompressed = [IVFPQParams(nlist, 0)] if dim % 2 == 0 else []
    choices = uncompressed + [IVFPQParams(nlist, m) for m in sorted(pq, reverse=True)]
    if not choices:
        raise StoreError(f"no compressed code fits dimension {dim}; use index kind ivf or hnsw")
    for params in choices:
        if memory_budget is None:  # the default share, per vector (the centroids aside)
            if params.code_bytes(dim) + 8 <= IVFPQ_DEFAULT_MEMORY_FRACTION * dim * 4:
                return params
        elif params.memory_bytes(n_rows, dim) <= memory_budget:
            return params
    if memory_budget is None:
        return choices[-1]
    smallest = choices[-1].memory_bytes(n_rows, dim)
    raise StoreError(f"an IVF-PQ index of {n_rows} {dim}-d vectors needs at least {smallest / 2**20:.0f} MiB; "
                     f"--index-memory allows {memory_budget / 2**20:.0f} MiB: raise it")


def parse_memory(text: str | None) -> int | None:
    """'1.5GB', '800MB', '2GiB' or plain bytes → bytes (None stays None)."""
    if text is None:
        return None
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    value = str(text).strip().upper().replace(" ", "")
    number = value.rstrip("KMGTIB")
    try:
        amount = float(number) * units[value[len(number):]]
    except (ValueError, KeyError):
        raise StoreError(f"memory size {text!r} not understood; write e.g. 800MB, 1.5GB or 2GiB") from None
    if amount <= 0:
        raise StoreError(f"memory size must be positive, got {text!r}")
    return int(amount)


#: Queries whose candidates' exact vectors are fetched at once: 32 × 600 candidates of 768 floats
#: is ~60 MB, where a batch of 200 queries' at once took ~0.5 GB of fresh memory to fill (2 M
#: vectors: the first batch of a run 1.5 s, against 0.3 s once memory was reused).
RERANK_QUERIES = 32


def _rerank(query: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best k of one query's candidates by exact inner product, best first. The product is
    einsum's single-threaded loop, not BLAS: a multi-threaded BLAS starting its threads for each
    (1 x 768) x (768 x 800) product took 6 x longer on 2 cores (0.60 s vs 0.09 s for 200 queries)."""
    scores, best = top_k(np.einsum("rd,d->r", vectors, query)[None, :], ids, k)
    return scores[0], best[0]


class FaissIVFPQ(FaissIVF):
    """IVF with compressed codes, re-ranked with the exact vectors: stores past memory.

    The index holds only codes (`ivfpq_params`: 4-bit scalar or product-quantizer codes sized to a
    memory budget). A search takes `refine_factor` × k candidates from the codes and orders them by
    their exact cosine, read through `use_exact_vectors` (the store's float vectors in DuckDB), so
    the scores returned are exact. `tune` sets nprobe and the candidate count for recall@10 after
    re-ranking. With `replica` devices (several GPUs) unfiltered searches go to a
    `ShardedReplica`, rebuilt after writes; filtered ones use the CPU index's selectors.
    """

    kind = "ivfpq"
    file_format = "faiss"

    def __init__(self, dim: int, index: faiss.IndexIVF, recall_at_10: float | None = None,
                 replica: tuple[Sequence[int], Callable[[faiss.Index, int], faiss.Index]] | None = None) -> None:
        super().__init__(dim, index, recall_at_10)
        self.backend = "faiss-gpu" if replica else "faiss-cpu"
        self.refine_factor = IVFPQ_REFINE_FACTOR
        self._exact_vectors: Callable[[np.ndarray], np.ndarray] | None = None
        self._replica_spec = replica
        self._replica: ShardedReplica | None = None
        self._replica_lock = threading.Lock()

    @classmethod
    def train(cls, dim: int, sample: np.ndarray, params: IVFPQParams, **kwargs) -> "FaissIVFPQ":
        quantizer = faiss.IndexFlatIP(dim)
        if params.m:
            index = faiss.IndexIVFPQ(quantizer, dim, params.nlist, params.m, params.nbits, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, params.nlist, faiss.ScalarQuantizer.QT_4bit,
                                                  faiss.METRIC_INNER_PRODUCT)
        index.train(sample)
        return cls(dim, index, **kwargs)

    def use_exact_vectors(self, fetch: Callable[[np.ndarray], np.ndarray]) -> None:
        self._exact_vectors = fetch

    def tune(self, queries: np.ndarray, query_ids: np.ndarray, truth: np.ndarray) -> None:
        """The narrowest probe and fewest candidates reaching TARGET_RECALL (+ IVFPQ_RECALL_MARGIN).

        With codes this short the recall is bounded by how well the codes rank the neighbours
        (they sit in the first few lists), not by the lists probed: nprobe doubles while that
        still pays (IVFPQ_PLATEAU), then the candidates re-ranked take the next step of
        IVFPQ_REFINE_FACTORS (× k), and the probe is widened again from where it was."""
        expected = expected_top10(truth, query_ids)
        limit, goal = self._max_breadth(), TARGET_RECALL + IVFPQ_RECALL_MARGIN
        self.refine_factor, self.nprobe = IVFPQ_REFINE_FACTOR, self.first_breadth
        recall = self._recall(queries, query_ids, expected)
        while recall < goal:
            wider = min(limit, self.nprobe * 2)
            if wider > self.nprobe:
                narrower, self.nprobe = self.nprobe, wider
                gained = self._recall(queries, query_ids, expected)
                if gained - recall >= IVFPQ_PLATEAU or gained >= goal:
                    recall = gained
                    continue
                self.nprobe = narrower  # the wider probe did not pay
            if self.refine_factor >= IVFPQ_REFINE_FACTORS[-1]:
                break
            self.refine_factor = next(f for f in IVFPQ_REFINE_FACTORS if f > self.refine_factor)
            recall = self._recall(queries, query_ids, expected)
        self.recall_at_10 = round(recall, 4)
        log.info("ivfpq tuned: nprobe=%d, %d x k candidates, estimated recall@10 %.3f",
                 self.nprobe, self.refine_factor, recall)

    def tuning(self) -> dict[str, object]:
        return {**super().tuning(), "refine_factor": self.refine_factor}

    def apply_tuning(self, saved: Mapping[str, object]) -> None:
        super().apply_tuning(saved)
        self.refine_factor = int(saved.get("refine_factor", IVFPQ_REFINE_FACTOR))

    def _exact(self, ids: np.ndarray) -> np.ndarray:
        if self._exact_vectors is None:
            raise StoreError("an ivfpq index re-ranks with the stored vectors; it was not given them")
        return self._exact_vectors(ids)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        super().add(ids, vectors)
        self._replica = None

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
            self._replica = None

    def _candidates(self, queries: np.ndarray, n: int, allowed: np.ndarray | None) -> np.ndarray:
        # GPU IVF-PQ takes k and nprobe up to FAISS_GPU_MAX_K: past either, the CPU index answers.
        if allowed is None and self._replica_spec and max(n, self.nprobe) <= FAISS_GPU_MAX_K:
            with self._replica_lock:
                if self._replica is None:
                    self._replica = ShardedReplica(self.index, *self._replica_spec)
                replica = self._replica
            return replica.search(queries, n, self.nprobe)[1]
        params = faiss.SearchParametersIVF(nprobe=self.nprobe)
        keep = None
        if allowed is not None:
            params.sel, keep = bitmap_selector(allowed)
        found = self.index.search(queries, n, params=params)[1]
        del keep
        return found

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if len(self) == 0 or k == 0 or (allowed is not None and len(allowed) == 0):
            return empty_results(len(queries), k)
        if allowed is not None and len(allowed) <= BRUTE_FORCE_MAX:
            return exact_top_k(queries, self._exact(allowed), allowed, k)
        candidates = self._candidates(queries, k * self.refine_factor, allowed)
        scores_out, ids_out = empty_results(len(queries), k)
        for start in range(0, len(queries), RERANK_QUERIES):  # exact vectors fetched per group
            group = candidates[start:start + RERANK_QUERIES]
            unique = np.unique(group[group >= 0])
            vectors = self._exact(unique)
            for row, ids in enumerate(group, start):
                ids = np.unique(ids[ids >= 0])  # a sharded replica may list an id once per shard only
                scores, best = _rerank(queries[row], vectors[np.searchsorted(unique, ids)], ids, k)
                scores_out[row, :len(best)], ids_out[row, :len(best)] = scores, best
        return scores_out, ids_out

    @classmethod
    def load(cls, path: str, dim: int, **kwargs) -> "FaissIVFPQ":
        index = faiss.read_index(path)
        if not isinstance(index, (faiss.IndexIVFPQ, faiss.IndexIVFScalarQuantizer)) or index.d != dim:
            raise StoreError(f"{path} is not an IVF-PQ index of dimension {dim}")
        return cls(dim, index, **kwargs)

    def params(self) -> IVFPQParams:
        if isinstance(self.index, faiss.IndexIVFPQ):
            return IVFPQParams(int(self.index.nlist), int(self.index.pq.M), int(self.index.pq.nbits))
        return IVFPQParams(int(self.index.nlist), 0)

    def memory_bytes(self) -> int:
        return self.params().memory_bytes(len(self), self.dim)

    def settings(self) -> dict[str, object]:
        raw = len(self) * self.dim * 4
        return {"nlist": int(self.index.nlist), "code": self.params().describe(),
                "code_bytes_per_vector": int(self.index.code_size),
                "nprobe": self.nprobe, "refine": f"exact vectors, {self.refine_factor}x k candidates",
                "memory_bytes": self.memory_bytes(),
                "memory_vs_raw": round(self.memory_bytes() / raw, 4) if raw else None,
                "gpu_shards": len(self._replica_spec[0]) if self._replica_spec else 0,
                "estimated_recall_at_10": self.recall_at_10}

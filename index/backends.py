"""Search backends: the derived vector index that sits beside the DuckDB rows.

Every backend holds L2-normalised float32 vectors keyed by the row's sequence number (int64),
searches by inner product (= cosine) and can restrict a search to an allowed set of sequence
numbers. Which one runs is decided when the store opens (`resolve_backend`) and reported by
`Store.info()`:

- ``faiss-cpu``: FAISS on the CPU; exact (``flat``), ``ivf`` (IVF-Flat), ``hnsw`` or ``ivfpq``
  (IVF with compressed codes — 4 bits per dimension, or product-quantised where the memory
  budget is tighter — re-ranked with the stored float vectors: stores past memory, sized by a
  memory budget, `ivfpq_params`). The
  approximate kinds tune their own search breadth (IVF nprobe, HNSW efSearch) for recall
  (`tune`) and hand the tuned values to whoever saves them (`tuning` / `apply_tuning`).
- ``faiss-gpu``: FAISS's GPU flat index, when the installed faiss was built with GPU support;
  an ``ivfpq`` store there answers from copies sharded across every GPU (`ShardedReplica`).
- ``torch-cuda`` / ``torch-cpu``: exact search as one matmul + top-k on a torch device, filters
  as boolean masks; the GPU path for a faiss without GPU support (``torch-cpu`` is the same code
  on the CPU, used to test it).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from ecg_atlas.errors import StoreError

log = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "ivf", "hnsw", "ivfpq")
#: Kinds trained on a sample: they search exactly until the store holds enough rows.
TRAINED_KINDS = ("ivf", "ivfpq")
#: Allowed sets at most this large are searched exactly by brute force (approximate kinds only;
#: exact kinds get exact answers from the selector path anyway).
BRUTE_FORCE_MAX = 20_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
#: nprobe / efSearch are tuned to the smallest value reaching this recall@10 against exact search.
TARGET_RECALL = 0.95
#: FAISS warns below this many training vectors per IVF list.
IVF_TRAIN_PER_LIST = 39


def _empty(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((nq, k), -np.inf, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64)


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by inner product of each query over (vectors, ids); padded with (-inf, -1)."""
    scores_out, ids_out = _empty(len(queries), k)
    if len(ids) == 0 or k == 0:
        return scores_out, ids_out
    top_scores, top_ids = _top_k(queries @ vectors.T, ids, k)
    scores_out[:, :top_ids.shape[1]], ids_out[:, :top_ids.shape[1]] = top_scores, top_ids
    return scores_out, ids_out


def _top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's best min(k, len(ids)) (scores, ids), best first; ties keep the given order."""
    take = min(k, len(ids))
    if take < len(ids):
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    else:
        part = np.broadcast_to(np.arange(len(ids)), (len(scores), len(ids)))
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    return np.take_along_axis(scores, best, axis=1), ids[best]


def _bitmap_selector(allowed: np.ndarray) -> tuple[faiss.IDSelector, np.ndarray]:
    """A FAISS selector for the ids in `allowed`, and the bitmap it reads (keep it alive)."""
    top = int(allowed.max()) + 1 if len(allowed) else 1
    mask = np.zeros(top, dtype=bool)
    mask[allowed] = True
    bitmap = np.packbits(mask, bitorder="little")
    return faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap)), bitmap


class VectorIndex(ABC):
    """What the store needs from a search backend. Not thread-safe for writes: the store's lock
    serialises writers against readers."""

    #: "flat" | "ivf" | "hnsw": what this index is, as built.
    kind: str
    #: "faiss-cpu" | "faiss-gpu" | "torch-cpu" | "torch-cuda"
    backend: str
    #: file format written by `save`; `load` of another format is refused (the store rebuilds).
    file_format: str

    def __init__(self, dim: int) -> None:
        self.dim = dim

    @abstractmethod
    def __len__(self) -> int:
        """Searchable entries (deleted entries excluded)."""

    @abstractmethod
    def ids(self) -> np.ndarray:
        """Sorted int64 ids of the searchable entries."""

    @abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add normalised float32 (n, dim) `vectors` under new int64 `ids`."""

    @abstractmethod
    def remove(self, ids: np.ndarray) -> None:
        """Make `ids` unsearchable at once (physically removed now or at `compact`)."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (nq, k), best first, padded with (-inf, -1).

        With `allowed` (sorted int64 ids), only those entries are candidates: exact kinds return
        exactly the top-k of the allowed set.
        """

    @abstractmethod
    def save(self, path: str) -> None:
        """Write the index to `path` (the caller makes it atomic)."""

    def settings(self) -> dict[str, object]:
        """Search parameters worth reporting (nlist, nprobe, efSearch, estimated recall...)."""
        return {}

    def tune(self, queries: np.ndarray, query_ids: np.ndarray, truth: np.ndarray) -> None:
        """Set search parameters for recall (approximate kinds); an exact index has none."""

    def tuning(self) -> dict[str, object]:
        """The tuned parameters, to be saved beside the index file and given back to `apply_tuning`."""
        return {}

    def apply_tuning(self, saved: Mapping[str, object]) -> None:
        """Restore parameters `tuning` returned when this index was saved."""

    def use_exact_vectors(self, fetch: Callable[[np.ndarray], np.ndarray]) -> None:
        """Indexes that re-rank with the stored float vectors read them with `fetch(sorted ids)`
        (one normalised row per id, in that order); the others hold their vectors themselves."""


def _expected_top10(ranked: np.ndarray, query_ids: np.ndarray) -> list[set[int]]:
    """Each row's first ten ids other than the query's own (and the -1 padding)."""
    return [set(row[(row != own) & (row >= 0)][:10].tolist()) for row, own in zip(ranked, query_ids)]


class _TunedSearch(VectorIndex):
    """An approximate index with one search-breadth knob (IVF nprobe, HNSW efSearch), exposed
    as `nprobe` and tuned by `tune` to the smallest value reaching TARGET_RECALL."""

    #: The knob's FAISS name, for logs.
    breadth_name: str
    #: Where tuning starts (it doubles from there up to `_max_breadth()`).
    first_breadth: int
    recall_at_10: float | None

    nprobe: int

    @abstractmethod
    def _max_breadth(self) -> int:
        """The largest value tuning may try."""

    def tune(self, queries: np.ndarray, query_ids: np.ndarray, truth: np.ndarray) -> None:
        """Smallest breadth whose recall@10 on `queries` reaches TARGET_RECALL.

        queries: stored vectors, with their ids `query_ids`; truth: each query's exact top ids
        (at least 11, best first). A query is dropped from both result lists, so the figure is
        recall@10 over *other* ECGs.
        """
        expected = _expected_top10(truth, query_ids)
        limit = self._max_breadth()
        value = self.first_breadth
        while True:
            self.nprobe = value
            recall = self._recall(queries, query_ids, expected)
            if recall >= TARGET_RECALL or value >= limit:
                break
            value = min(limit, value * 2)
        self.recall_at_10 = round(recall, 4)
        log.info("%s tuned: %s=%d, estimated recall@10 %.3f", self.kind, self.breadth_name, value, recall)

    def _recall(self, queries: np.ndarray, query_ids: np.ndarray, expected: list[set[int]]) -> float:
        """Mean recall@10 over other ECGs of searching `queries` at the current settings."""
        _, found = self.search(queries, 11)
        got = _expected_top10(found, query_ids)
        return float(np.mean([len(g & e) / max(len(e), 1) for g, e in zip(got, expected)]))

    def tuning(self) -> dict[str, object]:
        return {"nprobe": self.nprobe, "estimated_recall_at_10": self.recall_at_10}

    def apply_tuning(self, saved: Mapping[str, object]) -> None:
        self.nprobe = saved.get("nprobe", self.nprobe)
        self.recall_at_10 = saved.get("estimated_recall_at_10")


# ---------------------------------------------------------------------------------------------
# FAISS


class _TombstonedIDMap(VectorIndex):
    """An id-mapped FAISS index whose deletes are first recorded as tombstones (``self.tombstones``)."""

    index: faiss.Index
    tombstones: np.ndarray

    def __len__(self) -> int:
        return int(self.index.ntotal) - len(self.tombstones)

    def ids(self) -> np.ndarray:
        held = np.sort(faiss.vector_to_array(self.index.id_map).astype(np.int64, copy=False))
        return np.setdiff1d(held, self.tombstones, assume_unique=True)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add_with_ids(vectors, ids)

    def _tombstone(self, ids: np.ndarray) -> None:
        self.tombstones = np.union1d(self.tombstones, np.asarray(ids, dtype=np.int64))


class FaissFlat(_TombstonedIDMap):
    """Exact inner product: IndexIDMap over IndexFlatIP.

    Removing from a flat index moves every later vector, so deletes (and replaced upserts) are
    tombstones first, purged in one pass once they pass 5 % of the entries (and before saving).
    Unfiltered searches over-fetch past a few tombstones, or exclude many with a selector.
    """

    kind = "flat"
    backend = "faiss-cpu"
    file_format = "faiss"
    #: Up to this many tombstones, a search asks for k + tombstones and drops them.
    OVERFETCH_MAX = 2048

    def __init__(self, dim: int, index: faiss.Index | None = None) -> None:
        super().__init__(dim)
        self.index = index if index is not None else faiss.IndexIDMap(faiss.IndexFlatIP(dim))
        self.tombstones = np.empty(0, dtype=np.int64)

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self._tombstone(ids)
            if len(self.tombstones) > max(10_000, self.index.ntotal // 20):
                self.purge()

    def purge(self) -> None:
        """Physically remove the tombstoned vectors."""
        if len(self.tombstones):
            self.index.remove_ids(self.tombstones)
            self.tombstones = np.empty(0, dtype=np.int64)

    def _search_all(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if len(self) == 0 or (allowed is not None and len(allowed) == 0):
            return _empty(len(queries), k)
        if allowed is not None:  # allowed rows come from DuckDB: deleted rows are not among them
            selector, _bitmap = _bitmap_selector(allowed)
            return self.index.search(queries, k, params=faiss.SearchParameters(sel=selector))
        if not len(self.tombstones):
            return self._search_all(queries, k)
        if len(self.tombstones) <= self.OVERFETCH_MAX:
            scores, ids = self._search_all(queries, k + len(self.tombstones))
            out_scores, out_ids = _empty(len(queries), k)
            for row, (s_row, i_row) in enumerate(zip(scores, ids)):
                live = ~np.isin(i_row, self.tombstones)
                kept = i_row[live][:k]
                out_ids[row, : len(kept)] = kept
                out_scores[row, : len(kept)] = s_row[live][:k]
            return out_scores, out_ids
        dead = faiss.IDSelectorBatch(self.tombstones)
        not_dead = faiss.IDSelectorNot(dead)
        return self.index.search(queries, k, params=faiss.SearchParameters(sel=not_dead))

    def save(self, path: str) -> None:
        self.purge()
        faiss.write_index(self.index, path)

    @classmethod
    def load(cls, path: str, dim: int) -> "FaissFlat":
        index = faiss.read_index(path)
        if not isinstance(index, faiss.IndexIDMap) or index.d != dim:
            raise StoreError(f"{path} is not a flat index of dimension {dim}")
        return cls(dim, index)


#: The largest k FAISS's GPU k-selection takes (GPU_MAX_SELECTION_K); a larger k fails there.
FAISS_GPU_MAX_K = 2048


class FaissGpuFlat(FaissFlat):
    """FaissFlat with a GPU copy on GPU `device` answering unfiltered searches (filtered ones use
    the CPU copy, whose selector search is exact).

    Two FAISS GPU limits are kept from the caller: a k above FAISS_GPU_MAX_K (asked for, or made
    by over-fetching past tombstones: k = 10 with 2,039 pending deletes) is answered exactly by the
    CPU copy instead of failing; and one StandardGpuResources (its scratch memory and stream) must
    not serve two calls at once (FAISS documents it as not thread-safe), so every use of the GPU
    copy holds `_gpu_lock`. Tests stand a CPU index in for the GPU copy (`_new_resources`,
    `_to_gpu`).
    """

    backend = "faiss-gpu"

    def __init__(self, dim: int, index: faiss.Index | None = None, device: int = 0) -> None:
        super().__init__(dim, index)
        self.device = device
        self._gpu_lock = threading.Lock()
        self._resources = self._new_resources()
        self._gpu = self._to_gpu(self.index)

    def _new_resources(self):
        return faiss.StandardGpuResources()

    def _to_gpu(self, index: faiss.Index) -> faiss.Index:
        return faiss.index_cpu_to_gpu(self._resources, self.device, index)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        super().add(ids, vectors)
        with self._gpu_lock:
            self._gpu.add_with_ids(vectors, ids)

    def purge(self) -> None:
        if len(self.tombstones):
            super().purge()
            # The GPU flat index cannot remove in place; copy the CPU index over again.
            with self._gpu_lock:
                self._gpu = self._to_gpu(self.index)

    def _search_all(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k > FAISS_GPU_MAX_K:
            return self.index.search(queries, k)  # exact on the CPU copy: slower, never failing
        with self._gpu_lock:
            return self._gpu.search(queries, k)


class FaissIVF(_TunedSearch):
    """IVF-Flat with ids stored in the inverted lists; `nprobe` is tuned for recall (`tune`)."""

    kind = "ivf"
    backend = "faiss-cpu"
    file_format = "faiss"
    breadth_name = "nprobe"
    first_breadth = 1

    def __init__(self, dim: int, index: faiss.IndexIVFFlat, recall_at_10: float | None = None) -> None:
        super().__init__(dim)
        self.index = index
        self.recall_at_10 = recall_at_10

    @classmethod
    def train(cls, dim: int, sample: np.ndarray, nlist: int) -> "FaissIVF":
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(sample)
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct + remove by id
        return cls(dim, index)

    @property
    def nprobe(self) -> int:
        return int(self.index.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self.index.nprobe = int(value)

    def _max_breadth(self) -> int:
        return int(self.index.nlist)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        lists = self.index.invlists
        parts = []
        for list_no in range(self.index.nlist):
            size = lists.list_size(list_no)
            if size:
                parts.append(faiss.rev_swig_ptr(lists.get_ids(list_no), size).copy())
        return np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if len(self) == 0 or (allowed is not None and len(allowed) == 0):
            return _empty(len(queries), k)
        if allowed is None:
            return self.index.search(queries, k)
        if len(allowed) <= BRUTE_FORCE_MAX:
            return exact_top_k(queries, self.index.reconstruct_batch(allowed), allowed, k)
        selector, _bitmap = _bitmap_selector(allowed)
        params = faiss.SearchParametersIVF(sel=selector, nprobe=self.nprobe)
        return self.index.search(queries, k, params=params)

    def save(self, path: str) -> None:
        faiss.write_index(self.index, path)

    @classmethod
    def load(cls, path: str, dim: int) -> "FaissIVF":
        index = faiss.read_index(path)
        if not isinstance(index, faiss.IndexIVFFlat) or index.d != dim:
            raise StoreError(f"{path} is not an IVF-Flat index of dimension {dim}")
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
        return cls(dim, index)

    def settings(self) -> dict[str, object]:
        return {"nlist": int(self.index.nlist), "nprobe": self.nprobe, "estimated_recall_at_10": self.recall_at_10}


class FaissHNSW(_TombstonedIDMap, _TunedSearch):
    """HNSW graph (IndexIDMap2 over IndexHNSWFlat). HNSW cannot remove nodes, so deletes are
    tombstones excluded by a selector until `compact` rebuilds the graph. efSearch is tuned for
    recall (`tune`)."""

    kind = "hnsw"
    backend = "faiss-cpu"
    file_format = "faiss"
    breadth_name = "efSearch"
    first_breadth = 16

    def __init__(self, dim: int, index: faiss.Index | None = None, recall_at_10: float | None = None) -> None:
        super().__init__(dim)
        if index is None:
            hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index = faiss.IndexIDMap2(hnsw)
        self.index = index
        self.tombstones = np.empty(0, dtype=np.int64)
        self.recall_at_10 = recall_at_10

    @property
    def nprobe(self) -> int:  # efSearch plays nprobe's role; one name keeps the tuner generic
        return int(faiss.downcast_index(self.index.index).hnsw.efSearch)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        faiss.downcast_index(self.index.index).hnsw.efSearch = int(value)

    def _max_breadth(self) -> int:
        return 1024

    def remove(self, ids: np.ndarray) -> None:
        self._tombstone(ids)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if len(self) == 0 or (allowed is not None and len(allowed) == 0):
            return _empty(len(queries), k)
        if allowed is not None and len(allowed) <= BRUTE_FORCE_MAX:
            return exact_top_k(queries, self.index.reconstruct_batch(allowed), allowed, k)
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.nprobe, k)
        keep = []
        if allowed is not None:
            selector, bitmap = _bitmap_selector(allowed)  # allowed rows exclude tombstones already
            keep += [selector, bitmap]
            params.sel = selector
        elif len(self.tombstones):
            dead = faiss.IDSelectorBatch(self.tombstones)
            params.sel = faiss.IDSelectorNot(dead)
            keep += [dead]
        return self.index.search(queries, k, params=params)

    def save(self, path: str) -> None:
        faiss.write_index(self.index, path)

    @classmethod
    def load(cls, path: str, dim: int) -> "FaissHNSW":
        index = faiss.read_index(path)
        if not isinstance(index, faiss.IndexIDMap2) or index.d != dim:
            raise StoreError(f"{path} is not an HNSW index of dimension {dim}")
        return cls(dim, index)

    def settings(self) -> dict[str, object]:
        return {"M": HNSW_M, "efSearch": self.nprobe, "estimated_recall_at_10": self.recall_at_10,
                "tombstones": int(len(self.tombstones))}


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
    choices = ([IVFPQParams(nlist, 0)] if dim % 2 == 0 else []) + [IVFPQParams(nlist, m) for m in sorted(pq, reverse=True)]
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


class ShardedReplica:
    """A search-only copy of a trained IVF index split across devices: device i holds the
    entries whose id % n_devices == i, every query goes to all of them and the results merge
    (faiss.IndexShards). `place(shard, device)` puts one CPU shard on its device
    (`gpu_placer` on a GPU machine; tests pass a CPU stand-in with the same signature)."""

    def __init__(self, source: faiss.IndexIVF, devices: Sequence[int],
                 place: Callable[[faiss.Index, int], faiss.Index]) -> None:
        self.devices = list(devices)
        # One StandardGpuResources per device serves every search on it, and FAISS documents a
        # resource object as unsafe for two calls at once: searches take turns.
        self._lock = threading.Lock()
        self.shards = faiss.IndexShards(source.d, True, False)  # threaded; each shard keeps its ids
        self._members = []  # the placed shards: IndexShards does not own them
        for position, device in enumerate(self.devices):
            part = faiss.clone_index(source)
            part.reset()
            source.copy_subset_to(part, faiss.InvertedLists.SUBSET_TYPE_ID_MOD, len(self.devices), position)
            placed = place(part, device)
            self._members.append(placed)
            self.shards.add_shard(placed)

    def sizes(self) -> list[int]:
        return [int(member.ntotal) for member in self._members]

    def search(self, queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            for member in self._members:
                member.nprobe = nprobe
            return self.shards.search(queries, k)


def gpu_placer() -> Callable[[faiss.Index, int], faiss.Index]:
    """`ShardedReplica`'s `place` for FAISS GPU indexes: one resource object per device, IVF-PQ's
    intermediate (lookup-table) arithmetic in float16: the re-ranking is exact float32 anyway."""
    resources: dict[int, object] = {}

    def place(index: faiss.Index, device: int) -> faiss.Index:
        res = resources.setdefault(device, faiss.StandardGpuResources())
        options = faiss.GpuClonerOptions()
        options.useFloat16 = True
        return faiss.index_cpu_to_gpu(res, device, index, options)

    return place


#: Queries whose candidates' exact vectors are fetched at once: 32 × 600 candidates of 768 floats
#: is ~60 MB, where a batch of 200 queries' at once took ~0.5 GB of fresh memory to fill (2 M
#: vectors: the first batch of a run 1.5 s, against 0.3 s once memory was reused).
RERANK_QUERIES = 32


def _rerank(query: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best k of one query's candidates by exact inner product, best first. The product is
    einsum's single-threaded loop, not BLAS: a multi-threaded BLAS starting its threads for each
    (1 x 768) x (768 x 800) product took 6 x longer on 2 cores (0.60 s vs 0.09 s for 200 queries)."""
    scores, best = _top_k(np.einsum("rd,d->r", vectors, query)[None, :], ids, k)
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
        expected = _expected_top10(truth, query_ids)
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
            params.sel, keep = _bitmap_selector(allowed)
        found = self.index.search(queries, n, params=params)[1]
        del keep
        return found

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if len(self) == 0 or k == 0 or (allowed is not None and len(allowed) == 0):
            return _empty(len(queries), k)
        if allowed is not None and len(allowed) <= BRUTE_FORCE_MAX:
            return exact_top_k(queries, self._exact(allowed), allowed, k)
        candidates = self._candidates(queries, k * self.refine_factor, allowed)
        scores_out, ids_out = _empty(len(queries), k)
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


# ---------------------------------------------------------------------------------------------
# torch: exact search on any torch device


class TorchExact(VectorIndex):
    """Exact search as a matmul + top-k on a torch device; filters are boolean masks.

    Vectors live once, on the device, in a tensor grown by doubling; deletes clear an `alive`
    flag and the dead rows are squeezed out when they pass a quarter of the rows (or on save).
    """

    kind = "flat"
    file_format = "npz"
    #: Scores computed at once are capped at this many elements (bounds device memory).
    SCORE_BLOCK = 1 << 26

    def __init__(self, dim: int, device: str) -> None:
        import torch

        super().__init__(dim)
        self._torch = torch
        self.device = torch.device(device)
        self.backend = f"torch-{self.device.type}"
        self._vectors = torch.empty((0, dim), dtype=torch.float32, device=self.device)
        self._alive = torch.empty(0, dtype=torch.bool, device=self.device)
        self._ids = np.empty(0, dtype=np.int64)
        self._n = 0
        self._dead = 0
        self._order: np.ndarray | None = None

    def __len__(self) -> int:
        return self._n - self._dead

    def ids(self) -> np.ndarray:
        alive = self._alive[: self._n].cpu().numpy()
        return np.sort(self._ids[: self._n][alive])

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        torch = self._torch
        n_new = len(ids)
        if self._n + n_new > self._vectors.shape[0]:
            capacity = max(self._n + n_new, 2 * self._vectors.shape[0], 1024)
            grown = torch.empty((capacity, self.dim), dtype=torch.float32, device=self.device)
            grown[: self._n] = self._vectors[: self._n]
            alive = torch.zeros(capacity, dtype=torch.bool, device=self.device)
            alive[: self._n] = self._alive[: self._n]
            self._vectors, self._alive = grown, alive
            self._ids = np.resize(self._ids, capacity)
        self._vectors[self._n : self._n + n_new] = torch.from_numpy(vectors).to(self.device)
        self._alive[self._n : self._n + n_new] = True
        self._ids[self._n : self._n + n_new] = ids
        self._n += n_new
        self._order = None

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """Row positions of those `ids` this index holds (absent ids are skipped)."""
        if self._order is None:
            self._order = np.argsort(self._ids[: self._n], kind="stable")
        held = self._ids[: self._n][self._order]
        if len(held) == 0:
            return np.empty(0, dtype=np.int64)
        at = np.minimum(np.searchsorted(held, ids), len(held) - 1)
        return self._order[at[held[at] == ids]]

    def remove(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        positions = self._positions(np.sort(ids))
        positions = positions[self._alive[positions].cpu().numpy()] if len(positions) else positions
        self._alive[positions] = False
        self._dead += len(positions)
        if self._dead > self._n // 4:
            self._squeeze()

    def _squeeze(self) -> None:
        keep = self._alive[: self._n]
        self._vectors = self._vectors[: self._n][keep].contiguous()
        self._ids = self._ids[: self._n][keep.cpu().numpy()]
        self._n = len(self._ids)
        self._alive = self._torch.ones(self._n, dtype=self._torch.bool, device=self.device)
        self._dead = 0
        self._order = None

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        scores_out, ids_out = _empty(len(queries), k)
        if len(self) == 0 or k == 0:
            return scores_out, ids_out
        if allowed is not None:
            mask = torch.zeros(self._n, dtype=torch.bool, device=self.device)
            mask[torch.from_numpy(self._positions(allowed)).to(self.device)] = True
            mask &= self._alive[: self._n]
        else:
            mask = self._alive[: self._n]
        take = min(k, self._n)
        vectors = self._vectors[: self._n]
        block = max(1, self.SCORE_BLOCK // max(self._n, 1))
        q_all = torch.from_numpy(np.ascontiguousarray(queries)).to(self.device)
        for start in range(0, len(queries), block):
            scores = q_all[start : start + block] @ vectors.T
            scores.masked_fill_(~mask, float("-inf"))
            top_scores, top_pos = torch.topk(scores, take, dim=1)
            top_scores = top_scores.cpu().numpy()
            top_pos = top_pos.cpu().numpy()
            found = np.isfinite(top_scores)
            rows = slice(start, start + len(top_scores))
            scores_out[rows, :take] = np.where(found, top_scores, -np.inf)
            ids_out[rows, :take] = np.where(found, self._ids[top_pos], -1)
        return scores_out, ids_out

    def save(self, path: str) -> None:
        if self._dead:
            self._squeeze()
        with open(path, "wb") as f:
            np.savez(f, ids=self._ids[: self._n], vectors=self._vectors[: self._n].cpu().numpy())

    @classmethod
    def load(cls, path: str, dim: int, device: str) -> "TorchExact":
        with np.load(path) as data:
            ids, vectors = data["ids"], data["vectors"]
        if vectors.ndim != 2 or vectors.shape[1] != dim or len(ids) != len(vectors):
            raise StoreError(f"{path} does not hold {dim}-d vectors with ids")
        index = cls(dim, device)
        index.add(ids.astype(np.int64), vectors.astype(np.float32, copy=False))
        return index


# ---------------------------------------------------------------------------------------------
# Choosing and creating a backend


def _nvidia_present() -> bool:
    # Checked before importing torch, so a CPU-only server does not pay torch's memory to find out.
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count()


def parse_device(device: str) -> tuple[str, int]:
    """("auto" | "cpu" | "cuda", GPU ordinal) from "auto", "cpu", "cuda" or "cuda:N"."""
    name, colon, ordinal = str(device).partition(":")
    if name in ("auto", "cpu", "cuda") and (not colon or (name == "cuda" and ordinal.isdigit())):
        return name, int(ordinal or 0)
    raise StoreError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def gpu_backend(backend: str) -> tuple[str, int]:
    """("faiss-gpu" | "torch-cuda" | ..., GPU ordinal) of a `resolve_backend` name."""
    name, _, ordinal = backend.partition(":")
    return name, int(ordinal or 0)


def resolve_backend(device: str, backend: str, kind: str) -> str:
    """The backend to run: "faiss-cpu", "faiss-gpu", "torch-cpu" or "torch-cuda" (GPU backends
    on a GPU other than the first say which: "torch-cuda:1").

    device: "auto" (a GPU when there is one), "cpu", "cuda" or "cuda:N". backend: "auto",
    "faiss" or "torch". GPU search is exact (``flat``) or ``ivfpq`` (sharded across the GPUs);
    an ivf / hnsw store on "auto" runs on the CPU.
    """
    device, ordinal = parse_device(device)
    if ordinal:
        name = resolve_backend(device, backend, kind)
        visible = faiss.get_num_gpus() if name == "faiss-gpu" else _cuda_devices()
        if ordinal >= visible:
            raise StoreError(f"device 'cuda:{ordinal}' was asked for but only {visible} GPU(s) are visible "
                             f"(cuda:0 to cuda:{max(visible - 1, 0)})")
        return name if kind == "ivfpq" else f"{name}:{ordinal}"  # ivfpq spans every GPU
    if backend not in ("auto", "faiss", "torch"):
        raise StoreError(f"backend must be 'auto', 'faiss' or 'torch', got {backend!r}")
    if kind not in INDEX_KINDS:
        raise StoreError(f"index_kind must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    faiss_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if backend == "torch" and kind != "flat":
        raise StoreError(f"the torch backend searches exactly; index_kind {kind!r} needs backend 'faiss'")
    if device == "cpu":
        return "torch-cpu" if backend == "torch" else "faiss-cpu"
    if device == "cuda":
        if kind == "ivfpq" and faiss_gpu and backend != "torch":
            return "faiss-gpu"
        if kind != "flat":
            raise StoreError(f"GPU search is exact or ivfpq; open with index_kind='flat' or device='cpu' (got {kind!r})")
        if backend != "torch" and faiss_gpu:
            return "faiss-gpu"
        if backend == "faiss":
            raise StoreError("device='cuda' with backend='faiss' needs a faiss built with GPU support (faiss-gpu)")
        if not _torch_cuda():
            raise StoreError("device='cuda' was asked for but torch sees no CUDA device")
        return "torch-cuda"
    # auto
    if backend == "torch":
        return "torch-cuda" if _nvidia_present() and _torch_cuda() else "torch-cpu"
    if kind in ("flat", "ivfpq") and faiss_gpu:
        return "faiss-gpu"
    if kind == "flat" and backend == "auto" and _nvidia_present() and _torch_cuda():
        return "torch-cuda"
    return "faiss-cpu"


def ivf_nlist(n_rows: int) -> int:
    """IVF lists for a store of n_rows: about √n."""
    return int(min(65_536, max(16, round(math.sqrt(n_rows)))))


def training_sample_size(n_rows: int, minimum: int) -> int:
    """Vectors to sample for building an approximate index over n_rows: enough to train IVF's
    coarse quantizer (at least `minimum`); recall tuning draws its queries from them too."""
    return min(n_rows, max(minimum, IVF_TRAIN_PER_LIST * ivf_nlist(n_rows)))


def _gpu_replica(backend: str) -> tuple[list[int], Callable[[faiss.Index, int], faiss.Index]] | None:
    """Where an ivfpq index on `backend` keeps its search copy: every GPU FAISS sees, or none."""
    return (list(range(faiss.get_num_gpus())), gpu_placer()) if backend == "faiss-gpu" else None


def new_index(backend: str, kind: str, dim: int, training_sample: np.ndarray | None = None,
              n_rows: int = 0, memory_budget: int | None = None) -> VectorIndex:
    """An empty index. An "ivf" / "ivfpq" index is trained on `training_sample` (normalised
    vectors) with lists for `n_rows` (`ivf_nlist`; ivfpq codes sized to `memory_budget` bytes,
    `ivfpq_params`); without a sample it starts as exact search (the store trains it once it
    has data)."""
    backend, ordinal = gpu_backend(backend)
    if backend.startswith("torch"):
        return TorchExact(dim, f"cuda:{ordinal}" if backend == "torch-cuda" else "cpu")
    if kind == "ivfpq" and training_sample is not None:
        return FaissIVFPQ.train(dim, training_sample, ivfpq_params(n_rows, dim, memory_budget),
                                replica=_gpu_replica(backend))
    if backend == "faiss-gpu":
        return FaissGpuFlat(dim, device=ordinal)
    if kind == "hnsw":
        return FaissHNSW(dim)
    if kind == "ivf" and training_sample is not None:
        return FaissIVF.train(dim, training_sample, ivf_nlist(n_rows))
    return FaissFlat(dim)


def load_index(path: str, backend: str, kind: str, dim: int) -> VectorIndex:
    """Read a saved index for `backend`/`kind`; raises (StoreError / RuntimeError) if unusable."""
    backend, ordinal = gpu_backend(backend)
    loaders: dict[tuple[str, str], Callable[[], VectorIndex]] = {
        ("faiss-cpu", "flat"): lambda: FaissFlat.load(path, dim),
        ("faiss-cpu", "ivf"): lambda: FaissIVF.load(path, dim),
        ("faiss-cpu", "hnsw"): lambda: FaissHNSW.load(path, dim),
        ("faiss-cpu", "ivfpq"): lambda: FaissIVFPQ.load(path, dim),
        ("faiss-gpu", "flat"): lambda: FaissGpuFlat(dim, FaissFlat.load(path, dim).index, device=ordinal),
        ("faiss-gpu", "ivfpq"): lambda: FaissIVFPQ.load(path, dim, replica=_gpu_replica(backend)),
        ("torch-cpu", "flat"): lambda: TorchExact.load(path, dim, "cpu"),
        ("torch-cuda", "flat"): lambda: TorchExact.load(path, dim, f"cuda:{ordinal}"),
    }
    if (backend, kind) not in loaders:
        raise StoreError(f"no loader for a {kind} index on {backend}")
    return loaders[(backend, kind)]()

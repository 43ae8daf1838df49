"""FAISS on the CPU: exact ``flat``, ``ivf`` (IVF-Flat) and ``hnsw``, and how IVF lists are sized."""

from __future__ import annotations

import math

import faiss
import numpy as np

from ecg_atlas.errors import StoreError

from .base import BRUTE_FORCE_MAX, VectorIndex, empty_results, exact_top_k
from .tuner import TunedSearch

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
#: FAISS warns below this many training vectors per IVF list.
IVF_TRAIN_PER_LIST = 39


def bitmap_selector(allowed: np.ndarray) -> tuple[faiss.IDSelector, np.ndarray]:
    """A FAISS selector for the ids in `allowed`, and the bitmap it reads (keep it alive)."""
    top = int(allowed.max()) + 1 if len(allowed) else 1
    mask = np.zeros(top, dtype=bool)
    mask[allowed] = True
    bitmap = np.packbits(mask, bitorder="little")
    return faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap)), bitmap


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
            return empty_results(len(queries), k)
        if allowed is not None:  # allowed rows come from DuckDB: deleted rows are not among them
            selector, _bitmap = bitmap_selector(allowed)
            return self.index.search(queries, k, params=faiss.SearchParameters(sel=selector))
        if not len(self.tombstones):
            return self._search_all(queries, k)
        if len(self.tombstones) <= self.OVERFETCH_MAX:
            scores, ids = self._search_all(queries, k + len(self.tombstones))
            out_scores, out_ids = empty_results(len(queries), k)
            for row, (s_row, i_row) in enumerate(zip(scores, ids, strict=True)):
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
        write_index(self.index, path)

    @classmethod
    def load(cls, path: str, dim: int) -> "FaissFlat":
        index = faiss.read_index(path)
        if not isinstance(index, faiss.IndexIDMap) or index.d != dim:
            raise StoreError(f"{path} is not a flat index of dimension {dim}")
        return cls(dim, index)


class FaissIVF(TunedSearch):
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
            return empty_results(len(queries), k)
        if allowed is None:
            return self.index.search(queries, k)
        if len(allowed) <= BRUTE_FORCE_MAX:
            return exact_top_k(queries, self.index.reconstruct_batch(allowed), allowed, k)
        selector, _bitmap = bitmap_selector(allowed)
        params = faiss.SearchParametersIVF(sel=selector, nprobe=self.nprobe)
        return self.index.search(queries, k, params=params)

    def save(self, path: str) -> None:
        write_index(self.index, path)

    @classmethod
    def load(cls, path: str, dim: int) -> "FaissIVF":
        index = faiss.read_index(path)
        if not isinstance(index, faiss.IndexIVFFlat) or index.d != dim:
            raise StoreError(f"{path} is not an IVF-Flat index of dimension {dim}")
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
        return cls(dim, index)

    def settings(self) -> dict[str, object]:
        return {"nlist": int(self.index.nlist), "nprobe": self.nprobe, "estimated_recall_at_10": self.recall_at_10}


class FaissHNSW(_TombstonedIDMap, TunedSearch):
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
            return empty_results(len(queries), k)
        if allowed is not None and len(allowed) <= BRUTE_FORCE_MAX:
            return exact_top_k(queries, self.index.reconstruct_batch(allowed), allowed, k)
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.nprobe, k)
        keep = []
        if allowed is not None:
            selector, bitmap = bitmap_selector(allowed)  # allowed rows exclude tombstones already
            keep += [selector, bitmap]
            params.sel = selector
        elif len(self.tombstones):
            dead = faiss.IDSelectorBatch(self.tombstones)
            params.sel = faiss.IDSelectorNot(dead)
            keep += [dead]
        return self.index.search(queries, k, params=params)

    def save(self, path: str) -> None:
        write_index(self.index, path)

    @classmethod
    def load(cls, path: str, dim: int) -> "FaissHNSW":
        index = faiss.read_index(path)
        if not isinstance(index, faiss.IndexIDMap2) or index.d != dim:
            raise StoreError(f"{path} is not an HNSW index of dimension {dim}")
        return cls(dim, index)

    def settings(self) -> dict[str, object]:
        return {"M": HNSW_M, "efSearch": self.nprobe, "estimated_recall_at_10": self.recall_at_10,
                "tombstones": int(len(self.tombstones))}


def write_index(index: faiss.Index, path: str) -> None:
    """`faiss.write_index` through a Python file: a write or close the disk refuses raises OSError
    here. FAISS's own file writer reports a failed close only on stderr (naming the path) and
    returns as if the file were whole."""
    with open(path, "wb") as f:
        faiss.write_index(index, faiss.PyCallbackIOWriter(f.write))


def ivf_nlist(n_rows: int) -> int:
    """IVF lists for a store of n_rows: about √n."""
    return int(min(65_536, max(16, round(math.sqrt(n_rows)))))


def training_sample_size(n_rows: int, minimum: int) -> int:
    """Vectors to sample for building an approximate index over n_rows: enough to train IVF's
    coarse quantizer (at least `minimum`); recall tuning draws its queries from them too."""
    return min(n_rows, max(minimum, IVF_TRAIN_PER_LIST * ivf_nlist(n_rows)))

"""Search backends: the derived vector index that sits beside the DuckDB rows.

Every backend holds L2-normalised float32 vectors keyed by the row's sequence number (int64),
searches by inner product (= cosine) and can restrict a search to an allowed set of sequence
numbers. Which one runs is decided when the store opens (`resolve_backend`) and reported by
`Store.info()`:

- ``faiss-cpu``: FAISS on the CPU; exact (``flat``), ``ivf`` (IVF-Flat) or ``hnsw``.
- ``faiss-gpu``: FAISS's GPU flat index, when the installed faiss was built with GPU support.
- ``torch-cuda`` / ``torch-cpu``: exact search as one matmul + top-k on a torch device, filters
  as boolean masks; the GPU path for a faiss without GPU support (``torch-cpu`` is the same code
  on the CPU, used to test it).
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable

import faiss
import numpy as np

from ecg_atlas.errors import StoreError

log = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "ivf", "hnsw")
#: Allowed sets at most this large are searched exactly by brute force (approximate kinds only;
#: exact kinds get exact answers from the selector path anyway).
BRUTE_FORCE_MAX = 20_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80


def _empty(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((nq, k), -np.inf, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64)


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by inner product of each query over (vectors, ids); padded with (-inf, -1)."""
    scores_out, ids_out = _empty(len(queries), k)
    if len(ids) == 0 or k == 0:
        return scores_out, ids_out
    scores = queries @ vectors.T
    take = min(k, len(ids))
    if take < len(ids):
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    else:
        part = np.broadcast_to(np.arange(len(ids)), (len(queries), len(ids)))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    scores_out[:, :take] = np.take_along_axis(scores, best, axis=1)
    ids_out[:, :take] = ids[best]
    return scores_out, ids_out


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


class FaissGpuFlat(FaissFlat):
    """FaissFlat with a GPU copy answering unfiltered searches (filtered ones use the CPU copy,
    whose selector search is exact). Untested here: no GPU faiss on the development machine."""

    backend = "faiss-gpu"

    def __init__(self, dim: int, index: faiss.Index | None = None) -> None:
        super().__init__(dim, index)
        self._resources = faiss.StandardGpuResources()
        self._gpu = faiss.index_cpu_to_gpu(self._resources, 0, self.index)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        super().add(ids, vectors)
        self._gpu.add_with_ids(vectors, ids)

    def purge(self) -> None:
        if len(self.tombstones):
            super().purge()
            # The GPU flat index cannot remove in place; copy the CPU index over again.
            self._gpu = faiss.index_cpu_to_gpu(self._resources, 0, self.index)

    def _search_all(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._gpu.search(queries, k)


class FaissIVF(VectorIndex):
    """IVF-Flat with ids stored in the inverted lists; `nprobe` is tuned by the store for recall."""

    kind = "ivf"
    backend = "faiss-cpu"
    file_format = "faiss"

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


class FaissHNSW(_TombstonedIDMap):
    """HNSW graph (IndexIDMap2 over IndexHNSWFlat). HNSW cannot remove nodes, so deletes are
    tombstones excluded by a selector until `compact` rebuilds the graph."""

    kind = "hnsw"
    backend = "faiss-cpu"
    file_format = "faiss"

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


def resolve_backend(device: str, backend: str, kind: str) -> str:
    """The backend to run: "faiss-cpu", "faiss-gpu", "torch-cpu" or "torch-cuda".

    device: "auto" (a GPU when there is one), "cpu" or "cuda". backend: "auto", "faiss" or
    "torch". GPU search is exact only (``flat``); an ivf / hnsw store on "auto" runs on the CPU.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise StoreError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
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
        if kind != "flat":
            raise StoreError(f"GPU search is exact only; open with index_kind='flat' or device='cpu' (got {kind!r})")
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
    if kind == "flat" and faiss_gpu:
        return "faiss-gpu"
    if kind == "flat" and backend == "auto" and _nvidia_present() and _torch_cuda():
        return "torch-cuda"
    return "faiss-cpu"


def new_index(backend: str, kind: str, dim: int) -> VectorIndex:
    """An empty index (IVF starts empty as exact search: the store trains it once it has data)."""
    if backend.startswith("torch"):
        return TorchExact(dim, backend.split("-", 1)[1])
    if backend == "faiss-gpu":
        return FaissGpuFlat(dim)
    if kind == "hnsw":
        return FaissHNSW(dim)
    return FaissFlat(dim)


def load_index(path: str, backend: str, kind: str, dim: int) -> VectorIndex:
    """Read a saved index for `backend`/`kind`; raises (StoreError / RuntimeError) if unusable."""
    loaders: dict[tuple[str, str], Callable[[], VectorIndex]] = {
        ("faiss-cpu", "flat"): lambda: FaissFlat.load(path, dim),
        ("faiss-cpu", "ivf"): lambda: FaissIVF.load(path, dim),
        ("faiss-cpu", "hnsw"): lambda: FaissHNSW.load(path, dim),
        ("faiss-gpu", "flat"): lambda: FaissGpuFlat(dim, FaissFlat.load(path, dim).index),
        ("torch-cpu", "flat"): lambda: TorchExact.load(path, dim, "cpu"),
        ("torch-cuda", "flat"): lambda: TorchExact.load(path, dim, "cuda"),
    }
    if (backend, kind) not in loaders:
        raise StoreError(f"no loader for a {kind} index on {backend}")
    return loaders[(backend, kind)]()

"""FAISS on GPUs: the flat index's GPU copy (`FaissGpuFlat`) and an IVF index's search copy
sharded across every GPU (`ShardedReplica`, placed by `gpu_placer`)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import faiss
import numpy as np

from .cpu import FaissFlat

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

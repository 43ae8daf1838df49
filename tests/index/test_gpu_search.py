"""The GPU search paths' logic, run on the CPU: FAISS GPU's k limit and its not-thread-safe
resources (the GPU copy replaced by a CPU index of the same interface), and `cuda:N` devices."""

from __future__ import annotations

import threading
import time

import faiss
import numpy as np
import pytest

from ecg_atlas.errors import DeviceError, StoreError
from ecg_atlas.index.backends import selection
from ecg_atlas.index.backends.base import exact_top_k
from ecg_atlas.index.backends.gpu import FAISS_GPU_MAX_K, FaissGpuFlat
from ecg_atlas.index.backends.selection import resolve_backend


class _GpuStandIn:
    """A CPU flat index that behaves as FAISS's GPU one where it matters: k > 2048 fails, and it
    records how many calls ran on it at once (StandardGpuResources may serve only one)."""

    def __init__(self, index: faiss.Index):
        self.index = faiss.clone_index(index)
        self.calls = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self._count = threading.Lock()

    def _enter(self):
        with self._count:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.calls += 1

    def _leave(self):
        with self._count:
            self.in_flight -= 1

    def search(self, queries, k):
        if k > FAISS_GPU_MAX_K:
            raise RuntimeError(f"Error: 'k > 0 && k <= GPU_MAX_SELECTION_K' failed: k = {k}")
        self._enter()
        try:
            time.sleep(0.002)  # long enough for overlapping callers to show
            return self.index.search(queries, k)
        finally:
            self._leave()

    def add_with_ids(self, vectors, ids):
        self._enter()
        try:
            self.index.add_with_ids(vectors, ids)
        finally:
            self._leave()


class StandInGpuFlat(FaissGpuFlat):
    copies: list[_GpuStandIn]

    def _new_resources(self):
        self.copies = []
        return object()

    def _to_gpu(self, index):
        self.copies.append(_GpuStandIn(index))
        return self.copies[-1]

    @property
    def gpu(self) -> _GpuStandIn:
        return self.copies[-1]


def _unit(n, dim, seed):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture()
def filled():
    dim, n = 32, 6000
    vectors = _unit(n, dim, 0)
    ids = np.arange(n, dtype=np.int64) * 3 + 1
    index = StandInGpuFlat(dim)
    index.add(ids, vectors)
    return index, ids, vectors


def test_search_runs_on_the_gpu_copy_within_its_k_limit(filled):
    index, ids, vectors = filled
    queries = _unit(4, vectors.shape[1], 1)
    scores, found = index.search(queries, 10)
    assert index.gpu.calls >= 2  # the add and the search went to the GPU copy
    np.testing.assert_array_equal(found, exact_top_k(queries, vectors, ids, 10)[1])


def test_tombstones_past_the_gpu_k_limit_never_fail(filled):
    index, ids, vectors = filled
    queries = _unit(3, vectors.shape[1], 2)
    # k = 10 with 2,039 pending deletes over-fetches 2,049 > 2,048: the RPC used to fail INTERNAL
    gone = ids[::2][:2039]
    index.remove(gone)
    assert len(index.tombstones) == 2039 and len(index.tombstones) <= index.OVERFETCH_MAX
    calls = index.gpu.calls
    scores, found = index.search(queries, 10)
    assert index.gpu.calls == calls  # answered by the CPU copy, not sent to the GPU to fail
    live = ~np.isin(ids, gone)
    expected_scores, expected = exact_top_k(queries, vectors[live], ids[live], 10)
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)
    # a k above the limit asked for directly: also exact, also not failing
    wide_scores, wide = index.search(queries, FAISS_GPU_MAX_K + 100)
    assert (wide >= 0).all() and not np.isin(wide, gone).any()
    np.testing.assert_allclose(  # the same ranking, up to float rounding between near-ties
        wide_scores, exact_top_k(queries, vectors[live], ids[live], FAISS_GPU_MAX_K + 100)[0], atol=1e-5)
    # fewer tombstones: back on the GPU copy
    index.purge()
    _, found = index.search(queries, 10)
    assert index.gpu.calls == 1 and not len(index.tombstones)  # a fresh copy after the purge
    np.testing.assert_array_equal(found, expected)


def test_concurrent_searches_never_share_the_gpu_resources_at_once(filled):
    index, ids, vectors = filled
    queries = _unit(2, vectors.shape[1], 3)
    expected = index.search(queries, 5)[1]
    results, errors = [], []

    def searcher():
        try:
            for _ in range(5):
                results.append(index.search(queries, 5)[1])
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 40
    assert all(np.array_equal(r, expected) for r in results)
    assert index.gpu.most_in_flight == 1


def test_cuda_n_devices_are_parsed_and_checked(monkeypatch):
    for bad in ("gpu", "cuda:", "cuda:x", "cpu:1", "auto:0"):
        with pytest.raises(DeviceError, match="cuda:N"):
            resolve_backend(bad, "auto", "flat")
    monkeypatch.setattr(selection, "_torch_cuda", lambda: True)
    monkeypatch.setattr(selection, "_cuda_devices", lambda: 2)
    monkeypatch.setattr(selection.faiss, "get_num_gpus", lambda: 0)
    assert resolve_backend("cuda:0", "auto", "flat") == "torch-cuda"  # the first GPU keeps the plain name
    assert resolve_backend("cuda", "auto", "flat") == "torch-cuda"
    assert resolve_backend("cuda:1", "torch", "flat") == "torch-cuda:1"
    with pytest.raises(DeviceError, match="only 2 GPU"):
        resolve_backend("cuda:2", "auto", "flat")
    with pytest.raises(StoreError, match="index_kind"):  # a known device with an unknown kind
        resolve_backend("cuda:1", "auto", "lsh")
    assert selection.gpu_backend("torch-cuda:1") == ("torch-cuda", 1)
    assert selection.gpu_backend("faiss-cpu") == ("faiss-cpu", 0)


def test_a_cuda_n_backend_builds_its_index_on_that_device(monkeypatch):
    made = {}
    monkeypatch.setattr(selection, "TorchExact", lambda dim, device: made.setdefault("device", device))
    selection.new_index("torch-cuda:1", "flat", 8)
    assert made["device"] == "cuda:1"
    made.clear()
    selection.new_index("torch-cpu", "flat", 8)
    assert made["device"] == "cpu"

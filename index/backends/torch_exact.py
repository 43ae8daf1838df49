"""``torch-cuda`` / ``torch-cpu``: exact search as one matmul + top-k on a torch device. The GPU
path for a faiss without GPU support (``torch-cpu`` is the same code on the CPU, used to test it).
torch is imported when an index is made, not with this module."""

from __future__ import annotations

import numpy as np

from ecg_atlas.errors import StoreError

from .base import VectorIndex, empty_results


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
        scores_out, ids_out = empty_results(len(queries), k)
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

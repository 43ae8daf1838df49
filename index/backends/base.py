"""What every search backend is (`VectorIndex`) and the exact top-k arithmetic they share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping

import numpy as np

INDEX_KINDS = ("flat", "ivf", "hnsw", "ivfpq")
#: Kinds trained on a sample: they search exactly until the store holds enough rows.
TRAINED_KINDS = ("ivf", "ivfpq")
#: Allowed sets at most this large are searched exactly by brute force (approximate kinds only;
#: exact kinds get exact answers from the selector path anyway).
BRUTE_FORCE_MAX = 20_000


def empty_results(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of nq queries that found nothing: all (-inf, -1)."""
    return np.full((nq, k), -np.inf, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64)


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by inner product of each query over (vectors, ids); padded with (-inf, -1)."""
    scores_out, ids_out = empty_results(len(queries), k)
    if len(ids) == 0 or k == 0:
        return scores_out, ids_out
    top_scores, top_ids = top_k(queries @ vectors.T, ids, k)
    scores_out[:, :top_ids.shape[1]], ids_out[:, :top_ids.shape[1]] = top_scores, top_ids
    return scores_out, ids_out


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's best min(k, len(ids)) (scores, ids), best first; ties keep the given order."""
    take = min(k, len(ids))
    if take < len(ids):
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    else:
        part = np.broadcast_to(np.arange(len(ids)), (len(scores), len(ids)))
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    return np.take_along_axis(scores, best, axis=1), ids[best]


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
        return None  # nothing to tune by default; approximate kinds override this

    def tuning(self) -> dict[str, object]:
        """The tuned parameters, to be saved beside the index file and given back to `apply_tuning`."""
        return {}

    def apply_tuning(self, saved: Mapping[str, object]) -> None:
        """Restore parameters `tuning` returned when this index was saved."""
        return None  # nothing saved, nothing to restore by default; kinds that tune override this

    def use_exact_vectors(self, fetch: Callable[[np.ndarray], np.ndarray]) -> None:
        """Indexes that re-rank with the stored float vectors read them with `fetch(sorted ids)`
        (one normalised row per id, in that order); the others hold their vectors themselves."""
        return None  # holds its own vectors by default; kinds that re-rank override this

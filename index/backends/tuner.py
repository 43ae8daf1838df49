"""Recall tuning for the approximate kinds: one search-breadth knob raised until recall@10
against exact search reaches TARGET_RECALL."""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Mapping

import numpy as np

from .base import VectorIndex

log = logging.getLogger(__name__)

#: nprobe / efSearch are tuned to the smallest value reaching this recall@10 against exact search.
TARGET_RECALL = 0.95


def expected_top10(ranked: np.ndarray, query_ids: np.ndarray) -> list[set[int]]:
    """Each row's first ten ids other than the query's own (and the -1 padding)."""
    return [set(row[(row != own) & (row >= 0)][:10].tolist()) for row, own in zip(ranked, query_ids, strict=True)]


class TunedSearch(VectorIndex):
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
        expected = expected_top10(truth, query_ids)
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
        got = expected_top10(found, query_ids)
        return float(np.mean([len(g & e) / max(len(e), 1) for g, e in zip(got, expected, strict=True)]))

    def tuning(self) -> dict[str, object]:
        return {"nprobe": self.nprobe, "estimated_recall_at_10": self.recall_at_10}

    def apply_tuning(self, saved: Mapping[str, object]) -> None:
        self.nprobe = saved.get("nprobe", self.nprobe)
        self.recall_at_10 = saved.get("estimated_recall_at_10")

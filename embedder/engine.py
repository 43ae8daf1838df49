"""Batched inference: many records' segments packed into fixed-size batches.

A record's vector is the mean of its 5-s segment vectors (project decision, ecgfm_spec.md §6: ECG-FM
defines no record-level aggregation); the segment vectors are kept too. The gRPC server's
cross-request batching queue sits on top of :meth:`EmbeddingEngine.embed_segments`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .encoders.base import BaseEncoder


def record_vector(segment_vectors: np.ndarray) -> np.ndarray:
    """A record's vector from its (n_segments, D) segment vectors: their mean (module docstring).

    The one place a record vector is made: the engine, the service's embedding pipeline, probes
    on new ECGs and every script call this.
    """
    return np.asarray(segment_vectors).mean(axis=0)


@dataclass
class EmbeddedRecord:
    key: object  # whatever the caller used to name the record (an ecg_id, a path, an index)
    record_vector: np.ndarray  # (D,) float32
    segment_vectors: np.ndarray  # (n_segments, D) float32


class EmbeddingEngine:
    """Runs an encoder (:class:`BaseEncoder`) over any number of segments in batches of ``batch_size``."""

    def __init__(self, encoder: BaseEncoder, batch_size: int = 32):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.encoder = encoder
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def embed_segments(self, segments: np.ndarray, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """(n, 12, 2500) → (n, D) float32; ``on_batch(k)`` is told how many were just done."""
        out = np.empty((len(segments), self.dim), dtype=np.float32)
        for start in range(0, len(segments), self.batch_size):
            batch = segments[start:start + self.batch_size]
            out[start:start + len(batch)] = self.encoder.embed(batch)
            if on_batch:
                on_batch(len(batch))
        return out

    def embed_records(self, records: Iterable[tuple[object, np.ndarray]],
                      on_batch: Callable[[int], None] | None = None) -> Iterator[EmbeddedRecord]:
        """Embed ``(key, segments)`` pairs, packing segments of consecutive records into full batches.

        Records come back in input order as soon as all their segments are done.
        """
        pending: list[tuple[object, np.ndarray]] = []
        queued = 0
        for key, segments in records:
            pending.append((key, segments))
            queued += len(segments)
            if queued >= self.batch_size:
                yield from self._flush(pending, on_batch)
                pending, queued = [], 0
        if pending:
            yield from self._flush(pending, on_batch)

    def _flush(self, pending, on_batch) -> Iterator[EmbeddedRecord]:
        vectors = self.embed_segments(np.concatenate([segs for _, segs in pending]), on_batch)
        offset = 0
        for key, segments in pending:
            seg_vectors = vectors[offset:offset + len(segments)]
            offset += len(segments)
            yield EmbeddedRecord(key, record_vector(seg_vectors), seg_vectors)

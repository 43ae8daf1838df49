"""Pretraining batches streamed from ECG files: pairs of adjacent 5-s segments, random lead masking.

No per-segment files: records are read and preprocessed on worker threads (``prefetch``) and cut into
CMSC pairs (segments 0–1, 2–3, ... of one recording). With ``random_offset`` the pairs of a record
longer than 10 s start at a random sample instead (still two adjacent, non-overlapping 5-s windows of
the standardised record): an augmentation for small corpora. Small corpora are cached in memory after
the first pass. Records that cannot be used (too short for two segments, too few leads) are skipped
and counted.

Pairs go through a shuffle buffer before they are batched, so the pairs of one long record spread
over many batches; each pair carries its record's index, so CMSC treats two pairs of the same record
in one batch as positives rather than as negatives. ``max_pairs_per_record`` caps what one record
contributes per pass (a 30-min Holter would otherwise outweigh hundreds of 10-s ECGs).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..discover import ECGSource, read_source
from ..prefetch import prefetch
from ..preprocessing import preprocess
from ..recording import SEGMENT_SAMPLES

#: (first 5-s window, the adjacent window, index of the record they come from)
Pair = tuple[np.ndarray, np.ndarray, int]


def patient_split(key: str, test_fraction: float = 0.2) -> str:
    """'train' or 'test' by a stable hash of the patient (or record) key: the same everywhere.

    The bundled encoder is pretrained on 'train' only; its quality is measured on 'test'.
    """
    bucket = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if bucket < test_fraction else "train"


def mask_leads(batch: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    """RLM: every lead of every segment independently zeroed with probability ``prob``."""
    keep = rng.random(batch.shape[:2]) >= prob
    return batch * keep[:, :, None].astype(batch.dtype)


@dataclass
class PairStream:
    """Endless shuffled CMSC pairs from ``sources``; ``stats`` counts what was skipped and why."""

    sources: Sequence[ECGSource]
    seed: int = 0
    cache_limit_bytes: int = 2 << 30
    noise_std: float = 0.0  # optional Gaussian noise on the z-scored signal (augmentation)
    random_offset: bool = False
    max_pairs_per_record: int | None = None
    shuffle_buffer: int = 256
    stats: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._cache: list[tuple[int, np.ndarray]] | None = None

    @staticmethod
    def _record(source: ECGSource) -> np.ndarray:
        """The standardised record cut to whole windows (12, n·2500): its segments side by side."""
        segments = preprocess(read_source(source))
        return np.concatenate(list(segments), axis=-1)

    def _pairs_of(self, record: np.ndarray, index: int) -> Iterator[Pair]:
        n_pairs = record.shape[-1] // (2 * SEGMENT_SAMPLES)
        spare = record.shape[-1] - 2 * SEGMENT_SAMPLES
        chosen = range(n_pairs)
        if self.max_pairs_per_record is not None and n_pairs > self.max_pairs_per_record:
            chosen = sorted(self._rng.choice(n_pairs, self.max_pairs_per_record, replace=False))
        for i in chosen:
            start = int(self._rng.integers(0, spare + 1)) if self.random_offset else 2 * i * SEGMENT_SAMPLES
            yield (record[:, start:start + SEGMENT_SAMPLES],
                   record[:, start + SEGMENT_SAMPLES:start + 2 * SEGMENT_SAMPLES], index)

    def _one_pass(self) -> Iterator[Pair]:
        order = [int(i) for i in self._rng.permutation(len(self.sources))]
        collected: list[tuple[int, np.ndarray]] | None = []
        size = 0
        for index, result in prefetch(order, lambda i: self._record(self.sources[i])):
            if isinstance(result, Exception):
                self.stats[getattr(result, "reason", type(result).__name__)] += 1
                continue
            if result.shape[-1] < 2 * SEGMENT_SAMPLES:
                self.stats["shorter_than_two_segments"] += 1
                continue
            if collected is not None:
                collected.append((index, result))
                size += result.nbytes
                if size > self.cache_limit_bytes:
                    collected = None  # too big to keep: stream from the files every pass
            yield from self._pairs_of(result, index)
        if collected is not None:
            self._cache = collected

    def pairs(self) -> Iterator[Pair]:
        """(first 5-s window, the adjacent one, record index), endlessly; records reshuffled each pass."""
        while True:
            if self._cache is None:
                yield from self._one_pass()
                if self._cache is not None and not self._cache:
                    raise ValueError("no record yields two 5-s segments: nothing to pretrain on")
            else:
                for i in self._rng.permutation(len(self._cache)):
                    yield from self._pairs_of(self._cache[i][1], self._cache[i][0])

    def shuffled_pairs(self) -> Iterator[Pair]:
        """``pairs()`` through a buffer of ``shuffle_buffer`` pairs, drawn from at random."""
        stream = self.pairs()
        buffer: list[Pair] = []
        for pair in stream:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(pair)
                continue
            i = int(self._rng.integers(len(buffer)))
            yield buffer[i]
            buffer[i] = pair

    def batches(self, pairs_per_batch: int, mask_leads_prob: float) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """((2P, 12, 2500) float32, (P,) record index): rows 0..P−1 first segments, P..2P−1 partners."""
        stream = self.shuffled_pairs() if self.shuffle_buffer > 1 else self.pairs()
        while True:
            chosen = [next(stream) for _ in range(pairs_per_batch)]
            batch = np.stack([a for a, _, _ in chosen] + [b for _, b, _ in chosen])
            if self.noise_std:
                batch = batch + self._rng.normal(0, self.noise_std, batch.shape).astype(np.float32)
            records = np.array([r for _, _, r in chosen], dtype=np.int64)
            yield mask_leads(batch, mask_leads_prob, self._rng).astype(np.float32), records

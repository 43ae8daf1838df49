"""The service's one embedding pipeline: an ECG message → a checked ``Recording`` → ECG-FM-ready
segments → the batching queue → segment vectors → the record vector.

Every RPC that embeds (Embed, Search by ECG, Predict on sent ECGs, Ingest) goes through here, so
an ECG is validated, preprocessed and pooled the same way whichever call brought it.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from ecg_atlas import wire
from ecg_atlas.embedder.engine import record_vector
from ecg_atlas.errors import InvalidECGError
from ecg_atlas.v1 import atlas_pb2 as pb

from .calls import deadline, wait


@dataclass
class Embedded:
    recording: object  # embedder.Recording
    prepared: object  # embedder.preprocessing.Prepared (segments + report)
    segment_vectors: np.ndarray  # (n_segments, D) float32
    record_vector: np.ndarray  # (D,) float32


class EmbeddingPipeline:
    def __init__(self, runtime):
        self.runtime = runtime

    def prepare(self, ecg: pb.ECG):
        """(Recording, Prepared) of an ECG message; InvalidECGError says what is wrong with it."""
        cfg = self.runtime.config
        if not ecg.ByteSize():
            raise InvalidECGError("no ECG was sent", reason="bad_signal")
        recording = wire.ecg_from_proto(ecg, max_duration_s=cfg.max_ecg_duration_s)
        return recording, self.prepare_recording(recording)

    def prepare_recording(self, recording):
        """The encoder's own input pipeline (ECG-FM, HuBERT-ECG and ECGFounder each have theirs)."""
        cfg = self.runtime.config
        return self.runtime.encoder.prepare(recording, min_leads=cfg.min_leads, max_duration_s=cfg.max_ecg_duration_s)

    def submit(self, prepared, at_deadline: float | None) -> Future:
        """Queue prepared segments for the encoder; the Future gives (segment vectors, timing)."""
        return self.runtime.batcher.submit(prepared.segments, at_deadline)

    def embed(self, ecg: pb.ECG, context, timing: pb.Timing) -> Embedded:
        """Prepare, embed and pool one ECG for an RPC, adding the time each step took to `timing`."""
        t = time.perf_counter()
        recording, prepared = self.prepare(ecg)
        timing.preprocess_ms += 1000 * (time.perf_counter() - t)
        vectors, spent = wait(self.submit(prepared, deadline(context)), context)
        timing.queue_ms += spent.queue_ms
        timing.inference_ms += spent.inference_ms
        return Embedded(recording, prepared, vectors, pooled(vectors))


def pooled(segment_vectors: np.ndarray) -> np.ndarray:
    """The record vector the service stores and searches with (embedder.engine.record_vector)."""
    return record_vector(segment_vectors).astype(np.float32, copy=False)

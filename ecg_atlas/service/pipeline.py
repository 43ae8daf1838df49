"""The service's one embedding pipeline: an ECG message → a checked ``Recording`` → ECG-FM-ready
segments → the batching queue → segment vectors → the record vector.

Every RPC that embeds (Embed, Search by ECG, Predict on sent ECGs, Ingest) goes through here, so
an ECG is validated, preprocessed and pooled the same way whichever call brought it. Decoding and
preprocessing run in the calling thread, or on the preprocessing processes when the server has
them (``prepare_pool``): the same function either way, with the same errors.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from dataclasses import dataclass

import grpc
import numpy as np

from ecg_atlas.embedder.engine import record_vector
from ecg_atlas.v1 import atlas_pb2 as pb

from .calls import deadline, wait
from .errors import Abort
from .prepare_pool import PreprocessCrashedError, RecordingHeader


@dataclass
class Embedded:
    header: RecordingHeader  # the ECG's sampling rate, lead names and duration
    prepared: object  # embedder.preprocessing.Prepared (segments + report)
    segment_vectors: np.ndarray  # (n_segments, D) float32
    record_vector: np.ndarray  # (D,) float32


class EmbeddingPipeline:
    def __init__(self, runtime):
        self.runtime = runtime

    def prepare(self, ecg: pb.ECG):
        """(Recording, Prepared) of an ECG message, in this thread (Explain draws the Recording);
        InvalidECGError says what is wrong with it."""
        return self.runtime.preprocessing.message(ecg)

    def prepare_recording(self, recording):
        """The encoder's own input pipeline (ECG-FM, HuBERT-ECG and ECGFounder each have theirs)."""
        return self.runtime.preprocessing.recording(recording)

    def prepare_for_encoder(self, ecg: pb.ECG) -> tuple[RecordingHeader, object]:
        """(RecordingHeader, Prepared) of an ECG message on the preprocessing processes, or in this
        thread when the server has none; the same errors either way."""
        pool = self.runtime.prepare_pool
        if pool is None:
            recording, prepared = self.prepare(ecg)
            return RecordingHeader.of(recording), prepared
        try:
            return pool.prepare(ecg)
        except PreprocessCrashedError as exc:  # not the ECG's fault, nor the stream's: send it again
            raise Abort(grpc.StatusCode.ABORTED, str(exc), reason=exc.reason) from None

    def submit(self, prepared, at_deadline: float | None) -> Future:
        """Queue prepared segments for the encoder; the Future gives (segment vectors, timing)."""
        return self.runtime.batcher.submit(prepared.segments, at_deadline)

    def embed(self, ecg: pb.ECG, context, timing: pb.Timing) -> Embedded:
        """Prepare, embed and pool one ECG for an RPC, adding the time each step took to `timing`."""
        t = time.perf_counter()
        header, prepared = self.prepare_for_encoder(ecg)
        timing.preprocess_ms += 1000 * (time.perf_counter() - t)
        vectors, spent = wait(self.submit(prepared, deadline(context)), context)
        timing.queue_ms += spent.queue_ms
        timing.inference_ms += spent.inference_ms
        return Embedded(header, prepared, vectors, pooled(vectors))


def pooled(segment_vectors: np.ndarray) -> np.ndarray:
    """The record vector the service stores and searches with (embedder.engine.record_vector)."""
    return record_vector(segment_vectors).astype(np.float32, copy=False)

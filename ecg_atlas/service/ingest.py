"""One Ingest call: decode and preprocess on the pool (its threads, or the worker processes they
hand ECGs to), embed through the batching queue, write in transactions of ``WRITE_BATCH``; at most
``max_ingest_in_flight`` ECGs between reading and writing (backpressure).

Every problem with one item — a bad or implausible signal, metadata that does not fit the
schema, an empty or repeated id, a message that does not parse, an encoder refusal — is an entry
of the response with its reason; the other items are stored. Only stream-level faults end the
call with a status: the caller's deadline, a server shutting down, and a store disk that refuses
writes (``StorageError``: nothing of the batch being written is acknowledged).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import TimeoutError as FutureTimeout

import grpc
import numpy as np

from ecg_atlas import wire
from ecg_atlas.embedder.batching import QueueFullError
from ecg_atlas.errors import StorageError
from ecg_atlas.v1 import atlas_pb2 as pb

from . import handlers
from .calls import deadline, ms_since, remaining
from .errors import Abort, details_of, reason_of, status_of
from .pipeline import pooled

log = logging.getLogger(__name__)

#: ECGs written to the store per transaction.
WRITE_BATCH = 64
#: The store is asked which of this many ids it holds in one lookup (0.9 ms; 0.5 ms for one id).
EXISTS_GROUP = 8
#: Codes that end the stream instead of failing one item.
_STREAM_FAULTS = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


class IngestStream:
    def __init__(self, runtime, pipeline, context):
        self.runtime = runtime
        self.pipeline = pipeline
        self.context = context
        self.response = pb.IngestResponse()
        self.timing = self.response.timing
        self.in_flight: deque = deque()  # (index, request, Future of the prepare+submit step)
        self.to_write: list = []
        self.seen: set[str] = set()

    def run(self, requests) -> pb.IngestResponse:
        limit = self.runtime.config.max_ingest_in_flight
        # Requests are started a group at a time (one store lookup per group); once the stream is
        # at its in-flight limit, finished ECGs are collected until a whole group fits again, so a
        # long stream keeps asking about EXISTS_GROUP ids at once instead of one at a time.
        group_size = max(1, min(EXISTS_GROUP, limit // 4))
        group: list = []  # accepted requests not yet started
        for index, request in enumerate(requests):
            self.response.received += 1
            if isinstance(request, handlers.Unparsable):
                self._error(index, "", grpc.StatusCode.INVALID_ARGUMENT, request.describe(), "malformed_request")
                continue
            if not request.ecg_id:
                self._error(index, "", grpc.StatusCode.INVALID_ARGUMENT, "ecg_id is empty", "missing_id")
                continue
            if request.ecg_id in self.seen:
                self._error(index, request.ecg_id, grpc.StatusCode.INVALID_ARGUMENT,
                            "this ecg_id was already sent in this stream", "duplicate_id")
                continue
            self.seen.add(request.ecg_id)
            group.append((index, request))
            if len(group) >= group_size or len(self.in_flight) + len(group) >= limit:
                self._start(group)
                group = []
                while self.in_flight and len(self.in_flight) > limit - group_size:
                    self._collect_one()
        self._start(group)
        while self.in_flight:
            self._collect_one()
        self._flush()
        return self.response

    def _start(self, group) -> None:
        """Skip the group's ids the store already holds (one lookup for all), queue the rest."""
        check = [request.ecg_id for _, request in group if not request.replace]
        t = time.perf_counter()
        stored = self.runtime.store.existing(check) if check else set()
        self.timing.store_ms += ms_since(t)
        for index, request in group:
            if request.ecg_id in stored:
                self.response.skipped_existing += 1
            else:
                self.in_flight.append((index, request, self.runtime.preprocess.submit(self._prepare, request)))

    def _prepare(self, request):
        """Runs on the preprocess pool: the prepared ECG, submitted to the encoder queue."""
        t = time.perf_counter()
        header, prepared = self.pipeline.prepare_for_encoder(request.ecg)
        preprocess_ms = ms_since(t)
        at_deadline = deadline(self.context)
        while True:  # a full queue slows a bulk stream down instead of failing its ECGs
            try:
                return header, self.pipeline.submit(prepared, at_deadline), preprocess_ms
            except QueueFullError:
                if not self.context.is_active():
                    raise
                time.sleep(0.02)

    def _collect_one(self) -> None:
        index, request, future = self.in_flight.popleft()
        try:
            header, embedded, preprocess_ms = future.result()
            try:
                vectors, spent = embedded.result(timeout=remaining(self.context))
            except FutureTimeout:
                raise Abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed during ingest; this stream "
                            "is not acknowledged: resend it (ids already stored are skipped)",
                            reason="deadline") from None
        except Exception as exc:  # one bad ECG is reported, the stream goes on
            code, message = status_of(exc)
            if code in _STREAM_FAULTS or not self.context.is_active():
                raise
            self._item_error(index, request.ecg_id, exc)
            return
        self.timing.preprocess_ms += preprocess_ms
        self.timing.queue_ms += spent.queue_ms
        self.timing.inference_ms += spent.inference_ms
        self.to_write.append((index, request, header, vectors))
        if len(self.to_write) >= WRITE_BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self.to_write:
            return
        batch, self.to_write = self.to_write, []
        t = time.perf_counter()
        try:
            self._write(batch)
        except StorageError:
            raise  # the disk, not an ECG: the stream ends RESOURCE_EXHAUSTED / UNAVAILABLE
        except Exception:  # find the ECGs the store refused; store the others
            for item in batch:
                try:
                    self._write([item])
                except StorageError:
                    raise
                except Exception as exc:  # reported per item, the stream goes on
                    self._item_error(item[0], item[1].ecg_id, exc)
        finally:
            self.timing.store_ms += ms_since(t)

    def _write(self, batch) -> None:
        runtime = self.runtime
        vectors = [v for _, _, _, v in batch]
        runtime.store.upsert(
            [r.ecg_id for _, r, _, _ in batch], np.stack([pooled(v) for v in vectors]),
            identity=runtime.identity, patient_ids=[r.patient_id or None for _, r, _, _ in batch],
            segment_vectors=vectors, sources=[r.source or None for _, r, _, _ in batch],
            fs=[rec.fs for _, _, rec, _ in batch], lead_names=[rec.lead_names for _, _, rec, _ in batch],
            duration_s=[rec.duration_s for _, _, rec, _ in batch],
            metadata=[wire.metadata_from_proto(r.metadata) for _, r, _, _ in batch],
            signals=[wire.stored_signal_from_proto(r.ecg) for _, r, _, _ in batch]
            if runtime.config.keep_signals else None)
        self.response.stored += len(batch)
        self.response.segments += sum(len(v) for v in vectors)

    def _item_error(self, index: int, ecg_id: str, exc: BaseException) -> None:
        code, message = status_of(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.error("Ingest: one ECG failed: %s", type(exc).__name__, exc_info=log.isEnabledFor(logging.DEBUG))
        self._error(index, ecg_id, code, message, reason_of(exc), details_of(exc))

    def _error(self, index: int, ecg_id: str, code: grpc.StatusCode, message: str, reason: str,
               details: dict | None = None) -> None:
        self.response.failed += 1
        self.response.errors.add(index=index, ecg_id=ecg_id, code=code.name, message=message, reason=reason,
                                 details=details or {})

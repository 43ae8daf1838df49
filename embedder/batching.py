"""Cross-request batching: encoder worker threads take queued segments in batches.

Every RPC that needs vectors submits its (n, 12, 2500) segments with its deadline and gets a
Future. A free worker takes the oldest waiting segments, waits at most ``max_queue_delay_ms`` for
more to arrive until it has ``max_batch_segments``, and runs one forward pass over all of them
(segments of one ECG may be split over batches, and over workers). With several workers (the CPU
default is two, each on half the cores) batches run side by side; a queue shorter than the idle
workers could take is shared out between them, so a lone request is not left to one worker. gRPC
handler threads only wait on futures, never on the device. Work whose deadline has passed, or
whose caller has gone, is dropped before inference. The queue is bounded: a submit that would
exceed ``max_queue_segments`` fails at once with ``QueueFullError`` (RESOURCE_EXHAUSTED) instead of
queueing forever.

On a GPU each worker stages its batches through its own pinned buffers and CUDA stream
(``staging.DeviceStaging``): one worker's copy and forward overlap the other's host work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

import numpy as np

from ecg_atlas.errors import AtlasError

log = logging.getLogger(__name__)


class QueueFullError(AtlasError):
    """The encoder queue holds as many segments as it may; retry later (RESOURCE_EXHAUSTED)."""


class DeadlineExpiredError(AtlasError):
    """The caller's deadline passed before the encoder reached its segments (DEADLINE_EXCEEDED)."""


class EncoderStoppedError(AtlasError):
    """The server is shutting down and takes no new encoder work (UNAVAILABLE)."""


@dataclass(frozen=True)
class EncodeTiming:
    queue_ms: float
    inference_ms: float


@dataclass(eq=False)
class _Job:
    segments: np.ndarray
    deadline: float | None  # time.monotonic() value
    future: Future
    submitted: float
    vectors: np.ndarray | None = None
    taken: int = 0  # segments handed to a batch
    done: int = 0  # segments embedded
    inference_s: float = 0.0


class BatchingEncoder:
    """Coalesces concurrent ``submit`` calls into encoder batches run by ``workers`` threads."""

    def __init__(self, encoder, *, max_batch_segments: int = 64, max_queue_delay_ms: float = 5.0,
                 max_queue_segments: int = 4096, workers: int = 1, streams=None):
        """``streams``: the CUDA stream API the workers stage batches through (``torch.cuda`` for
        an encoder on a GPU; None on a CPU, where batches go to ``encoder.embed`` directly)."""
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.encoder = encoder
        if streams is None and getattr(getattr(encoder, "device", None), "type", None) == "cuda":
            import torch

            streams = torch.cuda
        self._streams = streams
        self._staging = threading.local()  # each worker's DeviceStaging
        self.max_batch_segments = max_batch_segments
        self.max_queue_delay_s = max_queue_delay_ms / 1000.0
        self.max_queue_segments = max_queue_segments
        self._pending: deque[_Job] = deque()
        self._queued = 0  # segments submitted and not yet handed to a batch
        self._cond = threading.Condition()
        self._stopping = False
        self._threads = [threading.Thread(target=self._run, name=f"encoder-{i}", daemon=True) for i in range(workers)]
        self._waiting = 0  # workers looking for a batch
        self.batches_run = 0
        self.segments_run = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "BatchingEncoder":
        for thread in self._threads:
            thread.start()
        return self

    def warm_up(self, rounds: int = 2) -> None:
        """Run full-size batches so the first real request does not pay for allocation / autotuning."""
        rng = np.random.default_rng(0)
        shape = tuple(self.encoder.contract.input_shape)  # one model-ready window: (12, 2500) for ECG-FM
        segments = rng.standard_normal((self.max_batch_segments, *shape)).astype(np.float32)
        for _ in range(rounds):  # one full batch per worker, at once
            for future in [self.submit(segments) for _ in self._threads]:
                future.result()
        for size in getattr(self.encoder, "compiled_batches", ()):  # each compiled size compiles now
            if size < self.max_batch_segments:
                self.submit(segments[:size]).result()
        self.submit(segments[:1]).result()

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued, then end the encoder workers; later submits fail."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    # -- submitting -----------------------------------------------------------------------------
    def submit(self, segments: np.ndarray, deadline: float | None = None) -> Future:
        """Queue (n, 12, 2500) segments; the Future gives ((n, D) float32 vectors, EncodeTiming).

        ``deadline`` is a ``time.monotonic()`` instant after which the work is dropped.
        """
        segments = np.ascontiguousarray(segments, dtype=np.float32)
        job = _Job(segments, deadline, Future(), time.monotonic())
        n = len(segments)
        with self._cond:
            if self._stopping:
                raise EncoderStoppedError("the server is shutting down; retry on another server")
            if self._queued and self._queued + n > self.max_queue_segments:
                raise QueueFullError(
                    f"the encoder queue is full ({self._queued} segments waiting, limit "
                    f"{self.max_queue_segments}); retry with backoff")
            if n == 0:
                job.future.set_result((np.empty((0, self.encoder.dim), np.float32), EncodeTiming(0.0, 0.0)))
                return job.future
            job.vectors = np.empty((n, self.encoder.dim), dtype=np.float32)
            self._pending.append(job)
            self._queued += n
            self._cond.notify_all()
        return job.future

    # -- the encoder workers --------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run_batch(batch)

    def _next_batch(self) -> list[tuple[_Job, int, int]] | None:
        with self._cond:
            self._waiting += 1
            try:
                return self._wait_for_batch()
            finally:
                self._waiting -= 1

    def _wait_for_batch(self) -> list[tuple[_Job, int, int]] | None:
        """The next batch for this worker (lock held), or None when stopping with nothing queued."""
        while True:
            while not self._pending and not self._stopping:
                self._cond.wait()
            if not self._pending:
                return None
            # Let a batch fill: wait until it is full or the oldest work waited long enough.
            fill_until = self._pending[0].submitted + self.max_queue_delay_s
            while self._queued < self.max_batch_segments and not self._stopping:
                remaining = fill_until - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch = self._take()
            if batch:
                return batch

    def _take(self) -> list[tuple[_Job, int, int]]:
        """Slices (job, start, stop) of the oldest live jobs, up to max_batch_segments (lock held)."""
        now = time.monotonic()
        batch: list[tuple[_Job, int, int]] = []
        room = self.max_batch_segments
        if self._waiting > 1 and self._queued < room * self._waiting:
            # Less queued than the idle workers could take: share it out, so a lone request's
            # segments run side by side instead of one worker doing all of them.
            room = -(-self._queued // self._waiting)
        while self._pending and room:
            job = self._pending[0]
            left = len(job.segments) - job.taken
            expired = job.deadline is not None and now > job.deadline
            if job.future.cancelled() or expired:
                self._pending.popleft()
                self._queued -= left
                if expired:
                    _fail(job.future, DeadlineExpiredError(
                        "the request's deadline passed while it waited for the encoder; "
                        "allow more time or send less at once"))
                continue
            take = min(left, room)
            batch.append((job, job.taken, job.taken + take))
            job.taken += take
            self._queued -= take
            room -= take
            if job.taken == len(job.segments):
                self._pending.popleft()
        return batch

    def _embed(self, parts: list[np.ndarray]) -> np.ndarray:
        if self._streams is None:
            return self.encoder.embed(np.concatenate(parts) if len(parts) > 1 else parts[0])
        staging = getattr(self._staging, "buffers", None)
        if staging is None:  # this worker's first batch: its pinned buffers and stream
            from .staging import DeviceStaging

            staging = self._staging.buffers = DeviceStaging(self.encoder, self.max_batch_segments,
                                                             streams=self._streams)
        return staging.embed(parts)

    def _run_batch(self, batch: list[tuple[_Job, int, int]]) -> None:
        parts = [job.segments[a:b] for job, a, b in batch]
        n_segments = sum(len(part) for part in parts)
        started = time.monotonic()
        try:
            vectors = self._embed(parts)
        except Exception as exc:  # handed to every caller in the batch
            log.exception("encoder failed on a batch of %d segments", n_segments)
            failed = {id(job): job for job, _, _ in batch}
            with self._cond:
                for job in failed.values():
                    if job.taken < len(job.segments):  # drop what is still queued of it
                        self._queued -= len(job.segments) - job.taken
                        job.taken = len(job.segments)
                        self._pending.remove(job)
            for job in failed.values():
                _fail(job.future, exc)
            return
        elapsed = time.monotonic() - started
        with self._cond:
            self.batches_run += 1
            self.segments_run += n_segments
        offset = 0
        finished = time.monotonic()
        complete = []
        for job, a, b in batch:
            job.vectors[a:b] = vectors[offset:offset + (b - a)]
            offset += b - a
            with self._cond:  # another worker may be finishing other segments of the same job
                job.done += b - a
                job.inference_s += elapsed
                if job.done == len(job.segments):
                    complete.append(job)
        for job in complete:
            total = finished - job.submitted
            inference = min(job.inference_s, total)  # batches of one job on two workers overlap
            timing = EncodeTiming(queue_ms=1000 * (total - inference), inference_ms=1000 * inference)
            _resolve(job.future, (job.vectors, timing))


def _resolve(future: Future, value) -> None:
    try:
        future.set_result(value)
    except InvalidStateError:  # cancelled by its caller meanwhile
        pass


def _fail(future: Future, exc: BaseException) -> None:
    try:
        future.set_exception(exc)
    except InvalidStateError:
        pass

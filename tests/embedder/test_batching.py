"""The batching queue with the real tiny encoder: coalescing, order, deadlines, bounds."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ecg_atlas.embedder import load_encoder
from ecg_atlas.embedder.batching import BatchingEncoder, DeadlineExpiredError, QueueFullError


@pytest.fixture(scope="module")
def encoder(tiny_checkpoint):
    return load_encoder(tiny_checkpoint)


def _segments(n, seed):
    return np.random.default_rng(seed).standard_normal((n, 12, 2500)).astype(np.float32)


def test_concurrent_requests_are_coalesced_and_answered_correctly(encoder):
    batcher = BatchingEncoder(encoder, max_batch_segments=8, max_queue_delay_ms=1)
    jobs = [_segments(n, seed) for seed, n in enumerate([1, 3, 2, 5, 1, 4])]  # 16 segments
    futures = [batcher.submit(s) for s in jobs]  # queued before the encoder thread starts
    batcher.start()
    try:
        for segments, future in zip(jobs, futures):
            vectors, timing = future.result(timeout=60)
            np.testing.assert_allclose(vectors, encoder.embed(segments), atol=1e-4)
            assert timing.inference_ms > 0
    finally:
        batcher.stop()
    assert batcher.batches_run == 2 and batcher.segments_run == 16  # two full batches of 8, one split job


def test_work_past_its_deadline_is_dropped_before_inference(encoder):
    batcher = BatchingEncoder(encoder, max_batch_segments=4)
    expired = batcher.submit(_segments(3, 0), deadline=time.monotonic() - 1)
    live = batcher.submit(_segments(2, 1))
    batcher.start()
    try:
        with pytest.raises(DeadlineExpiredError):
            expired.result(timeout=60)
        assert live.result(timeout=60)[0].shape == (2, encoder.dim)
    finally:
        batcher.stop()
    assert batcher.segments_run == 2


def test_a_full_queue_refuses_at_once(encoder):
    batcher = BatchingEncoder(encoder, max_batch_segments=4, max_queue_segments=6)
    batcher.submit(_segments(4, 0))
    with pytest.raises(QueueFullError, match="queue is full"):
        batcher.submit(_segments(3, 1))
    cancelled = batcher.submit(_segments(2, 2))
    assert cancelled.cancel()  # a caller that went away: its segments are skipped
    batcher.start()
    batcher.stop()
    assert batcher.segments_run == 4



class _Recording:
    """The real encoder, noting which worker thread ran each batch and its size."""

    def __init__(self, encoder):
        import threading

        self.encoder, self.dim, self.calls, self._lock = encoder, encoder.dim, [], threading.Lock()

    def embed(self, x):
        import threading

        with self._lock:
            self.calls.append((threading.current_thread().name, len(x)))
        return self.encoder.embed(x)


def test_two_workers_answer_every_request_once_and_correctly(encoder):
    from concurrent.futures import ThreadPoolExecutor

    recording = _Recording(encoder)
    batcher = BatchingEncoder(recording, max_batch_segments=4, max_queue_delay_ms=1, workers=2).start()
    jobs = [_segments(n, seed) for seed, n in enumerate([1, 7, 2, 5, 3, 9, 1, 4])]  # 32, some over a batch
    try:
        with ThreadPoolExecutor(4) as clients:
            results = list(clients.map(lambda s: batcher.submit(s).result(timeout=60), jobs))
    finally:
        batcher.stop()
    for segments, (vectors, timing) in zip(jobs, results):
        np.testing.assert_allclose(vectors, encoder.embed(segments), atol=1e-4)  # in order, per job
        assert timing.queue_ms >= 0 and timing.inference_ms > 0
    assert batcher.segments_run == sum(len(s) for s in jobs) == sum(n for _, n in recording.calls)
    assert {name for name, _ in recording.calls} == {"encoder-0", "encoder-1"}
    assert max(n for _, n in recording.calls) <= 4


def test_idle_workers_share_a_lone_request(encoder):
    recording = _Recording(encoder)
    batcher = BatchingEncoder(recording, max_batch_segments=8, max_queue_delay_ms=1, workers=2).start()
    try:
        deadline = time.monotonic() + 30
        while batcher._waiting < 2 and time.monotonic() < deadline:  # both workers idle
            time.sleep(0.01)
        vectors, _ = batcher.submit(_segments(6, 0)).result(timeout=60)
    finally:
        batcher.stop()
    assert vectors.shape == (6, encoder.dim)
    assert sorted(n for _, n in recording.calls) == [3, 3]  # side by side, not 6 on one worker
    assert len({name for name, _ in recording.calls}) == 2


def test_workers_must_be_positive(encoder):
    with pytest.raises(ValueError, match="workers"):
        BatchingEncoder(encoder, workers=0)


def test_default_encoder_workers():
    from ecg_atlas.service.config import default_encoder_workers

    assert default_encoder_workers("cpu", 2) == 2 and default_encoder_workers("cpu", 16) == 2
    assert default_encoder_workers("cpu", 1) == 1  # one core: nothing to share
    assert default_encoder_workers("cuda", 16) == 2  # two streams: one dispatches while the other computes
    assert default_encoder_workers("cuda", 16, fast="compile") == 1
    assert default_encoder_workers("cpu", 8, fast="compile") == 1

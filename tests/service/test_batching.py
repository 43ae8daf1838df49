"""The batching queue with the real tiny encoder: coalescing, order, deadlines, bounds."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ecg_atlas.batching import BatchingEncoder, DeadlineExpiredError, QueueFullError
from ecg_atlas.embedder import load_encoder


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


def test_serve_shortens_the_gil_switch_interval_unless_told_otherwise(monkeypatch):
    import sys

    from ecg_atlas.cli.serve import GIL_SWITCH_INTERVAL_S, tune_gil

    before = sys.getswitchinterval()
    try:
        monkeypatch.delenv("ECG_ATLAS_SWITCH_INTERVAL_S", raising=False)
        assert tune_gil() == GIL_SWITCH_INTERVAL_S < before
        assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_INTERVAL_S)
        monkeypatch.setenv("ECG_ATLAS_SWITCH_INTERVAL_S", "0.002")
        tune_gil()
        assert sys.getswitchinterval() == pytest.approx(0.002)
    finally:
        sys.setswitchinterval(before)

"""The GPU worker's staging path (pinned buffers, its own stream, an event to wait on), driven on
the CPU through a stand-in for torch.cuda that records what the code asked of it."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np
import pytest

from ecg_atlas.embedder import load_encoder
from ecg_atlas.embedder.staging import DeviceStaging


class FakeStreams:
    """torch.cuda's Stream / stream() / Event, on the CPU: everything runs at once, and the log
    says which stream each call was issued on and when the worker waited."""

    def __init__(self):
        self.log: list[tuple] = []
        self.local = threading.local()
        self.made = 0

    def current(self):
        return getattr(self.local, "stream", "default")

    def Stream(self, device):  # torch.cuda's name
        self.made += 1
        return f"side-{self.made}"

    @contextmanager
    def stream(self, s):
        previous, self.local.stream = self.current(), s
        try:
            yield
        finally:
            self.local.stream = previous

    def Event(self):
        streams = self

        class Event:
            def record(self, stream=None):
                streams.log.append(("record", stream or streams.current()))

            def synchronize(self):
                streams.log.append(("synchronize", streams.current()))

        return Event()


@pytest.fixture(scope="module")
def encoder(tiny_checkpoint):
    return load_encoder(tiny_checkpoint)


def _segments(n, seed):
    return np.random.default_rng(seed).standard_normal((n, 12, 2500)).astype(np.float32)


def test_a_batch_is_staged_in_place_run_on_the_side_stream_and_waited_for(encoder):
    streams = FakeStreams()
    staging = DeviceStaging(encoder, 8, streams=streams)
    seen = []
    embed = encoder.embed

    class Watched:  # the encoder, reporting the stream and buffer each forward got
        device, contract, dim = encoder.device, encoder.contract, encoder.dim

        def embed(self, x):
            seen.append((streams.current(), x.data_ptr() == staging.inputs.data_ptr(), tuple(x.shape)))
            return embed(x)

    staging.encoder = Watched()
    parts = [_segments(3, 0), _segments(1, 1), _segments(4, 2)]
    vectors = staging.embed(parts)
    np.testing.assert_allclose(vectors, encoder.embed(np.concatenate(parts)), atol=1e-5)
    assert vectors.dtype == np.float32 and vectors.shape == (8, encoder.dim)
    # the forward read the staging buffer itself (no concatenated copy) on the worker's stream
    assert seen == [("side-1", True, (8, 12, 2500))]
    # the worker waited on the event recorded on its stream, outside the stream context
    assert streams.log == [("record", "side-1"), ("synchronize", "default")]
    # the buffers are reused: the next batch lands in the same memory and comes back right
    before = staging.inputs.data_ptr()
    again = staging.embed([_segments(2, 3)])
    assert staging.inputs.data_ptr() == before
    np.testing.assert_allclose(again, encoder.embed(_segments(2, 3)), atol=1e-5)
    assert not np.shares_memory(again, staging.outputs.numpy())  # callers keep their vectors


def test_a_batch_larger_than_the_buffer_is_refused(encoder):
    staging = DeviceStaging(encoder, 4, streams=FakeStreams())
    with pytest.raises(ValueError, match="4-segment staging buffer"):
        staging.embed([_segments(5, 0)])


def test_the_batching_workers_stage_through_their_own_streams(encoder):
    """The server's path on a GPU, on the CPU: two workers, each with its own stream and buffers."""
    from ecg_atlas.embedder.batching import BatchingEncoder

    streams = FakeStreams()
    forwards = []
    embed = encoder.embed

    class Watched:
        device, contract, dim = encoder.device, encoder.contract, encoder.dim

        def embed(self, x):
            forwards.append(streams.current())
            return embed(x)

    batcher = BatchingEncoder(Watched(), max_batch_segments=4, max_queue_delay_ms=1, workers=2,
                              streams=streams)
    jobs = [_segments(n, seed) for seed, n in enumerate([3, 1, 4, 2, 5, 1])]
    futures = [batcher.submit(s) for s in jobs]
    batcher.start()
    try:
        for segments, future in zip(jobs, futures):
            vectors, _ = future.result(timeout=60)
            np.testing.assert_allclose(vectors, encoder.embed(segments), atol=1e-5)
    finally:
        batcher.stop()
    assert forwards and "default" not in forwards  # every forward ran on a worker's side stream
    assert streams.made == len(set(forwards)) == 2  # one stream (and one staging buffer) per worker
    assert [what for what, _ in streams.log].count("synchronize") == len(forwards)


def test_on_a_cpu_encoder_batches_go_straight_to_the_encoder(encoder):
    from ecg_atlas.embedder.batching import BatchingEncoder

    assert BatchingEncoder(encoder)._streams is None

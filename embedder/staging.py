"""Host-to-device staging for a GPU encoder worker: pinned buffers and the worker's own stream.

A batch of the server's queue is gathered from several requests. On a GPU, each encoder worker
(two by default: ``config.default_encoder_workers``) copies those segments straight into its own
page-locked input buffer (no intermediate ``np.concatenate``), sends them to the device with an
asynchronous copy, runs the forward on its own CUDA stream and copies the vectors back into a
pinned output buffer, then waits on an event (which releases the GIL). While one worker waits for
its batch on the GPU, the other assembles and dispatches the next: host and device overlap.

The CUDA calls go through ``streams`` (``torch.cuda`` by default) so that tests can drive the
same code on the CPU with a stand-in that records what was called.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class DeviceStaging:
    """One worker's pinned input/output buffers and stream, for batches of up to ``max_segments``."""

    def __init__(self, encoder, max_segments: int, *, streams=None):
        self.encoder = encoder
        self.streams = streams if streams is not None else torch.cuda
        pin = encoder.device.type == "cuda"  # page-locked memory needs a CUDA runtime
        shape = tuple(encoder.contract.input_shape)
        self.inputs = torch.empty((max_segments, *shape), dtype=torch.float32, pin_memory=pin)
        self.outputs = torch.empty((max_segments, encoder.dim), dtype=torch.float32, pin_memory=pin)
        self.stream = self.streams.Stream(encoder.device)

    def embed(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        """(n, D) float32 vectors of the segments in ``parts``, in order (n ≤ max_segments)."""
        n = sum(len(part) for part in parts)
        if n > len(self.inputs):
            raise ValueError(f"a batch of {n} segments does not fit the {len(self.inputs)}-segment staging buffer")
        staged = self.inputs[:n].numpy()
        offset = 0
        for part in parts:
            staged[offset:offset + len(part)] = part
            offset += len(part)
        with self.streams.stream(self.stream):
            device_inputs = self.inputs[:n].to(self.encoder.device, non_blocking=True)
            vectors = self.encoder.embed(device_inputs)
            self.outputs[:n].copy_(vectors, non_blocking=True)
            done = self.streams.Event()
            done.record(self.stream)
        done.synchronize()  # the buffers are reused by this worker's next batch only after this
        return self.outputs[:n].numpy().copy()

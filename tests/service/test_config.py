"""Server settings on a GPU: `cuda:N` devices, the GPU batch and worker defaults."""

from __future__ import annotations

import pytest

from ecg_atlas.service.config import ConfigError, ServerConfig, default_batch_segments, default_encoder_workers


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:3"])
def test_devices_the_server_accepts(tmp_path, device):
    ServerConfig(store=tmp_path, device=device).validate()


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:one", "cpu:0", "cuda:-1", "CUDA", "mps"])
def test_devices_the_server_refuses_with_the_accepted_forms(tmp_path, device):
    with pytest.raises(ConfigError, match="cuda:N") as caught:
        ServerConfig(store=tmp_path, device=device).validate()
    assert str(caught.value).startswith("--device: ") and repr(device) in str(caught.value)


def test_gpu_defaults():
    assert default_batch_segments("cuda") == 256 and default_batch_segments("cpu") == 8
    assert default_encoder_workers("cuda", 16) == 2  # two streams: host and device overlap
    assert default_encoder_workers("cuda", 16, fast="compile") == 1

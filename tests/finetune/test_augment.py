"""Training-time augmentation (ecg_atlas.finetune.augment, ``finetune --augment``) on real PTB-XL
windows: label-preserving perturbations within their stated bounds, seeded, and a seeded augmented
run is reproducible and differs from a plain one."""

from __future__ import annotations

import pytest
import torch

from ecg_atlas.errors import AtlasError
from ecg_atlas.finetune.augment import LEAD_DROP, MAX_GAIN, augment
from ecg_atlas.finetune.train import TrainConfig, train
from tests.finetune.engine_data import ptbxl_data, tiny_network

FS = 500.0


@pytest.fixture(scope="module")
def data():
    return ptbxl_data(train=8, val=6)


def test_perturbations_stay_within_their_bounds(data):
    x = torch.from_numpy(data.segments[:16])
    torch.manual_seed(0)
    a = augment(x, fs=FS)
    torch.manual_seed(0)
    b = augment(x, fs=FS)
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == x.dtype  # seeded
    assert not torch.allclose(a, x)
    dropped = (a.abs().amax(dim=2) == 0)
    assert not dropped.all(dim=1).any()  # never every lead of a window
    kept = ~dropped
    # amplitude: per-lead SD within gain bounds of the original's (plus the small wander and noise)
    ratio = a.std(dim=2)[kept] / x.std(dim=2)[kept]
    assert ratio.min() > 1 / MAX_GAIN - 0.15 and ratio.max() < MAX_GAIN + 0.15
    torch.manual_seed(1)
    many = augment(x.repeat(20, 1, 1), fs=FS)
    share = (many.abs().amax(dim=2) == 0).float().mean().item()
    assert 0.3 * LEAD_DROP < share < 3 * LEAD_DROP


@pytest.mark.slow
def test_an_augmented_run_is_reproducible_and_differs_from_a_plain_one(data, tmp_path):
    quick = dict(batch_size=4, lr=1e-3, device="cpu", epochs=1, seed=5)
    first = train(data, tiny_network(), TrainConfig(augment_fs=FS, **quick), tmp_path / "a")
    again = train(data, tiny_network(), TrainConfig(augment_fs=FS, **quick), tmp_path / "b")
    plain = train(data, tiny_network(), TrainConfig(**quick), tmp_path / "c")
    a, b, c = first.head.weight, again.head.weight, plain.head.weight
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-6


@pytest.mark.slow
def test_a_run_resumes_only_with_the_augmentation_it_started_with(data, tmp_path):
    quick = dict(batch_size=4, lr=1e-3, device="cpu", seed=5)
    train(data, tiny_network(), TrainConfig(epochs=1, augment_fs=FS, **quick), tmp_path)
    with pytest.raises(AtlasError, match="--augment"):
        train(data, tiny_network(), TrainConfig(epochs=2, **quick), tmp_path, resume=True)
    resumed = train(data, tiny_network(), TrainConfig(epochs=2, augment_fs=FS, **quick), tmp_path, resume=True)
    assert resumed.updates > 0 and len(resumed.history) == 2

"""bfloat16 inference through the autocast path, on the CPU (the path a GPU runs, issue 18):
float32 out, embeddings within cosine 0.9999 of float32 on real ECGs, weights cast once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ecg_atlas.embedder import load_encoder, preprocess, read_ecg
from ecg_atlas.embedder.encoders.base import resolve_device, resolve_dtype
from ecg_atlas.errors import AtlasError


@pytest.fixture(scope="module")
def segments(ecg_dir):
    out = []
    for name in ("A0001", "A0002", "A0003", "A0004", "A0005", "A0006"):
        out.extend(preprocess(read_ecg(ecg_dir / "cinc_cpsc2018" / f"{name}.hea")))
    return np.stack(out[:16]).astype(np.float32)


def _cosine(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


class WeightCasts(TorchDispatchMode):
    """Counts dtype casts (aten.to / _to_copy), and those whose input is one of the model's
    parameters or buffers."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.storages = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
        self.weight_casts = 0
        self.casts = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # `to` as autocast calls it; a `.float()` of a float32 tensor is no cast
        if func.overloadpacket.__name__ in ("to", "_to_copy") and out.dtype != args[0].dtype:
            self.casts += 1
            if args[0].untyped_storage().data_ptr() in self.storages:
                self.weight_casts += 1
        return out


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["bundled", "tiny"])
def test_bfloat16_on_the_cpu_gives_float32_vectors_close_to_float32(spec, segments, tiny_checkpoint):
    spec = str(tiny_checkpoint) if spec == "tiny" else spec
    fp32 = load_encoder(spec, device="cpu", dtype="float32")
    bf16 = load_encoder(spec, device="cpu", dtype="bfloat16")
    assert bf16.dtype == "bfloat16" and bf16.describe()["dtype"] == "bfloat16"
    reference = fp32.embed(segments)
    vectors = bf16.embed(segments)
    assert vectors.dtype == np.float32
    assert _cosine(vectors, reference).min() >= 0.9999
    tokens = bf16.encode(torch.from_numpy(segments[:2]))
    assert tokens.dtype == torch.float32  # tensors out are float32 too
    assert bf16.saliency(segments[:2]).dtype == np.float32


def test_the_weights_are_cast_once_not_on_every_forward(segments):
    bf16 = load_encoder("bundled", device="cpu", dtype="bfloat16")
    x = segments[:2]
    bf16.embed(x)
    watch = WeightCasts(bf16.model)
    with watch:
        bf16.embed(x)
    assert watch.weight_casts == 0
    # the control: the same network with float32 weights under autocast casts every weight it uses
    fp32 = load_encoder("bundled", device="cpu", dtype="float32")
    control = WeightCasts(fp32.model)
    with control, torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        fp32.model(torch.from_numpy(x))
    assert control.weight_casts >= 4 * 6  # q, k, v, out, fc1, fc2 of each of its 4 layers at least
    # norms stay float32 (the reference computes them in float32)
    norms = [m for m in bf16.model.modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm))]
    assert norms and all(p.dtype == torch.float32 for m in norms for p in m.parameters())
    assert bf16.model.encoder.layers[0].fc1.weight.dtype == torch.bfloat16


def test_classify_answers_float32_probabilities_from_a_float32_head(parity_dir, segments):
    fp32 = load_encoder(parity_dir / "tiny_finetuned.pt", device="cpu", dtype="float32")
    bf16 = load_encoder(parity_dir / "tiny_finetuned.pt", device="cpu", dtype="bfloat16")
    assert bf16.model.proj.weight.dtype == torch.float32
    probs = bf16.classify(segments)
    assert probs.dtype == np.float32
    # not bf16-rounded: values a bf16 number cannot hold come out
    assert not np.array_equal(probs, torch.from_numpy(probs).bfloat16().float().numpy())
    assert np.abs(probs - fp32.classify(segments)).max() < 0.01


def test_dtype_and_device_choices():
    assert resolve_dtype("auto", torch.device("cpu")) == "float32"
    assert resolve_dtype("auto", torch.device("cuda", 0)) == "bfloat16"  # the GPU default
    assert resolve_dtype("float32", torch.device("cuda", 0)) == "float32"  # fp32 on request
    assert resolve_dtype("bfloat16", torch.device("cpu")) == "bfloat16"
    with pytest.raises(AtlasError, match="float16"):
        resolve_dtype("float16", torch.device("cpu"))
    with pytest.raises(AtlasError, match="dtype"):
        resolve_dtype("int4", torch.device("cpu"))
    assert load_encoder("bundled", device="cpu").dtype == "float32"  # auto on the CPU


def test_cuda_n_devices_are_accepted_and_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(AtlasError, match="cuda:2"):
        resolve_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(AtlasError, match="no CUDA GPU"):
        resolve_device("cuda:0")

"""Batched inference, the record-level vector, fast modes and the `embed` CLI, on real ECGs."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from ecg_atlas.cli import main
from ecg_atlas.embedder import load_encoder, preprocess, read_ecg
from ecg_atlas.embedder.engine import EmbeddingEngine
from ecg_atlas.embedder.prefetch import prefetch
from ecg_atlas.errors import AtlasError

RECORDS = ["cinc_cpsc2018/A0001", "cinc_cpsc2018/A0005", "cinc_georgia/E00001", "code15/1111", "cinc_ptb/S0001"]


@pytest.fixture(scope="module")
def encoder(parity_dir):
    return load_encoder(parity_dir / "tiny_pretrained.pt")


@pytest.fixture(scope="module")
def segments(ecg_dir):
    return {r: preprocess(read_ecg(ecg_dir / r)) for r in RECORDS}


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_packed_batches_equal_per_record_embedding(encoder, segments, batch_size):
    engine = EmbeddingEngine(encoder, batch_size=batch_size)
    done = list(engine.embed_records(segments.items()))
    assert [d.key for d in done] == RECORDS  # input order
    for d in done:
        alone = encoder.embed(segments[d.key])
        np.testing.assert_allclose(d.segment_vectors, alone, atol=1e-5)
        np.testing.assert_allclose(d.record_vector, alone.mean(axis=0), atol=1e-6)
        assert d.segment_vectors.shape == (len(segments[d.key]), encoder.dim)
    assert len(done[-1].segment_vectors) == 7  # the PTB record lasts 38.4 s: seven 5-s windows


def test_embed_segments_reports_progress(encoder, segments):
    seen = []
    EmbeddingEngine(encoder, batch_size=4).embed_segments(segments["cinc_ptb/S0001"], on_batch=seen.append)
    assert sum(seen) == len(segments["cinc_ptb/S0001"]) and max(seen) == 4


def test_prefetch_keeps_order_and_returns_errors_in_place():
    def work(i):
        if i == 3:
            raise ValueError("bad item")
        return i * i

    out = list(prefetch(range(10), work, workers=2, depth=3))
    assert [i for i, _ in out] == list(range(10))
    assert isinstance(out[3][1], ValueError) and out[4][1] == 16


def test_reduced_precision_and_missing_gpu_are_refused_clearly(parity_dir):
    # bfloat16 runs on the CPU too (test_reduced_precision.py); float16 stays GPU-only
    with pytest.raises(AtlasError, match="GPU-only"):
        load_encoder(parity_dir / "tiny_pretrained.pt", dtype="float16")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(AtlasError, match="no CUDA GPU"):
            load_encoder(parity_dir / "tiny_pretrained.pt", device="cuda")


def test_int8_fast_mode_stays_close_to_fp32(parity_dir, segments, encoder):
    fast = load_encoder(parity_dir / "tiny_pretrained.pt", fast="int8")
    x = np.concatenate(list(segments.values()))[:16]
    a, b = fast.embed(x), encoder.embed(x)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99
    assert not np.array_equal(a, b)  # it really is a different (quantised) computation


@pytest.mark.parametrize("kernel", [128, 7])  # ECG-FM's even kernel, and an odd one
@pytest.mark.parametrize("steps", [156, 31])
def test_fft_positional_conv_matches_direct_conv(kernel, steps):
    import torch

    from ecg_atlas.embedder.model import ConvPositionalEmbedding

    conv = ConvPositionalEmbedding(64, kernel, groups=4).eval()
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(3, steps, 64, generator=torch.Generator().manual_seed(kernel + steps))
    with torch.inference_mode():
        direct = conv(x)
        conv.use_fft = True
        fft = conv(x)
    assert fft.shape == direct.shape
    assert (fft - direct).abs().max() < 1e-5
    assert conv._spectrum is not None  # the kernel's spectrum is cached for the next call


def test_fused_qkv_projection_is_the_same_network(parity_dir, segments, encoder):
    fused = load_encoder(parity_dir / "tiny_pretrained.pt")
    for layer in fused.model.encoder.layers:
        layer.self_attn.fuse_qkv()
    assert not hasattr(fused.model.encoder.layers[0].self_attn, "q_proj")
    x = np.concatenate(list(segments.values()))[:6]
    assert np.abs(fused.encode(x) - encoder.encode(x)).max() < 1e-5
    assert np.abs(fused.saliency(x) - encoder.saliency(x)).max() < 1e-5  # explicit attention path too


def test_int8_fast_mode_packs_fused_quantised_layers_and_keeps_the_engine(parity_dir, segments, encoder):
    import torch

    engine = torch.backends.quantized.engine
    fast = load_encoder(parity_dir / "tiny_pretrained.pt", fast="int8")
    assert torch.backends.quantized.engine == engine  # the process-wide setting is restored
    attn = fast.model.encoder.layers[0].self_attn
    assert "quantized" in type(attn.qkv_proj).__module__
    assert fast.model.conv_pos.use_fft and encoder.model.conv_pos.use_fft  # CPU encoders take the FFT path
    x = np.concatenate(list(segments.values()))[:4]
    sal = fast.saliency(x)
    assert sal.shape == encoder.saliency(x).shape and np.isfinite(sal).all()


def test_embed_cli_writes_parquet_and_npz(tmp_path, ecg_dir, parity_dir, encoder, capsys):
    ckpt = str(parity_dir / "tiny_pretrained.pt")
    inputs = [str(ecg_dir / "cinc_cpsc2018"), str(ecg_dir / "misc")]  # misc: 3 refusals (lead sets)
    assert main(["embed", *inputs, "--checkpoint", ckpt, "--out", str(tmp_path / "v.parquet"),
                 "--device", "cpu", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["embedded"] == 10 and summary["refused"] == 3
    assert set(summary["refused_ecgs"]) == {"a103l", "test01_00s", "v102s"}
    assert summary["refusal_reasons"] == {"too_few_leads": 3}
    table = pq.read_table(tmp_path / "v.parquet")
    meta = table.schema.metadata
    assert meta[b"ecg_atlas.checkpoint_sha256"].decode() == encoder.checkpoint_sha256
    rows = table.to_pylist()
    assert rows[0]["ecg_id"] == "A0001"
    expected = encoder.embed(preprocess(read_ecg(ecg_dir / "cinc_cpsc2018/A0001")))
    np.testing.assert_allclose(np.array(rows[0]["segment_vectors"]), expected, atol=1e-5)
    np.testing.assert_allclose(np.array(rows[0]["record_vector"]), expected.mean(0), atol=1e-5)

    assert main(["embed", str(ecg_dir / "cinc_cpsc2018/A0001.hea"), "--checkpoint", ckpt,
                 "--out", str(tmp_path / "v.npz"), "--device", "cpu"]) == 0
    npz = np.load(tmp_path / "v.npz")
    assert list(npz["ecg_id"]) == ["A0001"]
    offsets = npz["segment_offsets"]
    np.testing.assert_allclose(npz["segment_vectors"][offsets[0]:offsets[1]], expected, atol=1e-5)


def test_embed_cli_rejects_unknown_output_type(tmp_path, ecg_dir, parity_dir, capsys):
    code = main(["embed", str(ecg_dir / "cinc_cpsc2018"), "--checkpoint", str(parity_dir / "tiny_pretrained.pt"),
                 "--out", str(tmp_path / "v.csv")])
    assert code == 2 and ".parquet or .npz" in capsys.readouterr().err

"""HuBERT-ECG: every saved layout, every stage the reference files hold, real ECGs, our decisions.

Reference outputs: ../shared/data/parity_encoders/hubert_ecg (the real HuBERT-ECG code, tiny model).
Budgets: model outputs ≤ 1e-5, float64 preprocessing ≤ 1e-9, the float32 model input within 1 ulp.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from ecg_atlas.embedder import hubert_ecg_preprocessing as prep
from ecg_atlas.embedder import load_encoder, read_ecg
from ecg_atlas.embedder.encoders.hubert_ecg import HubertECGEncoder
from ecg_atlas.embedder.recording import Recording
from ecg_atlas.errors import CheckpointError, InvalidECGError

LAYOUTS = ["tiny_hf", "tiny_hf/model.safetensors", "tiny_pretrained.pt", "tiny_pretrained_legacy_wn.pt",
           "tiny_pretrained_hubertconfig.pt", "tiny_finetuned.pt"]
RECORDS = ["HR00001_500Hz_10s", "Q0005_500Hz_first15s", "code15_1111960_400Hz_10p24s", "code15_111189_400Hz_5p8s",
           "code15_919842_400Hz_4p3s", "S0001_1000Hz_first12s", "PTBXL00001_lr_100Hz_10s"]
#: records used whole by the reference, and where they live in ../shared/data/ecg
WHOLE_RECORDS = {"HR00001_500Hz_10s": "cinc_ptbxl/HR00001", "PTBXL00001_lr_100Hz_10s": "ptbxl_lr/00001_lr",
                 "code15_1111960_400Hz_10p24s": "code15/1111960", "code15_111189_400Hz_5p8s": "code15/111189",
                 "code15_919842_400Hz_4p3s": "code15/919842"}


@pytest.fixture(scope="module")
def hubert_dir(shared_data):
    path = shared_data / "parity_encoders" / "hubert_ecg"
    assert path.is_dir(), f"HuBERT-ECG parity files not found at {path}"
    return path


@pytest.fixture(scope="module")
def inputs(hubert_dir):
    with np.load(hubert_dir / "inputs.npz") as z:
        return {k: z[k] for k in z}


def _windows(flat: np.ndarray) -> np.ndarray:
    """The reference's (B, 12·L) lead-major vectors as our (B, 12, L) windows."""
    return flat.reshape(flat.shape[0], 12, -1)


# -- preprocessing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("record", RECORDS)
def test_preprocessing_matches_the_reference_at_every_stage(hubert_dir, record):
    with np.load(hubert_dir / "preprocessing" / f"{record}.npz") as ref:
        raw, fs = ref["raw"], float(ref["fs"])
        filtered = prep.band_pass(raw, fs)
        assert np.abs(filtered[:, : int(2 * fs)] - ref["filtered_first2s"]).max() <= 1e-9
        resampled = prep.resample_to_500hz(filtered, fs)
        assert np.abs(resampled.min(axis=1) - ref["resampled_min"]).max() <= 1e-9
        assert np.abs(resampled.max(axis=1) - ref["resampled_max"]).max() <= 1e-9
        at_500 = prep.record_at_500hz(raw, fs)
        assert at_500.shape == ref["preprocessed_500hz"].shape
        assert np.abs(at_500 - ref["preprocessed_500hz"]).max() <= 1e-9
        windows, _ = prep.windows_from_500hz(at_500)
        key = "model_input" if "model_input" in ref else "model_input_zero_padded"  # < 5 s: padded (ours)
        assert windows.dtype == np.float32 and windows.shape[1:] == (12, 500)
        np.testing.assert_array_max_ulp(windows[0].reshape(-1), ref[key], maxulp=1)


@pytest.mark.parametrize("record", sorted(WHOLE_RECORDS))
def test_real_ecgs_read_from_files_give_the_reference_model_input(hubert_dir, ecg_dir, record):
    # From the WFDB file through read_ecg (float32 samples) to the first window: only the float32
    # rounding of the samples separates us from the reference's float64 p_signal.
    rec = read_ecg(ecg_dir / f"{WHOLE_RECORDS[record]}.hea")
    windows = prep.preprocess(rec)
    with np.load(hubert_dir / "preprocessing" / f"{record}.npz") as ref:
        key = "model_input" if "model_input" in ref else "model_input_zero_padded"
        assert np.abs(windows[0].reshape(-1) - ref[key]).max() <= 1e-6


def test_longer_records_are_cut_into_5s_windows_and_the_first_is_the_reference(hubert_dir, ecg_dir):
    rec = read_ecg(ecg_dir / "cinc_cpsc_extra" / "Q0005.hea")  # 47.7 s at 500 Hz
    prepared = prep.prepare(rec)
    assert prepared.segments.shape == (int(rec.duration_s // 5), 12, 500)
    assert prepared.report.preprocessing_version == prep.PREPROCESSING_VERSION
    assert prepared.report.dropped_tail_s == pytest.approx(rec.duration_s % 5, abs=0.01)
    # windows are 5-s slices of one record-level scaling: the second window is not a re-scaled copy
    first_15s = Recording(rec.signal[:, :7500], rec.fs, rec.lead_names)
    with np.load(hubert_dir / "preprocessing" / "Q0005_500Hz_first15s.npz") as ref:
        assert np.abs(prep.preprocess(first_15s)[0].reshape(-1) - ref["model_input"]).max() <= 1e-6


def test_short_records_are_padded_to_one_window_or_refused():
    rng = np.random.default_rng(0)
    leads = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    three_s = Recording(rng.standard_normal((12, 1500)).astype(np.float32), 500, leads)
    assert prep.preprocess(three_s).shape == (1, 12, 500)
    two_s = Recording(rng.standard_normal((12, 1000)).astype(np.float32), 500, leads)
    with pytest.raises(InvalidECGError, match="too short") as err:
        prep.preprocess(two_s)
    assert err.value.reason == "too_short"


# -- the model, in every layout ---------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_saved_layout_gives_the_reference_outputs(hubert_dir, inputs, layout):
    enc = load_encoder(hubert_dir / layout)
    assert isinstance(enc, HubertECGEncoder)
    finetuned = "finetuned" in layout
    ref_file = "tiny_finetuned_outputs.npz" if finetuned else "tiny_pretrained_outputs.npz"
    with np.load(hubert_dir / ref_file) as ref:
        x = _windows(inputs["x"])
        assert np.abs(enc.encode(x) - ref["last_hidden_state"]).max() <= 1e-5
        assert np.abs(enc.embed(x) - ref["emb_mean"]).max() <= 1e-5
        if finetuned:
            assert np.abs(enc.classify(x) - ref["probs"]).max() <= 1e-5
        else:
            long = _windows(inputs["x_long"])  # 10 s: 187 time steps
            assert np.abs(enc.encode(long) - ref["long_last_hidden_state"]).max() <= 1e-5
            assert np.abs(enc.embed(long) - ref["long_emb_mean"]).max() <= 1e-5
    assert enc.model_id == f"hubert-ecg-{'finetuned' if finetuned else 'pretrained'}-2x64"
    assert enc.dim == 64 and len(enc.checkpoint_sha256) == 64


def test_transformers_hubertmodel_is_what_runs(hubert_dir, inputs):
    from transformers import HubertModel

    enc = load_encoder(hubert_dir / "tiny_hf")
    reference = HubertModel.from_pretrained(hubert_dir / "tiny_hf").eval()
    x = _windows(inputs["x"])
    with torch.no_grad():
        expected = reference(torch.from_numpy(inputs["x"])).last_hidden_state.numpy()
    assert np.abs(enc.encode(x) - expected).max() <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("samples", [401, 777, 2500])
def test_odd_lengths_and_tensors(hubert_dir, samples):
    enc = load_encoder(hubert_dir / "tiny_hf")
    x = np.random.default_rng(samples).uniform(-1, 1, (2, 12, samples)).astype(np.float32)
    from transformers import HubertModel

    reference = HubertModel.from_pretrained(hubert_dir / "tiny_hf").eval()
    with torch.no_grad():
        expected = reference(torch.from_numpy(x.reshape(2, -1))).last_hidden_state.mean(1).numpy()
    assert np.abs(enc.embed(x) - expected).max() <= 1e-5
    out = enc.embed(torch.from_numpy(x))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 64)


def test_pickled_config_is_read_without_running_its_code(hubert_dir):
    enc = load_encoder(hubert_dir / "tiny_pretrained.pt")
    assert enc.config.num_hidden_layers == 2 and enc.config.hidden_size == 64
    assert "hubert_ecg" not in sys.modules  # the authors' module was never imported


class ForeignConfig:  # a class the safe unpickler must refuse
    pass


def test_a_file_pickling_another_class_is_refused(hubert_dir, tmp_path):
    from safetensors.torch import load_file

    state = load_file(hubert_dir / "tiny_hf" / "model.safetensors")
    path = tmp_path / "foreign.pt"
    torch.save({"model_config": ForeignConfig(), "model_state_dict": state}, path)
    with pytest.raises(CheckpointError, match="outside torch's safe weights-only set"):
        load_encoder(path)


def test_unknown_keys_and_wrong_shapes_are_named(hubert_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "edited"
    shutil.copytree(hubert_dir / "tiny_hf", folder)
    state = load_file(folder / "model.safetensors")
    save_file({**state, "encoder.layers.0.attention.rel_bias": torch.zeros(3)}, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="unknown keys.*rel_bias"):
        load_encoder(folder)
    state["encoder.layers.1.feed_forward.output_dense.weight"] = torch.zeros(64, 100)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="output_dense.weight"):
        load_encoder(folder)


def test_licence_is_announced(hubert_dir):
    enc = load_encoder(hubert_dir / "tiny_hf")
    assert enc.contract.commercial_use is False and enc.contract.weight_licence == "CC BY-NC 4.0"
    assert "NON-COMMERCIAL" in enc.licence_notice and enc.licence_notice in enc.notice
    described = enc.describe()
    assert described["contract"]["licence_notice"] == enc.licence_notice
    assert described["contract"]["preprocessing_version"] == "hubert-ecg-v1"

"""ECGFounder: Net1D against the reference at every stage, its checkpoint mapping, preprocessing, licence.

Reference outputs: ../shared/data/parity_encoders/ecgfounder (the real ECGFounder code, tiny Net1D).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecg_atlas.embedder import ecgfounder_preprocessing as prep
from ecg_atlas.embedder import load_encoder, read_ecg
from ecg_atlas.embedder.ecgfounder_model import RELEASED_12_LEAD, TINY, Net1D, load_net1d
from ecg_atlas.embedder.encoders.ecgfounder import ECGFounderEncoder
from ecg_atlas.embedder.recording import Recording
from ecg_atlas.errors import CheckpointError, InvalidECGError

RECORDS = ["HR00001_500Hz_10s", "Q0005_500Hz_first15s", "code15_1111960_400Hz_10p24s", "code15_111189_400Hz_5p8s",
           "code15_919842_400Hz_4p3s", "S0001_1000Hz_first12s", "PTBXL00001_lr_100Hz_10s"]
#: The 8th-order band-pass in (b, a) form is ill-conditioned: last-bit differences in its
#: coefficients or in lfilter's arithmetic grow to ~1e-6 mV (the same filter in sos form differs
#: from (b, a) by as much). Measured here: ≤ 1.3e-6 on the filtered record, ≤ 6.3e-6 on the z-scored
#: float32 input. Resampling, which does not go through the filter, meets 1e-9.
FILTER_ATOL = 2e-6
INPUT_ATOL = 1e-5


@pytest.fixture(scope="module")
def founder_dir(shared_data):
    path = shared_data / "parity_encoders" / "ecgfounder"
    assert path.is_dir(), f"ECGFounder parity files not found at {path}"
    return path


@pytest.fixture(scope="module")
def checkpoint(founder_dir):
    return founder_dir / "tiny_12lead_ECGFounder.pth"


@pytest.fixture(scope="module")
def outputs(founder_dir):
    with np.load(founder_dir / "tiny_outputs.npz") as z:
        return {k: z[k] for k in z}


@pytest.fixture(scope="module")
def inputs(founder_dir):
    with np.load(founder_dir / "inputs.npz") as z:
        return {k: z[k] for k in z}


# -- the network ------------------------------------------------------------------------------------

def test_every_stage_matches_the_reference(checkpoint, inputs, outputs):
    enc = load_encoder(checkpoint)
    assert isinstance(enc, ECGFounderEncoder) and enc.config == TINY
    with torch.inference_mode():
        stages = enc.model.features(torch.from_numpy(inputs["x"][:1]), keep_stages=True)
    assert np.abs(stages["first_conv"][0].numpy() - outputs["first_conv_out_b0"]).max() <= 1e-5
    for i in range(len(TINY.filter_list)):
        assert np.abs(stages[f"stage_{i}"][0].numpy() - outputs[f"stage_{i}_out_b0"]).max() <= 1e-5, i
    assert np.abs(enc.embed(inputs["x"][:1])[0] - outputs["last_stage_mean_b0"]).max() <= 1e-5


@pytest.mark.slow
def test_embeddings_and_logits_match_for_batches_odd_lengths_and_long_inputs(checkpoint, inputs, outputs):
    enc = load_encoder(checkpoint)
    assert np.abs(enc.embed(inputs["x"]) - outputs["features"]).max() <= 1e-5
    assert np.abs(enc.classify(inputs["x"]) - outputs["probs"]).max() <= 1e-5
    assert np.abs(enc.embed(inputs["x_odd"]) - outputs["odd_features"]).max() <= 1e-5  # 1001 samples
    assert np.abs(enc.classify(inputs["x_odd"]) - 1 / (1 + np.exp(-outputs["odd_logits"]))).max() <= 1e-5
    assert np.abs(enc.embed(inputs["x_long"]) - outputs["long_features"]).max() <= 1e-5  # 15 s
    assert enc.encode(inputs["x"]).shape == (4, 20, 64)


def test_unused_batchnorm_state_is_named_and_ignored(checkpoint):
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    model, ignored = load_net1d(state)
    assert ignored and all(".bn" in f".{k}" or k.startswith("first_bn.") for k in ignored)
    assert len(ignored) + len(model.state_dict()) == len(state)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())


def test_edited_checkpoints_are_refused_naming_the_key(checkpoint, tmp_path):
    raw = torch.load(checkpoint, weights_only=True)
    extra = {**raw["state_dict"], "stage_list.0.block_list.0.attention.weight": torch.zeros(3)}
    torch.save({"state_dict": extra}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="attention.weight"):
        load_encoder(tmp_path / "extra.pth")
    wrong = dict(raw["state_dict"])
    wrong["stage_list.1.block_list.0.se_fc1.weight"] = torch.zeros(3, 32)
    torch.save({"state_dict": wrong}, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match="shape mismatch for 'stage_list.1.block_list.0.se_fc1.weight'"):
        load_encoder(tmp_path / "wrong.pth")


def test_released_size_has_the_published_parameter_count():
    # 30,752,646 parameters used in the forward pass (the reference's count without BatchNorm)
    assert sum(p.numel() for p in Net1D(RELEASED_12_LEAD).parameters()) == 30_752_646
    assert RELEASED_12_LEAD.dim == 1024


# -- preprocessing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("record", RECORDS)
def test_preprocessing_stages_match_the_reference(founder_dir, record):
    with np.load(founder_dir / "preprocessing" / f"{record}.npz") as ref:
        raw, fs = ref["raw"], float(ref["fs"])
        resampled = prep.resample_linear(raw, fs)
        assert np.abs(resampled[:, :500] - ref["composed_resampled_500hz_first1s"]).max() <= 1e-9
        filtered = prep.filter_at_500hz(resampled)
        assert np.abs(filtered[:, :500] - ref["composed_filtered_first1s"]).max() <= FILTER_ATOL
        windows, _ = prep.windows_from_filtered(filtered)
        assert windows.dtype == np.float32 and windows.shape[1:] == (12, 5000)
        assert np.abs(windows[0] - ref["composed_input"]).max() <= INPUT_ATOL
        if "dataset_input" in ref:  # dataset.py on 500-Hz records: the same filter and z-score
            assert np.abs(prep.normalise_window(prep.filter_at_500hz(raw)) - ref["dataset_input"]).max() <= INPUT_ATOL


def test_real_ecg_from_its_file(founder_dir, ecg_dir):
    enc = load_encoder(founder_dir / "tiny_12lead_ECGFounder.pth")
    windows = enc.preprocess(read_ecg(ecg_dir / "code15" / "1111960.hea"))  # 10.24 s at 400 Hz
    with np.load(founder_dir / "preprocessing" / "code15_1111960_400Hz_10p24s.npz") as ref:
        assert windows.shape == (1, 12, 5000)
        assert np.abs(windows[0] - ref["composed_input"]).max() <= INPUT_ATOL


def test_windows_short_and_long_records(ecg_dir):
    rec = read_ecg(ecg_dir / "cinc_cpsc_extra" / "Q0005.hea")  # 47.7 s
    prepared = prep.prepare(rec)
    assert prepared.segments.shape == (4, 12, 5000)
    assert prepared.report.dropped_tail_s == pytest.approx(rec.duration_s - 40, abs=0.01)
    for window in prepared.segments:  # each window normalised on its own
        assert abs(float(window.mean())) < 1e-5 and abs(float(window.std()) - 1) < 1e-4
    leads = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    rng = np.random.default_rng(1)
    six_s = Recording(rng.standard_normal((12, 3000)).astype(np.float32), 500, leads)
    assert prep.preprocess(six_s).shape == (1, 12, 5000)
    with pytest.raises(InvalidECGError) as err:
        prep.preprocess(Recording(rng.standard_normal((12, 2000)).astype(np.float32), 500, leads))
    assert err.value.reason == "too_short"


def test_unstated_licence_is_announced(checkpoint):
    enc = load_encoder(checkpoint)
    assert enc.contract.commercial_use is None
    assert "No licence is stated" in enc.notice
    assert enc.contract.to_dict()["dim"] == 64 and enc.model_id == "ecgfounder-12lead-64"

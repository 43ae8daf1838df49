"""The bundled open encoder: shipped, pinned, the default, and trained (not random weights)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from ecg_atlas.embedder import load_encoder, preprocess, read_ecg, weights
from ecg_atlas.embedder.checkpoint import sha256_of
from ecg_atlas.errors import CheckpointError
from ecg_atlas.service.config import ServerConfig

#: real ≥ 10-s 12-lead ECGs of *test-split* patients (never seen in pretraining), eight sources
TEST_SPLIT_RECORDS = ["cinc_chapman_shaoxing/JS00002", "cinc_cpsc2018/A0007", "cinc_cpsc_extra/Q0006",
                      "cinc_georgia/E00006", "cinc_ningbo/JS45549", "cinc_ptbxl/HR00004", "code15/919050",
                      "sph/SPH00001"]


@pytest.fixture(scope="module")
def bundled():
    return load_encoder("bundled", device="cpu")


def test_the_file_ships_in_the_package_pinned_and_small():
    path = weights.bundled_path()
    assert path.is_file() and path.stat().st_size <= 25 * 2**20
    assert sha256_of(path) == weights.BUNDLED_SHA256
    assert (path.parent / "MODEL_CARD.md").is_file()


def test_it_is_the_default_everywhere(bundled):
    assert weights.DEFAULT_ENCODER == "bundled" and ServerConfig(store=".").checkpoint == "bundled"
    described = bundled.describe()
    assert described["model_id"] == weights.BUNDLED_NAME and described["dim"] == 256 and described["layers"] == 4
    assert described["checkpoint_sha256"] == weights.BUNDLED_SHA256
    assert "not ECG-FM's published model" in bundled.notice and described["notice"] == bundled.notice


def test_a_changed_or_missing_file_is_refused(tmp_path, monkeypatch):
    tampered = tmp_path / weights.BUNDLED_FILE
    shutil.copy(weights.bundled_path(), tampered)
    with open(tampered, "r+b") as fh:  # flip one byte inside the tensor data
        fh.seek(tampered.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(weights, "bundled_path", lambda: tampered)
    with pytest.raises(CheckpointError, match="sha256"):
        load_encoder("bundled")
    monkeypatch.setattr(weights, "bundled_path", lambda: tmp_path / "gone.pt")
    with pytest.raises(CheckpointError, match="missing from this installation"):
        load_encoder("bundled")


def _window_similarity_gap(encoder, ecg_dir) -> float:
    """Mean cosine of adjacent 5-s windows of one ECG minus that of windows of different ECGs."""
    vectors = []
    for record in TEST_SPLIT_RECORDS:
        segments = preprocess(read_ecg(ecg_dir / record))
        assert len(segments) >= 2, record
        v = encoder.embed(segments[:2])
        vectors.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    same = np.mean([a @ b for a, b in vectors])
    firsts = np.stack([v[0] for v in vectors])
    seconds = np.stack([v[1] for v in vectors])
    cross = firsts @ seconds.T
    other = cross[~np.eye(len(vectors), dtype=bool)].mean()
    return float(same - other)


@pytest.mark.slow
def test_pretraining_taught_it_which_windows_belong_together(bundled, ecg_dir):
    """CMSC's objective, checked on unseen real ECGs: a random-init twin separates records far less."""
    import csv

    from ecg_atlas.embedder.pretrain.data import patient_split

    rows = {r["record"]: r for r in csv.DictReader(open(ecg_dir / "manifest.csv", newline=""))}
    assert all(patient_split(rows[r]["patient_id"] or r) == "test" for r in TEST_SPLIT_RECORDS)
    trained = _window_similarity_gap(bundled, ecg_dir)
    untrained = _window_similarity_gap(load_encoder("random:small", device="cpu"), ecg_dir)
    assert trained > 0.5 and trained > 2 * untrained  # measured: 0.83 vs 0.21–0.24 for three random seeds


@pytest.mark.slow
def test_continued_pretraining_starts_from_the_bundled_file(tmp_path, ecg_dir, bundled):
    from ecg_atlas.embedder.discover import find_ecgs
    from ecg_atlas.embedder.pretrain import pretrain

    sources = list(find_ecgs([ecg_dir / "cinc_ptb" / "S0001.hea", ecg_dir / "cinc_cpsc2018" / "A0001.hea"]))
    result = pretrain(sources, tmp_path, init=str(weights.bundled_path()), max_updates=2, pairs_per_batch=2,
                      log_every=1, device="cpu")
    released = torch.load(weights.bundled_path(), map_location="cpu", weights_only=True)
    start = released["optimizer_history"][-1]["num_updates"]
    assert start > 0 and result.updates == start + 2  # its update count (and temperature schedule) carries on
    before = bundled.model.state_dict()["encoder.layers.0.fc1.weight"]
    after = load_encoder(result.checkpoint).model.state_dict()["encoder.layers.0.fc1.weight"]
    assert after.shape == before.shape and not np.array_equal(after.numpy(), before.numpy())

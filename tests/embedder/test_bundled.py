"""The bundled open encoder: every release shipped and pinned, v3 the default, v1 and v2 loadable by
name, and each trained (not random weights)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

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


#: the fine-tuned releases' quality check (test_the_current_release_learned_...): records per PTB-XL
#: fold, and the measured-against bounds
RECORDS_PER_FOLD = 60
NORMAL_AUROC_FLOOR = 0.9  # measured: v3 0.965, v2 0.958 (v1 0.861, random init 0.795-0.836)
MARGIN = 0.05


@pytest.fixture(scope="module")
def bundled():
    return load_encoder("bundled", device="cpu")


@pytest.fixture(scope="module")
def bundled_v1():
    return load_encoder("bundled:v1", device="cpu")


@pytest.mark.parametrize("version", sorted(weights.RELEASES))
def test_every_release_ships_in_the_package_pinned_and_small(version):
    release = weights.RELEASES[version]
    path = weights.bundled_path(release)
    assert path.is_file() and path.stat().st_size <= 20 * 2**20
    assert sha256_of(path) == release.sha256
    assert (path.parent / release.card).is_file()


def test_v3_is_the_default_everywhere(bundled):
    assert weights.DEFAULT_ENCODER == "bundled" and ServerConfig(store=".").checkpoint == "bundled"
    assert weights.CURRENT is weights.RELEASES["v3"] and weights.BUNDLED_NAME == "ecg-atlas-small-v3"
    described = bundled.describe()
    assert described["model_id"] == weights.BUNDLED_NAME and described["dim"] == 256 and described["layers"] == 4
    assert described["checkpoint_sha256"] == weights.BUNDLED_SHA256
    assert "not ECG-FM's published model" in bundled.notice and described["notice"] == bundled.notice
    assert "MODEL_CARD.md" in bundled.notice


def test_earlier_releases_load_by_name_with_their_own_identity(bundled, bundled_v1):
    v1 = weights.RELEASES["v1"]
    assert bundled_v1.model_id == v1.name == "ecg-atlas-small-v1"
    assert bundled_v1.checkpoint_sha256 == v1.sha256 != bundled.checkpoint_sha256
    assert load_encoder("bundled:ecg-atlas-small-v1").checkpoint_sha256 == v1.sha256
    assert load_encoder("bundled:v3").checkpoint_sha256 == bundled.checkpoint_sha256
    v2 = weights.RELEASES["v2"]
    bundled_v2 = load_encoder("bundled:ecg-atlas-small-v2")
    assert bundled_v2.model_id == v2.name and bundled_v2.checkpoint_sha256 == v2.sha256 != bundled.checkpoint_sha256
    assert "MODEL_CARD_v2.md" in bundled_v2.notice and weights.release_for_sha256(v2.sha256) is v2
    assert "MODEL_CARD_v1.md" in bundled_v1.notice
    assert weights.release_for_sha256(v1.sha256) is v1 and weights.release_for_sha256("0" * 64) is None
    with pytest.raises(CheckpointError, match="no bundled encoder 'v9'.*bundled:v1"):
        load_encoder("bundled:v9")


def test_a_changed_or_missing_file_is_refused(tmp_path, monkeypatch):
    tampered = tmp_path / weights.BUNDLED_FILE
    shutil.copy(weights.bundled_path(), tampered)
    with open(tampered, "r+b") as fh:  # flip one byte inside the tensor data
        fh.seek(tampered.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(weights, "bundled_path", lambda release: tampered)
    with pytest.raises(CheckpointError, match="sha256"):
        load_encoder("bundled")
    monkeypatch.setattr(weights, "bundled_path", lambda release: tmp_path / "gone.pt")
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
def test_v1_pretraining_taught_it_which_windows_belong_together(bundled_v1, ecg_dir):
    """CMSC's objective, checked on unseen real ECGs: a random-init twin separates records far less."""
    from ecg_atlas.embedder.pretrain.data import patient_split

    rows = {r["record"]: r for r in csv.DictReader(open(ecg_dir / "manifest.csv", newline=""))}
    assert all(patient_split(rows[r]["patient_id"] or r) == "test" for r in TEST_SPLIT_RECORDS)
    trained = _window_similarity_gap(bundled_v1, ecg_dir)
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


def _ptbxl_folds(ptbxl: Path) -> dict[int, tuple[list[np.ndarray], np.ndarray]]:
    """The first records of PTB-XL folds 8 and 9: (model-ready windows per record, is-NORM), read once."""
    rows = list(csv.DictReader(open(ptbxl / "manifest.csv", newline="")))
    out = {}
    for fold in (8, 9):
        chosen = [r for r in rows if r["strat_fold"] == str(fold)][:RECORDS_PER_FOLD]
        out[fold] = ([preprocess(read_ecg(ptbxl / f"{r['record']}.hea")) for r in chosen],
                     np.array([r["NORM"] == "1" for r in chosen]))
    return out


def _normal_vs_abnormal_auroc(encoder, folds: dict) -> float:
    """PTB-XL: NORM-centroid minus abnormal-centroid cosine, centroids from fold 8 (the releases' validation
    fold), scored on fold 9 (never trained on nor chosen by): AUROC for NORM."""
    from ecg_atlas.analysis.metrics import auroc

    def vectors(fold: int) -> np.ndarray:
        v = np.stack([encoder.embed(windows).mean(axis=0) for windows in folds[fold][0]])
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    (ref, ref_normal), (test, test_normal) = (vectors(8), folds[8][1]), (vectors(9), folds[9][1])
    score = test @ ref[ref_normal].mean(axis=0) - test @ ref[~ref_normal].mean(axis=0)
    return auroc(test_normal.astype(float), score)


@pytest.mark.slow
def test_the_current_release_learned_the_diagnostic_superclasses_on_a_fold_it_never_saw(bundled, bundled_v1,
                                                                                        shared_data):
    folds = _ptbxl_folds(shared_data / "ptbxl")
    trained = _normal_vs_abnormal_auroc(bundled, folds)
    untrained = _normal_vs_abnormal_auroc(load_encoder("random:small", device="cpu"), folds)
    first = _normal_vs_abnormal_auroc(bundled_v1, folds)
    assert trained > NORMAL_AUROC_FLOOR and trained > untrained + MARGIN and trained > first + MARGIN, (
        trained, untrained, first)

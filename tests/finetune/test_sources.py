"""Fine-tuning data from real PTB-XL files + a manifest: targets, filters, splits, refusals, digest.

The encoder is the tiny random ECG-FM (only its ``prepare()`` runs here). Refusals come before any
file is read, so those tests are fast; the builds read 60 real records each.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecg_atlas.analysis.splits import check_patient_disjoint
from ecg_atlas.embedder import load_encoder
from ecg_atlas.errors import AtlasError, CheckpointError, FilterError, TrainingDataError
from ecg_atlas.finetune.run import load_base
from ecg_atlas.finetune.sources import Selection, from_files, one_hot
from ecg_atlas.finetune.types import BINARY, MULTICLASS, MULTILABEL
from tests.finetune.ptbxl_subset import main_class, write_subset

TRAIN, VAL = "strat_fold <= 2", "strat_fold = 9"


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("random:tiny")


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """40 train (folds 1-2) + 20 val (fold 9) records, 2 unlisted files, 1 damaged file with a row."""
    return write_subset(tmp_path_factory.mktemp("subset"), extra_files=2, broken=1)


def select(*targets: str, train=TRAIN, val=VAL, test=None, min_positives=3, **kw) -> Selection:
    return Selection(Selection.target_specs(targets), train=train, val=val, test=test, min_positives=min_positives,
                     **kw)


@pytest.fixture(scope="module")
def built(subset, encoder):
    data_dir, manifest, _ = subset
    return from_files([data_dir], manifest, "record", encoder, select("NORM,MI"))


def test_files_and_manifest_give_multilabel_windows_per_split(subset, built):
    _, _, chosen = subset
    data, intake = built
    assert data.task == MULTILABEL and data.labels == ["NORM", "MI"]
    assert intake.records == {"train": 40, "val": 20}
    assert intake.source["files"] == 63 and intake.source["matched"] == 61
    assert intake.source["without_manifest_row"] == 2
    assert sum(intake.refused.values()) == 1  # the damaged file: one refusal, the run goes on
    assert intake.left_out_no_split == 0
    assert data.segments.shape[1:] == (12, 2500) and data.segments.dtype == np.float32
    # 10-s records at 250 Hz: two 5-s windows each, every window pointing at its record
    assert np.bincount(data.segment_record).tolist() == [2] * 60
    by_id = {r["record"]: r for rows in chosen.values() for r in rows}
    for i, record in enumerate(data.record_ids):
        row = by_id[record]
        assert data.y[i].tolist() == [float(row["NORM"]), float(row["MI"])]
        assert data.split[i] == ("train" if int(row["strat_fold"]) <= 2 else "val")
        expected = f"patient:{row['patient_id']}" if row["patient_id"] else f"ecg:{record}"
        assert data.groups[i] == expected
    assert intake.label_counts["MI"]["train"] == [14, 26] and intake.label_counts["MI"]["val"] == [7, 13]


def test_digest_names_the_data(subset, encoder, built):
    data_dir, manifest, _ = subset
    data, _ = built
    assert len(data.digest) == 64
    other, _ = from_files([data_dir], manifest, "record", encoder, select("MI,NORM"))
    assert other.digest != data.digest  # same windows, labels in another order
    assert np.array_equal(other.segments, data.segments)


def test_binary_label_list_and_multiclass_targets(subset, encoder):
    data_dir, manifest, chosen = subset
    binary, _ = from_files([data_dir], manifest, "record", encoder, select("MI"))
    assert binary.task == BINARY and binary.labels == ["MI"] and binary.y.shape == (60, 1)
    listed, _ = from_files([data_dir], manifest, "record", encoder,
                           select("ptbxl_superclass:NORM", "ptbxl_superclass:MI"))
    assert listed.task == MULTILABEL and listed.labels == ["ptbxl_superclass:NORM", "ptbxl_superclass:MI"]
    multi, intake = from_files([data_dir], manifest, "record", encoder, select("main_class"))
    assert multi.task == MULTICLASS and multi.labels == ["main_class=MI", "main_class=NORM", "main_class=OTHER"]
    by_id = {r["record"]: r for rows in chosen.values() for r in rows}
    classes = [multi.labels[int(k)].split("=")[1] for k in multi.y[:, 0]]
    assert classes == [main_class(by_id[r]) for r in multi.record_ids]
    assert (one_hot(multi).sum(axis=1) == 1).all()


def test_without_filters_the_probes_patient_split(subset, encoder):
    data_dir, manifest, _ = subset
    data, intake = from_files([data_dir], manifest, "record", encoder,
                              select("NORM", train=None, val=None, min_positives=1, seed=3))
    assert set(data.split) == {"train", "val", "test"}
    assert intake.selection["split_method"].startswith("random by patient")
    check_patient_disjoint(data.split, data.groups)  # raises when a patient crosses sides
    assert sum(intake.records.values()) == 60


def refusal(subset, encoder, selection, **kw) -> TrainingDataError:
    data_dir, manifest, _ = subset
    with pytest.raises(TrainingDataError) as caught:
        from_files([data_dir], manifest, "record", encoder, selection, **kw)
    return caught.value


def test_too_few_positives_names_the_label_and_counts(subset, encoder):
    error = refusal(subset, encoder, select("MI", min_positives=10))
    assert error.reason == "too_few_positives"
    assert "'MI'" in str(error) and "val" in str(error) and "7 positive" in str(error)
    assert error.details == {"label": "MI", "split": "val", "positive": 7, "negative": 13, "need": 10}


def test_empty_split_is_refused(subset, encoder):
    error = refusal(subset, encoder, select("NORM", val="strat_fold = 10"))
    assert error.reason == "empty_split" and "--val" in str(error)


def test_overlapping_splits_are_refused(subset, encoder):
    error = refusal(subset, encoder, select("NORM", train="strat_fold <= 9"))
    assert error.reason == "overlapping_splits" and "20 record(s) match both --train and --val" in str(error)


def test_a_patient_in_two_splits_is_refused(tmp_path, encoder):
    def share_patient(row):  # the fold-1 (train) and fold-9 (val) records: one patient
        return {**row, "patient_id": "ptbxl:shared"} if row["strat_fold"] in ("1", "9") else row

    data_dir, manifest, _ = write_subset(tmp_path, edit=share_patient)
    with pytest.raises(TrainingDataError) as caught:
        from_files([data_dir], manifest, "record", encoder, select("NORM"))
    assert caught.value.reason == "overlapping_splits" and "1 patient(s)" in str(caught.value)


def test_filters_need_train_and_val_and_known_columns(subset, encoder):
    data_dir, manifest, _ = subset
    with pytest.raises(AtlasError, match="both --train and --val"):
        from_files([data_dir], manifest, "record", encoder, select("NORM", val=None))
    with pytest.raises(FilterError) as caught:
        from_files([data_dir], manifest, "record", encoder, select("NORM", train="fold <= 2"))
    assert caught.value.reason == "bad_filter" and "'fold'" in str(caught.value)


def test_files_that_match_no_manifest_row(subset, encoder):
    data_dir, manifest, _ = subset
    with pytest.raises(TrainingDataError) as caught:
        from_files([data_dir / "fold01"], manifest, "record", encoder, select("NORM"))
    assert caught.value.reason == "no_matching_records"
    assert "name the folder they are relative to" in str(caught.value)


def test_a_checkpoint_that_is_not_an_encoder(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError) as caught:
        load_base(str(path))
    assert caught.value.reason == "bad_checkpoint"
    assert f"--checkpoint {path} is not an encoder ECG Atlas can fine-tune" in str(caught.value)

"""Judging a fine-tuned model: the baselines on the same split, the probes' macro rule, the verdict.

Real PTB-XL records (60, through ``sources``), the tiny random ECG-FM as base encoder. The
"fine-tuned" scores are stand-ins with a known answer (the labels themselves, their reverse, the
frozen probe's own scores), so each verdict is known in advance.
"""

from __future__ import annotations

import numpy as np
import pytest

from ecg_atlas.embedder import load_encoder
from ecg_atlas.finetune.evaluate import (
    FINETUNED,
    FROZEN_PROBE,
    RANDOM_INIT,
    evaluate_run,
    paired_macro_difference,
    probe_scores,
    record_vectors,
    verdict_line,
)
from ecg_atlas.finetune.sources import Selection, from_files, one_hot
from tests.finetune.ptbxl_subset import write_subset


@pytest.fixture(scope="module")
def base():
    return load_encoder("random:tiny")


@pytest.fixture(scope="module")
def data(tmp_path_factory, base):
    data_dir, manifest, _ = write_subset(tmp_path_factory.mktemp("subset"))
    selection = Selection(("NORM", "STTC"), train="strat_fold <= 2", val="strat_fold = 9", min_positives=3)
    return from_files([data_dir], manifest, "record", base, selection)[0]


@pytest.fixture(scope="module")
def vectors(base, data):
    return record_vectors(base, data)


def test_record_vectors_are_the_mean_of_each_records_windows(base, data, vectors):
    assert vectors.shape == (len(data.record_ids), base.dim)
    for record in (0, 17, len(data.record_ids) - 1):
        windows = data.segments[data.segment_record == record]
        np.testing.assert_allclose(vectors[record], base.embed(windows).mean(axis=0), rtol=1e-5, atol=1e-6)


def test_paired_difference_and_verdict(data, vectors):
    rows = data.records_in("val")
    y = one_hot(data, rows)
    groups = data.groups[rows]
    _, scores = probe_scores(vectors, data, ["val"])
    probe = scores["val"]
    perfect, reversed_ = y.copy(), 1.0 - y
    same = paired_macro_difference(y, probe, probe, groups, [0, 1], n_resamples=200, seed=0)
    assert same.value == 0.0 and same.low == 0.0 and same.high == 0.0
    better = paired_macro_difference(y, perfect, probe, groups, [0, 1], n_resamples=200, seed=0)
    worse = paired_macro_difference(y, reversed_, probe, groups, [0, 1], n_resamples=200, seed=0)
    assert better.low > 0 and worse.high < 0
    assert better.value == pytest.approx(1.0 - np.mean([_auroc(y[:, j], probe[:, j]) for j in (0, 1)]))

    from ecg_atlas.finetune.evaluate import measure

    m = {name: measure(data, "val", s, min_positives=3, n_bootstrap=200, seed=0)
         for name, s in (("perfect", perfect), ("reversed", reversed_), ("probe", probe))}
    assert verdict_line(m["perfect"], m["probe"], better).startswith(
        "fine-tuning beats the frozen probe on val macro AUROC: fine-tuned 1.000")
    assert verdict_line(m["reversed"], m["probe"], worse).startswith(
        "fine-tuning does not beat the frozen probe on val macro AUROC (it is worse)")
    assert "95% CI includes 0" in verdict_line(m["probe"], m["probe"], same)
    assert verdict_line(m["probe"], m["probe"], None).startswith("no verdict")


def _auroc(y, s):
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(y, s)


def test_evaluate_run_beside_both_baselines_with_the_macro_rule(base, data):
    truth = one_hot(data, data.records_in("val"))
    evaluation = evaluate_run(data, {"val": truth}, base, min_positives=7, n_bootstrap=100, seed=0)
    assert evaluation.parts == ["val"]
    for model in (FINETUNED, FROZEN_PROBE, RANDOM_INIT):
        metrics = evaluation.metrics[model]["val"]
        # STTC has 6 positives in val (< 7): left out of every macro, and said so
        assert metrics.macro_labels == ["NORM"] and list(metrics.left_out) == ["STTC"]
        assert "val 6/14" in metrics.left_out["STTC"] and "need 7 of each" in metrics.left_out["STTC"]
    assert evaluation.metrics[FINETUNED]["val"].macro_auroc.value == 1.0
    assert evaluation.baselines[FROZEN_PROBE]["model_id"] == base.model_id
    assert evaluation.baselines[RANDOM_INIT]["model_id"] == base.random_twin(seed=0).model_id
    saved = evaluation.model_metrics()
    assert set(saved) == {"val", "test", "baselines", "verdict"} and saved["test"] is None
    assert set(saved["baselines"]) == {"frozen_probe", "random_init"}
    assert list(saved["baselines"]["frozen_probe"]["val"]["macro"]["left_out"]) == ["STTC"]
    assert saved["verdict"] == evaluation.verdict and evaluation.verdict.startswith("fine-tuning")
    assert "over 1 label(s)" in evaluation.verdict


def test_a_label_with_no_val_records_trains_with_min_positives_0_and_stays_out_of_the_macro(base, data):
    """The bundled v3 recipe's extra targets: known for some training records only (NaN everywhere
    else). With --min-positives 0 they train; the val macro and the verdict are over the other labels."""
    from dataclasses import replace

    train = data.split == "train"
    extra = np.full(len(data.record_ids), np.nan, dtype=np.float32)
    extra[np.flatnonzero(train)[:20]] = np.arange(20) % 2  # 10 positives, 10 negatives, train only
    widened = replace(data, y=np.column_stack([data.y, extra]), labels=[*data.labels, "TRAIN_ONLY"])
    truth = one_hot(widened, widened.records_in("val"))
    evaluation = evaluate_run(widened, {"val": np.nan_to_num(truth, nan=0.5)}, base, min_positives=0,
                              n_bootstrap=100, seed=0)
    for model in (FINETUNED, FROZEN_PROBE, RANDOM_INIT):
        metrics = evaluation.metrics[model]["val"]
        assert metrics.macro_labels == ["NORM", "STTC"] and list(metrics.left_out) == ["TRAIN_ONLY"]
        assert "val 0/0; need 1 of each" in metrics.left_out["TRAIN_ONLY"]
    assert evaluation.metrics[FINETUNED]["val"].macro_auroc.value == 1.0
    assert evaluation.verdict.startswith("fine-tuning beats") and "over 2 label(s)" in evaluation.verdict

"""ROC and precision-recall points kept in a report (analysis/metrics.curve_points), checked
against scikit-learn's curves and the areas the report states."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from ecg_atlas.analysis.metrics import curve_points, evaluate


def test_the_points_are_scikit_learns_curves_and_give_the_stated_areas():
    rng = np.random.default_rng(3)
    y = (rng.random(150) < 0.3).astype(float)
    scores = np.round(y * 0.8 + rng.normal(0, 0.6, 150), 1)  # rounded: tied scores too
    c = curve_points(y, scores)
    fpr, tpr, _ = roc_curve(y, scores, drop_intermediate=False)
    assert np.allclose(c["roc"]["fpr"], fpr, atol=1e-4) and np.allclose(c["roc"]["tpr"], tpr, atol=1e-4)
    assert abs(np.trapezoid(c["roc"]["tpr"], c["roc"]["fpr"]) - roc_auc_score(y, scores)) < 1e-3
    precision, recall, _ = precision_recall_curve(y, scores)
    assert np.allclose(c["pr"]["recall"][1:], recall[::-1][1:], atol=1e-4)
    assert np.allclose(c["pr"]["precision"][1:], precision[::-1][1:], atol=1e-4)
    area = np.sum(np.diff(c["pr"]["recall"]) * np.array(c["pr"]["precision"][1:]))
    assert abs(area - average_precision_score(y, scores)) < 1e-3
    assert c["prevalence"] == round(y.mean(), 4)


def test_long_curves_are_thinned_with_their_ends_kept_and_undefined_ones_are_none():
    rng = np.random.default_rng(0)
    y = (rng.random(5000) < 0.5).astype(float)
    c = curve_points(y, rng.random(5000), max_points=200)
    assert len(c["roc"]["fpr"]) == 201 and c["roc"]["fpr"][-1] == c["roc"]["tpr"][-1] == 1.0
    assert np.all(np.diff(c["roc"]["fpr"]) >= 0) and np.all(np.diff(c["pr"]["recall"]) >= 0)
    assert curve_points(np.ones(10), rng.random(10)) is None and curve_points(np.array([]), np.array([])) is None


def test_evaluate_keeps_curves_only_when_asked():
    rng = np.random.default_rng(1)
    y = np.column_stack([(rng.random(80) < 0.4), np.r_[np.ones(40), np.full(40, np.nan)]]).astype(float)
    scores = rng.random((80, 2))
    groups = np.arange(80)
    plain = evaluate(y, scores, ["a", "b"], groups, n_resamples=0).to_dict()
    assert "curves" not in plain["labels"][0]
    kept = evaluate(y, scores, ["a", "b"], groups, n_resamples=0, curves=True).to_dict()
    assert kept["labels"][0]["curves"]["roc"]["tpr"][-1] == 1.0
    assert "curves" not in kept["labels"][1]  # "b" has no negative: no curve, as no AUROC

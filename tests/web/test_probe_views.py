"""What the probes view is sent (ecg_atlas/web/probe_views.py): a kept probe beside its
random-init baseline, and the served fine-tuned head beside its two comparisons, from reports
the analysis code itself writes."""

from __future__ import annotations

import numpy as np

from ecg_atlas.analysis.metrics import evaluate
from ecg_atlas.analysis.probe import MULTILABEL, Targets, baseline_report, train_probe
from ecg_atlas.web.probe_views import probe_view


def cohort(seed: int, signal: float):
    rng = np.random.default_rng(seed)
    n = 240
    y = (rng.random((n, 2)) < [0.4, 0.3]).astype(float)
    vectors = rng.normal(size=(n, 8)) + signal * np.c_[y, np.zeros((n, 6))]
    groups = np.array([f"p{i}" for i in range(n)], dtype=object)
    split = np.array(["train", "val", "test"] * (n // 3), dtype=object)
    return vectors, Targets(MULTILABEL, ["a", "b"], y), groups, split


def test_a_probe_trained_with_a_baseline_is_shown_beside_it_with_curves():
    vectors, targets, groups, split = cohort(0, 2.0)
    _, report = train_probe(vectors, targets, groups, split, Cs=(1.0,), n_bootstrap=20, fractions=(0.5, 1.0))
    report.baseline = baseline_report(np.random.default_rng(9).normal(size=vectors.shape), targets, groups, split,
                                      Cs=(1.0,), n_bootstrap=20)
    report.baseline_model_id = "random-init twin"
    entry = {"name": "ab", "kind": "multilabel", "labels": ["a", "b"], "model_id": "m", "created_at": "now",
             "where": [], "report": report.to_dict()}
    view = probe_view(entry)
    assert [label["label"] for label in view["labels"]] == ["a", "b"] and view["measured_on"] == "test"
    (baseline,) = view["baselines"]
    assert baseline["name"] == "random-init encoder" and baseline["model_id"] == "random-init twin"
    own, theirs = view["labels"][0], baseline["labels"][0]
    assert own["auroc"]["value"] > 0.8 and theirs["auroc"]["value"] < own["auroc"]["value"]
    assert own["auroc"]["ci_low"] <= own["auroc"]["value"] <= own["auroc"]["ci_high"]
    for shown in (own, theirs):
        roc = shown["curves"]["roc"]
        assert roc["fpr"][0] == 0.0 and roc["tpr"][-1] == 1.0
    assert len(view["fraction_curve"]) == 2


def test_the_fine_tuned_head_is_shown_beside_the_frozen_probe_and_the_random_init_encoder():
    rng = np.random.default_rng(2)
    y = (rng.random((90, 1)) < 0.5).astype(float)
    groups = np.arange(90)

    def measured(noise: float) -> dict:
        return evaluate(y, y + rng.normal(0, noise, y.shape), ["AF"], groups, n_resamples=20, curves=True).to_dict()

    entry = {"name": "head", "kind": "fine-tuned", "labels": ["AF"], "model_id": "ecgfm+head", "created_at": "",
             "where": [], "report": {"metrics": {"val": measured(0.3), "baselines": {
                 "frozen_probe": {"val": measured(0.8)}, "random_init": {"val": measured(3.0)}}}}}
    view = probe_view(entry)
    assert view["measured_on"] == "val" and view["labels"][0]["auroc"]["value"] > 0.9
    assert [(b["key"], b["name"]) for b in view["baselines"]] == [
        ("frozen_probe", "linear probe on the frozen encoder"), ("random_init", "random-init encoder")]
    assert all(b["labels"][0]["curves"]["roc"]["tpr"][-1] == 1.0 for b in view["baselines"])

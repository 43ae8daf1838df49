"""Linear probes on real ECG embeddings: metrics, splits, the fit itself, and the store round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score

from ecg_atlas.analysis.metrics import auroc_auprc, bootstrap_weights
from ecg_atlas.analysis.probe import BINARY, MULTICLASS, Targets, fit_path, fit_probe, train_probe
from ecg_atlas.analysis.splits import (
    ColumnSplit,
    check_patient_disjoint,
    kfold_by_patient,
    patient_groups,
    split_by_patient,
)
from ecg_atlas.analysis.store_io import HeadProbe, load_probe, predict_stored, random_init_like
from ecg_atlas.analysis.tasks import SplitSpec, evaluate_stored_probe, train_stored_probe
from ecg_atlas.cli import main
from ecg_atlas.embedder import load_encoder
from ecg_atlas.errors import AtlasError, EncoderMismatchError
from ecg_atlas.index import Store


@pytest.fixture(scope="module")
def groups(corpus):
    return patient_groups([r["patient_id"] or None for r in corpus.rows], corpus.ecg_ids)


@pytest.fixture(scope="module")
def older(corpus):
    """Age >= 60: a label ECG embeddings carry, even those of a near-random encoder (checked empirically)."""
    return Targets(BINARY, ["age_over_60"],
                   np.array([[float(float(r["age"]) >= 60) if r["age"] else np.nan] for r in corpus.rows]))


@pytest.mark.slow
def test_metrics_equal_scikit_learn_on_the_same_predictions(corpus, older):
    known = ~np.isnan(older.y[:, 0])
    y = older.y[known, 0]
    scores = np.round(corpus.vectors[known, 0], 2)  # rounding makes ties, which both must treat alike
    a, p = auroc_auprc(y, scores)
    assert a[0] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert p[0] == pytest.approx(average_precision_score(y, scores), abs=1e-12)
    # A bootstrap resample is the same as the repeated sample.
    weights = next(bootstrap_weights(np.arange(len(y)) // 3, 4, seed=1))
    a, p = auroc_auprc(y, scores, weights)
    for row in range(4):
        rep = np.repeat(np.arange(len(y)), weights[row].astype(int))
        assert a[row] == pytest.approx(roc_auc_score(y[rep], scores[rep]), abs=1e-12)
        assert p[row] == pytest.approx(average_precision_score(y[rep], scores[rep]), abs=1e-12)


def test_bootstrap_resamples_patients_not_ecgs():
    groups = np.array(["a", "a", "a", "b", "c"])
    for w in next(bootstrap_weights(groups, 50, seed=0)):
        assert w[0] == w[1] == w[2]  # one patient's ECGs are drawn together
        assert w[0] + w[3] + w[4] == 3  # three patients drawn, whatever their ECG counts


@pytest.mark.slow
def test_splits_never_put_a_patient_on_two_sides(groups, older, corpus):
    repeated = [g for g in set(groups) if (groups == g).sum() > 1]
    assert len(repeated) >= 3  # the corpus has patients with several ECGs: the check below means something
    split = split_by_patient(groups, older.y, seed=3)
    check_patient_disjoint(split, groups)
    for g in repeated:
        assert len(set(split[groups == g])) == 1
    assert abs((split == "test").mean() - 0.2) < 0.05
    folds = kfold_by_patient(groups, 5, older.y, seed=0)
    for g in repeated:
        assert len(set(folds[groups == g])) == 1
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_a_split_column_that_mixes_a_patients_ecgs_is_refused(groups):
    g = np.array(["p1", "p1", "p2", "p3"], dtype=object)
    spec = ColumnSplit.parse("strat_fold")  # PTB-XL convention: 1-8 train, 9 val, 10 test
    assert list(spec.assign([1, 8, 9, 10], np.array(["p1", "p2", "p3", "p4"], dtype=object))) == \
        ["train", "train", "val", "test"]
    with pytest.raises(AtlasError, match="1 patient"):
        spec.assign([1, 10, 9, 10], g)
    custom = ColumnSplit.parse("site:train=a|b,test=c")
    assert list(custom.assign(["a", "b", "c", "d"], np.array(["1", "2", "3", "4"], dtype=object))) == \
        ["train", "train", "test", ""]


@pytest.mark.slow
@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_the_fit_is_scikit_learns_logistic_regression(corpus, older, class_weight):
    known = ~np.isnan(older.y[:, 0])
    x = corpus.vectors[known].astype(np.float64)
    x = (x - x.mean(0)) / x.std(0)
    y = older.y[known, 0]
    (coef, intercept), = fit_path(x, y[:, None], BINARY, [0.05], balanced=class_weight == "balanced")
    ref = LogisticRegression(C=0.05, class_weight=class_weight, tol=1e-10, max_iter=10_000).fit(x, y)
    ours = 1 / (1 + np.exp(-(x @ coef[0] + intercept[0])))
    np.testing.assert_allclose(ours, ref.predict_proba(x)[:, 1], atol=1e-3)


@pytest.mark.slow
def test_multiclass_fit_is_scikit_learns_multinomial(corpus):
    dataset = np.array([r["dataset"] if r["dataset"] in ("code15", "cinc_cpsc_extra") else "other"
                        for r in corpus.rows])
    classes = sorted(set(dataset))
    y = np.stack([dataset == c for c in classes], axis=1).astype(float)
    x = corpus.vectors.astype(np.float64)
    x = (x - x.mean(0)) / x.std(0)
    (coef, intercept), = fit_path(x, y, MULTICLASS, [0.05])
    ref = LogisticRegression(C=0.05, tol=1e-10, max_iter=10_000).fit(x, dataset)
    z = x @ coef.T + intercept
    ours = np.exp(z - z.max(1, keepdims=True))
    ours /= ours.sum(1, keepdims=True)
    np.testing.assert_allclose(ours, ref.predict_proba(x), atol=1e-3)


@pytest.mark.slow
def test_regularisation_is_picked_on_validation(corpus, older, groups):
    split = split_by_patient(groups, older.y, seed=0)
    probe = fit_probe(corpus.vectors, older, split, Cs=(1e-4, 1e-2, 1.0))
    val = (split == "val") & ~np.isnan(older.y[:, 0])
    scores = {}
    for C in (1e-4, 1e-2, 1.0):
        single = fit_probe(corpus.vectors, older, split, Cs=(C,))
        scores[C] = average_precision_score(older.y[val, 0], single.predict_proba(corpus.vectors[val])[:, 0])
    best = max(scores.values())
    assert probe.C[0] == min(C for C, s in scores.items() if s >= best - 1e-12)


@pytest.mark.slow
def test_probe_on_age_beats_chance_with_its_ci_and_reports_everything(corpus, older, groups):
    split = split_by_patient(groups, older.y, fractions=(0.6, 0.1, 0.3), seed=0)
    probe, report = train_probe(corpus.vectors, older, groups, split, n_bootstrap=400, seed=0)
    auroc = report.test.labels[0].auroc
    assert auroc.low > 0.5, f"AUROC {auroc}"
    assert auroc.low < auroc.value < auroc.high
    c = report.counts[0]
    test = (split == "test") & ~np.isnan(older.y[:, 0])
    assert (c.test_positive, c.test_negative) == (int(older.y[test, 0].sum()), int((older.y[test, 0] == 0).sum()))
    assert c.flag is None and report.test.macro_labels == ["age_over_60"]
    # Same numbers as scikit-learn on the same predictions.
    predicted = probe.predict_proba(corpus.vectors[test])[:, 0]
    assert auroc.value == pytest.approx(roc_auc_score(older.y[test, 0], predicted))
    # The label-fraction curve: 1 %, 10 %, 100 % of training patients, growing patient counts.
    curve = report.fraction_curve
    assert [p.fraction for p in curve] == [0.01, 0.1, 1.0]
    assert curve[0].train_patients < curve[1].train_patients < curve[2].train_patients
    assert curve[2].macro_auroc == pytest.approx(auroc.value, abs=1e-6)


@pytest.mark.slow
def test_rare_labels_are_flagged_and_left_out_of_the_macro(corpus, groups):
    names = ["CD", "HYP"]  # 21 and 5 positives in the corpus
    y = np.array([[float(n in r["label_groups"].split(";")) for n in names] for r in corpus.rows])
    tg = Targets("multilabel", names, y)
    split = split_by_patient(groups, y, seed=0)
    _, report = train_probe(corpus.vectors, tg, groups, split, n_bootstrap=100, min_positives=3, fractions=(1.0,))
    flags = {c.label: c.flag for c in report.counts}
    assert flags["HYP"] is not None and "too few" in flags["HYP"]
    assert report.test.macro_labels == [n for n in names if flags[n] is None]
    assert "HYP" not in report.test.macro_labels


@pytest.mark.slow
def test_stored_probe_round_trip_baseline_and_predict(tmp_path, corpus, encoder, store_dir):
    import shutil

    store_path = tmp_path / "store"
    shutil.copytree(store_dir, store_path)
    with Store.open(store_path, read_only=True, with_index=False) as store:
        run = train_stored_probe(store, "older", ["age_over_60"], split=SplitSpec("patient", (0.6, 0.1, 0.3)),
                                 n_bootstrap=200, fractions=(1.0,), baseline_encoder=random_init_like(encoder))
        base = run.report.baseline
        assert base is not None and run.report.baseline_model_id.startswith("random-init-2x64")
        assert base.counts[0].test_positive == run.report.counts[0].test_positive  # same split, same ECGs
        assert base.test.labels[0].auroc.value != run.report.test.labels[0].auroc.value
        probe, meta = load_probe(store, "older")
        assert meta["identity"]["model_id"] == encoder.model_id and meta["targets"] == ["age_over_60"]
        assert meta["report"]["test"]["labels"][0]["auroc"]["ci_low"] is not None
        ids = corpus.ecg_ids[:3]
        np.testing.assert_allclose(predict_stored(store, probe, meta, ids), run.probe.predict_proba(corpus.vectors[:3]))
        metrics, used, left_out = evaluate_stored_probe(store, "older", n_bootstrap=50)
        # Only the probe's test patients remain: exactly its test-set figure.
        assert metrics.labels[0].auroc.value == pytest.approx(run.report.test.labels[0].auroc.value)
        with pytest.raises(AtlasError, match="exists"):
            train_stored_probe(store, "older", ["age_over_60"], n_bootstrap=10, fractions=(1.0,))
    # A probe refuses another encoder's vectors.
    other = dict(meta, identity=dict(meta["identity"], checkpoint_sha256="f" * 64))
    with Store.open(store_path, read_only=True, with_index=False) as store, pytest.raises(EncoderMismatchError):
        predict_stored(store, probe, other, ids)


@pytest.mark.slow
def test_probe_cli_train_list_predict(tmp_path, store_dir, capsys):
    import shutil

    store_path = tmp_path / "store"
    shutil.copytree(store_dir, store_path)
    assert main(["probe", "train", "--store", str(store_path), "--name", "groups", "--target", "label_groups:CD",
                 "--target", "label_groups:STTC", "--split", "kfold:3", "--bootstrap", "50", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "multilabel" and report["split"]["folds"] == 3 and len(report["folds"]) == 3
    assert main(["probe", "list", "--store", str(store_path), "--json"]) == 0
    assert [p["name"] for p in json.loads(capsys.readouterr().out)] == ["groups"]
    assert main(["probe", "predict", "--store", str(store_path), "--name", "groups", "--ids", "cinc_cpsc2018/A0001",
                 "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)["predictions"][0]["scores"]
    assert set(scores) == {"label_groups:CD", "label_groups:STTC"} and all(0 < v < 1 for v in scores.values())
    assert main(["probe", "train", "--store", str(store_path), "--name", "bad", "--target", "sex"]) == 2
    assert "sex=F or sex=M" in capsys.readouterr().err


def test_finetuned_head_is_a_builtin_probe(parity_dir, ecg_dir):
    from ecg_atlas.embedder import preprocess, read_ecg

    finetuned = load_encoder(parity_dir / "tiny_finetuned.pt")
    head = HeadProbe.from_encoder(finetuned)
    segments = preprocess(read_ecg(ecg_dir / "cinc_ptb/S0001"))  # 7 segments
    seg_vectors = finetuned.embed(segments)
    np.testing.assert_allclose(head.predict_segments([seg_vectors])[0], finetuned.classify(segments).mean(0), atol=1e-5)
    with pytest.raises(AtlasError, match="finetuned"):
        HeadProbe.from_encoder(load_encoder(parity_dir / "tiny_pretrained.pt"))

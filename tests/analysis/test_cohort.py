"""Cohort runs on real ECG embeddings: reproducibility, write-back, enrichment by hand, figures."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from scipy.stats import false_discovery_control, fisher_exact

from ecg_atlas.analysis.cohort import CohortParams, run_cohort
from ecg_atlas.analysis.enrichment import benjamini_hochberg, enrichment
from ecg_atlas.analysis.plots import plot_map
from ecg_atlas.analysis.tasks import explain_ecg
from ecg_atlas.cli import main
from ecg_atlas.errors import AtlasError
from ecg_atlas.index import Store, parse_filter

FAST = CohortParams(n_epochs=60, seed=7)


@pytest.mark.slow
def test_cluster_results_are_reproducible_with_a_seed(corpus):
    stages = []
    a = run_cohort(corpus.vectors, FAST, progress=lambda s, p: stages.append((s, p)))
    b = run_cohort(corpus.vectors, FAST)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.map_2d, b.map_2d)
    np.testing.assert_array_equal(a.outlier_scores, b.outlier_scores)
    assert a.n_clusters >= 2 and a.map_2d.shape == (len(corpus.vectors), 2) and a.cluster_embedding.shape[1] == 10
    sizes = [(a.labels == c).sum() for c in range(a.n_clusters)]
    assert sizes == sorted(sizes, reverse=True)  # renumbered largest first
    for c, rows in a.exemplars.items():
        assert rows and all(a.labels[i] == c for i in rows)
    assert a.outlier_scores[a.outliers[0]] == a.outlier_scores.max()
    assert [p for _, p in stages] == sorted(p for _, p in stages) and stages[-1][1] == 100
    assert 0.5 < a.trustworthiness <= 1
    c = run_cohort(corpus.vectors, CohortParams(n_epochs=60, seed=8))
    assert not np.array_equal(a.map_2d, c.map_2d)  # the seed matters, so it is worth recording


def test_a_cohort_with_vectors_cosine_cannot_use_is_refused_naming_the_row():
    vectors = np.random.default_rng(0).standard_normal((30, 16)).astype(np.float32)
    for value, text in ((0.0, "row 4 is all zeros"), (np.nan, "row 4 contains NaN or infinity")):
        bad = vectors.copy()
        bad[4] = value
        with pytest.raises(AtlasError, match=f"the cohort's vectors {text}"):
            run_cohort(bad, FAST)


def test_enrichment_numbers_by_hand():
    clusters = np.array([0, 0, 0, 0, 1, 1, 1, -1, -1, -1])
    labels = np.array([[1, 0], [1, 0], [1, np.nan], [0, 0], [0, 1], [0, 1], [1, 0], [0, 0], [0, 0], [0, 1]])
    table = enrichment(clusters, labels, ["AF", "PACE"], ages=[50, 60, 70, 80, None, 40, 41, 30, 20, 10],
                       sexes=["F", "F", "M", None, "M", "M", "f", "F", "M", "M"])
    row = next(r for r in table.labels if r.cluster == 0 and r.label == "AF")
    # In cluster 0: 3 of 4 AF; outside: 1 of 6.
    assert (row.positive_in, row.n_in, row.positive_out, row.n_out) == (3, 4, 1, 6)
    assert row.prevalence_in == 0.75 and row.prevalence_out == pytest.approx(1 / 6)
    assert row.odds_ratio == pytest.approx((3 * 5) / (1 * 1))
    assert row.p_value == pytest.approx(fisher_exact([[3, 1], [1, 5]]).pvalue)
    pace = next(r for r in table.labels if r.cluster == 0 and r.label == "PACE")
    assert (pace.positive_in, pace.n_in) == (0, 3)  # the unknown label is left out, not counted negative
    assert pace.odds_ratio == 0.0
    q = benjamini_hochberg([r.p_value for r in table.labels])
    assert [r.q_value for r in table.labels] == pytest.approx(list(q))
    np.testing.assert_allclose(q, false_discovery_control([r.p_value for r in table.labels]))
    summary = {c.cluster: c for c in table.clusters}
    assert (summary[0].age_median, summary[0].age_q1, summary[0].age_q3) == (65.0, 57.5, 72.5)
    assert (summary[0].female, summary[0].male, summary[0].sex_unknown) == (2, 1, 1)
    assert summary[1].female == 1  # "f" counts as female
    assert "AF" in table.to_csv() and table.to_markdown().startswith("| cluster |")


def test_benjamini_hochberg_by_hand():
    # p sorted: 0.01, 0.02, 0.03, 0.5 with m = 4 -> 0.04, 0.04, 0.04, 0.5
    np.testing.assert_allclose(benjamini_hochberg([0.03, 0.5, 0.01, 0.02]), [0.04, 0.5, 0.04, 0.04])
    assert np.isnan(benjamini_hochberg([np.nan, 0.01])[0])


def _non_trivial_png(path, min_px=(500, 250)):
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert img.shape[1] >= min_px[0] and img.shape[0] >= min_px[1]
    not_white = (np.abs(img - 255).sum(axis=2) > 30).mean()
    assert not_white > 0.02, f"{path.name}: only {not_white:.1%} of pixels drawn"
    return img


@pytest.mark.slow
def test_cluster_cli_writes_back_and_draws(tmp_path, store_dir, capsys):
    store_path = tmp_path / "store"
    shutil.copytree(store_dir, store_path)
    assert main(["cluster", "--store", str(store_path), "--run", "all", "--labels", "label_groups",
                 "--colour-by", "sex", "--colour-by", "age", "--epochs", "60", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["columns"] == ["cluster_all", "cluster_all_prob", "cluster_all_outlier"]
    assert record["params"]["seed"] == 42 and record["params"]["metric"] == "cosine"
    assert len(record["embedding_set_hash"]) == 64 and record["identity"]["model_id"].startswith("ecg-fm")
    out = store_path / "analysis" / "cohorts" / "all"
    with Store.open(store_path, read_only=True, with_index=False) as store:
        biggest = [b for b in store.iter_batches(filter=parse_filter("cluster_all = 0"), columns=["ecg_id"])]
        assert sum(b.num_rows for b in biggest) == record["sizes"]["0"]  # searches can filter by cluster
    csv_text = (out / "enrichment.csv").read_text()
    assert "label_groups:AF_AFL" in csv_text and "q_value" in csv_text
    for name in ("map_cluster.png", "map_sex.png", "map_age.png", "exemplars.png", "outliers.png"):
        _non_trivial_png(out / name)
    grey = np.array([0xB0, 0xB0, 0xB0])
    img = _non_trivial_png(out / "map_cluster.png")
    assert (np.abs(img - grey).sum(axis=2) < 40).sum() > 50  # noise is drawn in grey


@pytest.mark.slow
def test_explain_draws_saliency_in_the_ecgfm_colours(tmp_path, encoder, ecg_dir):
    from ecg_atlas.embedder import read_ecg

    path = explain_ecg(encoder, read_ecg(ecg_dir / "cinc_cpsc2018/A0003"), tmp_path / "explain.png")
    img = _non_trivial_png(path, (900, 500))
    blueish = (img[..., 2] > 140) & (img[..., 0] < 60)  # #0047AB end of the ramp
    reddish = (img[..., 0] > 180) & (img[..., 1] < 60) & (img[..., 2] < 100)  # #DC143C end
    assert blueish.sum() > 100 and reddish.sum() > 100


@pytest.mark.slow
def test_explain_cli_for_a_stored_ecg(tmp_path, store_dir, parity_dir):
    out = tmp_path / "a.png"
    assert main(["explain", "cinc_cpsc2018/A0003", "--store", str(store_dir), "--checkpoint",
                 str(parity_dir / "tiny_pretrained.pt"), "--out", str(out), "--single-lead"]) == 0
    _non_trivial_png(out, (700, 150))


def test_map_by_category_greys_unknowns(tmp_path):
    xy = np.random.default_rng(0).standard_normal((200, 2))
    values = ["F"] * 90 + ["M"] * 90 + [None] * 20
    img = _non_trivial_png(plot_map(xy, values, tmp_path / "m.png", kind="category", colour_label="sex"))
    assert img.shape[0] > 400

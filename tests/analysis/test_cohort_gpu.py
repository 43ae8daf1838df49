"""Clustering's cuML path, run without cuML: when it is used, and that its outputs are the CPU's."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from ecg_atlas.analysis import cohort
from ecg_atlas.analysis.cohort import CohortParams, glosh_scores, resolve_backend
from ecg_atlas.errors import AtlasError


def _blobs(n=300, dims=5, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((3, dims)) * 6
    return (centres[rng.integers(0, 3, n)] + rng.standard_normal((n, dims))).astype(np.float32)


def test_cpu_is_the_default_and_auto_without_cuml_stays_on_the_cpu(monkeypatch):
    assert CohortParams().backend == "cpu"
    monkeypatch.setitem(sys.modules, "cuml", None)  # `import cuml` fails: cuML absent
    assert resolve_backend("auto") == "cpu"
    assert resolve_backend("cpu") == "cpu"
    with pytest.raises(AtlasError, match="cuML"):
        resolve_backend("cuml")


def test_cuml_hdbscan_without_outlier_scores_gives_the_cpu_outputs(monkeypatch):
    """Current cuML HDBSCAN has no outlier_scores_: the scores come from its condensed tree."""
    import hdbscan

    class StandIn:  # cuML's HDBSCAN surface: labels_, probabilities_, condensed_tree_, no outlier_scores_
        def __init__(self, min_cluster_size, min_samples):
            self._model = hdbscan.HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples,
                                          core_dist_n_jobs=1)

        def fit(self, x):
            self._model.fit(np.asarray(x, dtype=np.float64))
            self.labels_ = self._model.labels_
            self.probabilities_ = self._model.probabilities_
            self.condensed_tree_ = self._model.condensed_tree_
            return self

    module = types.ModuleType("cuml.cluster.hdbscan")
    module.HDBSCAN = StandIn
    monkeypatch.setitem(sys.modules, "cuml", types.ModuleType("cuml"))
    monkeypatch.setitem(sys.modules, "cuml.cluster", types.ModuleType("cuml.cluster"))
    monkeypatch.setitem(sys.modules, "cuml.cluster.hdbscan", module)
    emb = _blobs()
    p = CohortParams(min_cluster_size=10, min_samples=5)
    assert not hasattr(StandIn(10, 5).fit(emb), "outlier_scores_")
    labels, probs, outlier = cohort._cuml_hdbscan(emb, p)
    cpu_labels, cpu_probs, cpu_outlier = cohort._hdbscan(emb, p)
    np.testing.assert_array_equal(labels, cpu_labels)
    np.testing.assert_array_equal(probs, cpu_probs)
    np.testing.assert_allclose(outlier, cpu_outlier, rtol=0, atol=1e-12)
    assert outlier.max() > 0


def test_glosh_scores_take_the_tree_object_or_its_array():
    import hdbscan

    model = hdbscan.HDBSCAN(min_cluster_size=10).fit(_blobs(seed=1).astype(np.float64))
    np.testing.assert_allclose(glosh_scores(model.condensed_tree_), model.outlier_scores_)
    np.testing.assert_allclose(glosh_scores(model.condensed_tree_.to_numpy()), model.outlier_scores_)

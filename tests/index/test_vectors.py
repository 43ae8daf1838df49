"""The vector rules (index/vectors.py): one normalisation for the store, the shard import and the
cohort analysis, and the refusals of what cosine similarity cannot use."""

from __future__ import annotations

import numpy as np
import pytest

from ecg_atlas.bulk.shards import ShardItem, shard_table, write_shard
from ecg_atlas.errors import AtlasError, StoreError
from ecg_atlas.index import Store
from ecg_atlas.index.vectors import (
    PROBLEMS,
    VECTOR_ALL_ZEROS,
    VECTOR_NORM_MAX,
    VECTOR_NORM_MIN,
    VECTOR_NORM_OUT_OF_RANGE,
    VECTOR_NOT_FINITE,
    normalised,
    norms,
    problems,
)

from .conftest import DIM, IDENTITY, make_rows


def test_normalised_rows_have_unit_length_and_refusals_name_the_row():
    rows = make_rows(50)["vectors"] * 7
    unit = normalised(rows, "queries", DIM)
    assert unit.dtype == np.float32 and unit.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(unit, rows / np.linalg.norm(rows, axis=1, keepdims=True))
    for value, text in ((np.nan, "row 3 contains NaN or infinity"), (np.inf, "row 3 contains NaN or infinity"),
                        (0.0, "row 3 is all zeros")):
        bad = rows.copy()
        bad[3] = value
        with pytest.raises(StoreError, match=text):
            normalised(bad, "queries", DIM)
        with pytest.raises(AtlasError, match=f"the cohort's vectors {text}") as refused:
            normalised(bad, "the cohort's vectors", error=AtlasError)
        assert type(refused.value) is AtlasError
    with pytest.raises(StoreError, match=rf"must have shape \(n, {DIM}\); got \(50, {DIM - 1}\)"):
        normalised(rows[:, 1:], "queries", DIM)


def test_problems_say_why_each_row_is_refused():
    rows = np.ones((6, DIM), np.float32)
    rows[1, 0] = np.nan
    rows[2] = 0
    rows[3] = VECTOR_NORM_MIN / 10 / np.sqrt(DIM)
    rows[4] = VECTOR_NORM_MAX * 10 / np.sqrt(DIM)
    rows[5, 2] = -np.inf
    codes = problems(rows, norms(rows))
    assert [PROBLEMS[c] for c in codes] == ["", VECTOR_NOT_FINITE, VECTOR_ALL_ZEROS, VECTOR_NORM_OUT_OF_RANGE,
                                            VECTOR_NORM_OUT_OF_RANGE, VECTOR_NOT_FINITE]


def test_an_index_built_at_import_scores_as_one_rebuilt_from_the_stored_rows(tmp_path):
    """The import normalises the shards' vectors itself (no read back); the index a reopen
    rebuilds from DuckDB normalises the stored rows: both must give the same scores, to the bit."""
    rows = make_rows(300)
    items = [ShardItem(ecg_id, f"{ecg_id}.hea", patient, metadata, 500.0, ["I", "II"], 10.0, vector * 3,
                       vector[None, :]) for ecg_id, patient, metadata, vector
             in zip(rows["ecg_ids"], rows["patient_ids"], rows["metadata"], rows["vectors"])]
    identity = {"model_id": IDENTITY.model_id, "checkpoint_sha256": IDENTITY.checkpoint_sha256,
                "preprocessing_version": IDENTITY.preprocessing_version, "dim": str(DIM)}
    shard = tmp_path / "shards" / "shard-000000.parquet"
    shard.parent.mkdir()
    write_shard(shard, shard_table(items, DIM, identity, shard=0, job="test"))
    queries = make_rows(20, seed=5)["vectors"]
    with Store.open(tmp_path / "s") as store:
        assert store.import_shards([shard], identity=IDENTITY).inserted == 300
        imported = store.search(queries, k=10)
    for file in (tmp_path / "s").glob("index*"):
        file.unlink()
    with Store.open(tmp_path / "s") as store:
        assert store.info().n_index_entries == 300  # rebuilt from the rows: no index file was left
        rebuilt = store.search(queries, k=10)
    assert [[(h.ecg_id, h.score) for h in hits] for hits in imported] == \
        [[(h.ecg_id, h.score) for h in hits] for hits in rebuilt]

"""`ecg-atlas export`: Parquet (and projector TSVs) hold exactly the stored ids, metadata and vectors;
`--format embedding-atlas` holds a cluster run's map and each ECG's nearest neighbours."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from ecg_atlas.cli import export
from ecg_atlas.index import Store
from tests.index.conftest import upsert_rows


def run_export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    export.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", *argv])
    return args.func(args)


def test_export_writes_ids_metadata_and_vectors(tmp_path, rows, capsys):
    with Store.open(tmp_path / "s") as store:
        upsert_rows(store, rows)
        store.delete(["ecg-0"])
    out = tmp_path / "all.parquet"
    assert run_export(["--store", str(tmp_path / "s"), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    table = pq.read_table(out)
    assert summary["rows"] == table.num_rows == len(rows["ecg_ids"]) - 1
    ids = table.column("ecg_id").to_pylist()
    assert ids == rows["ecg_ids"][1:]
    vectors = np.stack(table.column("record_vector").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(vectors, rows["vectors"][1:])
    assert table.column("age").to_pylist() == [m["age"] for m in rows["metadata"][1:]]
    assert table.column("labels").to_pylist()[10] == rows["metadata"][11]["labels"]


def test_export_with_filter_and_projector_tsv(tmp_path, rows, capsys):
    with Store.open(tmp_path / "s") as store:
        upsert_rows(store, rows)
    out, prefix = tmp_path / "old.parquet", tmp_path / "proj"
    assert run_export(["--store", str(tmp_path / "s"), "--out", str(out), "--where", "age>=70",
                       "--where", "labels contains AF", "--columns", "age,labels", "--tsv", str(prefix)]) == 0
    expected = [e for e, m in zip(rows["ecg_ids"], rows["metadata"]) if m["age"] >= 70 and "AF" in m["labels"]]
    assert pq.read_table(out).column("ecg_id").to_pylist() == expected
    vec_lines = (tmp_path / "proj.vectors.tsv").read_text().splitlines()
    meta_lines = (tmp_path / "proj.metadata.tsv").read_text().splitlines()
    assert meta_lines[0].split("\t") == ["ecg_id", "age", "labels"]
    assert len(vec_lines) == len(meta_lines) - 1 == len(expected)
    first = rows["ecg_ids"].index(expected[0])
    np.testing.assert_allclose(np.array(vec_lines[0].split("\t"), float), rows["vectors"][first], rtol=1e-6)
    assert "exported" in capsys.readouterr().out


def kept_run(store_dir, run: str, ids: list[str], seed: int = 0) -> np.ndarray:
    """A cluster run kept beside the store as `cluster` keeps one (assignments.parquet, run.json),
    with made-up map coordinates; returns them (n, 2)."""
    import pyarrow as pa

    from ecg_atlas.analysis.store_io import run_dir

    xy = np.random.default_rng(seed).standard_normal((len(ids), 2)).astype(np.float32)
    with Store.open(store_dir) as store:
        where = run_dir(store, run)
    where.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"ecg_id": ids, "cluster": np.arange(len(ids), dtype=np.int64) % 3 - 1,
                             "probability": np.ones(len(ids)), "outlier_score": np.zeros(len(ids)),
                             "map_x": xy[:, 0].astype(float), "map_y": xy[:, 1].astype(float)}),
                   where / "assignments.parquet")
    (where / "run.json").write_text(json.dumps({"run": run, "n_ecgs": len(ids), "where": []}))
    return xy


def test_embedding_atlas_layout_holds_the_map_and_each_ecgs_nearest_neighbours(tmp_path, rows, capsys):
    with Store.open(tmp_path / "s") as store:
        upsert_rows(store, rows)
    # the run holds every other ECG, in its own order, and one ECG deleted since
    run_ids = rows["ecg_ids"][::2][::-1] + ["gone-since"]
    xy = kept_run(tmp_path / "s", "first", run_ids)
    out = tmp_path / "atlas.parquet"
    assert run_export(["--store", str(tmp_path / "s"), "--out", str(out), "--format", "embedding-atlas",
                       "--neighbors", "4", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["run"] == "first" and summary["left_out"] == 1 and "--neighbors neighbors" in summary["view"]
    table = pq.read_table(out)
    assert table.column("ecg_id").to_pylist() == run_ids[:-1] == [r for r in run_ids if r != "gone-since"]
    np.testing.assert_array_equal(table.column("x").to_numpy(), xy[:-1, 0])
    np.testing.assert_array_equal(table.column("y").to_numpy(), xy[:-1, 1])
    assert "record_vector" not in table.column_names and {"age", "labels", "cluster", "text"} <= set(table.column_names)
    first = rows["ecg_ids"].index(run_ids[0])
    assert table.column("text").to_pylist()[0] == (f"{run_ids[0]}: {', '.join(rows['metadata'][first]['labels'])}"
                                                   if rows["metadata"][first]["labels"] else run_ids[0])
    # neighbours: row numbers of this table, nearest first by cosine, never the row itself
    at = [rows["ecg_ids"].index(e) for e in run_ids[:-1]]
    unit = rows["vectors"][at] / np.linalg.norm(rows["vectors"][at], axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :4]
    neighbours = table.column("neighbors").to_pylist()
    assert [n["ids"] for n in neighbours] == expected.tolist()
    distances = np.array([n["distances"] for n in neighbours])
    np.testing.assert_allclose(distances, 1 - np.take_along_axis(sims, expected, axis=1), atol=1e-5)


def test_embedding_atlas_export_says_which_run_to_name(tmp_path, rows):
    from ecg_atlas.errors import AtlasError

    with Store.open(tmp_path / "s") as store:
        upsert_rows(store, rows)
    args = ["--store", str(tmp_path / "s"), "--out", str(tmp_path / "a.parquet"), "--format", "embedding-atlas"]
    with pytest.raises(AtlasError, match="no cluster run to export.*ecg-atlas cluster"):
        run_export(args)
    kept_run(tmp_path / "s", "first", rows["ecg_ids"][:10])
    kept_run(tmp_path / "s", "second", rows["ecg_ids"][10:20])
    with pytest.raises(AtlasError, match=r"2 cluster runs \(first, second\): say which with --run"):
        run_export(args)
    with pytest.raises(AtlasError, match="no cluster run named 'third'"):
        run_export([*args, "--run", "third"])
    with pytest.raises(AtlasError, match="--tsv"):
        run_export([*args, "--run", "first", "--tsv", str(tmp_path / "p")])
    assert run_export([*args, "--run", "second", "--where", "age>=60"]) == 0
    kept = pq.read_table(tmp_path / "a.parquet")
    assert set(kept.column("ecg_id").to_pylist()) == {e for e, m in zip(rows["ecg_ids"][10:20], rows["metadata"][10:20])
                                                      if m["age"] >= 60}
    assert not (tmp_path / "p.vectors.tsv").exists()

"""`ecg-atlas export`: Parquet (and projector TSVs) hold exactly the stored ids, metadata and vectors."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pyarrow.parquet as pq

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

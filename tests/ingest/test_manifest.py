"""Manifests and metadata CSVs: one reader and one typing rule for `ecg-atlas ingest --metadata`
and `ecg-atlas embed --engine ray --manifest` (ecg_atlas/ingest/manifest.py)."""

from __future__ import annotations

import csv

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ecg_atlas.bulk.ray_job import inputs_from_manifest
from ecg_atlas.errors import AtlasError
from ecg_atlas.ingest.manifest import read_metadata_csv, text_column_parser


def _typed(values: dict) -> dict:
    return {k: (type(v).__name__, v) for k, v in values.items()}


def test_ingest_and_the_ray_path_type_the_sample_manifest_alike(ecg_dir):
    """The same real manifest through `ingest --metadata` and `embed --engine ray --manifest`:
    the same ECGs, patients, metadata keys, types and values."""
    manifest = ecg_dir / "manifest.csv"
    patients, metadata = read_metadata_csv(manifest, "record", None, None)
    inputs = inputs_from_manifest(manifest, path_column="record", id_column="record")
    assert len(inputs) == len(metadata) == 367
    for item in inputs:
        assert _typed(item.metadata) == _typed(metadata[item.ecg_id]), item.ecg_id
        assert item.patient_id == patients[item.ecg_id]
    sph = metadata["sph/SPH00001"]  # label lists, integers, booleans and text, each as one type per column
    assert sph["labels_abbr"] == ["SB", "SA"] and sph["age"] == 55 and sph["has_nan"] is False
    assert sph["source_repo"] == "tuijalei/12-lead-ecg-classifier" and "notes" not in sph  # empty: unset


def test_ids_paths_and_patient_ids_are_never_typed(ecg_dir, tmp_path):
    record = ecg_dir / "cinc_cpsc2018" / "A0001.hea"
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,ecg_id,patient_id,age,code\n{record},00123,007,61,00042\n")
    [item] = inputs_from_manifest(manifest, id_column="ecg_id")
    patients, metadata = read_metadata_csv(manifest, "ecg_id", None, ["age", "code"])
    assert (item.ecg_id, item.patient_id) == ("00123", "007") and patients == {"00123": "007"}
    assert item.metadata == metadata["00123"] == {"age": 61, "code": 42}


def test_a_parquet_manifest_keeps_its_own_types(ecg_dir, tmp_path):
    record = str(ecg_dir / "cinc_cpsc2018" / "A0001.hea")
    table = pa.table({"path": [record], "patient_id": [None], "labels": [["AF", "RBBB"]], "code": ["00042"]})
    pq.write_table(table, tmp_path / "manifest.parquet")
    [item] = inputs_from_manifest(tmp_path / "manifest.parquet")
    assert item.patient_id is None and item.metadata == {"labels": ["AF", "RBBB"], "code": "00042"}


def test_a_ragged_csv_is_refused_by_name_on_both_paths(ecg_dir, tmp_path):
    manifest = tmp_path / "ragged.csv"
    manifest.write_text(f"path,age\n{ecg_dir / 'cinc_cpsc2018' / 'A0001.hea'},61\nonly-one-field\n")
    with pytest.raises(AtlasError, match="cannot read manifest .*ragged.csv"):
        read_metadata_csv(manifest, "path", None, None)
    with pytest.raises(AtlasError, match="cannot read manifest .*ragged.csv"):
        inputs_from_manifest(manifest)


def test_a_column_becomes_a_label_list_only_when_its_values_look_like_lists(ecg_dir):
    rows = list(csv.DictReader(open(ecg_dir / "manifest.csv")))
    parse = {c: text_column_parser([r[c] for r in rows]) for c in ("label_groups", "labels_abbr", "license", "notes")}
    assert parse["label_groups"]("AF_AFL;STACH") == ["AF_AFL", "STACH"]
    assert parse["labels_abbr"]("RBBB") == ["RBBB"]
    # one ';' in prose (the sample manifest's licence column) does not make a label list
    licence = next(r["license"] for r in rows if ";" in r["license"])
    assert parse["license"](licence) == licence and parse["notes"]("a; b") == "a; b"
    assert text_column_parser(["a b;c", "d"], labels=True)("a b;c") == ["a b", "c"]  # when asked for
    assert text_column_parser(["yes", "no", ""])("yes") is True  # the store's boolean words
    assert text_column_parser(["1", "0"])("1") == 1  # 1 / 0 alone are integers

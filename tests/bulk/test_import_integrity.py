"""Import integrity (issue 24, items 7 and 8): damaged shards are refused by their page checksums
and the store keeps nothing of that import; shards written before checksums still import; rows
are refused one by one, with a reason and a count, for vectors of norms no encoder produces, a
missing ecg_id or an unknown status; no Import message or server log line above DEBUG names the
data root's absolute path."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ecg_atlas.bulk.shards import identity_of, shard_files, write_shard
from ecg_atlas.cli import main as cli_main
from ecg_atlas.client import error_info
from ecg_atlas.errors import MetadataLimitError, ShardError
from ecg_atlas.index import Store
from ecg_atlas.index.vectors import VECTOR_NORM_MAX, VECTOR_NORM_MIN
from tests.service.conftest import WRITE_TOKEN, cli, start_server

from .shard_edits import damage, rewrite_shard, vectors, with_column, write_without_checksums


def copy_shards(files: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    for file in files:
        shutil.copyfile(file, folder / file.name)
    return shard_files([folder])


def embedded_rows(files: list[Path]) -> int:
    return sum(pq.read_table(f, columns=["status"]).column(0).to_pylist().count("embedded") for f in files)


def import_json(capsys, *args: str) -> tuple[int, dict | str]:
    capsys.readouterr()
    code = cli_main(["import", *args, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else err


@pytest.mark.slow
@pytest.mark.parametrize(("column", "n_bytes"), [("record_vector", 64), ("ecg_id", 8)])
def test_a_damaged_shard_is_refused_and_the_store_keeps_nothing_of_that_import(corpus_shards, tmp_path, capsys,
                                                                               column, n_bytes):
    folder, _, _ = corpus_shards
    files = copy_shards(shard_files([folder]), tmp_path / "job")
    damage(files[1], column, n_bytes)  # shard 0 is read (and inserted) before it
    with Store.open(tmp_path / "store") as store:
        with pytest.raises(ShardError) as refused:
            store.import_shards(files, identity=identity_of(files))
        assert refused.value.reason == "shard_checksum_mismatch"
        assert "job/shard-000001.parquet" in str(refused.value) and str(tmp_path) not in str(refused.value)
        assert store.info().n_ecgs == store.info().n_index_entries == 0  # one transaction: nothing of it
        rest = [f for f in files if f != files[1]]
        done = store.import_shards(rest, identity=identity_of(rest))  # the others, named without it
        assert done.inserted == embedded_rows(rest) == store.info().n_ecgs
    code, err = import_json(capsys, str(tmp_path / "job"), "--store", str(tmp_path / "cli-store"))
    assert code == 2 and "fails its checksum" in err and "job/shard-000001.parquet" in err


@pytest.mark.slow
def test_shards_written_before_checksums_still_import(corpus_shards, tmp_path):
    folder, summary, _ = corpus_shards
    old = tmp_path / "old"
    old.mkdir()
    for file in shard_files([folder]):
        write_without_checksums(pq.read_table(file), old / file.name)
    files = shard_files([old])
    with Store.open(tmp_path / "store") as store:
        done = store.import_shards(files, identity=identity_of(files))
        assert (done.inserted, done.refused) == (summary.embedded, summary.refused)
        assert store.info().n_ecgs == store.info().n_index_entries == summary.embedded


@pytest.mark.slow
def test_vectors_of_norms_no_encoder_produces_are_refused_per_row(corpus_shards, tmp_path):
    folder, summary, _ = corpus_shards
    files = copy_shards(shard_files([folder]), tmp_path / "job")
    status = pq.read_table(files[0], columns=["status"]).column(0).to_pylist()
    rows = [i for i, s in enumerate(status) if s == "embedded"][:6]
    assert len(rows) == 6

    def scale_to(vector: np.ndarray, norm: float) -> None:
        vector *= norm / np.linalg.norm(vector)

    def change(records, segment_values, offsets):
        records[rows[0], 3] = 4.1e36  # the value issue 24 found imported from a damaged shard
        scale_to(records[rows[1]], VECTOR_NORM_MIN / 10)
        scale_to(records[rows[2]], VECTOR_NORM_MAX * 2)
        segment_values[offsets[rows[3]]] *= 1e6  # a segment vector: Get and segment search return it
        scale_to(records[rows[4]], VECTOR_NORM_MIN * 50)  # inside the bounds: stored
        scale_to(records[rows[5]], VECTOR_NORM_MAX / 2)

    table = rewrite_shard(files[0], files[0], change)
    ids = table.column("ecg_id").to_pylist()
    with Store.open(tmp_path / "store") as store:
        done = store.import_shards(files, identity=identity_of(files))
        assert done.refusals["vector_norm_out_of_range"] == 4
        assert (done.inserted, done.refused) == (summary.embedded - 4, summary.refused + 4)
        assert sum(done.refusals.values()) == done.refused
        assert store.existing([ids[i] for i in rows[:4]]) == set()
        assert store.existing([ids[i] for i in rows[4:]]) == {ids[i] for i in rows[4:]}
        kept = vectors(table)[0][rows[5]]
        hit = store.search(kept[None, :], k=1)[0][0]
        assert (hit.ecg_id, round(hit.score, 5)) == (ids[rows[5]], 1.0)


@pytest.mark.slow
def test_the_norm_bounds_leave_real_encoders_a_wide_margin(shared_data, ecg_dir):
    """The bounds were chosen from real outputs (index/shard_rows.py); every encoder's record and
    segment vectors on real ECGs must lie two orders of magnitude inside them."""
    import csv

    from ecg_atlas.embedder import EmbeddingEngine, load_encoder, read_ecg
    from ecg_atlas.errors import InvalidECGError

    first_of_each: dict[str, str] = {}  # one 12-lead ECG of each source database
    with open(ecg_dir / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["is_12lead_std"] == "True":
                first_of_each.setdefault(row["dataset"], row["record"])
    recordings = [read_ecg(ecg_dir / f"{record}.hea") for record in first_of_each.values()]
    for spec in ("bundled", shared_data / "parity/tiny_pretrained.pt",
                 shared_data / "parity_encoders/hubert_ecg/tiny_hf",
                 shared_data / "parity_encoders/ecgfounder/tiny_12lead_ECGFounder.pth"):
        encoder = load_encoder(spec)
        windows = []
        for recording in recordings:
            try:
                windows.append((len(windows), encoder.preprocess(recording)))
            except InvalidECGError:  # flat leads, too short: refused before any vector
                continue
        assert len(windows) >= 5, spec
        norms = []
        for done in EmbeddingEngine(encoder).embed_records(windows):
            norms += [np.linalg.norm(done.record_vector), *np.linalg.norm(done.segment_vectors, axis=1)]
        assert VECTOR_NORM_MIN * 100 < min(norms) and max(norms) < VECTOR_NORM_MAX / 100, (spec, min(norms), max(norms))


def ids_and_statuses_broken(source: Path, target: Path) -> dict[str, int]:
    """`source` written to `target` with three embedded rows missing their ecg_id (two null: once
    "sequence item 0: expected str instance, NoneType found") and two of an unknown status."""
    table = pq.read_table(source)
    ids, status = table.column("ecg_id").to_pylist(), table.column("status").to_pylist()
    rows = [i for i, s in enumerate(status) if s == "embedded"][:5]
    ids[rows[0]] = ids[rows[1]] = None
    ids[rows[2]] = ""
    status[rows[3]], status[rows[4]] = "pending", None
    write_shard(target, with_column(with_column(table, "ecg_id", ids), "status", status))
    return {"missing_ecg_id": 3, "unknown_status": 2}


@pytest.mark.slow
def test_rows_without_an_id_or_of_an_unknown_status_get_reasons_and_counts(corpus_shards, tmp_path, capsys):
    folder, summary, _ = corpus_shards
    files = copy_shards(shard_files([folder]), tmp_path / "job")
    expected = ids_and_statuses_broken(files[0], files[0])
    with Store.open(tmp_path / "store") as store:
        done = store.import_shards(files, identity=identity_of(files))
        assert {k: done.refusals[k] for k in expected} == expected
        assert (done.inserted, done.skipped_existing) == (summary.embedded - 5, 0)
        assert done.refused == sum(done.refusals.values()) == summary.refused + 5
        assert store.info().n_ecgs == store.info().n_index_entries == summary.embedded - 5
    code, printed = import_json(capsys, str(tmp_path / "job"), "--store", str(tmp_path / "cli-store"))
    assert code == 0 and {k: printed["refusals"][k] for k in expected} == expected
    assert printed["refused"] == sum(printed["refusals"].values())


_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+) ")


def records_above_debug(log: str) -> list[str]:
    """The server log's records (a record's continuation lines with it) above DEBUG."""
    records: list[tuple[str, str]] = []
    for line in log.splitlines():
        found = _RECORD.match(line)
        if found or not records:
            records.append((found[1] if found else "?", line))
        else:
            records[-1] = (records[-1][0], records[-1][1] + "\n" + line)
    return [text for level, text in records if level != "DEBUG"]


@pytest.mark.slow
def test_import_respects_the_store_metadata_column_cap(corpus_shards, tmp_path):
    """Shards add their metadata columns under the same cap as Ingest: past it the import is refused
    whole and the store gains neither rows nor columns."""
    folder, summary, _ = corpus_shards
    files = shard_files([folder])
    with Store.open(tmp_path / "capped", max_metadata_columns=2) as store:
        columns_before = set(store.columns())
        with pytest.raises(MetadataLimitError) as refused:
            store.import_shards(files, identity=identity_of(files))
        assert refused.value.reason == "too_many_columns"
        assert refused.value.details["max_columns"] == 2
        assert store.info().n_ecgs == 0 and set(store.columns()) == columns_before
    with Store.open(tmp_path / "roomy") as store:  # the default cap holds the corpus's columns
        assert store.import_shards(files, identity=identity_of(files)).inserted == summary.embedded


@pytest.mark.slow
def test_import_over_rpc_reports_reasons_and_names_no_absolute_server_path(corpus_shards, tiny_checkpoint, tmp_path):
    folder, summary, _ = corpus_shards
    files = shard_files([folder])
    root = tmp_path / "data-root"
    copy_shards(files, root / "nulls")
    expected = ids_and_statuses_broken(files[0], root / "nulls" / files[0].name)
    copy_shards(files[:2], root / "damaged")
    damage(root / "damaged" / files[1].name, "record_vector")
    (root / "empty").mkdir()
    (root / "garbage").mkdir()
    (root / "garbage" / "shard-000000.parquet").write_bytes(b"not parquet at all " * 64)
    (root / "truncated").mkdir()
    (root / "truncated" / "shard-000000.parquet").write_bytes(files[0].read_bytes()[: files[0].stat().st_size // 2])
    table = pq.read_table(files[0])
    (root / "anonymous").mkdir()
    pq.write_table(table.replace_schema_metadata(None), root / "anonymous" / "shard-000000.parquet")
    (root / "no-status").mkdir()
    pq.write_table(table.drop_columns(["status"]), root / "no-status" / "shard-000000.parquet")
    (root / "blob").mkdir()
    pq.write_table(table.append_column("metadata.blob", pa.array([b"x"] * len(table), pa.binary())),
                   root / "blob" / "shard-000000.parquet")
    copy_shards(files[:1], root / "twice")
    shutil.copyfile(files[0], root / "twice" / "shard-000001.parquet")
    outside = copy_shards(files[:1], tmp_path / "outside")[0]
    (root / "link").mkdir()
    (root / "link" / "shard-000000.parquet").symlink_to(outside)

    refused_cases = {  # name sent -> the reason expected ("" : any reason)
        "damaged": "shard_checksum_mismatch", "empty": "", "garbage": "shard_unreadable",
        "truncated": "shard_unreadable", "anonymous": "not_a_shard", "no-status": "not_a_shard", "blob": "",
        "twice": "duplicate_ecg_ids", "link": "", str(root / "missing"): "", str(root / "damaged" / "x.parquet"): "",
        "../outside": "", str(tmp_path / "outside"): "", "missing": "",
    }
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs", "--data-root", str(root), verbose=2)
    said: list[str] = []
    try:
        with server.client() as client:
            done = client.import_shards(["nulls"])
            assert {k: done["refusals"][k] for k in expected} == expected
            assert (done["inserted"], done["refused"]) == (summary.embedded - 5, summary.refused + 5)
            assert done["refused"] == sum(done["refusals"].values())
            for name, reason in refused_cases.items():
                with pytest.raises(grpc.RpcError) as refused:
                    client.import_shards([name])
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, refused.value.details())
                got, details = error_info(refused.value)
                assert got and (got == reason or not reason), (name, got, refused.value.details())
                said += [refused.value.details(), json.dumps(details)]
            assert int(client.info()["ecg_count"]) == summary.embedded - 5  # nothing of a refused import
        via_cli = cli("import", str(root / "damaged"), "--server", server.address, "--token", WRITE_TOKEN, check=False)
        assert via_cli.returncode == 2 and "fails its checksum" in via_cli.stderr
        said.append(via_cli.stderr)
    finally:
        server.stop()
    log = server.log()
    assert "DEBUG" in log and "Import refused" in log  # the refusals were logged, at DEBUG only
    above = records_above_debug(log)
    assert above
    for where in {str(tmp_path), os.path.realpath(tmp_path)}:
        assert not [s for s in said if where in s], [s for s in said if where in s]
        assert not [r for r in above if where in r], [r for r in above if where in r]

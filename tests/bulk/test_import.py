"""`ecg-atlas import` / the Import RPC: shards into a store that answers as an ingested one does."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from ecg_atlas.bulk.shards import identity_of, shard_files
from ecg_atlas.cli import main as cli_main
from ecg_atlas.errors import EncoderMismatchError, StoreError
from ecg_atlas.index import Store
from ecg_atlas.index.store import EncoderIdentity
from tests.service.conftest import start_server

from .shard_edits import rewrite_shard

pytestmark = pytest.mark.slow  # Ray shards of the whole corpus and real servers


def test_import_is_idempotent_and_keeps_what_the_job_read(corpus_shards, tmp_path):
    folder, summary, _ = corpus_shards
    store_dir = tmp_path / "store"
    assert cli_main(["import", str(folder), "--store", str(store_dir)]) == 0
    files = shard_files([folder])
    with Store.open(store_dir) as store:
        assert store.info().n_ecgs == store.info().n_index_entries == summary.embedded
        again = store.import_shards(files, identity=identity_of(files))
        assert (again.inserted, again.skipped_existing, again.refused) == (0, summary.embedded, summary.refused)
        row = store.get(["cinc_cpsc2018/A0001"], columns=["age", "sex", "fs", "n_segments", "source"])[0]
        assert (row["age"], row["sex"], row["fs"], row["n_segments"]) == (74, "M", 500.0, 3)
        assert row["source"].endswith("cinc_cpsc2018/A0001.hea")
    other = EncoderIdentity("another-encoder", "0" * 64, "ecgfm-v1", summary.dim)
    with Store.open(tmp_path / "other", identity=other) as store, pytest.raises(EncoderMismatchError):
        store.import_shards(files, identity=identity_of(files))


def test_shards_keep_vectors_out_of_parquet_dictionaries(corpus_shards):
    """Embedding floats never fit a dictionary; trying one cost the import a 3.5x slower read."""
    import pyarrow.parquet as pq

    folder, _, _ = corpus_shards
    meta = pq.ParquetFile(shard_files([folder])[0]).metadata
    encodings = {}
    for group in range(meta.num_row_groups):
        for i in range(meta.num_columns):
            column = meta.row_group(group).column(i)
            encodings.setdefault(column.path_in_schema.split(".")[0], set()).update(column.encodings)
    for vectors in ("record_vector", "segment_vectors"):
        assert not any("DICTIONARY" in e for e in encodings[vectors]), (vectors, encodings[vectors])
    assert any("DICTIONARY" in e for e in encodings["ecg_id"])  # ids and metadata keep theirs


def test_a_store_built_by_import_answers_searches_as_one_built_by_ingest(corpus_server, corpus_shards, tiny_checkpoint,
                                                                          tmp_path):
    folder, summary, _ = corpus_shards
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs", "--data-root", str(folder.parent))
    try:
        with server.client() as imported, corpus_server.client() as ingested:
            with pytest.raises(grpc.RpcError) as refused:  # outside the data roots: never opened
                imported.import_shards([str(tmp_path.parent)])
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            done = imported.import_shards([folder.name])  # relative to the data root
            assert (done["inserted"], done["refused"]) == (summary.embedded, summary.refused)
            assert sum(done["refusals"].values()) == summary.refused  # per reason code, over the wire
            assert imported.info()["ecg_count"] == ingested.info()["ecg_count"]
            queries = sorted(imported.suggest_ids("", limit=200))[::8]
            for query in queries:
                for where in (None, "age>=60"):
                    a = imported.search(ecg_id=query, k=10, where=where).hits
                    b = ingested.search(ecg_id=query, k=10, where=where).hits
                    assert [h.ecg_id for h in a] == [h.ecg_id for h in b], query
                    assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
    finally:
        server.stop()


def test_import_refuses_rows_whose_vectors_cannot_be_searched(corpus_shards, tmp_path):
    folder, summary, _ = corpus_shards
    files = shard_files([folder])
    bad = tmp_path / "shards"
    bad.mkdir()
    for file in files[1:]:
        (bad / file.name).write_bytes(file.read_bytes())

    def corrupt(records, segment_values, offsets):
        records[0, 3] = np.nan
        records[1] = 0.0
        records[2, 0] = np.inf
        segment_values[offsets[3] + 1, 5] = np.nan  # a segment vector of row 3: Ingest refuses it too

    table = rewrite_shard(files[0], bad / files[0].name, corrupt)
    assert table.column("status").to_pylist()[:4] == ["embedded"] * 4
    broken = table.column("ecg_id").to_pylist()[:4]
    files = shard_files([bad])
    with Store.open(tmp_path / "store") as store:
        done = store.import_shards(files, identity=identity_of(files))
        assert (done.inserted, done.skipped_existing) == (summary.embedded - 4, 0)
        assert done.refused == summary.refused + 4
        assert done.refusals["vector_not_finite"] == 3 and done.refusals["vector_all_zeros"] == 1
        assert sum(done.refusals.values()) == done.refused
        assert store.existing(broken) == set()
        assert store.info().n_ecgs == store.info().n_index_entries == summary.embedded - 4
        kept = table.slice(4, 1)
        hit = store.search(kept.column("record_vector").combine_chunks().flatten().to_numpy()[None, :], k=1)[0][0]
        assert (hit.ecg_id, round(hit.score, 5)) == (kept.column("ecg_id")[0].as_py(), 1.0)
        again = store.import_shards(files, identity=identity_of(files))
        assert (again.inserted, again.skipped_existing, again.refused) == (0, summary.embedded - 4, summary.refused + 4)


def test_import_of_vectors_of_another_length_stores_nothing(corpus_shards, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder, summary, _ = corpus_shards
    source = shard_files([folder])[0]
    table = pq.read_table(source)
    records = table.column("record_vector").combine_chunks()
    values = records.values.to_numpy().reshape(-1, summary.dim)[:, :-1]
    shorter = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), summary.dim - 1, mask=records.is_null())
    target = tmp_path / "shard-000000.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("record_vector"), "record_vector", shorter), target)
    with Store.open(tmp_path / "store") as store:
        with pytest.raises(StoreError, match="record_vector"):
            store.import_shards([target], identity=identity_of([target]))
        assert store.info().n_ecgs == 0

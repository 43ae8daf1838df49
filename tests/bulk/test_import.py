"""`ecg-atlas import` / the Import RPC: shards into a store that answers as an ingested one does."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from ecg_atlas.bulk.shards import identity_of, shard_files
from ecg_atlas.cli import main as cli_main
from ecg_atlas.errors import EncoderMismatchError
from ecg_atlas.index import Store
from ecg_atlas.index.store import EncoderIdentity
from tests.service.conftest import corpus_server, start_server  # noqa: F401 - the ingested reference server


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

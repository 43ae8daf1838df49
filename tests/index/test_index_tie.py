"""The index file is tied to its store: a file copied in from another store, or from an older
state of this one, is detected at open by the digest in index.json and rebuilt from DuckDB."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from ecg_atlas.index import Store

from .conftest import make_rows, upsert_rows

WARNED = "index file does not match its index.json (digest differs"


def _self_retrieval_is_exact(store: Store, rows: dict) -> None:
    """Every stored record's nearest neighbour is itself."""
    hits = store.search(rows["vectors"], k=1)
    got = [h[0].ecg_id for h in hits]
    wrong = sum(g != want for g, want in zip(got, rows["ecg_ids"]))
    assert wrong == 0, f"{wrong} of {len(got)} records do not find themselves"


def _index_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "ecg_atlas.index.store" and r.levelno == logging.WARNING and "index file" in r.getMessage()]


def test_index_json_records_digest_and_entries_and_a_clean_reopen_trusts_them(tmp_path, rows, caplog):
    with Store.open(tmp_path / "s") as s:
        upsert_rows(s, rows)
    meta = json.loads((tmp_path / "s" / "index.json").read_text())
    assert len(meta["sha256"]) == 64 and meta["file_entries"] == meta["entries"] == len(rows["ecg_ids"])
    caplog.set_level(logging.INFO, logger="ecg_atlas.index.store")
    with Store.open(tmp_path / "s") as s:
        _self_retrieval_is_exact(s, rows)
    assert not _index_warnings(caplog)


def test_hnsw_with_tombstones_reopens_without_a_rebuild(tmp_path, rows, caplog):
    with Store.open(tmp_path / "s", index_kind="hnsw") as s:
        upsert_rows(s, rows)
        s.delete(rows["ecg_ids"][:5])
    caplog.set_level(logging.INFO, logger="ecg_atlas.index.store")
    with Store.open(tmp_path / "s") as s:
        assert s.info().n_index_entries == len(rows["ecg_ids"]) - 5
    assert not _index_warnings(caplog)


def test_index_file_from_another_store_is_detected_and_rebuilt(tmp_path, rows, caplog):
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    with Store.open(mine) as s:
        upsert_rows(s, rows)
    other = make_rows(len(rows["ecg_ids"]), seed=42)  # same ids, sequence numbers and shape; other vectors
    with Store.open(theirs) as s:
        upsert_rows(s, other)
    my_file = json.loads((mine / "index.json").read_text())["file"]
    their_file = json.loads((theirs / "index.json").read_text())["file"]
    shutil.copyfile(theirs / their_file, mine / my_file)  # the server is down; someone copies a file over

    caplog.set_level(logging.INFO, logger="ecg_atlas.index.store")
    with Store.open(mine) as s:
        _self_retrieval_is_exact(s, rows)
    warnings = _index_warnings(caplog)
    assert len(warnings) == 1 and WARNED in warnings[0] and "rebuilding from DuckDB" in warnings[0]
    assert str(tmp_path) not in warnings[0]

    caplog.clear()  # the rebuilt index was saved with its own digest: the next open trusts it
    with Store.open(mine) as s:
        _self_retrieval_is_exact(s, rows)
    assert not _index_warnings(caplog)


def test_index_file_from_an_older_state_of_this_store_is_detected(tmp_path, rows, caplog):
    path = tmp_path / "s"
    with Store.open(path) as s:
        upsert_rows(s, rows)
    old_meta = json.loads((path / "index.json").read_text())
    old_bytes = (path / old_meta["file"]).read_bytes()
    more = make_rows(200, seed=5, offset=10_000)
    with Store.open(path) as s:
        upsert_rows(s, more)
        s.delete(rows["ecg_ids"][:50])
        replaced = make_rows(20, seed=6)  # new vectors under 20 ids that stay
        replaced["ecg_ids"] = rows["ecg_ids"][100:120]
        upsert_rows(s, replaced)
    meta = json.loads((path / "index.json").read_text())
    (path / meta["file"]).write_bytes(old_bytes)  # an old save restored under the current name

    caplog.set_level(logging.INFO, logger="ecg_atlas.index.store")
    with Store.open(path) as s:
        expected = {"ecg_ids": [], "vectors": []}
        for source in (rows, more):
            for ecg_id, vector in zip(source["ecg_ids"], source["vectors"]):
                expected["ecg_ids"].append(ecg_id)
                expected["vectors"].append(vector)
        keep = [i for i, e in enumerate(expected["ecg_ids"]) if e not in set(rows["ecg_ids"][:50])]
        by_id = {e: expected["vectors"][i] for i, e in enumerate(expected["ecg_ids"])}
        by_id.update(zip(replaced["ecg_ids"], replaced["vectors"]))
        ids = [expected["ecg_ids"][i] for i in keep]
        assert s.info().n_ecgs == s.info().n_index_entries == len(ids)
        _self_retrieval_is_exact(s, {"ecg_ids": ids, "vectors": np.stack([by_id[i] for i in ids])})
    warnings = _index_warnings(caplog)
    assert len(warnings) == 1 and WARNED in warnings[0]


@pytest.mark.parametrize("damage", ["no_digest", "wrong_count"])
def test_index_json_without_digest_or_with_a_wrong_count_is_rebuilt(tmp_path, rows, caplog, damage):
    path = tmp_path / "s"
    with Store.open(path) as s:
        upsert_rows(s, rows)
    meta = json.loads((path / "index.json").read_text())
    if damage == "no_digest":  # written before digests were recorded
        del meta["sha256"]
    else:
        meta["file_entries"] += 1
    (path / "index.json").write_text(json.dumps(meta))
    caplog.set_level(logging.INFO, logger="ecg_atlas.index.store")
    with Store.open(path) as s:
        _self_retrieval_is_exact(s, rows)
    warnings = _index_warnings(caplog)
    assert len(warnings) == 1 and ("no digest" in warnings[0] if damage == "no_digest" else "entries" in warnings[0])

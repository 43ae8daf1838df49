"""The store on real DuckDB files and FAISS indexes: exactness, persistence, deletes, refusals."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from ecg_atlas.errors import EncoderMismatchError, NotFoundError, StoreError
from ecg_atlas.index import All, Any, EncoderIdentity, Store, Term, parse_filter
from ecg_atlas.index import store as store_module

from .conftest import DIM, IDENTITY, make_rows, reference_search, upsert_rows

FILTERS = [
    (Term("age", ">=", 60), lambda m: m["age"] >= 60),
    (All([Term("sex", "=", "F"), Term("labels", "contains", "AF")]), lambda m: m["sex"] == "F" and "AF" in m["labels"]),
    (Any([Term("age", "<", 25), Term("site", "in", ["site-1", "site-2"])]),
     lambda m: m["age"] < 25 or m.get("site") in ("site-1", "site-2")),
    (Term("site", "is null"), lambda m: "site" not in m),
    (Term("site", "not in", ["site-1"]), lambda m: m.get("site") not in (None, "site-1")),
    # Highly selective: a handful of rows, fewer than k for some queries.
    (All([Term("age", "=", 30), Term("labels", "contains", "LBBB")]),
     lambda m: m["age"] == 30 and "LBBB" in m["labels"]),
]


@pytest.fixture(params=["faiss", "torch"])
def store(request, tmp_path, rows):
    with Store.open(tmp_path / "store", device="cpu", backend=request.param) as s:
        upsert_rows(s, rows)
        yield s


def test_unfiltered_search_is_exact_top_k(store, rows):
    queries = np.random.default_rng(5).standard_normal((20, DIM)).astype(np.float32)
    hits = store.search(queries, k=10)
    for q, got in zip(queries, hits):
        assert [h.ecg_id for h in got] == reference_search(rows, q, 10)
        scores = [h.score for h in got]
        assert scores == sorted(scores, reverse=True)
    x = rows["vectors"][3] / np.linalg.norm(rows["vectors"][3])
    assert store.search(rows["vectors"][3], k=1)[0][0].score == pytest.approx(float(x @ x), abs=1e-5)


@pytest.mark.parametrize("which", range(len(FILTERS)))
def test_filtered_search_is_exact_top_k_of_allowed_rows(store, rows, which):
    tree, allow = FILTERS[which]
    queries = np.random.default_rng(which).standard_normal((8, DIM)).astype(np.float32)
    for q, got in zip(queries, store.search(queries, k=10, filter=tree, columns=["age", "sex", "labels", "site"])):
        expected = reference_search(rows, q, 10, allow=lambda i: allow(rows["metadata"][i]))
        assert [h.ecg_id for h in got] == expected
        for h in got:
            assert allow({k: v for k, v in h.metadata.items() if v is not None})


def test_search_by_stored_id_excludes_itself_and_same_patient(store, rows):
    hits = store.search(ecg_ids=["ecg-10", "ecg-20"], k=5, exclude_same_patient=True, columns=["patient_id"])
    for query_index, got in zip((10, 20), hits):
        patient = rows["patient_ids"][query_index]
        same = {rows["ecg_ids"][i] for i, p in enumerate(rows["patient_ids"]) if p == patient}
        assert [h.ecg_id for h in got] == reference_search(rows, rows["vectors"][query_index], 5, exclude=same)
        assert all(h.metadata["patient_id"] != patient for h in got)
    own = store.search(ecg_ids=["ecg-10"], k=3)[0]
    assert "ecg-10" not in [h.ecg_id for h in own]


def test_exclude_same_patient_for_query_vectors_needs_the_patient(store, rows):
    q = rows["vectors"][30]
    with pytest.raises(StoreError, match="query_patient_ids"):
        store.search(q, k=3, exclude_same_patient=True)
    got = store.search(q, k=3, exclude_same_patient=True, query_patient_ids=[rows["patient_ids"][30]])[0]
    assert rows["patient_ids"][30] not in {store.get([h.ecg_id], ["patient_id"])[0]["patient_id"] for h in got}


def test_reopen_after_close_gives_the_same_answers(tmp_path, rows):
    queries = np.random.default_rng(1).standard_normal((5, DIM)).astype(np.float32)
    with Store.open(tmp_path / "s") as s:
        upsert_rows(s, rows)
        before = [[h.ecg_id for h in hs] for hs in s.search(queries, k=7, filter=Term("age", ">", 40))]
    meta = json.loads((tmp_path / "s" / "index.json").read_text())
    assert meta["high_water_seq"] == len(rows["ecg_ids"]) and meta["entries"] == len(rows["ecg_ids"])
    with Store.open(tmp_path / "s") as s:
        info = s.info()
        assert (info.n_ecgs, info.n_index_entries, info.identity) == (len(rows["ecg_ids"]),) * 2 + (IDENTITY,)
        assert [[h.ecg_id for h in hs] for hs in s.search(queries, k=7, filter=Term("age", ">", 40))] == before


@pytest.mark.parametrize("damage", ["missing", "corrupt", "other_store", "stale"])
def test_unusable_or_stale_index_file_is_repaired_from_duckdb(tmp_path, rows, damage):
    with Store.open(tmp_path / "s") as s:
        upsert_rows(s, rows)
    store_dir = tmp_path / "s"
    meta = json.loads((store_dir / "index.json").read_text())
    if damage == "missing":
        (store_dir / meta["file"]).unlink()
    elif damage == "corrupt":
        (store_dir / meta["file"]).write_bytes(b"\x00garbage" * 10)
    elif damage == "other_store":
        meta["store_uuid"] = "0" * 32
        (store_dir / "index.json").write_text(json.dumps(meta))
    else:  # an index saved before the last 100 rows and a delete were committed
        saved = (store_dir / meta["file"]).read_bytes()
        with Store.open(store_dir) as s:
            upsert_rows(s, make_rows(100, seed=9, offset=10_000))
            s.delete(["ecg-0"])
        meta2 = json.loads((store_dir / "index.json").read_text())
        (store_dir / meta2["file"]).unlink()
        (store_dir / meta["file"]).write_bytes(saved)
        (store_dir / "index.json").write_text(json.dumps(meta))
    with Store.open(store_dir) as s:
        n = s.info().n_ecgs
        assert s.info().n_index_entries == n
        hits = s.search(rows["vectors"][:3], k=n)
        assert all(len(h) == n for h in hits)
        assert "ecg-0" not in {h.ecg_id for h in hits[0]} or damage != "stale"


def test_upsert_is_idempotent_and_replaces_by_ecg_id(tmp_path, rows):
    with Store.open(tmp_path / "s") as s:
        assert upsert_rows(s, rows).inserted == len(rows["ecg_ids"])
        again = upsert_rows(s, rows)
        assert (again.inserted, again.updated) == (0, len(rows["ecg_ids"]))
        assert s.info().n_ecgs == s.info().n_index_entries == len(rows["ecg_ids"])
        new_vector = -rows["vectors"][0]
        s.upsert(["ecg-0"], new_vector[None], identity=IDENTITY, metadata=[{"age": 99}])
        stored = s.get(["ecg-0"], columns=["record_vector", "age"])[0]
        np.testing.assert_array_equal(stored["record_vector"], new_vector)
        assert stored["age"] == 99
        assert s.search(new_vector, k=1)[0][0].ecg_id == "ecg-0"
        # the old vector no longer finds ecg-0 at the top
        assert s.search(rows["vectors"][0], k=1)[0][0].ecg_id != "ecg-0"


def test_existing_names_exactly_the_stored_ids(tmp_path, rows):
    with Store.open(tmp_path / "s") as s:
        assert s.existing(["ecg-1"]) == set()  # empty store, no identity yet
        upsert_rows(s, rows)
        assert s.existing(["ecg-1"]) == {"ecg-1"} and s.existing(["no-such-ecg"]) == set()
        assert s.existing(["ecg-3", "nope", "ecg-3", "ecg-5"]) == {"ecg-3", "ecg-5"}
        s.delete(["ecg-3"])
        assert s.existing(["ecg-3", "ecg-5"]) == {"ecg-5"}
        assert s.existing([]) == set()


def test_warm_up_loads_what_the_first_write_needs_and_stores_nothing(tmp_path):
    # A server warms its store before it reports SERVING, so its first Ingest does not spend
    # ~0.2 s importing libraries under the GIL. Checked in a fresh interpreter: after warm_up,
    # the first upsert imports no module.
    import subprocess
    import sys

    code = f"""
import sys
import numpy as np
from ecg_atlas.index import EncoderIdentity, Store
with Store.open({str(tmp_path / "s")!r}) as store:
    store.warm_up()
    assert store.info().n_ecgs == 0
    loaded = set(sys.modules)
    ident = EncoderIdentity("m", "a" * 64, "v", 4)
    store.upsert(["e1"], np.ones((1, 4), np.float32), identity=ident, metadata=[{{"age": 3}}])
    print(sorted(set(sys.modules) - loaded), store.info().n_ecgs)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "1"]


def test_delete_by_id_and_patient_is_immediate_and_survives_reopen(tmp_path, rows):
    with Store.open(tmp_path / "s") as s:
        upsert_rows(s, rows)
        patient = rows["patient_ids"][40]
        withdrawn = {e for e, p in zip(rows["ecg_ids"], rows["patient_ids"]) if p == patient}
        assert s.delete(patient_ids=[patient]) == len(withdrawn)
        assert s.delete(["ecg-7", "no-such-ecg"]) == 1
        gone = withdrawn | {"ecg-7"}
        everything = s.search(rows["vectors"][40], k=len(rows["ecg_ids"]))[0]
        assert gone.isdisjoint(h.ecg_id for h in everything)
        assert len(everything) == len(rows["ecg_ids"]) - len(gone)
        with pytest.raises(NotFoundError, match="ecg-7"):
            s.get(["ecg-7"])
    with Store.open(tmp_path / "s") as s:
        assert gone.isdisjoint(h.ecg_id for h in s.search(rows["vectors"][40], k=len(rows["ecg_ids"]))[0])


def test_compaction_removes_deleted_vectors_from_disk(tmp_path, rows):
    store_dir = tmp_path / "s"
    # |(3, 4)| = 5 exactly, so the normalised vector's bytes are known whatever the arithmetic.
    withdrawn = np.zeros(DIM, np.float32)
    withdrawn[2], withdrawn[9] = 3.0, 4.0
    marker = (withdrawn / np.float32(5.0)).tobytes()
    with Store.open(store_dir) as s:
        upsert_rows(s, rows)
        s.upsert(["ecg-withdrawn"], withdrawn[None], identity=IDENTITY)

    def on_disk() -> bool:
        return any(marker in p.read_bytes() for p in store_dir.iterdir() if p.is_file())

    with Store.open(store_dir) as s:
        s.delete(["ecg-withdrawn"])
        assert on_disk()  # still in the saved index file until compaction
        s.compact()
        assert not on_disk()
        assert s.info().n_ecgs == len(rows["ecg_ids"])
        assert s.search(withdrawn, k=1)[0][0].ecg_id != "ecg-withdrawn"
    with Store.open(store_dir) as s:
        assert s.info().n_ecgs == s.info().n_index_entries == len(rows["ecg_ids"])


def test_update_metadata_keeps_vectors_and_adds_typed_columns(tmp_path, rows):
    with Store.open(tmp_path / "s") as s:
        upsert_rows(s, rows)
        before = s.get(["ecg-1"], columns=["record_vector"])[0]["record_vector"]
        s.update_metadata({"ecg-1": {"labels": ["STEMI"], "reviewed": True, "score": 0.5}, "ecg-2": {"score": 2}})
        assert s.columns()["reviewed"] == "BOOLEAN" and s.columns()["score"] == "DOUBLE"
        row = s.get(["ecg-1"], columns=["record_vector", "labels", "reviewed", "score"])[0]
        np.testing.assert_array_equal(row["record_vector"], before)
        assert (row["labels"], row["reviewed"], row["score"]) == (["STEMI"], True, 0.5)
        hits = s.search(rows["vectors"][1], k=3, filter=Term("labels", "contains", "STEMI"))[0]
        assert [h.ecg_id for h in hits] == ["ecg-1"]
        with pytest.raises(NotFoundError, match="nope"):
            s.update_metadata({"ecg-1": {"score": 1.0}, "nope": {"score": 1.0}})
        assert s.get(["ecg-1"], columns=["score"])[0]["score"] == 0.5  # nothing applied
        with pytest.raises(StoreError, match="BOOLEAN"):
            s.update_metadata({"ecg-1": {"reviewed": "maybe"}})
        # one transaction: a key that fails after a column was added and another widened undoes both
        with pytest.raises(StoreError, match="BOOLEAN"):
            s.update_metadata({"ecg-3": {"fresh": 1, "age": 40.5}, "ecg-4": {"reviewed": "maybe"}})
        assert "fresh" not in s.columns() and s.columns()["age"] == "BIGINT"
        assert s.get(["ecg-3"], columns=["age"])[0]["age"] == rows["metadata"][3]["age"]
    with Store.open(tmp_path / "s") as s:
        assert "fresh" not in s.columns() and s.columns()["age"] == "BIGINT"


@pytest.mark.parametrize("field,value", [("model_id", "other-model"), ("checkpoint_sha256", "b" * 64),
                                         ("preprocessing_version", "ecgfm-v2"), ("dim", DIM * 2)])
def test_vectors_from_another_encoder_are_refused(tmp_path, rows, field, value):
    with Store.open(tmp_path / "s") as s:
        upsert_rows(s, rows)
    other = EncoderIdentity(**{**IDENTITY.__dict__, field: value})
    with Store.open(tmp_path / "s") as s:
        with pytest.raises(EncoderMismatchError, match="One store holds one encoder"):
            s.upsert(["x"], np.ones((1, other.dim), np.float32), identity=other)
        assert s.info().n_ecgs == len(rows["ecg_ids"])
    with pytest.raises(EncoderMismatchError):
        Store.open(tmp_path / "s", identity=other)


def test_bad_vectors_and_batches_are_refused_with_the_reason(tmp_path):
    with Store.open(tmp_path / "s") as s:
        with pytest.raises(StoreError, match="NaN"):
            s.upsert(["a"], np.full((1, DIM), np.nan, np.float32), identity=IDENTITY)
        with pytest.raises(StoreError, match="all zeros"):
            s.upsert(["a"], np.zeros((1, DIM), np.float32), identity=IDENTITY)
        with pytest.raises(StoreError, match="more than once"):
            s.upsert(["a", "a"], np.ones((2, DIM), np.float32), identity=IDENTITY)
        with pytest.raises(StoreError, match="shape"):
            s.upsert(["a"], np.ones((1, DIM + 1), np.float32), identity=IDENTITY)
        with pytest.raises(StoreError, match="fixed store field"):
            s.upsert(["a"], np.ones((1, DIM), np.float32), identity=IDENTITY, metadata=[{"seq": 1}])
        s.upsert(["a"], np.ones((1, DIM), np.float32), identity=IDENTITY, metadata=[{"age": 50}])
        with pytest.raises(StoreError, match="BIGINT"):
            s.upsert(["b"], np.ones((1, DIM), np.float32), identity=IDENTITY, metadata=[{"age": "old"}])
        assert s.info().n_ecgs == 1 and s.info().n_index_entries == 1


def test_segment_vectors_and_base_fields_round_trip(tmp_path, rows):
    segments = np.random.default_rng(3).standard_normal((3, DIM)).astype(np.float32)
    with Store.open(tmp_path / "s") as s:
        s.upsert(["a", "b"], segments[:2], identity=IDENTITY, segment_vectors=[segments, None],
                 sources=["ptbxl/00001_hr", None], fs=[500.0, None], lead_names=[["I", "II"], None],
                 duration_s=[15.0, None])
    with Store.open(tmp_path / "s") as s:
        a, b = s.get(["a", "b"], columns=["segment_vectors", "n_segments", "source", "fs", "lead_names", "model_id"])
        np.testing.assert_array_equal(a["segment_vectors"], segments)
        got = (a["n_segments"], a["source"], a["fs"], a["lead_names"], a["model_id"])
        assert got == (3, "ptbxl/00001_hr", 500.0, ["I", "II"], IDENTITY.model_id)
        assert b["segment_vectors"] is None and b["n_segments"] is None


def test_many_readers_never_see_half_a_batch(tmp_path):
    batch = 50
    with Store.open(tmp_path / "s") as s:
        s.upsert([f"seed-{i}" for i in range(batch)], make_rows(batch, seed=1)["vectors"], identity=IDENTITY)
        errors: list[str] = []
        done = threading.Event()

        def reader() -> None:
            q = np.ones(DIM, np.float32)
            while not done.is_set():
                n = len(s.search(q, k=5000)[0])
                if n % batch:
                    errors.append(f"saw {n} rows")

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        for b in range(30):
            rows_b = make_rows(batch, seed=100 + b, offset=b * batch)
            s.upsert(rows_b["ecg_ids"], rows_b["vectors"], identity=IDENTITY)
            if b % 10 == 9:
                s.delete([f"ecg-{b * batch + i}" for i in range(batch)])
        done.set()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        assert s.info().n_ecgs == batch * 28


def test_ivf_store_trains_reports_recall_and_filters_exactly(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "IVF_MIN_TRAIN", 1500)
    rows = make_rows(3000, seed=4)
    with Store.open(tmp_path / "s", index_kind="ivf") as s:
        upsert_rows(s, {k: v[:1000] for k, v in rows.items()})
        assert s.info().index_kind.startswith("flat")  # too few rows to train yet
        upsert_rows(s, {k: v[1000:] for k, v in rows.items()})
        info = s.info()
        assert info.index_kind == "ivf" and info.index_settings["estimated_recall_at_10"] >= 0.95
        tree, allow = FILTERS[1]
        q = rows["vectors"][17]
        got = [h.ecg_id for h in s.search(q, k=10, filter=tree)[0]]
        assert got == reference_search(rows, q, 10, allow=lambda i: allow(rows["metadata"][i]))
        s.delete(["ecg-17"])
        assert "ecg-17" not in [h.ecg_id for h in s.search(q, k=10)[0]]
    with Store.open(tmp_path / "s") as s:  # the kind is remembered
        assert s.info().index_kind == "ivf" and s.info().n_index_entries == 2999


def test_hnsw_deletes_are_tombstones_until_compaction(tmp_path, rows):
    with Store.open(tmp_path / "s", index_kind="hnsw") as s:
        upsert_rows(s, rows)
        s.delete(["ecg-3"])
        assert s.info().index_settings["tombstones"] == 1
        assert "ecg-3" not in [h.ecg_id for h in s.search(rows["vectors"][3], k=5)[0]]
    with Store.open(tmp_path / "s") as s:
        assert s.info().index_kind == "hnsw" and s.info().n_index_entries == len(rows["ecg_ids"]) - 1
        assert "ecg-3" not in [h.ecg_id for h in s.search(rows["vectors"][3], k=5)[0]]
        s.compact()
        assert s.info().index_settings["tombstones"] == 0


def test_closed_and_read_only_stores_refuse_writes(tmp_path, rows):
    with Store.open(tmp_path / "s") as s:
        upsert_rows(s, rows)
    with Store.open(tmp_path / "s", read_only=True) as s:
        assert len(s.search(rows["vectors"][0], k=3)[0]) == 3
        with pytest.raises(StoreError, match="read-only"):
            s.delete(["ecg-0"])
    s = Store.open(tmp_path / "s")
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.search(rows["vectors"][0], k=1)
    with pytest.raises(NotFoundError):
        Store.open(tmp_path / "missing", create=False)


def test_cli_filter_text_searches_like_the_tree(store, rows):
    q = rows["vectors"][9]
    text = "age >= 40 and (sex = F or labels contains AF)"
    tree = All([Term("age", ">=", 40), Any([Term("sex", "=", "F"), Term("labels", "contains", "AF")])])
    assert parse_filter(text) == All([Term("age", ">=", "40"), tree.parts[1]])  # values stay text
    assert store.search(q, k=10, filter=parse_filter(text)) == store.search(q, k=10, filter=tree)


@pytest.mark.parametrize("overfetch_max", [0, 1000])
def test_flat_deletes_excluded_by_overfetch_or_selector_are_exact(tmp_path, rows, monkeypatch, overfetch_max):
    from ecg_atlas.index.backends import FaissFlat

    monkeypatch.setattr(FaissFlat, "OVERFETCH_MAX", overfetch_max)
    with Store.open(tmp_path / "s", device="cpu", backend="faiss") as s:
        upsert_rows(s, rows)
        gone = {f"ecg-{i}" for i in range(0, 600, 7)}
        s.delete(sorted(gone))
        queries = rows["vectors"][:12]
        for q, got in zip(queries, s.search(queries, k=10)):
            assert [h.ecg_id for h in got] == reference_search(rows, q, 10, exclude=gone)


def test_timestamp_metadata_is_stored_as_utc_and_filterable(tmp_path, rows):
    import datetime as dt

    recorded = dt.datetime(2024, 1, 2, 3, 4, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with Store.open(tmp_path / "s") as s:
        upsert_rows(s, rows)
        s.update_metadata({"ecg-4": {"recorded_at": recorded}, "ecg-5": {"recorded_at": dt.datetime(2020, 5, 1)}})
        assert s.columns()["recorded_at"] == "TIMESTAMP"
        got = s.get(["ecg-4"], columns=["recorded_at"])[0]["recorded_at"]
        assert got == recorded and got.tzinfo == dt.timezone.utc
        hits = s.search(rows["vectors"][5], k=5, filter=parse_filter("recorded_at >= 2023-06-01"))[0]
        assert [h.ecg_id for h in hits] == ["ecg-4"]


def test_torch_backend_deletes_reopens_and_reports_itself(tmp_path, rows):
    gone = {f"ecg-{i}" for i in range(0, 600, 3)}  # a third: past the point where dead rows are squeezed out
    with Store.open(tmp_path / "s", device="cpu", backend="torch") as s:
        assert s.info().backend == "torch-cpu"
        upsert_rows(s, rows)
        s.delete(sorted(gone)[:10])
        s.delete(sorted(gone)[10:])
        queries = rows["vectors"][:6]
        for q, got in zip(queries, s.search(queries, k=10, filter=Term("age", "<", 70))):
            assert [h.ecg_id for h in got] == reference_search(
                rows, q, 10, allow=lambda i: rows["metadata"][i]["age"] < 70, exclude=gone)
    with Store.open(tmp_path / "s", device="cpu", backend="torch") as s:
        assert s.info().n_index_entries == len(rows["ecg_ids"]) - len(gone)
        for q, got in zip(queries, s.search(queries, k=10)):
            assert [h.ecg_id for h in got] == reference_search(rows, q, 10, exclude=gone)
    with Store.open(tmp_path / "s", device="cpu") as s:  # the same store, now on faiss: rebuilt
        assert s.info().backend == "faiss-cpu" and s.info().n_index_entries == len(rows["ecg_ids"]) - len(gone)


def test_a_write_that_fails_after_unused_columns_were_dropped_keeps_them(tmp_path):
    """At the column limit a write drops the columns no stored ECG holds a value in, inside its
    transaction: when the write then fails, the rollback brings them back (in DuckDB and in the
    store's view of its columns), and the store says which limit a refused write met."""
    from ecg_atlas.errors import MetadataError, MetadataLimitError

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((4, DIM)).astype(np.float32)
    with Store.open(tmp_path / "s", max_metadata_columns=4, max_metadata_keys=3) as store:
        store.upsert(["a"], vectors[:1], identity=IDENTITY, metadata=[{"a0": 1, "a1": 1, "a2": 1}])
        store.delete(["a"])  # a0..a2 now hold no value
        with pytest.raises(MetadataLimitError) as too_many:
            store.upsert(["k"], vectors[1:2], identity=IDENTITY, metadata=[{"k0": 1, "k1": 1, "k2": 1, "k3": 1}])
        assert too_many.value.reason == "too_many_metadata_keys" and too_many.value.details["max_keys"] == 3
        # b0 fits once a0..a2 are dropped; the second row's text in b0's integer column fails the write.
        with pytest.raises(MetadataError) as bad:
            store.upsert(["b", "c"], vectors[1:3], identity=IDENTITY, metadata=[{"b0": 1, "b1": 1}, {"b0": "text"}])
        assert bad.value.reason == "bad_metadata"
        assert {"a0", "a1", "a2"} <= set(store.columns()) and "b0" not in store.columns()
        store.upsert(["b"], vectors[1:2], identity=IDENTITY, metadata=[{"b0": 1, "b1": 1}])
        assert {"b0", "b1"} <= set(store.columns()) and not {"a0", "a1", "a2"} & set(store.columns())
        with pytest.raises(MetadataLimitError) as full:
            store.update_metadata({"b": {"c0": 1, "c1": 1, "c2": 1}})
        assert full.value.reason == "too_many_columns"
        assert full.value.details == {"columns": 2, "new_columns": 3, "max_columns": 4}
    with Store.open(tmp_path / "s") as store:
        assert {"b0", "b1"} <= set(store.columns()) and "a0" not in store.columns()
        assert store.get(["b"], columns=["b0", "b1"])[0] == {"ecg_id": "b", "b0": 1, "b1": 1}

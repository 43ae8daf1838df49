"""The derived index on its own, fed by a fake row source (no Store, no DuckDB): it opens what it
saved, catches up with rows it missed, rebuilds what is not its own, and trains and tunes IVF."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from ecg_atlas.index.backends import exact_top_k
from ecg_atlas.index.derived_index import INDEX_META, DerivedIndex, Rows, read_meta

from .conftest import DIM, IDENTITY, make_rows


class FakeRows:
    """Rows kept in a dict (id -> normalised vector); records what the index asked to scan."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors: dict[int, np.ndarray] = {}
        self.scans: list[np.ndarray | None] = []
        self.add(vectors)

    def add(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        first = max(self.vectors, default=0) + 1
        ids = np.arange(first, first + len(vectors), dtype=np.int64)
        normalised = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        self.vectors.update(zip(ids.tolist(), normalised))
        return ids, normalised

    def _chunk(self, ids) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(sorted(ids), dtype=np.int64)
        return ids, np.stack([self.vectors[i] for i in ids.tolist()]).astype(np.float32)

    def scan(self, ids: np.ndarray | None):
        self.scans.append(None if ids is None else np.array(ids))
        wanted = sorted(self.vectors) if ids is None else [i for i in ids.tolist() if i in self.vectors]
        for start in range(0, len(wanted), 256):
            yield self._chunk(wanted[start:start + 256])

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        picked = np.random.default_rng(7).choice(sorted(self.vectors), size=n, replace=False)
        ids, vectors = self._chunk(picked)
        order = np.random.default_rng(8).permutation(len(ids))
        return ids[order], vectors[order]

    def rows(self) -> Rows:
        return Rows(scan=self.scan, ids=lambda: np.array(sorted(self.vectors), dtype=np.int64),
                    count=lambda: len(self.vectors), sample=self.sample)

    @property
    def high_water(self) -> int:
        return max(self.vectors, default=0)


def derived(tmp_path, source: FakeRows, kind: str = "flat", store_uuid: str = "store-a",
            ivf_min_train: int = 10_000) -> DerivedIndex:
    return DerivedIndex(tmp_path, source.rows(), store_uuid=store_uuid, identity=IDENTITY, kind_requested=kind,
                        backend="faiss-cpu", ivf_min_train=ivf_min_train)


def exact_ids(source: FakeRows, queries: np.ndarray, k: int) -> np.ndarray:
    ids, vectors = source._chunk(source.vectors)
    return exact_top_k(queries, vectors, ids, k)[1]


def test_builds_from_the_rows_it_is_given_and_searches_exactly(tmp_path):
    source = FakeRows(make_rows(600)["vectors"])
    index = derived(tmp_path, source)
    index.open(None, source.high_water)
    queries = np.stack([source.vectors[i] for i in (1, 50, 600)])
    assert np.array_equal(index.index.search(queries, 10)[1], exact_ids(source, queries, 10))
    assert index.needs_save and index.kind_label() == "flat"


def test_reopens_its_own_save_and_scans_only_the_rows_it_missed(tmp_path, caplog):
    source = FakeRows(make_rows(600)["vectors"])
    first = derived(tmp_path, source)
    first.open(None, source.high_water)
    first.save(source.high_water)
    assert not first.needs_save
    meta = read_meta(tmp_path)
    assert meta["store_uuid"] == "store-a" and meta["file_entries"] == 600 and len(meta["sha256"]) == 64

    added, _ = source.add(make_rows(30, seed=3)["vectors"])  # written after the save (a crash lost the index)
    for gone in (5, 6, 7):
        del source.vectors[gone]
    source.scans.clear()
    caplog.set_level(logging.INFO, logger="ecg_atlas.index.store")
    again = derived(tmp_path, source)
    again.open(read_meta(tmp_path), source.high_water)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(source.scans) == 1 and np.array_equal(source.scans[0], added)  # not a rebuild
    assert np.array_equal(again.index.ids(), np.array(sorted(source.vectors)))
    assert again.unsaved == 33


@pytest.mark.parametrize("damage", ["other_store", "digest", "newer_than_rows"])
def test_an_index_that_is_not_this_stores_current_one_is_rebuilt_with_a_warning(tmp_path, caplog, damage):
    source = FakeRows(make_rows(300)["vectors"])
    saved = derived(tmp_path, source)
    saved.open(None, source.high_water)
    saved.save(source.high_water)
    meta = read_meta(tmp_path)
    store_uuid, high_water = "store-a", source.high_water
    if damage == "other_store":
        store_uuid = "store-b"
    elif damage == "digest":
        data = bytearray((tmp_path / meta["file"]).read_bytes())
        data[len(data) // 2] ^= 0xFF  # one vector altered: still a readable index, not the saved one
        (tmp_path / meta["file"]).write_bytes(bytes(data))
    else:
        high_water -= 1  # the rows were restored from an older copy than the index
    caplog.set_level(logging.INFO, logger="ecg_atlas.index.store")
    source.scans.clear()
    reopened = derived(tmp_path, source, store_uuid=store_uuid)
    reopened.open(meta, high_water)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    expected = {"other_store": "store_uuid", "digest": "digest differs", "newer_than_rows": "newer than the database"}
    assert len(warnings) == 1 and expected[damage] in warnings[0] and "rebuilding" in warnings[0]
    assert source.scans == [None] and reopened.needs_save and len(reopened.index) == 300


def test_ivf_searches_exactly_until_it_trains_then_saves_and_restores_its_tuning(tmp_path):
    rows = make_rows(3000, seed=4)
    source = FakeRows(rows["vectors"][:1000])
    index = derived(tmp_path, source, kind="ivf", ivf_min_train=1500)
    index.open(None, source.high_water)
    assert index.kind_label() == "flat (ivf trains at 1500 ECGs)"
    ids, vectors = source.add(rows["vectors"][1000:])
    index.apply(ids, vectors, np.empty(0, np.int64))
    assert index.index.kind == "ivf" and index.kind_label() == "ivf"
    settings = index.index.settings()
    assert settings["estimated_recall_at_10"] >= 0.95 and 1 <= settings["nprobe"] <= settings["nlist"]
    index.save(source.high_water)
    meta = json.loads((tmp_path / INDEX_META).read_text())
    assert meta["nprobe"] == settings["nprobe"] and meta["estimated_recall_at_10"] == settings["estimated_recall_at_10"]

    source.scans.clear()
    reopened = derived(tmp_path, source, kind="ivf", ivf_min_train=1500)
    reopened.open(read_meta(tmp_path), source.high_water)
    assert source.scans == [] and reopened.index.settings() == settings  # loaded, tuning restored
    queries = np.stack([source.vectors[i] for i in (3, 1400, 2900)])
    found = reopened.index.search(queries, 10)[1]
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact_ids(source, queries, 10))])
    assert recall >= 0.9


def test_hnsw_tunes_itself_and_compaction_drops_its_tombstones(tmp_path):
    source = FakeRows(make_rows(2000, seed=9)["vectors"])
    index = derived(tmp_path, source, kind="hnsw")
    index.open(None, source.high_water)
    assert index.index.settings()["estimated_recall_at_10"] >= 0.95
    for gone in (10, 11):
        del source.vectors[gone]
    index.remove(np.array([10, 11], dtype=np.int64))
    assert index.index.settings()["tombstones"] == 2 and index.unsaved == 2
    index.compact()
    assert index.index.settings()["tombstones"] == 0 and len(index.index) == 1998
    assert index.index.settings()["efSearch"] >= 16 and index.index.dim == DIM

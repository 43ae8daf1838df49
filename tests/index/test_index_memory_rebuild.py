"""`--index-memory` on an existing ivfpq store: the index is rebuilt for the budget asked for, and
kept when none (or the same) is asked for."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from ecg_atlas.errors import StoreError
from ecg_atlas.index import EncoderIdentity, Store
from ecg_atlas.index.backends import ivfpq_params
from ecg_atlas.index.derived_index import INDEX_META
from ecg_atlas.index.store import IVF_MIN_TRAIN

DIM = 64
IDENTITY = EncoderIdentity("ecg-fm-test", "a" * 64, "ecgfm-v1", DIM)


def clustered_vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((32, DIM)).astype(np.float32)
    return (centers[rng.integers(0, 32, n)] + 0.5 * rng.standard_normal((n, DIM))).astype(np.float32)


def index_memory(store) -> float:
    """The bytes the store's ivfpq index takes, as Info reports it (as a share of the raw vectors)."""
    info = store.info()
    assert info.index_kind == "ivfpq"
    return info.index_settings["memory_vs_raw"] * info.n_ecgs * DIM * 4


def rebuild_logs(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "--index-memory" in r.getMessage()]


@pytest.mark.slow
def test_another_index_memory_rebuilds_the_ivfpq_index_for_it(tmp_path, caplog):
    n = IVF_MIN_TRAIN  # the fewest rows an ivfpq store trains at
    x = clustered_vectors(n)
    roomy = 2**30
    roomy_bytes = ivfpq_params(n, DIM, roomy).memory_bytes(n, DIM)
    tight = int(0.8 * roomy_bytes)  # the code a roomy budget gets no longer fits
    tight_bytes = ivfpq_params(n, DIM, tight).memory_bytes(n, DIM)
    assert tight_bytes <= tight < roomy_bytes
    def approx(size):  # Info rounds the share
        return pytest.approx(size, abs=n * DIM * 4 * 1e-4)

    path = tmp_path / "store"
    with Store.open(path, identity=IDENTITY, index_kind="ivfpq", index_memory=roomy, device="cpu") as store:
        store.upsert([f"ecg-{i}" for i in range(n)], x, identity=IDENTITY)
        assert index_memory(store) == approx(roomy_bytes)
    caplog.set_level(logging.INFO, logger="ecg_atlas.index.store")

    with Store.open(path, index_memory=tight, device="cpu") as store:
        assert index_memory(store) == approx(tight_bytes)  # rebuilt to fit the budget asked for
        assert [h.ecg_id for h in store.search(x[7], k=1)[0]] == ["ecg-7"]
    said = rebuild_logs(caplog)
    assert len(said) == 1 and "building it from DuckDB" in said[0]
    assert f"{tight / 2**20:.4g} MiB" in said[0] and str(tmp_path) not in said[0]  # why, and no paths
    saved = json.loads((path / INDEX_META).read_text())
    assert saved["index_memory"] == tight  # the budget the saved index was built for
    caplog.clear()

    for asked in (None, tight):  # no flag: the store keeps its budget; the same one: nothing to do
        with Store.open(path, index_memory=asked, device="cpu") as store:
            assert index_memory(store) == approx(tight_bytes)
        assert not rebuild_logs(caplog)
        assert json.loads((path / INDEX_META).read_text())["file"] == saved["file"]  # not rebuilt, not re-saved

    with pytest.raises(StoreError, match="--index-memory"):  # too small for any code: refused, says which flag
        Store.open(path, index_memory=tight_bytes // 10, device="cpu")
    with Store.open(path, device="cpu") as store:  # the saved index is untouched by the refusal
        assert index_memory(store) == approx(tight_bytes)
    assert json.loads((path / INDEX_META).read_text())["file"] == saved["file"]

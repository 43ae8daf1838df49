"""The compressed index kind `ivfpq`: IVF-PQ codes, re-ranked with the stored float vectors."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from ecg_atlas.errors import StoreError
from ecg_atlas.index import Store
from ecg_atlas.index.backends.base import exact_top_k
from ecg_atlas.index.backends.gpu import ShardedReplica
from ecg_atlas.index.backends.ivfpq import FaissIVFPQ, IVFPQParams, ivfpq_params, parse_memory
from ecg_atlas.index.store import EncoderIdentity

N_DERIVED = 12_000


@pytest.fixture(scope="module")
def derived_vectors(corpus_shards):
    """12,000 vectors around the real ECG embeddings of the sample corpus: each is a real record
    vector plus Gaussian noise of a quarter of the typical distance between two records, so
    neighbourhoods overlap as they do among real ECGs (not isotropic noise)."""
    folder, summary, _ = corpus_shards
    real = np.array([r[0] for r in duckdb.sql(
        f"SELECT record_vector FROM read_parquet('{folder}/shard-*.parquet', union_by_name = true) "
        f"WHERE status = 'embedded'").fetchall()], dtype=np.float32)
    real /= np.linalg.norm(real, axis=1, keepdims=True)
    rng = np.random.default_rng(0)
    pairs = real[rng.integers(len(real), size=500)] - real[rng.integers(len(real), size=500)]
    spread = float(np.median(np.linalg.norm(pairs, axis=1)))
    x = real[rng.integers(len(real), size=N_DERIVED)] + rng.normal(0, spread / 4 / np.sqrt(real.shape[1]),
                                                                  (N_DERIVED, real.shape[1])).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), summary


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))


@pytest.mark.slow
def test_ivfpq_store_reaches_its_recall_in_a_fraction_of_the_memory(derived_vectors, tmp_path):
    x, summary = derived_vectors
    ids = [f"ecg-{i}" for i in range(len(x))]
    identity = EncoderIdentity(summary.model_id, summary.checkpoint_sha256, "ecgfm-v1", x.shape[1])
    queries = x[:50]
    truth_scores, truth = exact_top_k(queries, x, np.arange(len(x)), 10)
    with Store.open(tmp_path / "s", identity=identity, index_kind="ivfpq", device="cpu") as store:
        store.upsert(ids, x, identity=identity)
        info = store.info()
        assert info.index_kind == "ivfpq"
        settings = info.index_settings
        assert settings["estimated_recall_at_10"] >= 0.95  # tuned after re-ranking, reported in Info
        assert settings["memory_vs_raw"] <= 0.15
        hits = store.search(queries, k=10)
    found = np.array([[int(h.ecg_id.split("-")[1]) for h in row] for row in hits])
    assert recall_at_10(found, truth) >= 0.95
    for row, q in zip(hits, queries):  # scores are exact cosines, not PQ estimates
        exact = x[[int(h.ecg_id.split("-")[1]) for h in row]] @ q
        assert np.allclose([h.score for h in row], exact, atol=1e-5)
    with Store.open(tmp_path / "s") as store:  # reopened: the saved index, its tuning, re-ranking from DuckDB
        assert store.info().index_settings["nprobe"] == settings["nprobe"]
        again = store.search(queries[:5], k=10)
        assert [[h.ecg_id for h in r] for r in again] == [[h.ecg_id for h in r] for r in hits[:5]]
        store.delete(["ecg-1"])
        assert "ecg-1" not in [h.ecg_id for h in store.search(x[1], k=10)[0]]
        assert store.search(x[0], k=5)[0][0].ecg_id == "ecg-0"


def test_memory_budget_chooses_the_code_size():
    default = ivfpq_params(2_000_000, 768)  # the most exact code within 0.15 x the raw vectors
    assert default.m == 0 and default.code_bytes(768) == 384 and default.describe() == "SQ4"
    assert default.memory_bytes(2_000_000, 768) <= 0.15 * 2_000_000 * 768 * 4
    roomy = ivfpq_params(2_000_000, 768, parse_memory("400MB"))  # 4-bit codes need 784 MB: PQ
    tight = ivfpq_params(2_000_000, 768, parse_memory("80MB"))
    assert roomy.m > tight.m > 0 and roomy.memory_bytes(2_000_000, 768) <= 400e6
    assert tight.memory_bytes(2_000_000, 768) <= 80e6
    assert ivfpq_params(2_000_000, 768, parse_memory("1GB")).m == 0
    with pytest.raises(StoreError, match="--index-memory"):
        ivfpq_params(2_000_000, 768, parse_memory("10MB"))


@pytest.mark.slow
def test_tuning_reranks_more_candidates_where_a_wider_probe_stops_paying(derived_vectors):
    """Codes too coarse for the recall: tuning stops widening the probe once doubling it gains
    nothing and re-ranks more candidates instead, and the recall it reports is the recall."""
    base, _ = derived_vectors
    rng = np.random.default_rng(1)  # 6,000 vectors around 6 ECGs: neighbours differ in fine detail
    x = base[rng.integers(6, size=6000)] + rng.normal(0, 0.02 / np.sqrt(base.shape[1]), (6000, base.shape[1]))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    params = IVFPQParams(ivfpq_params(len(x), x.shape[1]).nlist, m=8)
    index = FaissIVFPQ.train(x.shape[1], x, params)
    index.use_exact_vectors(lambda wanted: x[wanted])
    index.add(np.arange(len(x), dtype=np.int64), x)
    queries, ids = x[:100], np.arange(100)
    _, truth = exact_top_k(queries, x, np.arange(len(x)), 11)
    index.tune(queries, ids, truth)
    assert index.refine_factor > 10 and index.nprobe < params.nlist
    _, found = index.search(queries, 11)
    measured = np.mean([len(set(f[f != i][:10]) & set(t[t != i][:10])) / 10 for f, t, i in zip(found, truth, ids)])
    assert abs(measured - index.recall_at_10) < 1e-3


@pytest.mark.slow
def test_sharded_replica_answers_as_the_single_index(derived_vectors):
    """The multi-GPU path with a CPU stand-in for `gpu_placer`: shards by id, merged results."""
    x, _ = derived_vectors
    ids = np.arange(len(x), dtype=np.int64)
    placed = []

    def cpu_stand_in(shard, device):
        placed.append((device, shard.ntotal))
        return shard  # a GPU placer returns faiss.index_cpu_to_gpu(...) of it

    single = FaissIVFPQ.train(x.shape[1], x, ivfpq_params(len(x), x.shape[1]))
    sharded = FaissIVFPQ.train(x.shape[1], x, ivfpq_params(len(x), x.shape[1]), replica=([0, 1, 2], cpu_stand_in))
    sharded.index.pq = single.index.pq  # same codebooks: the comparison isolates the sharding
    sharded.index.quantizer.reset()
    sharded.index.quantizer.add(faiss_centroids(single))
    for index in (single, sharded):
        index.use_exact_vectors(lambda wanted: x[wanted])
        index.add(ids, x)
        index.nprobe = 8
    a, b = single.search(x[:30], 10), sharded.search(x[:30], 10)
    assert [d for d, _ in placed] == [0, 1, 2] and sum(n for _, n in placed) == len(x)
    assert sharded.backend == "faiss-gpu"
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    sharded.remove(ids[:5])  # a write drops the replica; the next search rebuilds it without them
    assert not set(sharded.search(x[:5], 10)[1].ravel()) & set(range(5))
    replica = ShardedReplica(sharded.index, [0, 1], cpu_stand_in)
    assert sum(replica.sizes()) == len(x) - 5


def faiss_centroids(index: FaissIVFPQ) -> np.ndarray:
    return index.index.quantizer.reconstruct_n(0, index.index.nlist)


@pytest.mark.slow
def test_sharded_replica_searches_take_turns_and_large_k_goes_to_the_cpu_index(derived_vectors):
    """FAISS GPU resources serve one call at a time, and GPU IVF-PQ refuses k or nprobe past
    2,048: a search waits for the one in flight, and a larger candidate count is answered by the
    CPU index instead of the replica (CPU stand-ins for the GPU shards)."""
    import threading

    x, _ = derived_vectors
    placed_searches = []


    def cpu_stand_in(shard, device):
        placed_searches.append(device)
        return shard

    index = FaissIVFPQ.train(x.shape[1], x, ivfpq_params(len(x), x.shape[1]), replica=([0, 1], cpu_stand_in))
    index.use_exact_vectors(lambda wanted: x[wanted])
    index.add(np.arange(len(x), dtype=np.int64), x)
    index.nprobe = 4
    index.search(x[:2], 10)
    replica = index._replica
    assert replica is not None and placed_searches == [0, 1]

    finished = threading.Event()
    with replica._lock:  # a search in flight on the GPUs
        worker = threading.Thread(target=lambda: (index.search(x[:2], 10), finished.set()))
        worker.start()
        assert not finished.wait(0.5), "a second search ran on the shared GPU resources at once"
    worker.join(30)
    assert finished.is_set()

    index.refine_factor = 300  # 10 × 300 = 3,000 candidates: past the GPU limit
    answers = []
    with replica._lock:  # the replica is busy, but the CPU index does not need it
        worker = threading.Thread(target=lambda: answers.append(index.search(x[:2], 10)))
        worker.start()
        worker.join(30)
        assert answers, "a search past the GPU's k limit waited for the GPU replica"
    assert list(answers[0][1][:, 0]) == [0, 1]

"""Small real stores (DuckDB file + FAISS index in a temp dir) and a NumPy reference search."""

from __future__ import annotations

import numpy as np
import pytest

from ecg_atlas.index import EncoderIdentity

DIM = 16
IDENTITY = EncoderIdentity("ecg-fm-test", "a" * 64, "ecgfm-v1", DIM)
N = 600


def make_rows(n: int = N, seed: int = 0, offset: int = 0) -> dict:
    """Vectors in a few clusters (like embeddings, unlike pure noise) and varied metadata."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((8, DIM)).astype(np.float32)
    vectors = centers[rng.integers(0, 8, n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    ids = [f"ecg-{offset + i}" for i in range(n)]
    metadata = []
    for i in range(n):
        row = {"age": int(18 + (i * 7) % 80), "sex": "F" if i % 3 else "M",
               "labels": ["AF", "LBBB"] if i % 11 == 0 else (["AF"] if i % 5 == 0 else [])}
        if i % 4:
            row["site"] = f"site-{i % 6}"
        metadata.append(row)
    return {"ecg_ids": ids, "vectors": vectors.astype(np.float32),
            "patient_ids": [f"p-{(offset + i) // 3}" for i in range(n)],
            "metadata": metadata}


def upsert_rows(store, rows: dict, identity: EncoderIdentity = IDENTITY):
    return store.upsert(rows["ecg_ids"], rows["vectors"], identity=identity, patient_ids=rows["patient_ids"],
                        metadata=rows["metadata"])


def reference_search(rows: dict, query: np.ndarray, k: int, allow=None, exclude=()) -> list[str]:
    """Top-k ecg_ids by cosine over the rows `allow(i)` accepts, by NumPy brute force."""
    x = rows["vectors"] / np.linalg.norm(rows["vectors"], axis=1, keepdims=True)
    q = query / np.linalg.norm(query)
    scores = x @ q
    order = np.argsort(-scores, kind="stable")
    out = []
    for i in order:
        if (allow is None or allow(i)) and rows["ecg_ids"][i] not in exclude:
            out.append(rows["ecg_ids"][i])
        if len(out) == k:
            break
    return out


@pytest.fixture
def rows() -> dict:
    return make_rows()

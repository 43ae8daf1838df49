"""A cluster run as the Parquet table Apple's embedding-atlas reads (`ecg-atlas export --format
embedding-atlas`).

One row per ECG of the run, in the run's order, with:

* ``ecg_id`` and ``text``: the id and a one-line description (the id, then each label-list column's
  labels, SNOMED CT codes with their names), which embedding-atlas shows on hover and uses for its
  automatic map labels (``--text``);
* ``x``, ``y``: the run's 2-D map (the UMAP the cohort map draws), for ``--x x --y y``;
* ``cluster``: the run's HDBSCAN cluster (−1: noise), and every metadata column of the store;
* ``neighbors``: for ``--neighbors neighbors``, ``{"ids": [...], "distances": [...]}`` per row: the
  ``k`` nearest other ECGs of the table by the store's metric (cosine similarity of the record
  vectors), nearest first; ids are zero-based row numbers of this table (embedding-atlas numbers
  the rows it loads 0..n−1 and looks neighbours up by that number), distances are 1 − cosine.

    embedding-atlas OUT.parquet --x x --y y --neighbors neighbors --text text

Neighbours are exact (FAISS inner product over the unit vectors, in blocks of rows): O(n²·d), about
3 minutes for 100k ECGs of 64-d vectors on a busy 2-core machine (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from ecg_atlas.errors import AtlasError
from ecg_atlas.index.vectors import normalised

#: embedding-atlas's own default for the neighbours it computes (UMAP's n_neighbors)
DEFAULT_NEIGHBOURS = 15
#: query rows per FAISS search block: (block × n) scores stay a few hundred MB at 100k ECGs
BLOCK_ROWS = 1024
#: the columns embedding-atlas is told about (``view_command``)
ID, TEXT, X, Y, CLUSTER, NEIGHBORS = "ecg_id", "text", "x", "y", "cluster", "neighbors"
NEIGHBORS_TYPE = pa.struct([("ids", pa.list_(pa.int64())), ("distances", pa.list_(pa.float32()))])


def nearest(vectors: np.ndarray, k: int, progress: Callable[[int, int], None] | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest other rows by cosine similarity: (row numbers, 1 − cosine), nearest
    first; fewer than ``k`` other rows gives them all. A row's own number is never among them (an
    exact duplicate of it may be, at distance 0)."""
    import faiss

    unit = normalised(vectors, "record vectors")
    n = len(unit)
    take = min(k, n - 1)
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit)
    ids = np.empty((n, max(take, 0)), dtype=np.int64)
    distances = np.empty((n, max(take, 0)), dtype=np.float32)
    if take <= 0:
        return ids, distances
    for start in range(0, n, BLOCK_ROWS):
        stop = min(n, start + BLOCK_ROWS)
        sims, found = index.search(unit[start:stop], take + 1)
        own = found == np.arange(start, stop)[:, None]
        # drop each row's own number; where a tie pushed it out of the top take+1, drop the last
        own[~own.any(axis=1), -1] = True
        ids[start:stop] = found[~own].reshape(stop - start, take)
        distances[start:stop] = np.clip(1.0 - sims[~own].reshape(stop - start, take), 0.0, 2.0)
        if progress is not None:
            progress(stop, n)
    return ids, distances


def _description(ecg_id: str, lists: list[tuple[str, list | None]]) -> str:
    from ecg_atlas.labels import display_value

    labels = [", ".join(str(v) for v in display_value(column, row)) for column, row in lists if row]
    return f"{ecg_id}: {'; '.join(labels)}" if labels else ecg_id


def atlas_table(assignments: pa.Table, stored: pa.Table, k: int = DEFAULT_NEIGHBOURS,
                progress: Callable[[int, int], None] | None = None) -> pa.Table:
    """The run's ECGs as embedding-atlas's table (module docstring).

    assignments: the run's ``ecg_id``, ``cluster``, ``map_x``, ``map_y``; stored: the store's rows
    (``ecg_id``, metadata columns, ``record_vector``) of at least those ECGs, in any order. ECGs of
    the run no longer stored are left out; so are stored ECGs outside the run."""
    if k < 1:
        raise AtlasError(f"--neighbors is {k}; give 1 or more nearest neighbours per ECG")
    position = {e: i for i, e in enumerate(stored.column(ID).to_pylist())}
    run_ids = assignments.column(ID).to_pylist()
    kept = np.array([i for i, e in enumerate(run_ids) if e in position], dtype=np.int64)
    if not len(kept):
        raise AtlasError("none of the run's ECGs is in the store (or matches --where): nothing to export")
    at = pa.array([position[run_ids[i]] for i in kept], pa.int64())
    rows = stored.take(at)
    vectors = np.stack(rows.column("record_vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    ids, distances = nearest(vectors, k, progress)
    metadata = [c for c in rows.column_names if c not in (ID, "record_vector", TEXT, X, Y, CLUSTER, NEIGHBORS)]
    list_columns = [c for c in metadata if pa.types.is_list(rows.schema.field(c).type)]
    ecg_ids = rows.column(ID).to_pylist()
    lists = [rows.column(c).to_pylist() for c in list_columns]
    text = [_description(e, [(c, col[i]) for c, col in zip(list_columns, lists)]) for i, e in enumerate(ecg_ids)]
    offsets = pa.array(np.arange(len(ids) + 1) * ids.shape[1], pa.int32())
    neighbours = pa.StructArray.from_arrays(
        [pa.ListArray.from_arrays(offsets, pa.array(ids.ravel(), pa.int64())),
         pa.ListArray.from_arrays(offsets, pa.array(distances.ravel(), pa.float32()))], fields=list(NEIGHBORS_TYPE))
    columns = {ID: rows.column(ID), TEXT: pa.array(text, pa.string()),
               X: pa.array(assignments.column("map_x").to_numpy()[kept], pa.float32()),
               Y: pa.array(assignments.column("map_y").to_numpy()[kept], pa.float32()),
               CLUSTER: pa.array(assignments.column("cluster").to_numpy()[kept], pa.int32()),
               **{c: rows.column(c) for c in metadata}, NEIGHBORS: neighbours}
    return pa.table(columns)


def view_command(path: str) -> str:
    """How to open the file in embedding-atlas."""
    return f"embedding-atlas {path} --x {X} --y {Y} --neighbors {NEIGHBORS} --text {TEXT}"

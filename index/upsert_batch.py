"""One `Store.upsert` batch: the caller's ECGs checked and laid out as the `ecg` table's Arrow
columns, then inserted in place of any stored under the same ecg_ids (inside the store's write
transaction)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from ecg_atlas.errors import StoreError

from . import schema, signal_copy, store_meta, vectors
from .database import unregister
from .signal_copy import StoredSignal
from .types import EncoderIdentity


@dataclass
class UpsertBatch:
    ecg_ids: list[str]
    normalised: np.ndarray  # the record vectors at unit length, for the search index
    columns: dict[str, pa.Array]  # the `ecg` table's columns but seq and the user metadata
    metadata: list[dict]  # per ECG its user fields
    signals: pa.Table | None  # the signal copies kept (`signal_copy.to_arrow`), if any

    def __len__(self) -> int:
        return len(self.ecg_ids)


def checked_ids(ecg_ids: Sequence[str]) -> list[str]:
    """The batch's ecg_ids: non-empty strings, each once."""
    ecg_ids = list(ecg_ids)
    for ecg_id in ecg_ids:
        if not isinstance(ecg_id, str) or not ecg_id:
            raise StoreError(f"ecg_id must be a non-empty string, got {ecg_id!r}")
    if len(set(ecg_ids)) != len(ecg_ids):
        raise StoreError("the batch names the same ecg_id more than once; send each ECG once")
    return ecg_ids


def build(
    ecg_ids: list[str],
    record_vectors: np.ndarray,
    identity: EncoderIdentity,
    *,
    patient_ids: Sequence[str | None] | None = None,
    segment_vectors: Sequence[np.ndarray | None] | None = None,
    sources: Sequence[str | None] | None = None,
    fs: Sequence[float | None] | None = None,
    lead_names: Sequence[Sequence[str] | None] | None = None,
    duration_s: Sequence[float | None] | None = None,
    n_segments: Sequence[int | None] | None = None,
    metadata: Sequence[Mapping[str, object]] | None = None,
    signals: Sequence[StoredSignal | None] | None = None,
) -> UpsertBatch:
    """`Store.upsert`'s arguments as one batch (`checked_ids` first); refuses vectors that break
    the vector rules, and per-ECG sequences of another length than the batch."""
    n = len(ecg_ids)
    dim = identity.dim
    raw = np.asarray(record_vectors, dtype=np.float32)
    if raw.ndim == 1 and n == 1:
        raw = raw[None, :]
    normalised = vectors.normalised(raw, "record_vectors", dim)
    if len(normalised) != n:
        raise StoreError(f"{n} ecg_ids but {len(normalised)} record vectors")

    def per_ecg(name: str, values: Sequence | None) -> list:
        if values is None:
            return [None] * n
        values = list(values)
        if len(values) != n:
            raise StoreError(f"{name} has {len(values)} entries for {n} ecg_ids")
        return values

    segments = per_ecg("segment_vectors", segment_vectors)
    counts = per_ecg("n_segments", n_segments)
    seg_offsets, seg_values, seg_valid = [0], [], []
    for i, seg in enumerate(segments):
        if seg is not None:
            seg = np.asarray(seg, dtype=np.float32)
            if seg.ndim != 2 or seg.shape[1] != dim or not np.isfinite(seg).all():
                raise StoreError(f"segment_vectors for ecg_id {ecg_ids[i]!r} must be finite, shape (n, {dim}); "
                                 f"got {seg.shape}")
            seg_values.append(seg.ravel())
            if counts[i] is None:
                counts[i] = len(seg)
        seg_valid.append(seg is not None)
        seg_offsets.append(seg_offsets[-1] + (0 if seg is None else len(seg)))
    flat = np.concatenate(seg_values) if seg_values else np.empty(0, np.float32)
    segment_array = pa.ListArray.from_arrays(
        pa.array(seg_offsets, pa.int32()),
        pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim),
        mask=pa.array([not v for v in seg_valid]),
    )
    kept = [(i, s) for i, s in enumerate(per_ecg("signals", signals)) if s is not None]
    signal_table = signal_copy.to_arrow([ecg_ids[i] for i, _ in kept], [s for _, s in kept]) if kept else None
    rows = [dict(r) if r is not None else {} for r in per_ecg("metadata", metadata)]
    columns: dict[str, pa.Array] = {
        "ecg_id": pa.array(ecg_ids, pa.string()),
        "patient_id": pa.array(per_ecg("patient_ids", patient_ids), pa.string()),
        "source": pa.array(per_ecg("sources", sources), pa.string()),
        "fs": pa.array(per_ecg("fs", fs), pa.float64()),
        "lead_names": pa.array(per_ecg("lead_names", lead_names), pa.list_(pa.string())),
        "duration_s": pa.array(per_ecg("duration_s", duration_s), pa.float64()),
        "n_segments": pa.array(counts, pa.int32()),
        "model_id": pa.array([identity.model_id] * n, pa.string()),
        "checkpoint_sha256": pa.array([identity.checkpoint_sha256] * n, pa.string()),
        "preprocessing_version": pa.array([identity.preprocessing_version] * n, pa.string()),
        "ingested_at": pa.array([dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)] * n, pa.timestamp("us")),
        "record_vector": pa.FixedSizeListArray.from_arrays(pa.array(raw.ravel(), pa.float32()), dim),
        "segment_vectors": segment_array,
    }
    return UpsertBatch(ecg_ids, normalised, columns, rows, signal_table)


def insert(con: duckdb.DuckDBPyConnection, batch: UpsertBatch, typed: Mapping[str, tuple[str, list]],
           first_seq: int) -> tuple[np.ndarray, np.ndarray]:
    """Inside the write transaction: the batch's rows (with `typed`, its metadata as
    `metadata.typed_values` made it) in place of the stored rows of the same ecg_ids, their
    signal copies, and the sequence counter moved past them. Returns (replaced seqs, new seqs)."""
    n = len(batch)
    columns = dict(batch.columns)
    for name, (column_type, values) in typed.items():
        columns[name] = pa.array(values, schema.arrow_type(column_type))
    seqs = np.arange(first_seq, first_seq + n, dtype=np.int64)
    columns["seq"] = pa.array(seqs)
    con.register("incoming", pa.table(columns))
    try:
        # Look before deleting: a read-only scan is much cheaper than a DELETE that finds nothing.
        replaced = con.execute(
            "SELECT seq FROM ecg WHERE ecg_id IN (SELECT ecg_id FROM incoming)"
        ).fetchnumpy()["seq"].astype(np.int64)
        if len(replaced):
            con.execute("DELETE FROM ecg WHERE seq IN (SELECT unnest(?::BIGINT[]))", [replaced.tolist()])
            con.execute(f"DELETE FROM {signal_copy.TABLE} WHERE ecg_id IN (SELECT ecg_id FROM incoming)")
        con.execute("INSERT INTO ecg BY NAME SELECT * FROM incoming")
    finally:
        unregister(con, "incoming")
    if batch.signals is not None:
        con.register("incoming_signals", batch.signals)
        try:
            con.execute(f"INSERT INTO {signal_copy.TABLE} BY NAME SELECT * FROM incoming_signals")
        finally:
            unregister(con, "incoming_signals")
    store_meta.set_next_seq(con, first_seq + n)
    return replaced, seqs


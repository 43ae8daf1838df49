"""Vectors and metadata at rest: DuckDB store, FAISS index, structured filters.

Modules: ``store`` (the public `Store`), and behind it one module per job: ``types`` (the value
types), ``locking`` (the reader / writer lock), ``database`` (the DuckDB file: connections,
checkpoints, reopening, compaction's rewrite), ``store_meta`` (the store's own facts),
``storage_errors`` (what a refused write means), ``vectors`` (the vector rules and L2
normalisation), ``upsert_batch``, ``metadata`` (metadata typing and schema change), ``importer``
with ``shard_rows`` and ``shard_layout`` (bulk import of embedding shards, and their format),
``reads`` (reads and a search's plumbing), ``index_rows`` and ``derived_index`` (the search index's
life: load and check, build, catch up, save; fed rows through callables), ``backends`` (FAISS /
torch indexes, each tuning itself), ``atomic`` (the one atomic, fsynced file write), ``filters``,
``schema``, ``signal_copy``.

Public API::

    Store.open(path, *, create=True, identity=None, index_kind=None, device="auto",
               backend="auto", read_only=False, with_index=True, memory_limit="1GB") -> Store
    Store.upsert(ecg_ids, record_vectors, *, identity, patient_ids=None, segment_vectors=None,
                 sources=None, fs=None, lead_names=None, duration_s=None, n_segments=None,
                 metadata=None) -> UpsertResult
    Store.delete(ecg_ids=None, *, patient_ids=None) -> int
    Store.update_metadata({ecg_id: {key: value}}) -> int
    Store.get(ecg_ids, columns=None) -> list[dict]
    Store.search(queries=None, *, ecg_ids=None, k=10, filter=None, exclude_same_patient=False,
                 query_patient_ids=None, columns=()) -> list[list[Hit]]
    Store.iter_batches(filter=None, columns=None, with_vectors=False) -> Iterator[pa.RecordBatch]
    Store.compact(), Store.checkpoint(), Store.info() -> StoreInfo, Store.columns(), Store.close()

Filters: Term(column, op, value), All([...]), Any([...]); parse_filter("age>=60 and sex=F").
"""

from __future__ import annotations

import importlib

# Imported on first use (as ``ecg_atlas.embedder`` does): a module that needs only ``index.schema``
# (the CLI's config, say) must not load DuckDB, FAISS and pyarrow through ``Store``.
_EXPORTS = {
    "All": "filters", "Any": "filters", "Filter": "filters", "OPERATORS": "filters", "Term": "filters",
    "compile_filter": "filters", "parse_filter": "filters",
    "EncoderIdentity": "types", "Hit": "types", "Store": "store", "StoreInfo": "types", "UpsertResult": "types",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value

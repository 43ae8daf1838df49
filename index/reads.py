"""The read side's plumbing, for `Store`'s reads: which columns a caller may read, how stored
values come back, which ECGs are stored (and their signal copies), and a search resolved in DuckDB around
the index (its query vectors and patients, the rows its filter allows, the rows each query must
not return, the hits kept and their columns).

Every function reads through the cursor it is given, under the store's read lock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pyarrow as pa

from ecg_atlas.errors import NotFoundError, StoreError

from . import schema, signal_copy, vectors
from .filters import Filter, compile_filter
from .signal_copy import StoredSignal

if TYPE_CHECKING:
    from .backends import VectorIndex

#: A search's hits per query: (sequence number, score) pairs, best first.
Picked = list[list[tuple[int, float]]]


def readable(columns: Mapping[str, schema.Column], asked: Sequence[str] | None, allow_vectors: bool) -> list[str]:
    """The columns to read: every metadata column (`asked` None), or those asked, each checked."""
    if asked is None:
        return list(columns)
    out = []
    for name in asked:
        if name in columns or (allow_vectors and name in schema.VECTOR_COLUMNS):
            out.append(name)
        else:
            extra = " (vectors are read with get())" if name in schema.VECTOR_COLUMNS else ""
            raise StoreError(f"unknown column {name!r}{extra}; columns: {', '.join(sorted(columns))}")
    return out


def decode(names: list[str], row: tuple) -> dict[str, object]:
    """A row's values by column name: vectors as float32 arrays, times in UTC."""
    if not names:
        return {}
    out: dict[str, object] = {}
    for name, value in zip(names, row):
        if name in schema.VECTOR_COLUMNS and value is not None:
            value = np.asarray(value, dtype=np.float32)
        elif isinstance(value, dt.datetime):
            value = value.replace(tzinfo=dt.timezone.utc)
        out[name] = value
    return out


def rows_by_id(cur: duckdb.DuckDBPyConnection, ecg_ids: Sequence[str], names: list[str]) -> dict[str, dict]:
    """The stored rows of `ecg_ids` by ecg_id, decoded (`names` starts with ecg_id); absent ids are left out."""
    if not ecg_ids:
        return {}
    select = ", ".join(f'"{c}"' for c in names)
    return {row[0]: decode(names, row) for row in cur.execute(
        f"SELECT {select} FROM ecg WHERE ecg_id IN (SELECT unnest(?::VARCHAR[]))", [list(ecg_ids)]).fetchall()}


def batch_reader(cur: duckdb.DuckDBPyConnection, columns: Mapping[str, schema.Column], filter: Filter | None,
                 names: Sequence[str], batch_size: int) -> pa.RecordBatchReader:
    """The `names` columns of the rows `filter` allows, in ingest order, as Arrow batches: one
    snapshot, read as the caller iterates (through `cur`, a cursor of its own)."""
    where, params = ("TRUE", []) if filter is None else compile_filter(filter, columns)
    select = ", ".join(f'"{c}"' for c in names)
    return cur.sql(f"SELECT {select} FROM ecg WHERE {where} ORDER BY seq", params=params).to_arrow_reader(batch_size)


def not_found(missing: Sequence[str]) -> NotFoundError:
    """The error naming (the first few of) the ecg_ids that are not stored."""
    shown = ", ".join(repr(m) for m in missing[:5])
    return NotFoundError(f"{len(missing)} ecg_id(s) not in the store: {shown}{' …' if len(missing) > 5 else ''}")


def existing(cur: duckdb.DuckDBPyConnection, ecg_ids: Sequence[str]) -> set[str]:
    """The subset of `ecg_ids` that are stored (one indexed lookup)."""
    ids = list(dict.fromkeys(ecg_ids))
    if not ids:
        return set()
    if len(ids) == 1:
        rows = cur.execute("SELECT ecg_id FROM ecg WHERE ecg_id = ?", ids).fetchall()
    else:
        rows = cur.execute("SELECT ecg_id FROM ecg WHERE ecg_id IN (SELECT unnest(?::VARCHAR[]))", [ids]).fetchall()
    return {row[0] for row in rows}


def stored_signal(cur: duckdb.DuckDBPyConnection, ecg_id: str, has_table: bool) -> StoredSignal | None:
    """The stored copy of an ECG's samples, or None when the store kept none (or, `has_table`
    False, keeps no copies at all); NotFoundError when the ECG is not stored."""
    if not has_table:
        if not existing(cur, [ecg_id]):
            raise NotFoundError(f"ecg_id {ecg_id!r} is not in the store")
        return None
    # one lookup answers both: is the ECG stored, and did the store keep its samples
    row = cur.execute(
        f"SELECT s.samples IS NOT NULL, {', '.join('s.' + c.strip() for c in signal_copy.COLUMNS.split(','))} "
        f"FROM ecg e LEFT JOIN {signal_copy.TABLE} s USING (ecg_id) WHERE e.ecg_id = ?", [ecg_id]).fetchone()
    if row is None:
        raise NotFoundError(f"ecg_id {ecg_id!r} is not in the store")
    return signal_copy.from_row(row[1:]) if row[0] else None


def stored_signals(cur: duckdb.DuckDBPyConnection, ecg_ids: Sequence[str],
                   has_table: bool) -> dict[str, StoredSignal | None]:
    """``stored_signal`` for many ECGs in one query (a lookup's cost is the scan of the samples'
    column, not the number of ids: 0.1 s for one or for fifty on a store of a few hundred ECGs)."""
    ids = list(dict.fromkeys(ecg_ids))
    found = existing(cur, ids)
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFoundError(f"{len(missing)} ecg_id(s) not in the store: {', '.join(repr(m) for m in missing[:5])}")
    out: dict[str, StoredSignal | None] = dict.fromkeys(ids)
    if has_table and ids:
        rows = cur.execute(f"SELECT ecg_id, {signal_copy.COLUMNS} FROM {signal_copy.TABLE} "
                           "WHERE ecg_id IN (SELECT unnest(?::VARCHAR[]))", [ids]).fetchall()
        out.update({row[0]: signal_copy.from_row(row[1:]) for row in rows})
    return out


def stored_queries(cur: duckdb.DuckDBPyConnection, ecg_ids: Sequence[str] | str,
                   dim: int) -> tuple[np.ndarray, list[int | None], list[str | None]]:
    """Queries by stored ECGs: their normalised record vectors, own sequence numbers and patients."""
    ids = [ecg_ids] if isinstance(ecg_ids, str) else list(ecg_ids)
    found = {row[0]: row for row in cur.execute(
        "SELECT ecg_id, seq, patient_id, record_vector FROM ecg WHERE ecg_id IN (SELECT unnest(?::VARCHAR[]))",
        [ids]).fetchall()}
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFoundError(f"query ecg_id(s) not in the store: {', '.join(repr(m) for m in missing[:5])}")
    normalised = vectors.normalised(np.array([found[i][3] for i in ids], dtype=np.float32).reshape(len(ids), dim),
                                    "stored record_vector", dim)
    return normalised, [found[i][1] for i in ids], [found[i][2] for i in ids]


def vector_queries(queries: np.ndarray, query_patient_ids: Sequence[str | None] | str | None,
                   exclude_same_patient: bool, dim: int) -> tuple[np.ndarray, list[int | None], list[str | None]]:
    """Queries by vectors ((dim,) or (n, dim)): normalised, no own row, their patients as given."""
    raw = np.asarray(queries, dtype=np.float32)
    normalised = vectors.normalised(raw[None, :] if raw.ndim == 1 else raw, "query vectors", dim)
    if isinstance(query_patient_ids, str) or query_patient_ids is None:
        patients = [query_patient_ids] * len(normalised)
    else:
        patients = list(query_patient_ids)
        if len(patients) != len(normalised):
            raise StoreError(f"{len(normalised)} query vectors but {len(patients)} query_patient_ids")
    if exclude_same_patient and query_patient_ids is None:
        raise StoreError("exclude_same_patient with query vectors needs query_patient_ids")
    return normalised, [None] * len(normalised), patients


def allowed_seqs(cur: duckdb.DuckDBPyConnection, filter: Filter | None,
                 columns: Mapping[str, schema.Column]) -> np.ndarray | None:
    """The sorted sequence numbers of the rows `filter` allows (None: no filter, every row)."""
    if filter is None:
        return None
    where, params = compile_filter(filter, columns)
    allowed = cur.execute(f"SELECT seq FROM ecg WHERE {where}", params).fetchnumpy()["seq"].astype(np.int64)
    allowed.sort()
    return allowed


def excluded_seqs(cur: duckdb.DuckDBPyConnection, own_seqs: Sequence[int | None], patients: Sequence[str | None],
                  exclude_same_patient: bool, allowed: np.ndarray | None) -> list[set[int]]:
    """Per query the rows it must not return: itself, and with `exclude_same_patient` every row
    of its patient; only those the filter allows (the index never returns the others)."""
    excluded = [set() if s is None else {s} for s in own_seqs]
    if exclude_same_patient:
        wanted = sorted({p for p in patients if p is not None})
        by_patient: dict[str, set[int]] = {}
        if wanted:
            for pid, seq in cur.execute(
                    "SELECT patient_id, seq FROM ecg WHERE patient_id IN (SELECT unnest(?::VARCHAR[]))",
                    [wanted]).fetchall():
                by_patient.setdefault(pid, set()).add(seq)
        for i, p in enumerate(patients):
            excluded[i] |= by_patient.get(p, set()) if p is not None else set()
    if allowed is not None:
        excluded = [{s for s in ex if _contains(allowed, s)} for ex in excluded]
    return excluded


def top_k(index: VectorIndex, queries: np.ndarray, k: int, allowed: np.ndarray | None,
          excluded: Sequence[set[int]]) -> Picked:
    """The index's best `k` rows per query among `allowed`, leaving out the `excluded` ones (it
    is asked for as many more as the longest exclusion)."""
    extra = max((len(ex) for ex in excluded), default=0)
    scores, seqs = index.search(queries, k + extra, allowed)
    picked: Picked = []
    for row_scores, row_seqs, ex in zip(scores.tolist(), seqs.tolist(), excluded):
        keep = [(s, sc) for s, sc in zip(row_seqs, row_scores) if s >= 0 and s not in ex]
        picked.append(keep[:k])
    return picked


def hit_rows(cur: duckdb.DuckDBPyConnection, picked: Picked, names: Sequence[str]) -> dict[int, tuple]:
    """The picked rows by sequence number: (seq, ecg_id, *the `names` columns)."""
    wanted_seqs = sorted({s for hits in picked for s, _ in hits})
    rows: dict[int, tuple] = {}
    if wanted_seqs:
        select = ", ".join(f'"{c}"' for c in ["seq", "ecg_id", *names])
        for row in cur.execute(f"SELECT {select} FROM ecg WHERE seq IN (SELECT unnest(?::BIGINT[]))",
                               [wanted_seqs]).fetchall():
            rows[row[0]] = row
    return rows


def _contains(sorted_values: np.ndarray, value: int) -> bool:
    at = int(np.searchsorted(sorted_values, value))
    return at < len(sorted_values) and int(sorted_values[at]) == value

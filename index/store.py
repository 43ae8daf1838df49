"""The embedded vector store: DuckDB rows are the source of truth, a search index is derived.

A store is one directory::

    store.duckdb          every ECG: ids, base fields, user metadata, the record vector
                          (FLOAT[d]) and optional segment vectors, encoder identity, sequence number
    index.json            which index file is current, with what ties it to this store
                          (derived_index.py; written last: the commit point of an index save)
    index-<seq>-<tag>.*   the persisted search index (FAISS file, or npz for the torch backend)

This module is `Store`, the public API: opening and closing, the encoder identity, the
one-writer / many-readers lock, each write as one transaction (`Store._write_transaction`),
reads and search. The work behind it has one module per job: `types` (the value types),
`locking` (the lock), `database` (the DuckDB file: connections, checkpoints, reopening after a
refused write, compaction's rewrite), `storage_errors` (what a refused write means), `vectors`
(the vector rules and normalisation), `upsert_batch` (an upsert's rows), `metadata` (metadata
typing and schema change, the column cap), `importer` (bulk import of shards), `reads` (readable
columns, decoding, a search's plumbing). The search index's own life (open or rebuild, catch-up,
IVF training, saving) is `derived_index.DerivedIndex`, which reads the rows only through the
scan / ids / count / sample callables given to it here; `backends` holds the index
implementations, each tuning its own search parameters; `atomic` writes every file.

Each write is one DuckDB transaction; the in-memory index is updated after the commit, under a
lock that readers share, so a search sees a batch entirely or not at all. The index file is
rewritten atomically now and then (and on close / compact); opening a store compares the index's
ids with the table's and adds what is missing and removes what was deleted, so a killed process
loses no acknowledged row and leaves no index entry without its row.

Typical use::

    identity = EncoderIdentity("ecg-fm", sha256, "ecgfm-v1", 768)
    with Store.open("atlas-store") as store:
        store.upsert(["ecg-1", "ecg-2"], vectors, identity=identity, patient_ids=["p1", "p2"],
                     metadata=[{"age": 61, "labels": ["AF"]}, {"age": 40}])
        hits = store.search(query, k=10, filter=parse_filter("age>=60"), columns=["age"])
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from ecg_atlas.errors import (
    EncoderMismatchError,
    NotFoundError,
    StorageError,
    StorageUnavailableError,
    StoreError,
)
from ecg_atlas.limits import MAX_K

from . import index_rows, reads, schema, signal_copy, store_meta, upsert_batch
from . import metadata as metadata_rules
from .backends import VectorIndex, resolve_backend
from .database import DB_FILE, Database
from .derived_index import DerivedIndex, read_meta
from .filters import Filter
from .importer import ShardImport
from .locking import ReadWriteLock
from .signal_copy import StoredSignal
from .storage_errors import storage_error
from .types import EncoderIdentity, Hit, ImportResult, StoreInfo, UpsertResult

__all__ = ["DB_FILE", "MAX_K", "EncoderIdentity", "Hit", "ImportResult", "Store", "StoreInfo",
           "UpsertResult"]

log = logging.getLogger(__name__)

#: An IVF store searches exactly until it holds this many rows, then trains its coarse quantizer.
IVF_MIN_TRAIN = 10_000
#: The index file is rewritten once this many rows changed since the last save (and on close):
#: it bounds what an open after a crash must re-read from DuckDB (~10 s on a 2-core machine).
AUTOSAVE_MIN_CHANGES = 250_000


class Store:
    """DuckDB + derived search index in one directory. Thread-safe: one writer, many readers.

    Open with `Store.open`; close with `close()` or a `with` block.
    """

    def __init__(self) -> None:  # use Store.open
        self._lock = ReadWriteLock()
        self._closed = True
        self._derived: DerivedIndex | None = None  # None until the index is loaded or first built

    # -----------------------------------------------------------------------------------------
    # Opening and closing

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        create: bool = True,
        identity: EncoderIdentity | None = None,
        index_kind: str | None = None,
        device: str = "auto",
        backend: str = "auto",
        read_only: bool = False,
        with_index: bool = True,
        memory_limit: str = "1GB",
        index_memory: int | None = None,
        max_metadata_keys: int = schema.MAX_METADATA_KEYS,
        max_metadata_columns: int = schema.MAX_METADATA_COLUMNS,
    ) -> "Store":
        """Open (or create) the store in directory `path`.

        identity: fixes the encoder of a new store (otherwise the first upsert does); for an
            existing store it must match. index_kind: "flat" (exact, the default), "ivf" or
            "hnsw"; remembered by the store, a different value rebuilds the index. device /
            backend: see `backends.resolve_backend`; the choice is reported by `info()`.
            read_only: no writes, nothing written (other processes may read too). with_index:
            False skips loading the search index (export and analysis scans need only DuckDB).
            memory_limit: DuckDB's buffer pool cap. index_memory: bytes an "ivfpq" index may
            take (its code size is chosen from it and the row count; remembered by the store).
            max_metadata_keys / max_metadata_columns: the schema's bounds (schema.py): keys per
            ECG, user columns in the store; writes past them raise MetadataLimitError.
        """
        self = cls()
        self._path = Path(path)
        self._max_metadata_keys = max_metadata_keys
        self._max_metadata_columns = max_metadata_columns
        if not (self._path / DB_FILE).exists():
            if not create or read_only:
                raise NotFoundError(f"no store at {self._path} (missing {DB_FILE}); create it first")
            self._path.mkdir(parents=True, exist_ok=True)
        self._read_only = read_only
        self._db = Database(self._path, read_only=read_only, memory_limit=memory_limit)
        self._closed = False
        try:
            self._load_meta(identity)
            meta = read_meta(self._path)
            self._kind_requested = index_kind or (meta or {}).get("kind_requested") or "flat"
            self._index_memory = index_memory or (meta or {}).get("index_memory")
            self._backend_name = resolve_backend(device, backend, self._kind_requested)
            if with_index and self._identity is not None:
                self._derived = self._new_derived_index()
                self._derived.open(meta, high_water_seq=self._next_seq - 1)
        except BaseException:
            self._db.close()
            self._closed = True
            raise
        log.info("store opened: %d ECGs, backend %s, index %s", self._count(), self._backend_name,
                 self._index.kind if self._index else "not loaded")
        return self

    def close(self) -> None:
        """Save the index if it changed, checkpoint DuckDB and release the files."""
        if self._closed:
            return
        with self._lock.write():
            try:
                if not self._read_only and not self._db.invalid:
                    if self._derived is not None and self._derived.needs_save:
                        self._save_index()
                    self._db.checkpoint()
            except StorageError:
                # Logged with the OS error. Nothing acknowledged is lost: committed rows are in
                # DuckDB's WAL (replayed at the next open) and the index is caught up from them.
                log.warning("store closed without saving its index / checkpointing: the next open "
                            "replays the database's WAL and catches the index up")
            finally:
                self._db.close()
                self._closed = True
                self._derived = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _con(self) -> duckdb.DuckDBPyConnection:
        """The writer's DuckDB connection (used under the write lock, or for a cursor of its own)."""
        return self._db.con

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's DuckDB connection for reads (DuckDB connections are not shared across threads)."""
        if self._closed:
            raise StoreError("the store is closed")
        return self._db.cursor()

    # -----------------------------------------------------------------------------------------
    # Store metadata: identity, sequence counter, uuid

    def _load_meta(self, identity: EncoderIdentity | None) -> None:
        self._identity: EncoderIdentity | None = None
        if not self._db.has_table(store_meta.TABLE):
            if self._read_only:
                raise StoreError(f"{self._path} is not an ECG Atlas store (no store_meta table)")
            with self._write_transaction():
                store_meta.create(self._con)
        facts = store_meta.read(self._con, self._path)
        self._uuid, self._next_seq, self._identity = facts.store_uuid, facts.next_seq, facts.identity
        if self._identity is not None and not self._read_only:
            self._con.execute(signal_copy.DDL)  # stores made before signal copies existed get the table
        # a read-only store made before signal copies existed has no such table (and keeps none)
        self._has_signal_table = self._db.has_table(signal_copy.TABLE)
        if identity is not None:
            if self._identity is None:
                if self._read_only:
                    raise StoreError("a read-only store cannot be given an encoder identity")
                with self._write_transaction(identity):
                    pass  # fixes the store's encoder
            else:
                self._check_identity(identity)
        self._refresh_columns()

    def _check_identity(self, identity: EncoderIdentity) -> None:
        if identity != self._identity:
            raise EncoderMismatchError(
                f"this store holds vectors from {self._identity.describe()}; refusing vectors from "
                f"{identity.describe()}. One store holds one encoder: use another store directory "
                f"for this encoder (or re-embed with the store's encoder)")

    def _refresh_columns(self) -> None:
        if self._db.invalid:
            return  # _recover refreshes them from the reopened database
        if self._identity is None:
            self._columns: dict[str, schema.Column] = {}
            return
        described = self._con.execute("DESCRIBE ecg").fetchall()
        self._columns = schema.columns_from_duckdb([(row[0], row[1]) for row in described])

    def _count(self) -> int:
        if self._identity is None:
            return 0
        return int(self._cursor().execute("SELECT count(*) FROM ecg").fetchall()[0][0])

    # -----------------------------------------------------------------------------------------
    # The derived index (derived_index.py), given the rows through callables

    @property
    def _index(self) -> VectorIndex | None:
        return self._derived.index if self._derived is not None else None

    def _new_derived_index(self) -> DerivedIndex:
        rows = index_rows.from_database(self._db, self._identity.dim, self._count)
        return DerivedIndex(self._path, rows, store_uuid=self._uuid, identity=self._identity,
                            kind_requested=self._kind_requested, backend=self._backend_name,
                            ivf_min_train=IVF_MIN_TRAIN, index_memory=self._index_memory)

    def _save_index(self) -> None:
        """Save the derived index; a disk that refuses the write raises StorageError (logged)."""
        try:
            self._derived.save(high_water_seq=self._next_seq - 1)
        except (OSError, RuntimeError) as exc:  # faiss reports a failed write as RuntimeError
            error = storage_error(exc, "saving the index")
            if error is None:
                raise
            raise error from error.__cause__

    def _autosave(self) -> None:
        """Save the index once enough changed since its last save (bounds the catch-up after a crash)."""
        if self._derived.unsaved >= max(AUTOSAVE_MIN_CHANGES, len(self._derived.index) // 2):
            try:
                self._save_index()
            except StorageError:  # the rows are committed; the save is retried later (logged)
                pass

    def warm_up(self) -> None:
        """Pay the write path's one-time library loading now instead of in the first write.

        DuckDB imports pandas (and NumPy's masked arrays) on its first Arrow registration and
        NumPy fetch: ~0.2 s holding the GIL, which a server would otherwise spend mid-Ingest.
        Nothing is stored.
        """
        if self._closed:
            raise StoreError("the store is closed")
        self._db.warm_up()

    def checkpoint(self) -> None:
        """Persist the index now and checkpoint DuckDB (the server may call this when idle)."""
        self._require_writable()
        with self._lock.write():
            if self._derived is not None:
                self._save_index()
            self._db.checkpoint()

    # -----------------------------------------------------------------------------------------
    # Writes: each one transaction (_write_transaction), under the write lock

    def _require_writable(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")
        if self._read_only:
            raise StoreError("the store was opened read-only")
        if self._db.invalid and self._lock.held_by_this_thread():
            try:  # a failed write left DuckDB invalidated and reopening it failed then: try again
                self._recover()
            except Exception as exc:  # any failure: reported as the storage error it is
                raise (storage_error(exc, "reopening the database") or StorageUnavailableError()) from exc

    @contextmanager
    def _write_transaction(self, identity: EncoderIdentity | None = None) -> Iterator[None]:
        """One DuckDB transaction for a write (the caller holds the write lock, or is opening the
        store): with `identity`, the encoder fixed on first use or checked; COMMIT at the end, and
        on any failure a rollback (`Database.transaction`: a disk that refused the write raises
        StorageError, a database DuckDB gave up on is reopened) that leaves the identity and
        columns as they were."""
        try:
            with self._db.transaction(recover=self._recover):
                if identity is not None:
                    if self._identity is None:
                        store_meta.set_identity(self._con, identity)
                        self._identity, self._has_signal_table = identity, True
                        self._refresh_columns()
                    else:
                        self._check_identity(identity)
                yield
        except BaseException:
            if not self._db.invalid:  # else not reopened yet: the next write reopens it and rereads both
                if self._identity is not None and not store_meta.has_identity(self._con):
                    self._identity = None
                self._refresh_columns()  # columns added in the failed transaction are gone
            raise

    def _recover(self) -> None:
        """Reopen DuckDB after a fatal error invalidated the connection (a failed automatic
        checkpoint; the COMMIT itself is durable): the WAL is replayed (that works on a full disk),
        the sequence counter and the index catch up with what DuckDB holds, so no acknowledged
        row is lost and writes resume."""
        self._db.reopen()  # DuckDB replays its WAL: every committed transaction is back
        facts = store_meta.read(self._con, self._path)
        self._next_seq, self._identity = facts.next_seq, facts.identity
        self._refresh_columns()
        if self._derived is not None:
            self._derived.catch_up()
        log.warning("database reopened after a failed write; %d ECGs stored", self._count())

    def upsert(
        self,
        ecg_ids: Sequence[str],
        record_vectors: np.ndarray,
        *,
        identity: EncoderIdentity,
        patient_ids: Sequence[str | None] | None = None,
        segment_vectors: Sequence[np.ndarray | None] | None = None,
        sources: Sequence[str | None] | None = None,
        fs: Sequence[float | None] | None = None,
        lead_names: Sequence[Sequence[str] | None] | None = None,
        duration_s: Sequence[float | None] | None = None,
        n_segments: Sequence[int | None] | None = None,
        metadata: Sequence[Mapping[str, object]] | None = None,
        signals: Sequence[StoredSignal | None] | None = None,
    ) -> UpsertResult:
        """Insert ECGs, replacing any already stored under the same ecg_id; one transaction.

        record_vectors: (n, dim) float32, one per ecg_id (stored as given, searched normalised).
        identity: the encoder that made the vectors; must be the store's (fixed on first use).
        segment_vectors: per ECG a (n_segments, dim) array, or None. The per-ECG sequences
        (patient_ids ... metadata) are None or length n. metadata: per ECG a dict of user
        fields; a new key becomes a typed column (numbers, strings, booleans, datetimes, lists of
        strings), later values must fit that type (an integer column widens to DOUBLE).
        signals: per ECG its samples as they arrived (`StoredSignal`) or None; kept so the ECG can
        be drawn and re-embedded later without reading any file (index/signal_copy.py). A
        replaced ECG's old copy goes with it.
        Returns how many ecg_ids were new and how many replaced.
        """
        self._require_writable()
        if not isinstance(identity, EncoderIdentity):
            raise StoreError("upsert needs identity=EncoderIdentity(...) naming the encoder of these vectors")
        ecg_ids = list(ecg_ids)
        if not ecg_ids:
            return UpsertResult(0, 0)
        ecg_ids = upsert_batch.checked_ids(ecg_ids)
        if self._identity is not None:
            self._check_identity(identity)
        batch = upsert_batch.build(
            ecg_ids, record_vectors, identity, patient_ids=patient_ids, segment_vectors=segment_vectors,
            sources=sources, fs=fs, lead_names=lead_names, duration_s=duration_s, n_segments=n_segments,
            metadata=metadata, signals=signals)
        metadata_rules.check_rows(batch.metadata, self._max_metadata_keys)
        with self._lock.write():
            self._require_writable()
            with self._write_transaction(identity):
                typed = metadata_rules.typed_values(self._con, self._columns, batch.metadata,
                                                    self._max_metadata_columns)
                replaced, seqs = upsert_batch.insert(self._con, batch, typed, self._next_seq)
            self._next_seq += len(batch)
            # After the commit: a crash from here on is repaired when the store next opens.
            if self._derived is None:
                self._derived = self._new_derived_index()
            self._derived.apply(seqs, batch.normalised, replaced)
            self._autosave()
        return UpsertResult(inserted=len(batch) - len(replaced), updated=len(replaced))

    def import_shards(self, paths: Sequence[str | os.PathLike], *, identity: EncoderIdentity) -> ImportResult:
        """Bulk-load embedding shards (Parquet files laid out as ``index/shard_layout.py``
        describes), made by `identity`'s encoder; then build the search index once.

        In one transaction, every embedded row whose ecg_id the store does not hold yet is
        inserted (importing the same shards twice changes nothing); the shards' refusals are
        counted, not stored, and so are the rows `shard_rows` refuses, per reason code: no
        ecg_id, an unknown status, vectors holding NaN or infinity, all zeros or of a norm no
        encoder produces. Every page is read with its checksum verified: a damaged shard refuses
        the whole import (`ShardError`, ``shard_checksum_mismatch``) and the store keeps nothing
        of it. ``metadata.<key>`` columns become user columns by the same typing rules as
        `upsert`. The write lock is held for the insert only: the index over the new rows is
        built beside the live one (searches go on), from the vectors the insert read (the ivfpq
        kind, which holds no full vectors, reads them back from DuckDB), and swapped in, caught
        up with any write made meanwhile.
        """
        self._require_writable()
        files = [os.fspath(p) for p in paths]
        if not files:
            return ImportResult(0, 0, 0)
        # the census (ids, statuses and reasons, their pages verified) before the lock: reads go on
        job = ShardImport(files, keep_vectors=self._kind_requested != "ivfpq")
        with self._lock.write():
            self._require_writable()
            with job.failures(), self._write_transaction(identity):
                job.insert(self._con, identity, self._columns, self._next_seq, self._max_metadata_columns)
            first_seq = self._next_seq
            self._next_seq += job.inserted
            self._refresh_columns()
        if job.inserted:
            fresh = self._new_derived_index()
            own = fresh.rows
            fresh.rows = job.index_rows(own, first_seq)  # built from the imported vectors once
            try:
                fresh.rebuild()  # outside the lock: the rows are committed
            finally:
                fresh.rows = own  # the index reads DuckDB for anything after
            with self._lock.write():
                fresh.catch_up()
                self._derived = fresh
                try:
                    self._save_index()
                except StorageError:  # the rows are committed; the save is retried later (logged)
                    pass
        return job.result()

    def delete(self, ecg_ids: Sequence[str] | None = None, *, patient_ids: Sequence[str] | None = None) -> int:
        """Delete ECGs by id and/or every ECG of the given patients (withdrawal of consent).

        They leave search results at once; their bytes leave the files at `compact()`. Unknown
        ids are ignored (deleting twice is harmless). Returns how many ECGs were deleted.
        """
        self._require_writable()
        ids = [] if ecg_ids is None else ([ecg_ids] if isinstance(ecg_ids, str) else list(ecg_ids))
        patients = [] if patient_ids is None else ([patient_ids] if isinstance(patient_ids, str) else list(patient_ids))
        if not ids and not patients:
            return 0
        if self._identity is None:
            return 0
        with self._lock.write():
            self._require_writable()
            con = self._con
            with self._write_transaction():
                removed = con.execute(
                    "DELETE FROM ecg WHERE ecg_id IN (SELECT unnest(?::VARCHAR[])) "
                    "OR patient_id IN (SELECT unnest(?::VARCHAR[])) RETURNING seq, ecg_id",
                    [ids, patients],
                ).fetchnumpy()
                gone = removed["seq"].astype(np.int64)
                if len(gone):
                    con.execute(f"DELETE FROM {signal_copy.TABLE} WHERE ecg_id IN (SELECT unnest(?::VARCHAR[]))",
                                [list(removed["ecg_id"])])
            if self._derived is not None:
                self._derived.remove(gone)
                self._autosave()
        log.info("deleted %d ECGs", len(gone))
        return len(gone)

    def update_metadata(self, updates: Mapping[str, Mapping[str, object]]) -> int:
        """Set user metadata of stored ECGs without touching their vectors; one transaction.

        updates: ecg_id -> {key: value}; a value of None clears the field. New keys become
        typed columns as in `upsert`. Raises NotFoundError (changing nothing) if an ecg_id is
        not stored. Returns the number of ECGs updated.
        """
        self._require_writable()
        ids = list(updates)
        if not ids:
            return 0
        rows = [dict(updates[i]) for i in ids]
        metadata_rules.check_rows(rows, self._max_metadata_keys)
        with self._lock.write():
            self._require_writable()
            found = self._existing(ids)
            missing = [i for i in ids if i not in found]
            if missing:
                raise reads.not_found(missing)
            with self._write_transaction():
                typed = metadata_rules.typed_values(self._con, self._columns, rows, self._max_metadata_columns)
                metadata_rules.set_values(self._con, ids, rows, typed)
        return len(ids)

    def compact(self) -> None:
        """Remove deleted ECGs from disk: rewrite the database file and the index file.

        IVF / HNSW indexes are rebuilt (an IVF is retrained for the current size).
        """
        self._require_writable()
        with self._lock.write():
            self._require_writable()
            self._db.rewrite(["store_meta", *(("ecg", signal_copy.TABLE) if self._identity is not None else ())])
            if self._derived is not None:
                self._derived.compact()
                self._save_index()
        log.info("store compacted")

    def record_encoder_contract(self, contract: dict) -> None:
        """Keep the encoder's input contract (leads, rate, window, filtering, pooling, licence...)
        beside the identity, so the store says how its vectors were made. Informational: identity
        equality stays model id, checkpoint sha256, preprocessing version and dimension.

        A disk that refuses the write (full...) is logged and the contract is recorded at a later
        start: being informational, it never keeps a server on a full disk from serving reads."""
        self._require_writable()
        if self._identity is None:
            raise StoreError("the store has no encoder yet: open it with identity=... before recording a contract")
        text = json.dumps(contract, sort_keys=True)
        with self._lock.write():
            self._require_writable()
            if store_meta.contract(self._con) == text:
                return
            try:
                with self._write_transaction(self._identity):
                    store_meta.set_contract(self._con, text)
            except StorageError:  # logged at ERROR with the OS error by _write_transaction
                log.warning("the encoder's contract was not recorded in the store (its disk refused the write); "
                            "the next start records it")

    # -----------------------------------------------------------------------------------------
    # Reads

    def existing(self, ecg_ids: Sequence[str]) -> set[str]:
        """The subset of ecg_ids that are stored (one indexed lookup; ingest asks this per ECG)."""
        with self._lock.read():
            return self._existing(ecg_ids)

    def _existing(self, ecg_ids: Sequence[str]) -> set[str]:
        """`existing` for a caller that holds the read or write lock."""
        return reads.existing(self._cursor(), ecg_ids) if self._identity is not None else set()

    def signal(self, ecg_id: str) -> StoredSignal | None:
        """The stored copy of an ECG's samples, or None when the store kept none for it.
        Raises NotFoundError when the ECG is not stored."""
        with self._lock.read():
            if self._identity is None:
                raise NotFoundError(f"ecg_id {ecg_id!r} is not in the store")
            return reads.stored_signal(self._cursor(), ecg_id, self._has_signal_table)

    def signals(self, ecg_ids: Sequence[str]) -> dict[str, StoredSignal | None]:
        """``signal`` for many ECGs at once (one query: reading a batch costs what reading one does).
        Raises NotFoundError naming the ecg_ids that are not stored."""
        with self._lock.read():
            if self._identity is None:
                if ecg_ids:
                    raise NotFoundError(f"ecg_id {ecg_ids[0]!r} is not in the store")
                return {}
            return reads.stored_signals(self._cursor(), ecg_ids, self._has_signal_table)

    def get(self, ecg_ids: Sequence[str], columns: Sequence[str] | None = None) -> list[dict[str, object]]:
        """Stored rows, in the order asked. columns: None = every metadata column; may include
        "record_vector" / "segment_vectors" (returned as float32 arrays, as stored).
        Raises NotFoundError naming the ecg_ids that are not stored."""
        ids = [ecg_ids] if isinstance(ecg_ids, str) else list(ecg_ids)
        with self._lock.read():
            names = ["ecg_id", *reads.readable(self._columns, columns, allow_vectors=True)]
            rows = reads.rows_by_id(self._cursor(), ids, names) if self._identity is not None else {}
        missing = [i for i in ids if i not in rows]
        if missing:
            raise reads.not_found(missing)
        return [rows[i] for i in ids]

    def search(
        self,
        queries: np.ndarray | None = None,
        *,
        ecg_ids: Sequence[str] | None = None,
        k: int = 10,
        filter: Filter | None = None,
        exclude_same_patient: bool = False,
        query_patient_ids: Sequence[str | None] | str | None = None,
        columns: Sequence[str] = (),
    ) -> list[list[Hit]]:
        """Nearest stored ECGs by cosine similarity, one hit list per query, best first.

        Query either by vectors (`queries`: (dim,) or (n, dim)) or by stored `ecg_ids` (the
        query ECG itself is never among its own hits). filter: a `Term` / `All` / `Any` tree
        (see `filters`); with an exact index the hits are exactly the top-k of the rows the
        filter allows. exclude_same_patient: drop ECGs of the query's patient (the stored
        patient for ecg_ids; `query_patient_ids` for vectors). columns: metadata to return.
        """
        if not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise StoreError(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
        if (queries is None) == (ecg_ids is None):
            raise StoreError("search by query vectors or by stored ecg_ids: give exactly one")
        with self._lock.read():
            if self._closed:
                raise StoreError("the store is closed")
            if self._index is None:
                if self._identity is None:
                    n_q = 1 if queries is None or np.ndim(queries) == 1 else len(queries)
                    return [[] for _ in range(len(ecg_ids) if ecg_ids is not None else n_q)]
                raise StoreError("the store was opened without its search index (with_index=False)")
            names = reads.readable(self._columns, columns, allow_vectors=False)
            cur = self._cursor()
            dim = self._identity.dim
            if ecg_ids is not None:
                query_vectors, own_seqs, patients = reads.stored_queries(cur, ecg_ids, dim)
            else:
                query_vectors, own_seqs, patients = reads.vector_queries(
                    queries, query_patient_ids, exclude_same_patient, dim)
            allowed = reads.allowed_seqs(cur, filter, self._columns)
            excluded = reads.excluded_seqs(cur, own_seqs, patients, exclude_same_patient, allowed)
            picked = reads.top_k(self._index, query_vectors, k, allowed, excluded)
            found = reads.hit_rows(cur, picked, names)
        return [[Hit(found[s][1], score, reads.decode(names, found[s][2:])) for s, score in hits if s in found]
                for hits in picked]

    def iter_batches(
        self,
        filter: Filter | None = None,
        columns: Sequence[str] | None = None,
        with_vectors: bool = False,
        batch_size: int = 8_192,
    ) -> Iterator[pa.RecordBatch]:
        """Stream stored rows as Arrow record batches (ecg_id first), in ingest order.

        The rows are one consistent snapshot taken when iteration starts; writes made while
        iterating are not seen. with_vectors adds "record_vector" (as stored, not normalised).
        """
        with self._lock.read():
            if self._identity is None:
                return
            names = [c for c in reads.readable(self._columns, columns, allow_vectors=False) if c != "ecg_id"]
            if with_vectors:
                names.append("record_vector")
            cur = self._con.cursor()  # its own: the batches are read after the lock is let go
            reader = reads.batch_reader(cur, self._columns, filter, ["ecg_id", *names], batch_size)
        try:
            yield from reader
        finally:
            cur.close()

    def ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` stored ecg_ids starting with ``prefix``, in id order (type-ahead)."""
        with self._lock.read():
            if self._identity is None:
                return []
            rows = self._cursor().execute(
                "SELECT ecg_id FROM ecg WHERE starts_with(ecg_id, ?) ORDER BY ecg_id LIMIT ?",
                [prefix, int(limit)]).fetchall()
        return [row[0] for row in rows]

    def columns(self) -> dict[str, str]:
        """Readable (and filterable) columns and their DuckDB types."""
        with self._lock.read():
            return {name: c.type for name, c in self._columns.items()}

    def info(self) -> StoreInfo:
        """Counts, dimension, encoder identity, index kind and the backend that searches."""
        with self._lock.read():
            if self._closed:
                raise StoreError("the store is closed")
            index = self._index
            kind = self._derived.kind_label() if self._derived is not None else "not loaded"
            contract = store_meta.contract(self._cursor())
            return StoreInfo(
                path=str(self._path),
                n_ecgs=self._count(),
                n_index_entries=len(index) if index is not None else 0,
                dim=self._identity.dim if self._identity else None,
                identity=self._identity,
                index_kind=kind,
                index_kind_requested=self._kind_requested,
                backend=self._backend_name,
                index_settings=index.settings() if index is not None else {},
                columns={name: c.type for name, c in self._columns.items()},
                high_water_seq=self._next_seq - 1,
                encoder_contract=json.loads(contract) if contract is not None else None,
            )

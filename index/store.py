"""The embedded vector store: DuckDB rows are the source of truth, a search index is derived.

A store is one directory::

    store.duckdb          every ECG: ids, base fields, user metadata, the record vector
                          (FLOAT[d]) and optional segment vectors, encoder identity, sequence number
    index.json            which index file is current, with what ties it to this store
                          (derived_index.py; written last: the commit point of an index save)
    index-<seq>-<tag>.*   the persisted search index (FAISS file, or npz for the torch backend)

This module holds the DuckDB side: the schema and encoder identity, the one-writer / many-readers
lock, writes, reads, the search plumbing (filters and patient exclusions resolved in DuckDB, then
the index searched) and what happens when the disk refuses a write. The search index's own life
(open or rebuild, catch-up, IVF training, saving) is `derived_index.DerivedIndex`, which reads the
rows only through the scan / ids / count / sample callables given to it here; backends.py holds
the index implementations, each tuning its own search parameters; atomic.py writes every file.

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

import datetime as dt
import errno
import json
import logging
import os
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from ecg_atlas.errors import (
    EncoderMismatchError,
    NotFoundError,
    ShardError,
    StorageError,
    StorageFullError,
    StorageUnavailableError,
    StoreError,
    without_paths,
)

from . import schema, signal_copy
from .atomic import replace_durably
from .backends import VectorIndex, resolve_backend
from .derived_index import DerivedIndex, Rows, read_meta
from .filters import Filter, compile_filter
from .shard_rows import IMPORT_REFUSALS, ShardRows, census
from .signal_copy import StoredSignal

log = logging.getLogger(__name__)

DB_FILE = "store.duckdb"
FORMAT_VERSION = 1
MAX_K = 10_000
#: Rows read from DuckDB per chunk when (re)building the index.
SCAN_BATCH = 16_384
#: An IVF store searches exactly until it holds this many rows, then trains its coarse quantizer.
IVF_MIN_TRAIN = 10_000
#: The index file is rewritten once this many rows changed since the last save (and on close):
#: it bounds what an open after a crash must re-read from DuckDB (~10 s on a 2-core machine).
AUTOSAVE_MIN_CHANGES = 250_000
FLOAT_CODECS_OFF = "alp,alprd,chimp,patas"


@dataclass(frozen=True)
class EncoderIdentity:
    """The encoder every vector in a store comes from; a store holds exactly one."""

    model_id: str
    checkpoint_sha256: str
    preprocessing_version: str
    dim: int

    def describe(self) -> str:
        return (f"model_id={self.model_id!r}, checkpoint sha256={self.checkpoint_sha256[:12]}…, "
                f"preprocessing={self.preprocessing_version!r}, dim={self.dim}")


@dataclass(frozen=True)
class UpsertResult:
    inserted: int
    updated: int


@dataclass(frozen=True)
class ImportResult:
    inserted: int
    skipped_existing: int  # embedded rows whose ecg_id the store held already
    refused: int  # rows not stored: refusals the shards record, and embedded rows refused at import
    #: refused rows per reason code: the shards' own (``too_short`` ...) and the import's
    #: (``shard_rows.IMPORT_REFUSALS``: ``missing_ecg_id``, ``unknown_status``, ``vector_*``)
    refusals: dict[str, int] = field(default_factory=dict)


#: Columns an import fills, in `ecg` table order (shards.py's fixed columns, the identity, the vectors).
_IMPORTED = ("seq", "ecg_id", "patient_id", "source", "fs", "lead_names", "duration_s", "n_segments", "model_id",
             "checkpoint_sha256", "preprocessing_version", "ingested_at", "record_vector", "segment_vectors")
#: Shard columns holding user metadata: ``metadata.<key>``.
IMPORT_METADATA_PREFIX = "metadata."
#: The store type a shard's metadata column (as DuckDB reads it) goes to.
_IMPORT_TYPES = {"BIGINT": schema.TYPE_BIGINT, "INTEGER": schema.TYPE_BIGINT, "DOUBLE": schema.TYPE_DOUBLE,
                 "FLOAT": schema.TYPE_DOUBLE, "VARCHAR": schema.TYPE_TEXT, "BOOLEAN": schema.TYPE_BOOL,
                 "TIMESTAMP": schema.TYPE_TIME, "TIMESTAMP_NS": schema.TYPE_TIME, "VARCHAR[]": schema.TYPE_LABELS}


@dataclass(frozen=True)
class Hit:
    """One search result: the stored ECG, its cosine similarity, the requested columns."""

    ecg_id: str
    score: float
    metadata: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class StoreInfo:
    path: str
    n_ecgs: int
    n_index_entries: int
    dim: int | None
    identity: EncoderIdentity | None
    index_kind: str
    index_kind_requested: str
    backend: str
    index_settings: dict[str, object]
    columns: dict[str, str]
    high_water_seq: int
    encoder_contract: dict | None = None  # the input contract of the encoder behind the vectors


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers (no starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self.writer_thread: int | None = None

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
            self.writer_thread = threading.get_ident()
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self.writer_thread = None
                self._cond.notify_all()


def _normalised(vectors: np.ndarray, what: str, dim: int) -> np.ndarray:
    """float32 (n, dim) rows scaled to unit length; refuses NaN / inf / zero rows."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise StoreError(f"{what} must have shape (n, {dim}); got {vectors.shape}")
    if not np.isfinite(vectors).all():
        bad = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
        raise StoreError(f"{what} row {bad} contains NaN or infinity")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any():
        raise StoreError(f"{what} row {int(np.flatnonzero(norms[:, 0] == 0)[0])} is all zeros; cosine is undefined")
    return np.ascontiguousarray(vectors / norms, dtype=np.float32)


_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_FULL_TEXT = ("no space left on device", "disk quota exceeded")
_OS_WRITE_TEXT = ("could not write file", "could not truncate file", "could not fsync", "could not open file",
                  "read-only file system", "input/output error", "permission denied")


def _storage_error(exc: BaseException, doing: str) -> StorageError | None:
    """The StorageError for an OS write failure (ENOSPC and others) that DuckDB, FAISS or Python
    reported while `doing`, logged at ERROR with the OS error (file names cut to their last part:
    no log line above DEBUG says where the store lives); None when `exc` is something else.

    DuckDB wraps the OS error in its own exception text (TransactionException "Failed to commit:
    Could not write file ...: No space left on device", IOException, or FatalException when a
    checkpoint failed); a failed ROLLBACK after it is looked through to the error it hides."""
    if isinstance(exc, StorageError):
        return exc
    seen: list[BaseException] = []
    while exc is not None and len(seen) < 4:
        seen.append(exc)
        exc = exc.__context__
    for candidate in seen:
        text = str(candidate).lower()
        number = candidate.errno if isinstance(candidate, OSError) else None
        if number in _FULL_ERRNOS or any(t in text for t in _FULL_TEXT):
            log.error("%s failed: no space left on the store's disk (%s)", doing,
                      without_paths(str(candidate)))
            error: StorageError = StorageFullError()
        elif (isinstance(candidate, OSError) and number is not None) or (
                isinstance(candidate, (duckdb.Error, RuntimeError)) and any(t in text for t in _OS_WRITE_TEXT)):
            log.error("%s failed: the store's disk refused the write (%s)", doing,
                      without_paths(str(candidate)))
            error = StorageUnavailableError()
        else:
            continue
        error.__cause__ = candidate
        return error
    return None


def _invalidated(exc: BaseException) -> bool:
    """Whether DuckDB gave up on its database instance (a fatal error): it must be reopened."""
    for _ in range(4):  # the error, and what it was raised while handling
        if exc is None:
            break
        if isinstance(exc, duckdb.FatalException) or "invalidated" in str(exc):
            return True
        exc = exc.__context__
    return False


def _vectors_from_arrow(column: pa.Array | pa.ChunkedArray, dim: int) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


#: Python types that need no coercion for a column type (checked exactly: bool is not an int here).
_EXACT_TYPES = {"BIGINT": int, "DOUBLE": float, "VARCHAR": str, "BOOLEAN": bool}


class Store:
    """DuckDB + derived search index in one directory. Thread-safe: one writer, many readers.

    Open with `Store.open`; close with `close()` or a `with` block.
    """

    def __init__(self) -> None:  # use Store.open
        self._lock = _ReadWriteLock()
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []  # per-thread readers, closed by compact()
        self._lock_cursors = threading.Lock()
        self._generation = 0
        self._closed = True
        self._in_transaction = False
        self._derived: DerivedIndex | None = None  # None until the index is loaded or first built
        self._invalid = False  # DuckDB invalidated the connection (failed checkpoint); reopened by _recover

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
        db = self._path / DB_FILE
        if not db.exists():
            if not create or read_only:
                raise NotFoundError(f"no store at {self._path} (missing {DB_FILE}); create it first")
            self._path.mkdir(parents=True, exist_ok=True)
        self._read_only = read_only
        self._memory_limit = memory_limit
        self._connect()
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
            self._con.close()
            self._closed = True
            raise
        log.info("store opened: %d ECGs, backend %s, index %s", self._count(), self._backend_name,
                 self._index.kind if self._index else "not loaded")
        return self

    def _connect(self) -> None:
        config = {"memory_limit": self._memory_limit}
        try:
            self._con = duckdb.connect(str(self._path / DB_FILE), read_only=self._read_only, config=config)
        except duckdb.IOException as exc:
            raise StoreError(f"cannot open the store at {self._path}: {exc} (is another process "
                             f"writing to it? stop it or use the running server)") from exc
        if not self._read_only:
            # Fewer, larger checkpoints: bulk ingest of vectors is ~2x faster than with 16 MB.
            self._con.execute("SET wal_autocheckpoint = '256MB'")
            # DuckDB's float codecs (ALP, ALPRD, Chimp, Patas) cannot shrink embedding floats but
            # analysing them made up 60 % of each checkpoint (BENCHMARKS.md, Store): skip them.
            self._con.execute(f"SET disabled_compression_methods = '{FLOAT_CODECS_OFF}'")
        self._generation += 1

    def close(self) -> None:
        """Save the index if it changed, checkpoint DuckDB and release the files."""
        if self._closed:
            return
        with self._lock.write():
            try:
                if not self._read_only and not self._invalid:
                    if self._derived is not None and self._derived.needs_save:
                        self._save_index()
                    self._checkpoint_duckdb()
            except StorageError:
                # Logged with the OS error. Nothing acknowledged is lost: committed rows are in
                # DuckDB's WAL (replayed at the next open) and the index is caught up from them.
                log.warning("store closed without saving its index / checkpointing: the next open "
                            "replays the database's WAL and catches the index up")
            finally:
                self._con.close()
                self._closed = True
                self._derived = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's DuckDB connection for reads (DuckDB connections are not shared across threads)."""
        if self._closed:
            raise StoreError("the store is closed")
        if self._invalid:
            raise StorageUnavailableError("the store is reopening its database after a failed write; retry shortly")
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            local.cursor = self._con.cursor()
            local.generation = self._generation
            with self._lock_cursors:
                self._cursors.append(local.cursor)
        return local.cursor

    # -----------------------------------------------------------------------------------------
    # Store metadata: identity, sequence counter, uuid

    def _load_meta(self, identity: EncoderIdentity | None) -> None:
        con = self._con
        has_meta = bool(con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'store_meta'").fetchall()[0][0])
        if not has_meta:
            if self._read_only:
                raise StoreError(f"{self._path} is not an ECG Atlas store (no store_meta table)")
            con.execute("BEGIN")
            con.execute("CREATE TABLE store_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
            con.execute("INSERT INTO store_meta VALUES ('format_version', ?), ('store_uuid', ?), ('next_seq', '1')",
                        [str(FORMAT_VERSION), uuid.uuid4().hex])
            con.execute("COMMIT")
        values = dict(con.execute("SELECT key, value FROM store_meta").fetchall())
        if int(values.get("format_version", -1)) != FORMAT_VERSION:
            raise StoreError(f"{self._path} has store format {values.get('format_version')}; "
                             f"this version reads format {FORMAT_VERSION}")
        self._uuid = values["store_uuid"]
        self._next_seq = int(values["next_seq"])
        self._identity = EncoderIdentity(**json.loads(values["identity"])) if "identity" in values else None
        if self._identity is not None and not self._read_only:
            con.execute(signal_copy.DDL)  # stores made before signal copies existed get the table
        # a read-only store made before signal copies existed has no such table (and keeps none)
        self._has_signal_table = bool(con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [signal_copy.TABLE]).fetchall()[0][0])
        if identity is not None:
            if self._identity is None:
                if self._read_only:
                    raise StoreError("a read-only store cannot be given an encoder identity")
                self._set_identity(identity)
            else:
                self._check_identity(identity)
        self._refresh_columns()

    def _set_identity(self, identity: EncoderIdentity) -> None:
        """Fix the store's encoder and create the `ecg` table (inside the caller's transaction, if any)."""
        if not isinstance(identity.dim, int) or identity.dim <= 0:
            raise StoreError(f"encoder dimension must be a positive integer, got {identity.dim!r}")
        con = self._con
        own = not self._in_transaction
        if own:
            con.execute("BEGIN")
        con.execute(schema.table_ddl(identity.dim))
        con.execute(signal_copy.DDL)
        self._has_signal_table = True
        con.execute("INSERT INTO store_meta VALUES ('identity', ?)", [json.dumps(asdict(identity))])
        if own:
            con.execute("COMMIT")
        self._identity = identity

    def _check_identity(self, identity: EncoderIdentity) -> None:
        if identity != self._identity:
            raise EncoderMismatchError(
                f"this store holds vectors from {self._identity.describe()}; refusing vectors from "
                f"{identity.describe()}. One store holds one encoder: use another store directory "
                f"for this encoder (or re-embed with the store's encoder)")

    def _refresh_columns(self) -> None:
        if self._invalid:
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
        rows = Rows(scan=self._scan_vectors, ids=self._all_seqs, count=self._count, sample=self._sample_vectors)
        return DerivedIndex(self._path, rows, store_uuid=self._uuid, identity=self._identity,
                            kind_requested=self._kind_requested, backend=self._backend_name,
                            ivf_min_train=IVF_MIN_TRAIN, index_memory=self._index_memory)

    def _all_seqs(self) -> np.ndarray:
        seqs = self._cursor().execute("SELECT seq FROM ecg").fetchnumpy()["seq"].astype(np.int64)
        seqs.sort()
        return seqs

    def _scan_vectors(self, seqs: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(seqs, normalised vectors) chunks for all rows, or for those with `seqs`."""
        if seqs is not None and len(seqs) == 0:
            return
        cur = self._con.cursor()
        try:
            if seqs is None:
                result = cur.sql("SELECT seq, record_vector FROM ecg")
            else:
                wanted = pa.table({"seq": pa.array(seqs, pa.int64())})
                cur.register("wanted_seqs", wanted)
                result = cur.sql("SELECT seq, record_vector FROM ecg SEMI JOIN wanted_seqs USING (seq)")
            for batch in result.to_arrow_reader(SCAN_BATCH):
                if batch.num_rows:
                    vectors = _vectors_from_arrow(batch.column(1), self._identity.dim)
                    yield (batch.column(0).to_numpy().astype(np.int64),
                           _normalised(vectors, "stored record_vector", self._identity.dim))
        finally:
            cur.close()

    def _sample_vectors(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self._cursor().sql(
            f"SELECT seq, record_vector FROM ecg USING SAMPLE reservoir({int(n)} ROWS) REPEATABLE (7)"
        ).to_arrow_table()
        return (rows.column(0).to_numpy().astype(np.int64),
                _normalised(_vectors_from_arrow(rows.column(1), self._identity.dim), "stored record_vector",
                            self._identity.dim))

    def _save_index(self) -> None:
        """Save the derived index; a disk that refuses the write raises StorageError (logged)."""
        try:
            self._derived.save(high_water_seq=self._next_seq - 1)
        except (OSError, RuntimeError) as exc:  # faiss reports a failed write as RuntimeError
            raise _storage_error(exc, "saving the index") or exc

    def warm_up(self) -> None:
        """Pay the write path's one-time library loading now instead of in the first write.

        DuckDB imports pandas (and NumPy's masked arrays) on its first Arrow registration and
        NumPy fetch: ~0.2 s holding the GIL, which a server would otherwise spend mid-Ingest.
        Nothing is stored.
        """
        cur = self._cursor()
        cur.register("warm_up", pa.table({"x": pa.array([1], pa.int64())}))
        try:
            cur.execute("SELECT x FROM warm_up").fetchnumpy()
        finally:
            cur.unregister("warm_up")

    def checkpoint(self) -> None:
        """Persist the index now and checkpoint DuckDB (the server may call this when idle)."""
        self._require_writable()
        with self._lock.write():
            if self._derived is not None:
                self._save_index()
            self._checkpoint_duckdb()

    def _checkpoint_duckdb(self) -> None:
        # An export still streaming rows holds a transaction that blocks CHECKPOINT; DuckDB then
        # checkpoints later (or replays its WAL on the next open), so nothing is lost by skipping.
        try:
            self._con.execute("CHECKPOINT")
        except duckdb.TransactionException as exc:
            log.debug("checkpoint postponed: %s", exc)
        except duckdb.Error as exc:
            error = _storage_error(exc, "checkpointing the database")
            if error is None:
                raise
            # Committed transactions are in the WAL, which DuckDB replays at the next open.
            self._invalid = self._invalid or _invalidated(exc)
            raise error from exc

    # -----------------------------------------------------------------------------------------
    # Writes

    def _require_writable(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")
        if self._read_only:
            raise StoreError("the store was opened read-only")
        if self._invalid and self._lock.writer_thread == threading.get_ident():
            try:  # a failed write left DuckDB invalidated and reopening it failed then: try again
                self._recover()
            except Exception as exc:  # noqa: BLE001 - reported as the storage error it is
                raise (_storage_error(exc, "reopening the database") or StorageUnavailableError()) from exc

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
        n = len(ecg_ids)
        if n == 0:
            return UpsertResult(0, 0)
        for ecg_id in ecg_ids:
            if not isinstance(ecg_id, str) or not ecg_id:
                raise StoreError(f"ecg_id must be a non-empty string, got {ecg_id!r}")
        if len(set(ecg_ids)) != n:
            raise StoreError("the batch names the same ecg_id more than once; send each ECG once")
        if self._identity is not None:
            self._check_identity(identity)
        dim = identity.dim
        raw = np.asarray(record_vectors, dtype=np.float32)
        if raw.ndim == 1 and n == 1:
            raw = raw[None, :]
        normalised = _normalised(raw, "record_vectors", dim)
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
                    raise StoreError(f"segment_vectors for ecg_id {ecg_ids[i]!r} must be finite, shape (n, {dim}); got {seg.shape}")
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
        rows = per_ecg("metadata", metadata)
        rows = [dict(r) if r is not None else {} for r in rows]
        for row in rows:
            schema.check_key_count(row, self._max_metadata_keys)
        for key in {k for r in rows for k in r}:
            schema.check_metadata_name(key)

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

        with self._lock.write():
            self._require_writable()
            con = self._con
            try:
                with self._write_transaction(identity):
                    replaced, seqs = self._insert_rows(con, columns, rows, signal_table, n)
            finally:
                self._unregister(con, "incoming")
            self._next_seq += n
            # After the commit: a crash from here on is repaired when the store next opens.
            if self._derived is None:
                self._derived = self._new_derived_index()
            self._derived.apply(seqs, normalised, replaced)
            self._autosave()
        return UpsertResult(inserted=n - len(replaced), updated=len(replaced))

    @contextmanager
    def _write_transaction(self, identity: EncoderIdentity) -> Iterator[None]:
        """One DuckDB transaction for a write (the caller holds the write lock): the encoder
        identity fixed on first use or checked, COMMIT at the end, and on any failure a rollback
        that leaves the identity and columns as they were (``_abort_write`` classifies the error)."""
        con = self._con
        con.execute("BEGIN")
        self._in_transaction = True
        try:
            if self._identity is None:
                self._set_identity(identity)
                self._refresh_columns()
            else:
                self._check_identity(identity)
            yield
            con.execute("COMMIT")
        except BaseException as exc:
            failure = self._abort_write(exc)
            self._identity = self._identity if self._has_identity_row() else None
            self._refresh_columns()  # columns added in the failed transaction are gone
            raise failure
        finally:
            self._in_transaction = False

    def _insert_rows(self, con, columns: dict, rows: list[dict], signal_table, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Inside ``_write_transaction``: type the metadata, replace rows of the same ecg_id, insert
        rows and signal copies, advance the sequence. Returns (replaced seqs, new seqs)."""
        typed = self._prepare_metadata(rows)
        for name, (column_type, values) in typed.items():
            columns[name] = pa.array(values, schema.arrow_type(column_type))
        seqs = np.arange(self._next_seq, self._next_seq + n, dtype=np.int64)
        columns["seq"] = pa.array(seqs)
        con.register("incoming", pa.table(columns))
        # Look before deleting: a read-only scan is much cheaper than a DELETE that finds nothing.
        replaced = con.execute(
            "SELECT seq FROM ecg WHERE ecg_id IN (SELECT ecg_id FROM incoming)"
        ).fetchnumpy()["seq"].astype(np.int64)
        if len(replaced):
            con.execute("DELETE FROM ecg WHERE seq IN (SELECT unnest(?::BIGINT[]))", [replaced.tolist()])
            con.execute(f"DELETE FROM {signal_copy.TABLE} WHERE ecg_id IN (SELECT ecg_id FROM incoming)")
        con.execute("INSERT INTO ecg BY NAME SELECT * FROM incoming")
        if signal_table is not None:
            con.register("incoming_signals", signal_table)
            try:
                con.execute(f"INSERT INTO {signal_copy.TABLE} BY NAME SELECT * FROM incoming_signals")
            finally:
                con.unregister("incoming_signals")
        con.execute("UPDATE store_meta SET value = ? WHERE key = 'next_seq'", [str(self._next_seq + n)])
        return replaced, seqs

    def _abort_write(self, exc: BaseException) -> BaseException:
        """Roll back a failed write transaction; returns what to raise for `exc`: a StorageError
        when the disk refused the write (full, I/O error), else `exc` itself.

        A failed COMMIT is rolled back by DuckDB already. A failed automatic checkpoint
        (FatalException; the COMMIT itself is durable) invalidates the database: it is reopened
        here (that replays its WAL, and works on a full disk), the sequence counter and the index
        catch up with what DuckDB holds, so no acknowledged row is lost and writes resume."""
        try:
            self._con.execute("ROLLBACK")
        except duckdb.Error as rollback_exc:  # nothing to roll back, or the database was invalidated
            log.debug("rollback after a failed write: %s", rollback_exc)
        error = _storage_error(exc, "writing to the store") or exc
        if _invalidated(exc):
            self._invalid = True
            try:
                self._recover()
            except Exception as again:  # noqa: BLE001 - tried again by the next write
                log.error("reopening the database after a failed write failed too (%s); the next write "
                          "tries again", without_paths(str(again)))
                raise (_storage_error(again, "reopening the database") or StorageUnavailableError()) from exc
        return error

    def _recover(self) -> None:
        """Reopen DuckDB after a fatal error invalidated the connection; catch the index up."""
        with self._lock_cursors:
            for cursor in self._cursors:
                try:
                    cursor.close()
                except duckdb.Error:
                    pass
            self._cursors.clear()
        try:
            self._con.close()
        except duckdb.Error:
            pass
        self._connect()  # DuckDB replays its WAL: every committed transaction is back
        self._invalid = False
        values = dict(self._con.execute("SELECT key, value FROM store_meta").fetchall())
        self._next_seq = int(values["next_seq"])
        self._identity = EncoderIdentity(**json.loads(values["identity"])) if "identity" in values else None
        self._refresh_columns()
        if self._derived is not None:
            self._derived.catch_up()
        log.warning("database reopened after a failed write; %d ECGs stored", self._count())

    def _unregister(self, con: duckdb.DuckDBPyConnection, name: str) -> None:
        try:
            con.unregister(name)
        except duckdb.Error:  # the connection was closed or invalidated by a failed write
            pass

    def _has_identity_row(self) -> bool:
        return bool(self._con.execute("SELECT count(*) FROM store_meta WHERE key = 'identity'").fetchall()[0][0])

    def _prepare_metadata(self, rows: list[dict]) -> dict[str, tuple[str, list]]:
        """Per metadata key: the column type and the coerced values; new columns are added and
        integer columns widened (inside the caller's transaction)."""
        out: dict[str, tuple[str, list]] = {}
        types = schema.metadata_types(rows)
        new = [key for key, first in types.items() if key not in self._columns and first is not None]
        if new:
            self._make_room(new, keep=set(types))
        for key, first in types.items():
            column = self._columns.get(key)
            if column is None:
                if first is None:
                    continue  # only nulls: nothing to store, no type to give the column
                column_type = schema.infer_type(key, first)
                self._con.execute(f'ALTER TABLE ecg ADD COLUMN "{key}" {column_type}')
                column = schema.Column(key, column_type, user=True)
                self._columns[key] = column
            values = [r.get(key) for r in rows]
            kinds = {type(v) for v in values}  # one pass; most batches hold one Python type per key
            if float in kinds:
                wider = next((w for w in map(lambda v: schema.widened(column.type, v), values) if w), None)
                if wider:
                    self._con.execute(f'ALTER TABLE ecg ALTER COLUMN "{key}" TYPE {wider}')
                    column = schema.Column(key, wider, user=True)
                    self._columns[key] = column
            exact = _EXACT_TYPES.get(column.type)
            kinds.discard(type(None))
            if exact is not None and kinds <= {exact}:
                pass  # already what DuckDB binds for this column
            elif column.type == schema.TYPE_LABELS and kinds <= {list} and all(
                    type(x) is str for v in values if v is not None for x in v):
                pass  # lists of strings: the label-list column's own type
            else:
                values = [schema.coerce(column, v) for v in values]
            out[key] = (column.type, values)
        return out

    def _make_room(self, new: Sequence[str], keep: set[str]) -> None:
        """Inside the caller's write transaction, before the keys `new` become columns: past
        ``max_metadata_columns``, the user columns that no stored ECG holds a value in (every ECG
        that had one was deleted) and this write does not name are dropped; still past it,
        MetadataLimitError (the rollback keeps every column)."""
        user = [name for name, column in self._columns.items() if column.user]
        if len(user) + len(new) <= self._max_metadata_columns:
            return
        counts = (self._con.execute("SELECT " + ", ".join(f'count("{n}")' for n in user) + " FROM ecg").fetchone()
                  if user else ())
        unused = [name for name, count in zip(user, counts, strict=True) if count == 0 and name not in keep]
        if len(user) - len(unused) + len(new) > self._max_metadata_columns:
            raise schema.refuse_new_columns(new, len(user), self._max_metadata_columns)
        for name in unused:
            self._con.execute(f'ALTER TABLE ecg DROP COLUMN "{name}"')
            del self._columns[name]
        log.info("dropped %d metadata columns that no stored ECG holds a value in, to make room for new ones",
                 len(unused))

    def _autosave(self) -> None:
        """Save the index once enough changed since its last save (bounds the catch-up after a crash)."""
        if self._derived.unsaved >= max(AUTOSAVE_MIN_CHANGES, len(self._derived.index) // 2):
            try:
                self._save_index()
            except StorageError:  # the rows are committed; the save is retried later (logged)
                pass

    def import_shards(self, paths: Sequence[str | os.PathLike], *, identity: EncoderIdentity) -> ImportResult:
        """Bulk-load embedding shards (Parquet files laid out as ``ecg_atlas/bulk/shards.py``
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
        source = "read_parquet(?::VARCHAR[], union_by_name = true)"
        rows = None
        found = census(files)  # ids, statuses and reasons, their pages verified; before the lock: reads go on
        with self._lock.write():
            self._require_writable()
            con = self._con
            try:
                with self._write_transaction(identity):
                    described = con.execute(f"DESCRIBE SELECT * FROM {source}", [files]).fetchall()
                    metadata = self._import_columns([(row[0], row[1]) for row in described])
                    con.register("shard_ids", pa.table({"ecg_id": found.ids}))
                    try:
                        twice = con.execute("SELECT ecg_id FROM shard_ids GROUP BY ecg_id HAVING count(*) > 1 "
                                            "LIMIT 5").fetchall()
                        if twice:
                            raise ShardError(f"the shards hold some ECGs more than once "
                                             f"({', '.join(r[0] for r in twice)}); import shards of one job, or of "
                                             f"jobs over different ECGs", reason="duplicate_ecg_ids")
                        stored = con.sql("SELECT ecg_id FROM ecg WHERE ecg_id IN (SELECT ecg_id FROM shard_ids)"
                                         ).to_arrow_table().column(0)
                    finally:
                        self._unregister(con, "shard_ids")
                    rows = ShardRows(files, identity.dim, metadata, stored.combine_chunks(), self._next_seq,
                                     keep_vectors=self._kind_requested != "ivfpq")
                    targets = ", ".join(f'"{name}"' for name in [*_IMPORTED, *metadata])
                    selected = ", ".join([*_IMPORTED[:8], "?", "?", "?", "?", *_IMPORTED[12:]]
                                         + [f'"{key}"' for key in metadata])
                    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
                    con.register("shard_rows", rows.reader())
                    try:
                        con.execute(f"INSERT INTO ecg ({targets}) SELECT {selected} FROM shard_rows",
                                    [identity.model_id, identity.checkpoint_sha256, identity.preprocessing_version,
                                     now])
                    finally:
                        self._unregister(con, "shard_rows")
                    con.execute("UPDATE store_meta SET value = ? WHERE key = 'next_seq'",
                                [str(self._next_seq + rows.inserted)])
            except duckdb.Error as failure:  # a shard that is not what it should be
                if rows is not None and rows.failure is not None:
                    raise rows.failure from failure
                raise StoreError(f"importing {len(files)} shard files failed: {without_paths(str(failure))}"
                                 ) from failure
            inserted, first_seq = rows.inserted, self._next_seq
            self._next_seq += inserted
            self._refresh_columns()
        refusals = found.refusals + Counter(rows.refusals)
        ours = {reason: n for reason, n in refusals.items() if reason in IMPORT_REFUSALS}
        if ours:  # ids only at DEBUG: an ECG id may be a file name
            log.warning("import refused %d rows it cannot store (%s)", sum(ours.values()),
                        ", ".join(f"{k}: {v}" for k, v in sorted(ours.items())))
            if rows.refused_ids:
                log.debug("refused at import, e.g.: %s", ", ".join(rows.refused_ids))
        embedded = len(found.ids)
        if inserted:
            fresh = self._new_derived_index()
            if rows.vectors:  # built from them once; the index reads DuckDB for anything after
                store_rows = fresh.rows
                fresh.rows = replace(store_rows, scan=self._imported_scan(first_seq, rows.vectors))
                try:
                    fresh.rebuild()  # outside the lock: the rows are committed
                finally:
                    fresh.rows = store_rows
            else:
                fresh.rebuild()  # outside the lock: reads the committed rows through its own cursors
            with self._lock.write():
                fresh.catch_up()
                self._derived = fresh
                try:
                    self._save_index()
                except StorageError:  # the rows are committed; the save is retried later (logged)
                    pass
        return ImportResult(inserted=inserted, skipped_existing=embedded - inserted - sum(rows.refusals.values()),
                            refused=sum(refusals.values()), refusals=dict(refusals))

    def _imported_scan(self, first_seq: int, imported: deque) -> Callable:
        """`Rows.scan` for building the index right after an import: the rows stored before it
        read from DuckDB, then the imported rows' vectors as the import normalised them (each
        chunk let go once the index holds it). Anything else, and any later scan, reads DuckDB."""

        def scan(seqs: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            if seqs is not None or not imported:
                yield from self._scan_vectors(seqs)
                return
            before = self._all_seqs()
            yield from self._scan_vectors(before[before < first_seq])
            while imported:
                yield imported.popleft()

        return scan

    def _import_columns(self, described: Sequence[tuple[str, str]]) -> dict[str, tuple[str, str]]:
        """Per user column the shards fill: (the shards' column name, the store type to cast to).
        New keys become columns; an integer column meeting real numbers widens to DOUBLE."""
        described = [(name, shard_type) for name, shard_type in described if name.startswith(IMPORT_METADATA_PREFIX)]
        keys = [schema.check_metadata_name(name[len(IMPORT_METADATA_PREFIX):]) for name, _ in described]
        self._make_room([key for key in keys if key not in self._columns], keep=set(keys))  # the column cap
        out = {}
        for key, (name, shard_type) in zip(keys, described, strict=True):
            wanted = _IMPORT_TYPES.get(shard_type.upper())
            if wanted is None:
                raise StoreError(f"shard column {name!r} is {shard_type}, which no metadata column can hold")
            column = self._columns.get(key)
            if column is None:
                self._con.execute(f'ALTER TABLE ecg ADD COLUMN "{key}" {wanted}')
                column = self._columns[key] = schema.Column(key, wanted, user=True)
            elif column.type == schema.TYPE_BIGINT and wanted == schema.TYPE_DOUBLE:
                self._con.execute(f'ALTER TABLE ecg ALTER COLUMN "{key}" TYPE DOUBLE')
                column = self._columns[key] = schema.Column(key, schema.TYPE_DOUBLE, user=True)
            elif column.type != wanted and not (column.type == schema.TYPE_DOUBLE and wanted == schema.TYPE_BIGINT):
                raise StoreError(f"metadata {key!r}: the store holds {column.type} values, the shards {wanted}")
            out[key] = (name, column.type)
        return out

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
            con.execute("BEGIN")
            try:
                removed = con.execute(
                    "DELETE FROM ecg WHERE ecg_id IN (SELECT unnest(?::VARCHAR[])) "
                    "OR patient_id IN (SELECT unnest(?::VARCHAR[])) RETURNING seq, ecg_id",
                    [ids, patients],
                ).fetchnumpy()
                gone = removed["seq"].astype(np.int64)
                if len(gone):
                    con.execute(f"DELETE FROM {signal_copy.TABLE} WHERE ecg_id IN (SELECT unnest(?::VARCHAR[]))",
                                [list(removed["ecg_id"])])
                con.execute("COMMIT")
            except BaseException as exc:
                raise self._abort_write(exc)
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
        for row in rows:
            schema.check_key_count(row, self._max_metadata_keys)
        for key in {k for r in rows for k in r}:
            schema.check_metadata_name(key)
        with self._lock.write():
            self._require_writable()
            con = self._con
            found = set() if self._identity is None else {r[0] for r in con.execute(
                "SELECT ecg_id FROM ecg WHERE ecg_id IN (SELECT unnest(?::VARCHAR[]))", [ids]).fetchall()}
            missing = [i for i in ids if i not in found]
            if missing:
                shown = ", ".join(repr(m) for m in missing[:5])
                raise NotFoundError(f"{len(missing)} ecg_id(s) not in the store: {shown}{' …' if len(missing) > 5 else ''}")
            con.execute("BEGIN")
            self._in_transaction = True
            try:
                for key, (column_type, values) in self._prepare_metadata(rows).items():
                    present = [i for i, r in enumerate(rows) if key in r]
                    table = pa.table({
                        "ecg_id": pa.array([ids[i] for i in present], pa.string()),
                        "value": pa.array([values[i] for i in present], schema.arrow_type(column_type)),
                    })
                    con.register("changes", table)
                    con.execute(f'UPDATE ecg SET "{key}" = changes.value FROM changes WHERE ecg.ecg_id = changes.ecg_id')
                    con.unregister("changes")
                con.execute("COMMIT")
            except BaseException as exc:
                raise self._abort_write(exc)
            finally:
                self._in_transaction = False
                self._refresh_columns()
        return len(ids)

    def compact(self) -> None:
        """Remove deleted ECGs from disk: rewrite the database file and the index file.

        IVF / HNSW indexes are rebuilt (an IVF is retrained for the current size).
        """
        self._require_writable()
        with self._lock.write():
            self._require_writable()
            fresh = self._path / "store.compact.duckdb"
            for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
                leftover.unlink(missing_ok=True)
            con = self._con
            # The file is about to be replaced: every connection must be closed (so DuckDB
            # checkpoints and drops its WAL) and nothing may be left in the WAL.
            con.execute("FORCE CHECKPOINT")
            quoted = str(fresh).replace("'", "''")  # our own path; ATTACH takes no parameters
            con.execute(f"ATTACH '{quoted}' AS fresh")
            con.execute("CREATE TABLE fresh.store_meta AS SELECT * FROM store_meta")
            if self._identity is not None:
                con.execute("CREATE TABLE fresh.ecg AS SELECT * FROM ecg")  # keeps insertion (seq) order
                con.execute(f"CREATE TABLE fresh.{signal_copy.TABLE} AS SELECT * FROM {signal_copy.TABLE}")
            con.execute("DETACH fresh")
            with self._lock_cursors:
                for cursor in self._cursors:
                    cursor.close()
                self._cursors.clear()
            con.close()
            if (self._path / (DB_FILE + ".wal")).exists():
                fresh.unlink(missing_ok=True)
                self._connect()
                raise StoreError("compaction stopped: the database still has a WAL after closing "
                                 "(another connection is open); nothing was replaced")
            replace_durably(fresh, self._path / DB_FILE)
            self._connect()
            if self._derived is not None:
                self._derived.compact()
                self._save_index()
        log.info("store compacted")

    # -----------------------------------------------------------------------------------------
    # Reads

    def _readable(self, columns: Sequence[str] | None, allow_vectors: bool) -> list[str]:
        if columns is None:
            return list(self._columns)
        out = []
        for name in columns:
            if name in self._columns or (allow_vectors and name in schema.VECTOR_COLUMNS):
                out.append(name)
            else:
                extra = " (vectors are read with get())" if name in schema.VECTOR_COLUMNS else ""
                raise StoreError(f"unknown column {name!r}{extra}; columns: {', '.join(sorted(self._columns))}")
        return out

    def _decode(self, names: list[str], row: tuple) -> dict[str, object]:
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

    def existing(self, ecg_ids: Sequence[str]) -> set[str]:
        """The subset of ecg_ids that are stored (one indexed lookup; ingest asks this per ECG)."""
        with self._lock.read():
            return self._existing(ecg_ids)

    def _existing(self, ecg_ids: Sequence[str]) -> set[str]:
        """`existing` for a caller that holds the read or write lock."""
        ids = list(dict.fromkeys(ecg_ids))
        if self._identity is None or not ids:
            return set()
        if len(ids) == 1:
            rows = self._cursor().execute("SELECT ecg_id FROM ecg WHERE ecg_id = ?", ids).fetchall()
        else:
            rows = self._cursor().execute(
                "SELECT ecg_id FROM ecg WHERE ecg_id IN (SELECT unnest(?::VARCHAR[]))", [ids]).fetchall()
        return {row[0] for row in rows}

    def signal(self, ecg_id: str) -> StoredSignal | None:
        """The stored copy of an ECG's samples, or None when the store kept none for it.
        Raises NotFoundError when the ECG is not stored."""
        with self._lock.read():
            if self._identity is None:
                raise NotFoundError(f"ecg_id {ecg_id!r} is not in the store")
            if not self._has_signal_table:
                if not self._existing([ecg_id]):
                    raise NotFoundError(f"ecg_id {ecg_id!r} is not in the store")
                return None
            # one lookup answers both: is the ECG stored, and did the store keep its samples
            row = self._cursor().execute(
                f"SELECT s.samples IS NOT NULL, {', '.join('s.' + c.strip() for c in signal_copy.COLUMNS.split(','))} "
                f"FROM ecg e LEFT JOIN {signal_copy.TABLE} s USING (ecg_id) WHERE e.ecg_id = ?", [ecg_id]).fetchone()
        if row is None:
            raise NotFoundError(f"ecg_id {ecg_id!r} is not in the store")
        return signal_copy.from_row(row[1:]) if row[0] else None

    def get(self, ecg_ids: Sequence[str], columns: Sequence[str] | None = None) -> list[dict[str, object]]:
        """Stored rows, in the order asked. columns: None = every metadata column; may include
        "record_vector" / "segment_vectors" (returned as float32 arrays, as stored).
        Raises NotFoundError naming the ecg_ids that are not stored."""
        ids = [ecg_ids] if isinstance(ecg_ids, str) else list(ecg_ids)
        with self._lock.read():
            names = self._readable(columns, allow_vectors=True)
            rows = {}
            if self._identity is not None and ids:
                select = ", ".join(f'"{c}"' for c in ["ecg_id", *names])
                for row in self._cursor().execute(
                        f"SELECT {select} FROM ecg WHERE ecg_id IN (SELECT unnest(?::VARCHAR[]))", [ids]).fetchall():
                    rows[row[0]] = self._decode(["ecg_id", *names], row)
        missing = [i for i in ids if i not in rows]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5])
            raise NotFoundError(f"{len(missing)} ecg_id(s) not in the store: {shown}{' …' if len(missing) > 5 else ''}")
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
            names = self._readable(columns, allow_vectors=False)
            cur = self._cursor()
            dim = self._identity.dim
            own_seqs: list[int | None]
            if ecg_ids is not None:
                ids = [ecg_ids] if isinstance(ecg_ids, str) else list(ecg_ids)
                found = {row[0]: row for row in cur.execute(
                    "SELECT ecg_id, seq, patient_id, record_vector FROM ecg WHERE ecg_id IN (SELECT unnest(?::VARCHAR[]))",
                    [ids]).fetchall()}
                missing = [i for i in ids if i not in found]
                if missing:
                    raise NotFoundError(f"query ecg_id(s) not in the store: {', '.join(repr(m) for m in missing[:5])}")
                vectors = _normalised(np.array([found[i][3] for i in ids], dtype=np.float32).reshape(len(ids), dim),
                                      "stored record_vector", dim)
                own_seqs = [found[i][1] for i in ids]
                patients = [found[i][2] for i in ids]
            else:
                raw = np.asarray(queries, dtype=np.float32)
                vectors = _normalised(raw[None, :] if raw.ndim == 1 else raw, "query vectors", dim)
                own_seqs = [None] * len(vectors)
                if isinstance(query_patient_ids, str) or query_patient_ids is None:
                    patients = [query_patient_ids] * len(vectors)
                else:
                    patients = list(query_patient_ids)
                    if len(patients) != len(vectors):
                        raise StoreError(f"{len(vectors)} query vectors but {len(patients)} query_patient_ids")
                if exclude_same_patient and query_patient_ids is None:
                    raise StoreError("exclude_same_patient with query vectors needs query_patient_ids")
            allowed = None
            if filter is not None:
                where, params = compile_filter(filter, self._columns)
                allowed = cur.execute(f"SELECT seq FROM ecg WHERE {where}", params).fetchnumpy()["seq"].astype(np.int64)
                allowed.sort()
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
            extra = max((len(ex) for ex in excluded), default=0)
            scores, seqs = self._index.search(vectors, k + extra, allowed)
            picked: list[list[tuple[int, float]]] = []
            for row_scores, row_seqs, ex in zip(scores.tolist(), seqs.tolist(), excluded):
                keep = [(s, sc) for s, sc in zip(row_seqs, row_scores) if s >= 0 and s not in ex]
                picked.append(keep[:k])
            wanted_seqs = sorted({s for hits in picked for s, _ in hits})
            info: dict[int, tuple] = {}
            if wanted_seqs:
                select = ", ".join(f'"{c}"' for c in ["seq", "ecg_id", *names])
                for row in cur.execute(f"SELECT {select} FROM ecg WHERE seq IN (SELECT unnest(?::BIGINT[]))",
                                       [wanted_seqs]).fetchall():
                    info[row[0]] = row
        results = []
        for hits in picked:
            results.append([
                Hit(info[s][1], sc, self._decode(names, info[s][2:]))
                for s, sc in hits if s in info
            ])
        return results

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
            names = [c for c in self._readable(columns, allow_vectors=False) if c != "ecg_id"]
            if with_vectors:
                names.append("record_vector")
            where, params = ("TRUE", []) if filter is None else compile_filter(filter, self._columns)
            select = ", ".join(f'"{c}"' for c in ["ecg_id", *names])
            cur = self._con.cursor()
            reader = cur.sql(f"SELECT {select} FROM ecg WHERE {where} ORDER BY seq", params=params).to_arrow_reader(batch_size)
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
                encoder_contract=self._encoder_contract(),
            )

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
            current = self._con.execute("SELECT value FROM store_meta WHERE key = 'encoder_contract'").fetchall()
            if current and current[0][0] == text:
                return
            try:
                with self._write_transaction(self._identity):
                    self._con.execute("DELETE FROM store_meta WHERE key = 'encoder_contract'")
                    self._con.execute("INSERT INTO store_meta VALUES ('encoder_contract', ?)", [text])
            except StorageError:  # logged at ERROR with the OS error by _write_transaction
                log.warning("the encoder's contract was not recorded in the store (its disk refused the write); "
                            "the next start records it")

    def _encoder_contract(self) -> dict | None:
        rows = self._cursor().execute("SELECT value FROM store_meta WHERE key = 'encoder_contract'").fetchall()
        return json.loads(rows[0][0]) if rows else None


def _contains(sorted_values: np.ndarray, value: int) -> bool:
    at = int(np.searchsorted(sorted_values, value))
    return at < len(sorted_values) and int(sorted_values[at]) == value

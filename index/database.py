"""The store's DuckDB file: connected with the store's settings, read through one cursor per
thread, written in transactions (rolled back after a refused write, and reopened when DuckDB gave up on
it), checkpointed, and rewritten whole for compaction.

DuckDB connections are not shared across threads: the writer uses `con` (under the store's write
lock), each reading thread its own cursor of it (`cursor`). A fatal error (a checkpoint that the
disk refused) invalidates the database instance; `invalid` says so until `reopen`, which replays
the WAL: every committed transaction is back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from ecg_atlas.atomic import replace_durably
from ecg_atlas.errors import StorageUnavailableError, StoreError, without_paths

from .storage_errors import invalidated, storage_error

# The store's logger: an operator follows a store's life, its database included, under one name.
log = logging.getLogger("ecg_atlas.index.store")

DB_FILE = "store.duckdb"
#: DuckDB's float codecs (ALP, ALPRD, Chimp, Patas) cannot shrink embedding floats but analysing
#: them made up 60 % of each checkpoint (BENCHMARKS.md, Store): they are skipped.
FLOAT_CODECS_OFF = "alp,alprd,chimp,patas"
_COMPACT_FILE = "store.compact.duckdb"


class Database:
    """The DuckDB file of the store in `path` (see the module docstring)."""

    def __init__(self, path: Path, *, read_only: bool, memory_limit: str) -> None:
        self.path = path
        self.read_only = read_only
        self.memory_limit = memory_limit
        self.invalid = False  # DuckDB invalidated the connection (a failed checkpoint); cleared by reopen()
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []  # per-thread readers, closed with the connection
        self._lock_cursors = threading.Lock()
        self._generation = 0
        self.connect()

    def connect(self) -> None:
        config = {"memory_limit": self.memory_limit}
        try:
            self.con = duckdb.connect(str(self.path / DB_FILE), read_only=self.read_only, config=config)
        except duckdb.IOException as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc} (is another process "
                             f"writing to it? stop it or use the running server)") from exc
        if not self.read_only:
            # Fewer, larger checkpoints: bulk ingest of vectors is ~2x faster than with 16 MB.
            self.con.execute("SET wal_autocheckpoint = '256MB'")
            self.con.execute(f"SET disabled_compression_methods = '{FLOAT_CODECS_OFF}'")
        self._generation += 1

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's connection for reads."""
        if self.invalid:
            raise StorageUnavailableError("the store is reopening its database after a failed write; retry shortly")
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            local.cursor = self.con.cursor()
            local.generation = self._generation
            with self._lock_cursors:
                self._cursors.append(local.cursor)
        return local.cursor

    def warm_up(self) -> None:
        """Load what DuckDB loads on its first Arrow registration and NumPy fetch; nothing is stored."""
        cur = self.cursor()
        cur.register("warm_up", pa.table({"x": pa.array([1], pa.int64())}))
        try:
            cur.execute("SELECT x FROM warm_up").fetchnumpy()
        finally:
            cur.unregister("warm_up")

    def has_table(self, name: str) -> bool:
        return bool(self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchall()[0][0])

    def close(self) -> None:
        self.con.close()

    def checkpoint(self) -> None:
        """CHECKPOINT now; a disk that refuses it raises StorageError (logged)."""
        # An export still streaming rows holds a transaction that blocks CHECKPOINT; DuckDB then
        # checkpoints later (or replays its WAL on the next open), so nothing is lost by skipping.
        try:
            self.con.execute("CHECKPOINT")
        except duckdb.TransactionException as exc:
            log.debug("checkpoint postponed: %s", exc)
        except duckdb.Error as exc:
            error = storage_error(exc, "checkpointing the database")
            if error is None:
                raise
            # Committed transactions are in the WAL, which DuckDB replays at the next open.
            self.invalid = self.invalid or invalidated(exc)
            raise error from exc

    @contextmanager
    def transaction(self, recover: Callable[[], None]) -> Iterator[None]:
        """BEGIN, and COMMIT at the end. On any failure a rollback (a failed COMMIT is rolled back
        by DuckDB already), and what was raised raised again, or the StorageError it means when
        the disk refused the write (full, I/O error). When the failure invalidated the database
        (a failed automatic checkpoint), `recover` is called to reopen it (`reopen`, and the
        caller's own state read again); if that fails too, the next write tries again."""
        self.con.execute("BEGIN")
        try:
            yield
            self.con.execute("COMMIT")
        except BaseException as exc:
            try:
                self.con.execute("ROLLBACK")
            except duckdb.Error as rollback_exc:  # nothing to roll back, or the database was invalidated
                log.debug("rollback after a failed write: %s", rollback_exc)
            failure = storage_error(exc, "writing to the store") or exc
            if invalidated(exc):
                self.invalid = True
                try:
                    recover()
                except Exception as again:  # any failure: tried again by the next write
                    log.error("reopening the database after a failed write failed too (%s); the next write "
                              "tries again", without_paths(str(again)))
                    raise (storage_error(again, "reopening the database") or StorageUnavailableError()) from exc
            if failure is exc:
                raise
            raise failure from failure.__cause__  # the OS error behind the StorageError

    def reopen(self) -> None:
        """Close every connection and connect again: DuckDB replays its WAL."""
        self._close_cursors(quiet=True)
        try:
            self.con.close()
        except duckdb.Error:
            pass
        self.connect()
        self.invalid = False

    def rewrite(self, tables: Sequence[str]) -> None:
        """Copy `tables` into a fresh database file (leaving deleted rows' bytes behind) and swap it
        in for the store's; the connection is open again on the new file when this returns."""
        fresh = self.path / _COMPACT_FILE
        for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
            leftover.unlink(missing_ok=True)
        con = self.con
        # The file is about to be replaced: every connection must be closed (so DuckDB
        # checkpoints and drops its WAL) and nothing may be left in the WAL.
        con.execute("FORCE CHECKPOINT")
        quoted = str(fresh).replace("'", "''")  # our own path; ATTACH takes no parameters
        con.execute(f"ATTACH '{quoted}' AS fresh")
        for table in tables:  # CREATE TABLE AS keeps the rows' order (ecg: insertion, seq, order)
            con.execute(f"CREATE TABLE fresh.{table} AS SELECT * FROM {table}")
        con.execute("DETACH fresh")
        self._close_cursors(quiet=False)
        con.close()
        if (self.path / (DB_FILE + ".wal")).exists():
            fresh.unlink(missing_ok=True)
            self.connect()
            raise StoreError("compaction stopped: the database still has a WAL after closing "
                             "(another connection is open); nothing was replaced")
        replace_durably(fresh, self.path / DB_FILE)
        self.connect()

    def _close_cursors(self, quiet: bool) -> None:
        with self._lock_cursors:
            for cursor in self._cursors:
                try:
                    cursor.close()
                except duckdb.Error:
                    if not quiet:
                        raise
            self._cursors.clear()


def unregister(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Let go of Arrow data registered on `con` as `name` (nothing to do once a failed write closed `con`)."""
    try:
        con.unregister(name)
    except duckdb.Error:
        pass

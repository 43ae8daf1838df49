"""Bulk import of embedding shards (`shard_layout`) into a store: `Store.import_shards`' work
inside its write transaction, the counts it answers with, and the rows its new index is built from.

The shards are counted first (`shard_rows.census`: ids, statuses, refusals, every page's checksum
verified) without any lock; then, in the store's write transaction, their metadata columns are
made store columns (`metadata.shard_columns`, the upsert's typing rules), and every embedded row
whose ecg_id the store does not hold yet is inserted by one streamed INSERT (`ShardRows`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

import duckdb
import numpy as np
import pyarrow as pa

from ecg_atlas.errors import ShardError, StoreError, without_paths

from . import metadata as metadata_rules
from . import store_meta
from .database import unregister
from .derived_index import Rows
from .schema import VECTOR_COLUMNS
from .shard_layout import METADATA_PREFIX, STORED_FIELDS
from .shard_rows import IMPORT_REFUSALS, ShardRows, census
from .types import EncoderIdentity, ImportResult

# The store's logger: an operator follows a store's life, its imports included, under one name.
log = logging.getLogger("ecg_atlas.index.store")

#: The `ecg` columns an import fills beside the shards' own: the encoder and the time, one value for every row.
_STAMPED = ("model_id", "checkpoint_sha256", "preprocessing_version", "ingested_at")
_SOURCE = "read_parquet(?::VARCHAR[], union_by_name = true)"


class ShardImport:
    """One import of the shard `files` (module docstring). keep_vectors: keep the imported rows'
    normalised record vectors, so the index is built from them rather than read back from DuckDB."""

    def __init__(self, files: Sequence[str], *, keep_vectors: bool) -> None:
        self.files = list(files)
        self.keep_vectors = keep_vectors
        self.found = census(self.files)
        self.rows: ShardRows | None = None

    @property
    def inserted(self) -> int:
        return self.rows.inserted if self.rows is not None else 0

    @contextmanager
    def failures(self) -> Iterator[None]:
        """DuckDB's errors around the import as what went wrong: the shard's own error when reading
        it failed while DuckDB inserted it (DuckDB reports only its own), else a StoreError."""
        try:
            yield
        except duckdb.Error as failure:  # a shard that is not what it should be
            if self.rows is not None and self.rows.failure is not None:
                raise self.rows.failure from failure
            raise StoreError(f"importing {len(self.files)} shard files failed: {without_paths(str(failure))}"
                             ) from failure

    def insert(self, con: duckdb.DuckDBPyConnection, identity: EncoderIdentity, columns: metadata_rules.Columns,
               first_seq: int, max_columns: int) -> int:
        """Inside the store's write transaction: the rows to store, inserted (`columns`, the store's
        columns, gains the shards' metadata keys), and the sequence counter moved past them.
        Returns how many rows were inserted."""
        described = con.execute(f"DESCRIBE SELECT * FROM {_SOURCE}", [self.files]).fetchall()
        metadata = metadata_rules.shard_columns(
            con, columns, {name[len(METADATA_PREFIX):]: (name, shard_type) for name, shard_type, *_ in described
                           if name.startswith(METADATA_PREFIX)}, max_columns)
        self.rows = ShardRows(self.files, identity.dim, metadata, self._stored(con), first_seq,
                              keep_vectors=self.keep_vectors)
        fixed = ["seq", *(field.name for field in STORED_FIELDS)]
        targets = ", ".join(f'"{name}"' for name in [*fixed, *_STAMPED, *VECTOR_COLUMNS, *metadata])
        selected = ", ".join([*fixed, *("?" * len(_STAMPED)), *VECTOR_COLUMNS, *(f'"{key}"' for key in metadata)])
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        con.register("shard_rows", self.rows.reader())
        try:
            con.execute(f"INSERT INTO ecg ({targets}) SELECT {selected} FROM shard_rows",
                        [identity.model_id, identity.checkpoint_sha256, identity.preprocessing_version, now])
        finally:
            unregister(con, "shard_rows")
        store_meta.set_next_seq(con, first_seq + self.rows.inserted)
        return self.rows.inserted

    def _stored(self, con: duckdb.DuckDBPyConnection) -> pa.Array:
        """The shards' ecg_ids the store holds already; refuses shards that hold an ECG twice."""
        con.register("shard_ids", pa.table({"ecg_id": self.found.ids}))
        try:
            twice = con.execute("SELECT ecg_id FROM shard_ids GROUP BY ecg_id HAVING count(*) > 1 LIMIT 5").fetchall()
            if twice:
                raise ShardError(f"the shards hold some ECGs more than once ({', '.join(r[0] for r in twice)}); "
                                 f"import shards of one job, or of jobs over different ECGs",
                                 reason="duplicate_ecg_ids")
            stored = con.sql("SELECT ecg_id FROM ecg WHERE ecg_id IN (SELECT ecg_id FROM shard_ids)"
                             ).to_arrow_table().column(0)
        finally:
            unregister(con, "shard_ids")
        return stored.combine_chunks()

    def index_rows(self, rows: Rows, first_seq: int) -> Rows:
        """`rows` (the store's, for its new index) with the scan of every row reading the rows
        stored before the import from DuckDB, then the imported rows' vectors as the import
        normalised them (each chunk let go once the index holds it). Anything else, and any later
        scan, reads DuckDB. `rows` itself when the vectors were not kept."""
        imported = self.rows.vectors if self.rows is not None else None
        if not imported:
            return rows

        def scan(seqs: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            if seqs is not None or not imported:
                yield from rows.scan(seqs)
                return
            before = rows.ids()
            yield from rows.scan(before[before < first_seq])
            while imported:
                yield imported.popleft()

        return replace(rows, scan=scan)

    def result(self) -> ImportResult:
        """What the import did, per reason the rows it refused (logged: counts only, ids at DEBUG)."""
        refused_here = self.rows.refusals if self.rows is not None else {}
        refusals = self.found.refusals + Counter(refused_here)
        ours = {reason: n for reason, n in refusals.items() if reason in IMPORT_REFUSALS}
        if ours:  # ids only at DEBUG: an ECG id may be a file name
            log.warning("import refused %d rows it cannot store (%s)", sum(ours.values()),
                        ", ".join(f"{k}: {v}" for k, v in sorted(ours.items())))
            if self.rows is not None and self.rows.refused_ids:
                log.debug("refused at import, e.g.: %s", ", ".join(self.rows.refused_ids))
        embedded = len(self.found.ids)
        return ImportResult(inserted=self.inserted,
                            skipped_existing=embedded - self.inserted - sum(refused_here.values()),
                            refused=sum(refusals.values()), refusals=dict(refusals))
